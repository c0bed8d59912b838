"""Own-logs manifest reader and pairing records with video / feature folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mm_live.data.manifest import check_media, read_manifest
from mm_live.data.records import HighlightRecord
from mm_live.data.sources import load_features, pair_features, pair_videos
from mm_live.errors import DataError


def _line(i: int, **over) -> dict:
    d = {"stream_id": f"s{i}", "clip": f"streams/s{i}.mp4", "comments": f"streams/s{i}.comments.jsonl",
         "streamer_id": 7, "step_seconds": 1.0, "labels": {"ctr": [0.1, 0.2, 0.3]}, "split": "train" if i else "test"}
    return d | over


def _manifest(tmp_path: Path, lines: list[dict]) -> Path:
    p = tmp_path / "m" / "manifest.jsonl"
    p.parent.mkdir(exist_ok=True)
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return p


def test_paths_relative_to_manifest_and_extra_keys(tmp_path: Path):
    p = _manifest(tmp_path, [_line(0, highlights=[[1, 2]]), _line(1, comments=None)])
    a, b = read_manifest(p)
    assert a.clip == p.parent / "streams/s0.mp4" and b.comments is None
    assert a.streamer_id == "7" and a.n_steps == 3 and a.duration == 3.0
    assert a.extra["highlights"] == [[1, 2]] and a.extra["split"] == "test"
    assert [r.id for r in read_manifest(p, split="train")] == ["s1"]


@pytest.mark.parametrize("over, match", [
    ({"labels": {"ctr": [0.1, "x"]}}, r"manifest\.jsonl:2: field 'labels\.ctr' must be a list of numbers"),
    ({"labels": {"clicks": [1]}}, r"manifest\.jsonl:2: field 'ctr' is missing"),
    ({"step_seconds": 0}, r"manifest\.jsonl:2: field 'step_seconds' must be > 0"),
    ({"stream_id": "s0"}, r"manifest\.jsonl:2: field 'stream_id' 's0' already used on line 1"),
    ({"clip": None}, r"manifest\.jsonl:2: field 'clip' must be a path"),
])
def test_errors_name_line_and_field(tmp_path: Path, over: dict, match: str):
    p = _manifest(tmp_path, [_line(0), _line(1, **over)])
    with pytest.raises(DataError, match=match):
        read_manifest(p)


def test_check_media_lists_every_missing_file_once(tmp_path: Path):
    p = _manifest(tmp_path, [_line(i) for i in range(7)])
    (p.parent / "streams").mkdir()
    (p.parent / "streams" / "s0.mp4").write_bytes(b"x")
    with pytest.raises(DataError, match=r"^13 manifest media files missing: .*s0\.comments\.jsonl.* and 3 more"):
        check_media(read_manifest(p))


def _records(ids) -> list[HighlightRecord]:
    return [HighlightRecord(id=f"q{v}", video_id=v, duration=4.0, step_seconds=2.0, labels=np.zeros(2)) for v in ids]


def test_pair_videos_one_error_for_all_missing(tmp_path: Path):
    for v in ("a", "b"):
        (tmp_path / f"{v}.mp4").write_bytes(b"x")
    paired = pair_videos(_records(["a", "b", "a"]), tmp_path)
    assert [r.clip.name for r in paired] == ["a.mp4", "b.mp4", "a.mp4"]
    ids = [f"v{i:02d}" for i in range(15)]
    with pytest.raises(DataError) as err:
        pair_videos(_records(["a", *ids]), tmp_path)
    msg = str(err.value)
    assert msg.startswith("15 videos of 16 missing: v00, v01") and "v09 and 5 more" in msg and "v10" not in msg


def test_pair_and_load_features(tmp_path: Path):
    np.savez(tmp_path / "a.npz", features=np.ones((3, 4)))
    np.save(tmp_path / "b_rgb.npy", np.zeros((2, 5)))
    np.savez(tmp_path / "c.npz", pooler_output=np.ones((2, 2)), last_hidden_state=np.ones((2, 2)))
    a, b = pair_features(_records(["a", "b"]), tmp_path)
    assert load_features(a.feature_path).shape == (3, 4) and load_features(b.feature_path).dtype == np.float32
    with pytest.raises(DataError, match="no array 'features'"):
        load_features(tmp_path / "c.npz")
    assert load_features(tmp_path / "c.npz", key="pooler_output").shape == (2, 2)
    with pytest.raises(DataError, match="1 feature files of 2 missing: zz"):
        pair_features(_records(["a", "zz"]), tmp_path)


def test_non_utf8_manifest_and_directory_are_one_line_errors(tmp_path: Path):
    p = _manifest(tmp_path, [_line(0)])
    p.write_bytes(p.read_bytes() + json.dumps(_line(1)).encode().replace(b"train", b"tr\xe4in") + b"\n")
    with pytest.raises(DataError, match=r"manifest\.jsonl:2: byte 0xe4 at offset \d+ is not UTF-8; re-save the file as UTF-8$"):
        read_manifest(p)
    with pytest.raises(DataError, match=r"m: is a directory, not a manifest file"):
        read_manifest(p.parent)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
@pytest.mark.parametrize("damage", ["empty", "truncated", "corrupt_middle", "pickle"])
def test_damaged_feature_files_are_one_line_data_errors(tmp_path: Path, suffix: str, damage: str):
    p = tmp_path / f"v{suffix}"
    feats = np.arange(4000, dtype=np.float32).reshape(500, 8)
    np.save(p, feats) if suffix == ".npy" else np.savez(p, features=feats)
    data = bytearray(p.read_bytes())
    if damage == "empty":
        data = bytearray()
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "corrupt_middle":
        data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    else:
        np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        data = bytearray((tmp_path / "obj.npy").read_bytes())
    p.write_bytes(bytes(data))
    if damage == "corrupt_middle" and suffix == ".npy":  # raw float bytes: nothing to detect, the shape is intact
        assert load_features(p).shape == (500, 8)
        return
    with pytest.raises(DataError) as err:
        load_features(p)
    assert str(err.value).startswith(f"{p}: ") and "\n" not in str(err.value)
