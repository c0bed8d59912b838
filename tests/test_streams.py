"""Lazy stream windows: nothing decoded up front, each window equal to the same steps of the whole
clip, a byte-bounded cache, per-stream grouping for evaluation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mm_live.streams as streams
from mm_live.config import Config
from mm_live.data.manifest import read_manifest
from mm_live.data.synthetic import SynthConfig, synthesize
from mm_live.multimodal import MultimodalEncoder
from mm_live.streams import LRU, ClipWindows, nbytes, split_records

sys.path.insert(0, str(Path(__file__).parent / "pipelines"))
from tiny_config import TINY  # noqa: E402


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("streams") / "synth"
    return synthesize(out, SynthConfig(streams=3, seconds=9, seed=5)).manifest


def _dataset(manifest, **kw):
    cfg = Config.from_dict(TINY)
    torch.manual_seed(0)
    enc = MultimodalEncoder.from_config(cfg).eval()
    return ClipWindows(read_manifest(manifest), cfg, enc, window_steps=4, **kw), cfg, enc


def test_nothing_is_decoded_until_a_window_is_asked_for(manifest, monkeypatch):
    calls = []
    real = streams.load_clip
    monkeypatch.setattr(streams, "load_clip", lambda *a, **k: calls.append(k) or real(*a, **k))
    data, _, _ = _dataset(manifest)
    assert calls == [] and len(data) == 3 * 3  # 9 s streams -> windows of 4, 4, 1 steps
    assert [data.steps(i) for i in range(3)] == [9, 9, 9]
    w = data[1]
    assert len(calls) == 1 and (calls[0]["start"], calls[0]["end"]) == pytest.approx((4.0, 8.0))
    assert (w.stream_id, w.start_step, len(w)) == (data.records[0].id, 4, 4)
    assert data[1] is w and len(calls) == 1  # served from the cache


def test_a_window_equals_the_same_steps_of_the_whole_clip(manifest):
    data, cfg, enc = _dataset(manifest, cache_mb=0)
    rec = data.records[0]
    whole = streams.load_clip(rec.clip, **streams.clip_kwargs(cfg))
    from mm_live.comments import read_comments

    full = enc.prepare(whole, streams.comment_bags(read_comments(rec.comments).comments, whole, cfg))
    part = data[1]
    np.testing.assert_array_equal(part.labels, rec.labels[4:8])
    with torch.no_grad():
        a = enc.tokens(part.inputs)
        b = enc.tokens(full[4:8])
    for x, y in zip(a, b):
        torch.testing.assert_close(x.tokens * x.mask[..., None], y.tokens[:, : x.tokens.shape[1]] * y.mask[:, : x.tokens.shape[1], None],
                                   atol=1e-5, rtol=1e-4)


def test_cache_is_bounded_in_bytes():
    lru = LRU(max_bytes=3 * 400)
    for i in range(10):
        lru.put(i, torch.zeros(100))  # 400 bytes each
    assert lru.bytes <= 1200 and sorted(k for k in lru.items) == [7, 8, 9]
    lru.get(7)
    lru.put(10, torch.zeros(100))
    assert sorted(lru.items) == [7, 9, 10]
    lru.put("big", torch.zeros(1000))  # larger than the whole cache: not kept
    assert "big" not in lru.items and nbytes({"a": [torch.zeros(2, dtype=torch.uint8)], "b": np.zeros(3)}) == 2 + 24


def test_split_uses_marked_test_streams_else_every_fourth(manifest):
    recs = read_manifest(manifest)
    for r, split in zip(recs, ("train", "test", "train")):
        r.extra["split"] = split
    train, test = split_records(recs)
    assert [r.id for r in test] == [recs[1].id] and len(train) == 2
    for r in recs:
        r.extra.pop("split", None)
    train, test = split_records(recs)
    assert [r.id for r in test] == [sorted(r.id for r in recs)[0]] and len(train) == 2
