"""Baseline highlight scorers give the hand-computed scores, and the shared evaluation matches by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mm_live.baselines as bl
from mm_live.comments import Comment
from mm_live.config import Config
from mm_live.errors import ConfigError
from mm_live.media import Clip
from mm_live.scoring import ClipSource
from mm_live.video_writer import write_video


def _cfg(**media) -> Config:
    return Config.from_dict({"media": {"step_seconds": 1.0, "frames_per_step": 2, "frame_size": 32, **media}})


def _fake_clip(level: list[list[float]], audio: list[float], start: int) -> Clip:
    """Steps whose 2 frames are flat grey ``level`` and whose 4 audio samples are ``audio[i]`` each."""
    n = len(level)
    frames = torch.tensor(level, dtype=torch.uint8)[:, :, None, None, None].expand(n, 2, 3, 2, 2).contiguous()
    wave = torch.tensor(audio, dtype=torch.float32)[:, None].expand(n, 4).contiguous()
    return Clip(frames=frames, audio=wave, has_audio=torch.ones(n, dtype=torch.bool),
                step_starts=torch.arange(start, start + n, dtype=torch.float64), step_seconds=1.0, fps=2.0,
                duration=4.0, sample_rate=4, path="fake.mp4")


def test_each_baseline_gives_the_hand_computed_scores(monkeypatch):
    # 4 steps in two windows of 2 (the frame difference must carry across the window border).
    levels = [[10, 10], [10, 30], [30, 30], [0, 60]]
    audio = [0.0, 0.5, -0.25, 0.1]

    def fake_iter_clip(path, *, window_steps, **kw):
        assert kw["frames_per_step"] == 2 and kw["frame_size"] == 32
        yield _fake_clip(levels[:2], audio[:2], 0)
        yield _fake_clip(levels[2:], audio[2:], 2)

    monkeypatch.setattr(bl, "iter_clip", fake_iter_clip)
    comments = [Comment(t, "u", "x") for t in (0.2, 0.9, 1.0, 1.5, 3.99, 4.5)]
    source = ClipSource(Path("fake.mp4"), None, comments)
    scores, starts = bl.baseline_scores(source, _cfg(), seed=3)
    np.testing.assert_array_equal(starts, [0, 1, 2, 3])
    # a step (s, s+1] holds the comments with s < t <= s + 1: 0.2, 0.9, 1.0 | 1.5 | - | 3.99 (4.5 is past the clip)
    np.testing.assert_array_equal(scores["comment_density"], [3, 1, 0, 1])
    np.testing.assert_allclose(scores["audio_rms"], [0.0, 0.5, 0.25, 0.1], rtol=1e-6)
    # frame diffs: step0 (0, 0), step1 (0, 20), step2 (0 vs 30, 0), step3 (|0-30|, 60) -> means
    np.testing.assert_allclose(scores["visual_change"], [0.0, 10.0, 0.0, 45.0])
    np.testing.assert_array_equal(scores["random"], np.random.default_rng(3).random(4))
    with pytest.raises(ConfigError, match="unknown baseline 'loudest'"):
        bl.baseline_scores(source, _cfg(), ("loudest",))


def test_baselines_on_an_encoded_clip_see_the_loud_and_the_moving_steps(tmp_path):
    # 4 s at 4 fps: steps 1 and 3 are loud; frames are flat grey (100) except white (255) through step 2.
    sr = 16000
    t = np.arange(4 * sr) / sr
    audio = (0.4 * np.sin(2 * np.pi * 440 * t) * ((t >= 1) & (t < 2) | (t >= 3))).astype(np.float32)
    frames = [np.full((32, 32, 3), 255 if 8 <= i < 12 else 100, np.uint8) for i in range(16)]
    clip = tmp_path / "c.mp4"
    write_video(clip, frames, fps=4, audio=audio, sample_rate=sr, crf=0)
    source = ClipSource.open(clip)
    scores, _ = bl.baseline_scores(source, _cfg())
    # sampled frames at 0.25, 0.75 s of each step: frames 1, 3 | 5, 7 | 9, 11 | 13, 15; the jumps 7 -> 9 and
    # 11 -> 13 (155 grey levels) fall on the first frame of steps 2 and 3: (155 + 0) / 2 each
    np.testing.assert_allclose(scores["visual_change"], [0, 0, 77.5, 77.5], atol=2.0)
    np.testing.assert_allclose(scores["audio_rms"], [0, 0.4 / np.sqrt(2), 0, 0.4 / np.sqrt(2)], atol=0.03)
    np.testing.assert_array_equal(scores["comment_density"], [0, 0, 0, 0])
    result = bl.score_baseline("audio_rms", clip, _cfg(), out_dir=tmp_path / "out", top_k=2)
    assert result.scores.max() == 1.0 and result.windows[0].start == 3.0
    np.testing.assert_allclose(result.scores, [0, 1, 0, 1], atol=0.02)
    assert (tmp_path / "out" / "scores.json").is_file()


def test_highlight_metrics_by_hand():
    s = [np.array([0.9, 0.1, 0.5, 0.3]), np.array([0.2, 0.8, 0.4])]
    y = [np.array([1.0, 0.0, 0.6, 0.2]), np.array([0.1, 0.9, 0.3])]
    q = [np.array([1, 0, 1, 0], bool), np.array([0, 1, 0], bool)]
    m = bl.highlight_metrics(s, y, q)
    # pooled: positives 0.9, 0.5, 0.8 vs negatives 0.1, 0.3, 0.2, 0.4 -> every pair ordered: AUC 1
    assert m["auc"] == 1.0 and m["kendall_tau"] == pytest.approx(1.0) and m["top5_map"] == 1.0
    # keep drops step 0 of stream 0: positive 0.5 now ranks below 0.8 (positive) only -> AUC still 1;
    # stream 0's top-5 over [0.1, 0.5, 0.3] ranks [0.5+, 0.3, 0.1]: AP 1
    m2 = bl.highlight_metrics(s, y, q, keep=[np.array([0, 1, 1, 1], bool), np.ones(3, bool)])
    assert m2["auc"] == 1.0
    # a scorer that ranks backwards: AUC 0, τ -1
    rev = bl.highlight_metrics([-a for a in s], y, q)
    assert rev["auc"] == 0.0 and rev["kendall_tau"] == pytest.approx(-1.0)


def test_event_metrics_split_highlight_types_and_distractors():
    events = [{"type": "chat_only", "start": 0.0, "end": 2.0}, {"type": "spam_burst", "start": 3.0, "end": 4.0},
              {"type": "av_chat", "start": 5.0, "end": 6.0}]
    masks = bl.event_masks(events, 8, 1.0)
    np.testing.assert_array_equal(masks["chat_only"], [1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(masks["spam_burst"], [0, 0, 0, 1, 0, 0, 0, 0])
    pos = masks["chat_only"] | masks["av_chat"]
    s = np.array([0.9, 0.8, 0.1, 0.95, 0.2, 0.3, 0.1, 0.0])  # the spam step outranks every highlight
    y = np.where(pos, 0.8, 0.1)
    out = bl.event_metrics([s], [y], [pos], [masks], ("chat_only", "av_chat"), ("spam_burst",))
    assert out["spam_burst"]["auc"] == 0.0
    # chat_only (0.9, 0.8) vs background/distractors (0.1, 0.95, 0.2, 0.1, 0.0): 8 of 10 pairs won
    assert out["chat_only"]["auc"] == pytest.approx(0.8)
    # av_chat (0.3) vs the same 5 steps: beats 0.1, 0.2, 0.1, 0.0 -> 4 of 5
    assert out["av_chat"]["auc"] == pytest.approx(0.8)
    # the same negatives split into the spam step and plain background (steps 2, 4, 6, 7): both
    # highlight types lose every pair to the spam step and win every pair against background
    split = bl.event_metrics([s], [y], [pos], [masks], ("chat_only", "av_chat"), (), split_negatives=("spam_burst",))
    for x in ("chat_only", "av_chat"):
        assert split[x]["auc_vs_spam_burst"] == 0.0
        assert split[x]["auc_vs_background"] == 1.0
        assert split[x]["auc"] == out[x]["auc"]  # splitting adds keys, it changes nothing else
    assert "auc_vs_background" not in out["chat_only"]


def test_event_metrics_lead_steps_are_the_background_just_before_a_highlight():
    """lead_steps = 1: the step before each highlight's first step, when it is in no event: step 4
    before av_chat at 5 (step 2, before the spam step, and step -1, before chat_only, are not)."""
    events = [{"type": "chat_only", "start": 0.0, "end": 2.0}, {"type": "spam_burst", "start": 3.0, "end": 4.0},
              {"type": "av_chat", "start": 5.0, "end": 6.0}]
    masks = bl.event_masks(events, 8, 1.0)
    pos = masks["chat_only"] | masks["av_chat"]
    s = np.array([0.9, 0.8, 0.95, 0.0, 0.85, 0.3, 0.1, 0.0])  # step 4 rises before av_chat
    y = np.where(pos, 0.8, 0.1)
    out = bl.event_metrics([s], [y], [pos], [masks], ("chat_only", "av_chat"), (), lead_steps=1)
    assert out["chat_only"]["auc_vs_lead"] == pytest.approx(1 / 2)  # 0.9, 0.8 vs 0.85
    assert out["av_chat"]["auc_vs_lead"] == 0.0  # 0.3 vs 0.85
    np.testing.assert_array_equal(bl._before(np.array([0, 0, 1, 0, 1], bool), 2), [1, 1, 1, 1, 0])


def test_event_metrics_can_leave_out_the_steps_after_each_highlight():
    """tail_steps = 2: the two steps after each highlight step (not highlights themselves) are left out
    of the highlight types' negatives; distractors are untouched."""
    events = [{"type": "chat_only", "start": 0.0, "end": 2.0}, {"type": "av_chat", "start": 5.0, "end": 6.0}]
    masks = bl.event_masks(events, 9, 1.0)
    pos = masks["chat_only"] | masks["av_chat"]
    s = np.array([0.9, 0.8, 0.85, 0.7, 0.2, 0.5, 0.6, 0.95, 0.0])
    y = np.where(pos, 0.8, 0.1)
    np.testing.assert_array_equal(bl._after(pos, 2) & ~pos, [0, 0, 1, 1, 0, 0, 1, 1, 0])
    full = bl.event_metrics([s], [y], [pos], [masks], ("chat_only", "av_chat"), ())
    cut = bl.event_metrics([s], [y], [pos], [masks], ("chat_only", "av_chat"), (), tail_steps=2)
    # av_chat (0.5) vs 0.85, 0.7, 0.2, 0.6, 0.95, 0.0 -> 2 of 6; without steps 2, 3, 6, 7: vs 0.2, 0.0 -> 2 of 2
    assert full["av_chat"]["auc"] == pytest.approx(2 / 6)
    assert cut["av_chat"]["auc"] == pytest.approx(1.0)
    # chat_only (0.9, 0.8) vs steps 4 and 8 only: all won
    assert cut["chat_only"]["auc"] == pytest.approx(1.0)
    # onset vs the rest: chat_only's first step 0.9, its second 0.8, against 0.85, 0.7, 0.2, 0.6, 0.95, 0.0
    assert full["chat_only"]["auc_first_step"] == pytest.approx(5 / 6)
    assert full["chat_only"]["auc_later_steps"] == pytest.approx(4 / 6)
    assert np.isnan(full["av_chat"]["auc_later_steps"])  # a one-step event has no later steps
