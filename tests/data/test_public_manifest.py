"""``mm-live data manifest`` on the real annotation files with stand-in videos of the annotated
durations (nobody here has the datasets' videos), then the clip route trained on it and
``mm-live eval --checkpoint`` giving the official metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mm_live.cli import main
from mm_live.config import Config
from mm_live.data.public_manifest import (STEP_SECONDS, split_of, steps_to_units, units_to_steps,
                                          write_public_manifest)
from mm_live.data.manifest import read_manifest
from mm_live.errors import DataError
from mm_live.video_writer import write_video

# Tiny random encoders, 2 s steps (QVHighlights' clips), one small frame per step.
TINY_2S = {
    "media": {"frame_size": 32, "step_seconds": 2.0},
    "encoders": {"frame": {"backbone": "tiny"}, "audio": {"backbone": "tiny"},
                 "comment": {"backbone": "tiny", "max_comments_per_step": 4}},
    "fusion": {"d": 16, "n_queries": 2, "n_layers": 1, "n_heads": 2, "d_emb": 8},
    "quant": {"m": 2},
    "highlight": {"d_model": 16, "n_layers": 1, "n_heads": 2, "lookback_steps": 8, "window_steps": 40},
    "train": {"epochs": 1, "batch_size": 2, "eval_every": 2, "warmup_steps": 1, "lr": 0.003},
}


def stand_in_video(path: Path, seconds: float, fps: int = 1, size: int = 32) -> Path:
    """A silent video of ``seconds`` (tiny frames, few fps) whose brightness changes over time."""
    n = int(np.ceil(seconds * fps))
    frames = (np.full((size, size, 3), (37 * i) % 256, dtype=np.uint8) for i in range(n))
    write_video(path, frames, fps=fps)
    return path


def test_split_is_read_from_the_file_name():
    assert split_of("highlight_val_release.jsonl") == "val"
    assert split_of("tvsum_train_release.jsonl") == "train"
    assert split_of("a/highlight_test_release.jsonl") == "test"
    assert split_of("ydata-tvsum50.mat") is None and split_of("retrain.jsonl") is None


def test_youtube_windows_map_to_steps_and_back():
    # windows of 100 frames every 50 at 30 fps: [0, 3.33), [1.67, 5), [3.33, 6.67) s; steps of 5/3 s
    units = np.array([[0, 100], [50, 150], [100, 200]], dtype=float) / 30.0
    step = STEP_SECONDS["youtube_highlights"]
    labels = units_to_steps(units, np.array([1.0, 0.0, 0.0]), step, 4)
    np.testing.assert_allclose(labels, [1.0, 0.5, 0.0, 0.0])  # step 3 is covered by no window: nearest one
    back = steps_to_units(units, np.array([0.9, 0.5, 0.1, 0.3]), step)
    np.testing.assert_allclose(back, [0.7, 0.3, 0.2])  # the uncovered step 3 counts for its nearest window


@pytest.fixture(scope="module")
def qvh(real_data, tmp_path_factory):
    """A manifest of QVHighlights val for two stand-in videos (the other 1,500-odd are 'missing')."""
    from mm_live.data.qvhighlights import read_qvhighlights

    ann = real_data / "qvhighlights" / "highlight_val_release.jsonl"
    records = read_qvhighlights(ann)
    by_vid: dict[str, list] = {}
    for r in records:
        by_vid.setdefault(r.video_id, []).append(r)
    vids = sorted(by_vid, key=lambda v: (-len(by_vid[v]), v))[:2]  # two videos with several queries each
    root = tmp_path_factory.mktemp("qvh")
    (root / "videos").mkdir()
    for v in vids:
        stand_in_video(root / "videos" / f"{v}.mp4", by_vid[v][0].duration)
    return ann, root, vids, by_vid, len(by_vid)


def test_manifest_from_qvhighlights_val(qvh, capsys):
    ann, root, vids, by_vid, n_vids = qvh
    out = root / "manifest.jsonl"
    assert main(["data", "manifest", "--dataset", "qvhighlights", "--annotations", str(ann), "--videos",
                 str(root / "videos"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    n_lines = sum(len(by_vid[v]) for v in vids)
    assert printed[0].startswith(f"wrote {n_lines} lines (2 videos; val {n_lines})")
    assert printed[1].startswith(f"{n_vids - 2} videos of {n_vids} missing:") and "skipped" in printed[1]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    rec = by_vid[vids[0]][0]
    first = next(x for x in lines if x["stream_id"] == rec.id)
    assert first["clip"] == f"videos/{vids[0]}.mp4" and first["step_seconds"] == 2.0
    assert first["qid"] == rec.extra["qid"] and first["vid"] == vids[0] and first["dataset_split"] == "val"
    assert "split" not in first  # one file: training holds out every 4th line itself
    np.testing.assert_allclose(first["labels"]["ctr"], rec.labels / 4, atol=1e-6)
    assert len(read_manifest(out)) == n_lines  # the own-logs reader takes it
    # --strict refuses, naming the count
    assert main(["data", "manifest", "--dataset", "qvhighlights", "--annotations", str(ann), "--videos",
                 str(root / "videos"), "--out", str(root / "strict.jsonl"), "--strict"]) == 2
    assert f"{n_vids - 2} videos of {n_vids} missing" in capsys.readouterr().err
    assert not (root / "strict.jsonl").exists()


def test_clip_route_trains_on_the_manifest_and_eval_gives_official_metrics(qvh, tmp_path, capsys):
    from mm_live.pipelines.highlight import train

    ann, root, vids, by_vid, _ = qvh
    manifest = root / "manifest_train.jsonl"
    write_public_manifest("qvhighlights", ann, root / "videos", manifest)
    run = tmp_path / "run"
    res = train(manifest, run, config=Config.from_dict(TINY_2S), progress=False, max_steps=2)
    assert res.steps == 2 and (run / "best" / "config.json").is_file()
    capsys.readouterr()
    assert main(["eval", "--dataset", "qvhighlights", "--checkpoint", str(run), "--data", str(manifest),
                 "--annotations", str(ann), "--out", str(tmp_path / "m.json")]) == 0
    table = capsys.readouterr().out
    assert "HL-min-VeryGood-mAP" in table and "evaluated on" in table
    metrics = json.loads((tmp_path / "m.json").read_text())
    preds = [json.loads(x) for x in (run / "eval_qvhighlights" / "predictions.jsonl").read_text().splitlines()]
    n = sum(len(by_vid[v]) for v in vids)
    assert len(preds) == n and all(len(p["pred_saliency_scores"]) == 75 for p in preds)  # 150 s / 2 s
    # queries on one video share its scores (the model does not read the query)
    per_vid = {p["vid"]: p["pred_saliency_scores"] for p in preds}
    assert all(p["pred_saliency_scores"] == per_vid[p["vid"]] for p in preds)
    assert metrics["n"] == n and "evaluated on" in metrics["notes"][0]
    assert {"HL-min-Fair-mAP", "HL-min-Good-Hit1", "HL-min-VeryGood-mAP"} <= set(metrics["metrics"])
    assert all(0.0 <= v <= 100.0 for v in metrics["metrics"].values())
    # a run evaluated against a manifest with another step length is refused
    other = root / "other_step.jsonl"
    other.write_text("".join(json.dumps({**json.loads(x), "step_seconds": 1.0}) + "\n"
                             for x in manifest.read_text().splitlines()))
    assert main(["eval", "--dataset", "qvhighlights", "--checkpoint", str(run), "--data", str(other),
                 "--annotations", str(ann)]) == 2
    assert "2.0 s steps" in capsys.readouterr().err


def test_tvsum_and_youtube_manifests_keep_units_and_splits(real_data, tmp_path):
    from mm_live.data.tvsum import read_tvsum_jsonl
    from mm_live.data.youtube_highlights import read_youtube_highlights

    train_f, val_f = real_data / "tvsum" / "tvsum_train_release.jsonl", real_data / "tvsum" / "tvsum_val_release.jsonl"
    tr, va = read_tvsum_jsonl(train_f)[0], read_tvsum_jsonl(val_f)[0]
    (tmp_path / "v").mkdir()
    for r in (tr, va):
        (tmp_path / "v" / f"{r.video_id}.mp4").write_bytes(b"")  # the manifest only pairs names
    s = write_public_manifest("tvsum", [train_f, val_f], tmp_path / "v", tmp_path / "tvsum.jsonl")
    assert s.lines == 2 and s.splits == {"train": 1, "val": 1} and s.total_videos == 50
    lines = {x["stream_id"]: x for x in map(json.loads, (tmp_path / "tvsum.jsonl").read_text().splitlines())}
    assert "split" not in lines[tr.id] and lines[va.id]["split"] == "test"  # val held out when train is given
    np.testing.assert_allclose(lines[va.id]["labels"]["ctr"], (va.labels - 1) / 4, atol=1e-6)
    assert lines[va.id]["domain"] == va.domain

    yt_f = real_data / "youtube_highlights" / "youtube_highlight_val_release.jsonl"
    yt = read_youtube_highlights(yt_f)[0]
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / f"{yt.video_id}.mkv").write_bytes(b"")
    write_public_manifest("youtube_highlights", yt_f, tmp_path / "y", tmp_path / "yt.jsonl")
    line = json.loads((tmp_path / "yt.jsonl").read_text())
    assert line["clip"] == f"y/{yt.video_id}.mkv" and len(line["units"]) == len(yt.labels)
    assert len(line["labels"]["ctr"]) == int(yt.duration / STEP_SECONDS["youtube_highlights"] + 1e-6)
    # the step labels go back onto the windows: positives stay on top
    back = steps_to_units(np.array(line["units"]), np.array(line["labels"]["ctr"]), line["step_seconds"])
    assert back[yt.labels > 0].min() > back[yt.labels == 0].max() - 0.51
    with pytest.raises(DataError, match="no annotated video"):
        write_public_manifest("youtube_highlights", yt_f, tmp_path / "v", tmp_path / "none.jsonl")
