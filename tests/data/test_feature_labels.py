"""Feature-route labels land on the features' steps: YouTube Highlights annotates 100-frame windows
every 50 frames of the video's own fps, while ``mm-live data features --dataset youtube_highlights``
writes 5/3 s steps (50 frames at 30 fps). At 25 fps window i covers [2i, 2i + 4) s, not step i."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mm_live.data.public_manifest import STEP_SECONDS, unit_spans, write_public_manifest
from mm_live.data.windows import feature_items
from mm_live.data.youtube_highlights import read_youtube_highlights
from mm_live.errors import DataError

STEP = STEP_SECONDS["youtube_highlights"]  # 5/3 s


def _features(path, n_steps, step=STEP):
    rng = np.random.default_rng(0)
    np.savez(path, features=rng.normal(size=(n_steps, 4)).astype(np.float32),
             step_starts=(step * np.arange(n_steps)).astype(np.float32), step_seconds=np.float32(step))


def _youtube_line(vid, fps, seconds, match):
    clips = [[50.0 * i, 50.0 * i + 100] for i in range(len(match))]
    return {"qid": vid, "vid": vid, "query": "dog", "domain": "dog", "duration": seconds, "fps": fps,
            "frames": seconds * fps, "clip": clips, "match": match, "label": [[int(m > 0)] for m in match]}


def test_25fps_windows_land_on_the_steps_they_cover(tmp_path):
    """20 s at 25 fps: 9 windows of 4 s every 2 s, 12 steps of 5/3 s. Windows 6 and 7 ([12, 16) s and
    [14, 18) s) are highlights. A step takes the mean label of the windows covering its middle:
    step 7 (middle 12.5 s: windows 5 and 6) 0.5, steps 8 and 9 (14.17 s, 15.83 s: windows 6 and 7) 1,
    step 10 (17.5 s: windows 7 and 8) 0.5, every other step 0."""
    ann = tmp_path / "youtube_highlight_val_release.jsonl"
    ann.write_text(json.dumps(_youtube_line("vid25", 25.0, 20.0, [-1, -1, 0, -1, -1, -1, 1, 1, -1])) + "\n")
    (tmp_path / "feats").mkdir()
    _features(tmp_path / "feats" / "vid25.npz", 12)  # int(20 / (5/3))
    train, _ = feature_items("youtube_highlights", ann, tmp_path / "feats")
    rec, video, text, labels = train[0]
    assert video.shape == (12, 4) and text is None and rec.step_seconds == pytest.approx(STEP)
    np.testing.assert_allclose(labels, [0, 0, 0, 0, 0, 0, 0, 0.5, 1, 1, 0.5, 0])
    # the clip route's manifest puts the same labels on the same steps (one conversion for both routes)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "vid25.mp4").write_bytes(b"")  # the manifest only looks the video up by name
    write_public_manifest("youtube_highlights", ann, tmp_path / "videos", tmp_path / "manifest.jsonl")
    line = json.loads((tmp_path / "manifest.jsonl").read_text())
    np.testing.assert_allclose(line["labels"]["ctr"], labels, atol=1e-6)


def test_features_without_a_step_keep_one_row_per_window(tmp_path):
    """A feature file that does not say its step (official releases: one row per annotated window)
    pairs row i with window i, as ``mm-live eval --features`` reads it."""
    ann = tmp_path / "youtube_highlight_val_release.jsonl"
    match = [-1, 1, 1, -1, -1]
    ann.write_text(json.dumps(_youtube_line("v", 25.0, 12.0, match)) + "\n")
    (tmp_path / "feats").mkdir()
    np.save(tmp_path / "feats" / "v.npy", np.ones((5, 3), np.float32))
    (_, _, _, labels), = feature_items("youtube_highlights", ann, tmp_path / "feats")[0]
    np.testing.assert_array_equal(labels, [0, 1, 1, 0, 0])


def test_features_at_another_step_than_the_datasets_clips_are_refused(tmp_path):
    ann = tmp_path / "tvsum_val_release.jsonl"
    ann.write_text(json.dumps({"qid": "t", "vid": "t", "query": "t", "duration": 4, "domain": "BK",
                               "label": np.full((4, 20), 3).tolist()}) + "\n")  # four 2 s clips
    (tmp_path / "feats").mkdir()
    _features(tmp_path / "feats" / "t.npz", 8, step=1.0)
    with pytest.raises(DataError, match="t: its labels are per 2 s clip, the steps 1 s long"):
        feature_items("tvsum", ann, tmp_path / "feats")


def test_real_25fps_videos_get_labels_only_inside_their_highlight_windows(real_data, tmp_path):
    """The val release's non-30 fps videos with features at 5/3 s steps: a step is labelled positive
    only if its middle lies in a highlight window (in seconds at the video's fps), and every
    highlight window gets a positive step. Pairing step i with window i breaks this."""
    path = real_data / "youtube_highlights" / "youtube_highlight_val_release.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    keep = [x for x in lines if abs(x["fps"] - 30) > 1 and any(m > 0 for m in x["match"])]
    assert len(keep) >= 5  # 25 and 23.976 fps videos with highlights
    ann = tmp_path / "youtube_highlight_val_release.jsonl"
    ann.write_text("".join(json.dumps(x) + "\n" for x in keep))
    (tmp_path / "feats").mkdir()
    for x in keep:
        _features(tmp_path / "feats" / f"{x['vid']}.npz", int(x["duration"] / STEP + 1e-6))
    train, held_out = feature_items("youtube_highlights", ann, tmp_path / "feats")
    items = {rec.id: labels for rec, _, _, labels in train + held_out}
    assert len(items) == len(keep)
    for rec in read_youtube_highlights(ann):
        labels = items[rec.id]
        spans = unit_spans(rec)[rec.labels > 0]  # highlight windows, seconds
        mid = (np.arange(len(labels)) + 0.5) * STEP
        inside = ((spans[:, :1] <= mid[None]) & (mid[None] < spans[:, 1:])).any(0)
        assert not (labels[~inside] > 0).any(), rec.id
        assert all(((labels > 0) & (a <= mid) & (mid < b)).any() for a, b in spans), rec.id


def test_tvsum_feature_labels_use_the_clip_routes_fixed_scale(tmp_path):
    """TVSum's 1-5 scores become (x - 1) / 4 on both routes; a per-video min-max (the feature route
    before) turned a video scored 2-3 into 0-1 while the clip route trained the same video on 0.25-0.5."""
    from mm_live.data.public_manifest import scaled_labels
    from mm_live.data.tvsum import read_tvsum

    ann = tmp_path / "tvsum_val_release.jsonl"
    scores = np.array([[2] * 20, [3] * 20, [2] * 10 + [3] * 10, [3] * 20])  # four 2 s clips, 20 raters
    ann.write_text(json.dumps({"qid": "t", "vid": "t", "query": "t", "duration": 8, "domain": "BK",
                               "label": scores.tolist()}) + "\n")
    (tmp_path / "feats").mkdir()
    np.save(tmp_path / "feats" / "t.npy", np.ones((4, 3), np.float32))
    (_, _, _, labels), = feature_items("tvsum", ann, tmp_path / "feats")[0]
    np.testing.assert_allclose(labels, [0.25, 0.5, 0.375, 0.5])
    np.testing.assert_allclose(labels, scaled_labels("tvsum", read_tvsum(ann)[0]))
