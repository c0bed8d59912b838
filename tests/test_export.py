"""export-index and search through the run's task: segments, resume after a crash, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mm_live.checkpoint import save_checkpoint
from mm_live.cli import main
from mm_live.config import Config
from mm_live.data.synthetic import SynthConfig, synthesize
from mm_live.data.windows import clip_collection
from mm_live.errors import DataError
from mm_live.export import export_index, search_index
from mm_live.index import open_index
from mm_live.pipelines.highlight import build_model

sys.path.insert(0, str(Path(__file__).parent / "pipelines"))
from tiny_config import TINY  # noqa: E402


def _run(path: Path, seed: int = 0, **over) -> Path:
    cfg = Config.from_dict(TINY).replace(**over) if over else Config.from_dict(TINY)
    torch.manual_seed(seed)
    save_checkpoint(path / "best", config=cfg, model=build_model(cfg), kind="highlight")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    synth = synthesize(tmp / "synth", SynthConfig(streams=3, seconds=8, seed=2))
    return tmp, synth.manifest, _run(tmp / "run")


def test_export_segments_then_search_by_id_clip_and_vector(setup, tmp_path, capsys):
    tmp, manifest, run = setup
    out = tmp_path / "index"
    assert main(["export-index", "--checkpoint", str(run), "--data", str(manifest), "--out", str(out),
                 "--segment-seconds", "2", "--nbits", "3"]) == 0
    meta = json.loads((out / "index.json").read_text())
    assert meta["count"] == 3 * 4 and meta["m"] == 4 and meta["nbits"] == 3 and meta["d"] == 16
    assert meta["items"]["start"][:4] == [0.0, 2.0, 4.0, 6.0] and meta["items"]["end"][3] == 8.0
    assert sorted(p.name for p in out.iterdir()) == ["index.faiss", "index.json"]
    capsys.readouterr()
    assert main(["search", "--index", str(out), "--id", "5", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    # The hits are the 3 best inner products of item 5's stored vector with every stored vector
    # (exhaustive PQ search: exact over the decoded vectors), best first.
    index = open_index(out)
    ids = meta["items"]["id"]
    query = index.vector(5) / np.linalg.norm(index.vector(5))  # search normalises its query
    ips = {i: float(index.vector(i) @ query) for i in ids}
    assert len(hits) == 3 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for h in hits:
        assert h["score"] == pytest.approx(ips[h["id"]], abs=1e-4)
    assert hits[-1]["score"] >= sorted(ips.values(), reverse=True)[2] - 1e-4
    clip = next(it.clip for it in clip_collection(manifest))
    res = search_index(out, checkpoint=run, clip=clip, k=4)
    assert len(res.hits[0]) == 4 and all(-1.1 <= h.score <= 1.1 for h in res.hits[0])  # PQ-decoded: about cosine
    np.save(tmp_path / "q.npy", np.ones(16, np.float32))
    assert search_index(out, vector=tmp_path / "q.npy", k=2).ids.shape == (1, 2)


def test_killed_export_leaves_no_index_and_a_rerun_completes(setup, tmp_path, monkeypatch):
    tmp, manifest, run = setup
    items = clip_collection(manifest)
    whole = export_index(run, items, tmp_path / "whole", segment_seconds=4, nbits=2, progress=False)
    from mm_live.pipelines.highlight import HighlightTask

    real = HighlightTask.embed_clip
    calls = []

    def dies_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(HighlightTask, "embed_clip", staticmethod(dies_on_third))
    out = tmp_path / "index"
    with pytest.raises(KeyboardInterrupt):
        export_index(run, items, out, segment_seconds=4, nbits=2, progress=False)
    assert not out.exists()
    monkeypatch.undo()
    calls.clear()
    export_index(run, items, out, segment_seconds=4, nbits=2, progress=False)
    a, b = (json.loads((d / "index.json").read_text()) for d in (whole, out))
    assert a["items"] == b["items"] and a["count"] == b["count"] == 6


def test_search_errors_name_the_problem(setup, tmp_path):
    tmp, manifest, run = setup
    out = export_index(run, clip_collection(manifest), tmp_path / "index", nbits=1, progress=False)
    other = _run(tmp_path / "other", **{"fusion.n_queries": 2})
    clip = next(it.clip for it in clip_collection(manifest))
    with pytest.raises(DataError, match="exported from model config"):
        search_index(out, checkpoint=other, clip=clip)
    with pytest.raises(DataError, match="needs --checkpoint"):
        search_index(out, clip=clip)
    with pytest.raises(DataError, match="exactly one query"):
        search_index(out, item_id=0, vector=tmp_path / "v.npy")
    (tmp_path / "v.npy").write_text("not numpy")
    with pytest.raises(DataError, match="not a .npy array"):
        search_index(out, vector=tmp_path / "v.npy")
    with pytest.raises(DataError, match="no video files"):
        clip_collection(tmp_path / "other")
