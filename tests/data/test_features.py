"""``mm-live data features``: per-step features of two tiny videos from our (tiny) encoders, the
feature route trained on them, and ``mm-live eval --checkpoint`` on that run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mm_live.cli import main
from mm_live.data.features import extract_features
from mm_live.data.sources import load_features
from mm_live.errors import ConfigError
from test_public_manifest import TINY_2S, stand_in_video  # tests/data/test_public_manifest.py

N_CLIPS = {"vidA": 8, "vidB": 7}  # 2 s clips


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    (root / "videos").mkdir()
    rng = np.random.default_rng(0)
    with open(root / "tvsum_val_release.jsonl", "w") as fh:  # TVSum's Lighthouse layout: label = clips x 20
        for vid, n in N_CLIPS.items():
            stand_in_video(root / "videos" / f"{vid}.mp4", 2.0 * n, fps=2)
            label = rng.integers(1, 6, size=(n, 20)).tolist()
            fh.write(json.dumps({"qid": vid, "vid": vid, "query": vid, "duration": n, "domain": "BK", "label": label}) + "\n")
    (root / "tiny.json").write_text(json.dumps(TINY_2S))
    return root


def test_features_are_written_per_video_and_resume(folder, tmp_path):
    out = tmp_path / "feats"
    s = extract_features(folder / "videos", out, config=folder / "tiny.json", dataset="tvsum", batch=3, progress=False)
    assert sorted(s.written) == ["vidA", "vidB"] and s.skipped == [] and s.dim == TINY_2S["fusion"]["d"]
    for vid, n in N_CLIPS.items():
        f = load_features(out / f"{vid}.npz")
        assert f.shape == (n, 16) and np.isfinite(f).all()
        np.testing.assert_allclose(np.load(out / f"{vid}.npz")["step_starts"], 2.0 * np.arange(n))
    a = np.load(out / "vidA.npz")["features"]
    assert np.abs(a[1:] - a[:-1]).max() > 0  # frames change, so do the features
    # resumable: written files are skipped; a deleted one is the only one encoded again
    mtime = (out / "vidB.npz").stat().st_mtime_ns
    (out / "vidA.npz").unlink()
    s2 = extract_features(folder / "videos", out, config=folder / "tiny.json", dataset="tvsum", progress=False)
    assert s2.written == ["vidA"] and s2.skipped == ["vidB"] and (out / "vidB.npz").stat().st_mtime_ns == mtime
    np.testing.assert_allclose(np.load(out / "vidA.npz")["features"], a, atol=1e-5)  # same encoder, same features
    # another step length into the same folder is refused, not mixed
    with pytest.raises(ConfigError, match="use another --out folder"):
        extract_features(folder / "videos", out, config=folder / "tiny.json", step_seconds=1.0, progress=False)
    assert not list(out.glob(".*tmp*"))


@pytest.fixture(scope="module")
def tv_run(folder, tmp_path_factory):
    """Features of the two videos at TVSum's 2 s steps (CLI) and a feature-route run trained on them (CLI)."""
    root = tmp_path_factory.mktemp("tvrun")
    feats, run = root / "feats", root / "run"
    assert main(["data", "features", "--videos", str(folder / "videos"), "--out", str(feats), "--config",
                 str(folder / "tiny.json"), "--dataset", "tvsum"]) == 0
    assert main(["train", "highlight", "--dataset", "tvsum", "--data", str(folder / "tvsum_val_release.jsonl"),
                 "--features", str(feats), "--out", str(run), "--config", str(folder / "tiny.json"),
                 "--epochs", "2"]) == 0
    return feats, run


def test_feature_route_trains_on_extracted_features_and_evaluates(folder, tv_run, tmp_path, capsys):
    feats, run = tv_run
    ann = folder / "tvsum_val_release.jsonl"
    assert json.loads((feats / "features.json").read_text())["dim"] == 16
    cfg = json.loads((run / "best" / "config.json").read_text())
    assert cfg["task"]["route"] == "features" and cfg["task"]["feature_dims"] == [16, 0]
    capsys.readouterr()
    assert main(["eval", "--dataset", "tvsum", "--checkpoint", str(run), "--features", str(feats),
                 "--annotations", str(ann)]) == 0
    table = capsys.readouterr().out
    assert "top5_mAP" in table or "mAP" in table
    metrics = json.loads((run / "eval_tvsum" / "metrics.json").read_text())
    assert metrics["n"] == 2 and not metrics["notes"]  # every annotated video had features: the full protocol
    preds = [json.loads(x) for x in (run / "eval_tvsum" / "predictions.jsonl").read_text().splitlines()]
    assert {p["vid"]: len(p["pred_saliency_scores"]) for p in preds} == N_CLIPS
    # a feature-route run has no video encoders to extract with
    assert main(["data", "features", "--checkpoint", str(run), "--videos", str(folder / "videos"),
                 "--out", str(tmp_path / "f2")]) == 2
    assert "no video encoders" in capsys.readouterr().err


def test_feature_route_eval_maps_steps_onto_youtube_windows(folder, tv_run, tmp_path, capsys):
    """A 25 fps YouTube Highlights video: 7 windows of 100 frames every 50 (2 s hop) but 9 steps of
    5/3 s; the predictions come per window, as the annotations."""
    feats = tmp_path / "feats_yt"
    extract_features(folder / "videos", feats, config=folder / "tiny.json", dataset="youtube_highlights",
                     progress=False)
    assert load_features(feats / "vidA.npz").shape[0] == 9  # 16 s / (5/3 s)
    clips = [[50.0 * i, 50.0 * i + 100] for i in range(7)]
    match = [-1, 1, 1, -1, -1, 1, -1]
    ann = tmp_path / "youtube_highlight_val_release.jsonl"
    ann.write_text(json.dumps({"qid": "vidA", "vid": "vidA", "query": "dog", "domain": "dog", "duration": 16.0,
                               "fps": 25.0, "frames": 400.0, "clip": clips, "match": match,
                               "label": [[int(m > 0)] for m in match]}) + "\n")
    run = tv_run[1]  # trained on 16-d features like these; the step length only matters to the mapping
    assert main(["eval", "--dataset", "youtube_highlights", "--checkpoint", str(run), "--features", str(feats),
                 "--annotations", str(ann), "--out-dir", str(tmp_path / "ev")]) == 0
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert [len(p["pred_saliency_scores"]) for p in preds] == [7]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 1 and "evaluated on 1 of 1" not in " ".join(metrics["notes"])
