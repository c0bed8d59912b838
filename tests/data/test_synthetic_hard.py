"""The hard synthetic generator: every event type is planted, recorded in truth.json and visible in
exactly the modalities truth.json names; the chat text is mostly distinct; easy output did not move."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mm_live.data.chat import ChatText, distinct_share
from mm_live.data.synthetic import HARD_TYPES, SynthConfig, make_comments_hard, plan_stream, synthesize
from mm_live.media import load_clip

SECONDS = 60


@pytest.fixture(scope="module")
def hard(tmp_path_factory) -> Path:
    cfg = SynthConfig.hard(streams=1, seconds=SECONDS, seed=3, width=64, height=36, fps=5, chat_source="compositional")
    return synthesize(tmp_path_factory.mktemp("hard") / "d", cfg).out_dir


def _stats(root: Path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """truth, per-step luma, motion (mean |frame difference|), audio RMS, ctr labels and the comments."""
    entry = json.loads((root / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[0])
    truth = json.loads((root / entry["truth"]).read_text(encoding="utf-8"))
    clip = load_clip(root / entry["clip"], frames_per_step=5, frame_size=None)
    frames = clip.frames.float()  # [T, 5, 3, H, W]
    luma = frames.mean(dim=(1, 2, 3, 4)).numpy()
    motion = (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(1, 2, 3, 4)).numpy()
    rms = clip.audio.pow(2).mean(dim=1).sqrt().numpy()
    comments = [json.loads(x) for x in (root / entry["comments"]).read_text(encoding="utf-8").splitlines()]
    return truth, luma, motion, rms, np.array(entry["labels"]["ctr"]), comments


def _inside(start: float, end: float, n: int) -> np.ndarray:
    t = np.arange(n)
    return (t >= np.ceil(start)) & (t + 1 <= np.floor(end))  # steps wholly inside [start, end)


def _touching(spans: list[tuple[float, float]], n: int) -> np.ndarray:
    t = np.arange(n)
    return np.any([(t + 1 > s) & (t < e) for s, e in spans], axis=0)


def test_truth_records_every_event_type_with_its_modalities_and_lag(hard):
    truth, *_ = _stats(hard)
    events = truth["events"]
    assert sorted(e["type"] for e in events) == sorted(HARD_TYPES)
    for e in events:
        typ = HARD_TYPES[e["type"]]
        assert e["modalities"] == list(typ.modalities) and e["ctr_rise"] == typ.rises
        b = e["comment_burst"]
        assert (b is not None) == ("comments" in typ.modalities)
        if b is not None and typ.burst == "hype":
            assert 1.0 <= b["lag"] <= 8.0 and b["start"] == pytest.approx(e["start"] + b["lag"], abs=2e-3)
    assert [[h["start"], h["end"]] for h in truth["highlights"]] == [[e["start"], e["end"]] for e in events if e["ctr_rise"]]


def test_each_event_shows_in_the_modalities_truth_names_and_nowhere_else(hard):
    truth, luma, motion, rms, ctr, comments = _stats(hard)
    n = len(luma)
    spans = [(e["start"], max(e["end"], (e["comment_burst"] or {}).get("end", 0.0))) for e in truth["events"]]
    quiet = ~_touching(spans, n)  # no event, no reaction: the dull scene
    assert quiet.sum() >= 5
    lo_l, hi_l, hi_m, hi_r = luma[quiet].min(), luma[quiet].max(), motion[quiet].max(), rms[quiet].max()
    times = np.array([c["t"] for c in comments])
    bg_rate = len(times) / SECONDS  # comments per second, all included
    for e in truth["events"]:
        steps = _inside(e["start"], e["end"], n)
        assert steps.sum() >= 1, e
        mods = e["modalities"]
        if "visual" in mods:  # the bright disc + flash lifts brightness and motion beyond the dull scene
            assert luma[steps].min() > hi_l + 5 and motion[steps].min() > 2 * hi_m, e["type"]
        else:  # the frames stay inside the dull scene's range
            assert lo_l - 1 <= luma[steps].min() and luma[steps].max() <= hi_l + 1, e["type"]
            assert motion[steps].max() <= 1.2 * hi_m + 0.5, e["type"]
        if "audio" in mods:
            assert rms[steps].min() > 5 * hi_r, e["type"]
        else:
            assert rms[steps].max() <= 1.2 * hi_r, e["type"]
        b = e["comment_burst"]
        if b is not None:  # a burst several times denser than the chat around it
            k = ((times >= b["start"] - 1e-3) & (times <= b["end"] + 1e-3)).sum()
            assert k / (b["end"] - b["start"]) > 2 * bg_rate, e["type"]
        # the label rises over highlights only
        rise = ctr[steps].mean() - np.median(ctr[quiet])
        assert (rise > 0.3) if e["ctr_rise"] else (abs(rise) < 0.1), (e["type"], rise)


def test_chat_text_is_mostly_distinct_at_ten_minute_density():
    cfg = SynthConfig.hard(seconds=600.0, seed=0, chat_source="compositional")
    plan = plan_stream(0, cfg)
    rng = np.random.default_rng(0)
    comments = make_comments_hard(plan, rng, np.arange(100, 160), cfg, ChatText(0, source="compositional"))
    texts = [c["text"] for c in comments]
    assert len(texts) > 1000  # ~1.2/s of chat plus the bursts
    assert distinct_share(texts) >= 0.7
    # hype and spam lines read differently from ordinary chat: no spam line is a chat line
    spam = set(ChatText(1, source="compositional").lines(200, "spam"))
    assert not spam & set(ChatText(1, source="compositional").lines(500, "chat"))


def test_chat_text_reads_the_qvhighlights_queries_when_present(real_data):
    path = real_data / "qvhighlights" / "highlight_val_release.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    chat = ChatText(0, source=real_data)
    assert chat.source == "qvhighlights" and len(chat.sentences) > 1500
    lines = chat.lines(1800, "chat")
    assert distinct_share(lines) >= 0.7 and "QVHighlights" in chat.describe()


def _text_hashes(root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json", ".csv"))
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_hard_is_deterministic_and_easy_did_not_move(tmp_path):
    kw = dict(streams=1, seconds=20.0, seed=4, width=32, height=32, fps=2)
    a = synthesize(tmp_path / "a", SynthConfig.hard(chat_source="compositional", **kw)).out_dir
    b = synthesize(tmp_path / "b", SynthConfig.hard(chat_source="compositional", **kw)).out_dir
    assert _text_hashes(a) == _text_hashes(b)
    # Pinned before the hard generator existed: the easy generator's labels, truth and comments.
    easy = synthesize(tmp_path / "e", SynthConfig(**kw)).out_dir
    assert _text_hashes(easy) == EASY_TEXT_SHA256


EASY_TEXT_SHA256 = "c550e372579cfa0fa884c60e3d551b147aeab3a2325c1ddb1d5ac09af824b44b"
