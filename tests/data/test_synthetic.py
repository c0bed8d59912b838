"""The synthetic live-stream generator: planted events line up across labels, media, comments and
KuaiLive tables; same seed gives the same bytes."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest

from mm_live.cli import main
from mm_live.data.synthetic import EXCITED, SynthConfig, synthesize
from mm_live.errors import ConfigError

SECONDS = 20.0
REQUIRED = {
    "user": {"user_id", "age", "gender", "country", "device_brand", "device_price", "reg_timestamp", "fans_num", "follow_num"},
    "streamer": {"streamer_id", "gender", "age", "country", "device_brand", "device_price", "live_operation_tag", "fans_user_num", "reg_timestamp"},
    "room": {"live_id", "streamer_id", "live_type", "live_content_category", "start_timestamp", "end_timestamp"},
    "click": {"user_id", "live_id", "streamer_id", "timestamp", "watch_live_time"},
    "comment": {"user_id", "live_id", "streamer_id", "timestamp"},
    "like": {"user_id", "live_id", "streamer_id", "timestamp"},
    "gift": {"user_id", "live_id", "streamer_id", "timestamp", "gift_price"},
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    summary = synthesize(out, SynthConfig(streams=3, seconds=SECONDS, seed=0))
    assert summary.streams == ["s0000", "s0001", "s0002"] and summary.manifest == out / "manifest.jsonl"
    assert "3 synthetic streams" in summary.describe()
    return out


def _manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


def _truth(root: Path, entry: dict) -> dict:
    return json.loads((root / entry["truth"]).read_text())


def _steps_inside(spans: list[tuple[float, float]], n: int) -> np.ndarray:
    """[n] bool: step t = [t, t+1) lies entirely inside one of ``spans``."""
    t = np.arange(n)
    return np.any([(t >= s) & (t + 1 <= e) for s, e in spans], axis=0) if spans else np.zeros(n, bool)


def _steps_touching(spans: list[tuple[float, float]], n: int) -> np.ndarray:
    t = np.arange(n)
    return np.any([(t + 1 > s) & (t < e) for s, e in spans], axis=0) if spans else np.zeros(n, bool)


def _csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- labels and truth


def test_manifest_entries_point_to_files_and_label_every_step(synth):
    entries = _manifest(synth)
    assert [e["stream_id"] for e in entries] == ["s0000", "s0001", "s0002"]
    for e in entries:
        assert {"stream_id", "clip", "comments", "streamer_id", "step_seconds", "labels"} <= e.keys()
        assert (synth / e["clip"]).is_file() and (synth / e["comments"]).is_file() and (synth / e["truth"]).is_file()
        ctr = np.array(e["labels"]["ctr"])
        assert len(ctr) == math.ceil(SECONDS / e["step_seconds"]) and ctr.min() >= 0 and ctr.max() <= 1
        assert e["split"] in ("train", "test")
        assert e["highlights"] == [[h["start"], h["end"]] for h in _truth(synth, e)["highlights"]]
    # streams_per_streamer=2: the first two streams share a streamer, the third has its own.
    assert entries[0]["streamer_id"] == entries[1]["streamer_id"] != entries[2]["streamer_id"]


def test_ctr_labels_rise_over_planted_highlights(synth):
    for e in _manifest(synth):
        ctr = np.array(e["labels"]["ctr"])
        spans = [(h["start"], h["end"]) for h in _truth(synth, e)["highlights"]]
        assert spans, "every stream has at least one highlight"
        inside = _steps_inside(spans, len(ctr))
        # 3 s after each highlight the label is still decaying; leave those steps out of "outside".
        outside = ~_steps_touching([(s, e_ + 3.0) for s, e_ in spans], len(ctr))
        assert ctr[inside].mean() - ctr[outside].mean() > 0.3
        peak = int(np.argmax(ctr))
        assert any(s - 1 <= peak <= e_ + 1 for s, e_ in spans), (peak, spans)


def test_every_comment_burst_lags_its_highlight_by_1_to_5_s(synth):
    for e in _manifest(synth):
        truth = _truth(synth, e)
        comments = [json.loads(line) for line in (synth / e["comments"]).read_text(encoding="utf-8").splitlines()]
        times = [c["t"] for c in comments]
        assert times == sorted(times) and all({"t", "user_id", "text"} == c.keys() for c in comments)
        excited = np.array([c["t"] for c in comments if c["text"] in EXCITED])
        bursts = [h["comment_burst"] for h in truth["highlights"]]
        for h, b in zip(truth["highlights"], bursts):
            assert 1.0 <= b["lag"] <= 5.0
            assert b["start"] == pytest.approx(h["start"] + b["lag"], abs=2e-3)
            # Nothing excited between the event and the reaction; the whole burst inside its window.
            assert not np.any((excited >= h["start"]) & (excited < b["start"] - 1e-3))
            assert np.sum((excited >= b["start"] - 1e-3) & (excited <= b["end"] + 1e-3)) == b["n_comments"]
            assert excited[excited >= b["start"] - 1e-3].min() == pytest.approx(b["start"], abs=2e-3)
        chatter = [d for d in truth["distractors"] if d["kind"] == "chatter_burst"]
        # Excited comments come only from bursts (highlight reactions and comment-only distractors).
        assert len(excited) == sum(b["n_comments"] for b in bursts) + sum(d["n_comments"] for d in chatter)
        assert len(comments) > len(excited), "background chatter is there too"


# ----------------------------------------------------------------------------- media


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        info = {
            "vcodec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt, "size": (v.width, v.height),
            "acodec": a.codec_context.name, "rate": a.rate, "channels": a.codec_context.channels,
            "vdur": float(v.duration * v.time_base), "adur": float(a.duration * a.time_base),
        }
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)
        c.seek(0)
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return frames, audio, info


def test_clip_is_h264_and_aac_of_the_right_duration(synth):
    frames, audio, info = _decode(synth / "streams" / "s0000.mp4")
    assert (info["vcodec"], info["pix_fmt"], info["size"]) == ("h264", "yuv420p", (320, 180))
    assert (info["acodec"], info["rate"], info["channels"]) == ("aac", 16000, 1)
    assert len(frames) == SECONDS * 10 and info["vdur"] == pytest.approx(SECONDS, abs=0.05)
    assert info["adur"] == pytest.approx(SECONDS, abs=0.1) and len(audio) == pytest.approx(SECONDS * 16000, abs=2048)


def test_highlights_show_in_frames_and_audio_and_distractors_confuse_single_modalities(synth):
    for e in _manifest(synth):
        truth = _truth(synth, e)
        frames, audio, _ = _decode(synth / e["clip"])
        n = int(SECONDS)
        luma = frames.reshape(n, 10, -1).mean(axis=2).mean(axis=1)  # [n] mean brightness per step
        motion = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
        motion = np.concatenate([[0.0], motion]).reshape(n, 10).mean(axis=1)  # [n]
        rms = np.sqrt((audio[: n * 16000].reshape(n, 16000) ** 2).mean(axis=1))  # [n]
        hl = _steps_inside([(h["start"], h["end"]) for h in truth["highlights"]], n)
        events = [(h["start"], h["end"]) for h in truth["highlights"]] + [(d["start"], d["end"]) for d in truth["distractors"]]
        quiet = ~_steps_touching(events, n)
        assert hl.any() and quiet.any()
        assert luma[hl].mean() > luma[quiet].mean() + 15
        assert motion[hl].mean() > 3 * motion[quiet].mean()
        assert rms[hl].mean() > 3 * rms[quiet].max()
        for d in truth["distractors"]:
            steps = _steps_inside([(d["start"], d["end"])], n)
            if d["kind"] == "noise_burst" and steps.any():  # as loud as a highlight: audio alone is fooled
                assert rms[steps].mean() > 0.5 * rms[hl].mean()
            if d["kind"] == "scene_cut" and steps.any():  # the picture changes colour without a highlight
                cut = frames.reshape(n, 10, -1, 3)[steps].mean(axis=(0, 1, 2))
                base = frames.reshape(n, 10, -1, 3)[quiet].mean(axis=(0, 1, 2))
                assert np.abs(cut - base).max() > 10


# ----------------------------------------------------------------------------- KuaiLive tables


def test_kuailive_tables_have_the_schema_and_consistent_ids(synth):
    kl = synth / "kuailive"
    tables = {}
    for name, cols in REQUIRED.items():
        header, rows = _csv(kl / f"{name}.csv")
        assert cols <= set(header), (name, cols - set(header))
        tables[name] = rows
    rooms = {int(r["live_id"]): r for r in tables["room"]}
    users = {int(r["user_id"]) for r in tables["user"]}
    streamers = {int(r["streamer_id"]) for r in tables["streamer"]}
    assert {int(r["streamer_id"]) for r in tables["room"]} == streamers
    assert [int(e["live_id"]) for e in _manifest(synth)] == list(rooms)
    for name in ("click", "comment", "like", "gift"):
        assert tables[name], name
        for r in tables[name]:
            room = rooms[int(r["live_id"])]
            assert r["streamer_id"] == room["streamer_id"] and int(r["user_id"]) in users
            assert int(room["start_timestamp"]) <= int(r["timestamp"]) < int(room["end_timestamp"])
    assert all(int(r["gift_price"]) > 0 for r in tables["gift"])
    n_comments = sum(len((synth / e["comments"]).read_text(encoding="utf-8").splitlines()) for e in _manifest(synth))
    assert len(tables["comment"]) == n_comments
    emb = np.load(kl / "title_embeddings.npy")
    assert emb.dtype == np.float32 and emb.shape == (len(rooms), 128)


def test_gifts_and_clicks_concentrate_in_highlights(synth):
    kl = synth / "kuailive"
    rooms = {int(r["live_id"]): int(r["start_timestamp"]) for r in _csv(kl / "room.csv")[1]}
    windows = {e["live_id"]: [(s, e_ + 2.0) for s, e_ in e["highlights"]] for e in _manifest(synth)}
    covered = sum(min(e_, SECONDS) - s for w in windows.values() for s, e_ in w) / (SECONDS * len(windows))
    for name in ("gift", "click"):
        rows = _csv(kl / f"{name}.csv")[1]
        t = [(int(r["live_id"]), (int(r["timestamp"]) - rooms[int(r["live_id"])]) / 1000.0) for r in rows]
        share = np.mean([any(s <= x < e for s, e in windows[live]) for live, x in t])
        assert share > covered + 0.2, (name, share, covered)


# ----------------------------------------------------------------------------- determinism, config, CLI


def test_same_seed_same_bytes_other_seed_differs_and_streams_do_not_depend_on_count(tmp_path):
    cfg = dict(seconds=6.0, width=64, height=48)
    a = _hashes(synthesize(tmp_path / "a", SynthConfig(streams=2, seed=7, **cfg)).out_dir)
    b = _hashes(synthesize(tmp_path / "b", SynthConfig(streams=2, seed=7, **cfg)).out_dir)
    c = _hashes(synthesize(tmp_path / "c", SynthConfig(streams=2, seed=8, **cfg)).out_dir)
    one = _hashes(synthesize(tmp_path / "one", SynthConfig(streams=1, seed=7, **cfg)).out_dir)
    assert a == b and len(a) == 2 * 3 + 7 + 1 + 1  # per stream mp4/comments/truth; 7 csv + npy; manifest
    for f in ("streams/s0000.mp4", "streams/s0001.mp4", "streams/s0000.comments.jsonl", "truth/s0000.json", "manifest.jsonl", "kuailive/click.csv"):
        assert a[f] != c[f], f
    for f in ("streams/s0000.mp4", "streams/s0000.comments.jsonl", "truth/s0000.json", "kuailive/user.csv"):
        assert one[f] == a[f], f


@pytest.mark.parametrize(
    "field, value",
    [("streams", 0), ("seconds", 4.0), ("width", 33), ("height", 16), ("fps", 0), ("sample_rate", 12345),
     ("step_seconds", 0.0), ("highlight_seconds", (6.0, 3.0)), ("comment_lag", (-1.0, 5.0)), ("n_users", 0),
     ("seconds", "ten"), ("seed", -1)],
)
def test_bad_config_raises_config_error_naming_the_field(tmp_path, field, value):
    with pytest.raises(ConfigError, match=f"synthetic data: {field} must be"):
        synthesize(tmp_path / "out", SynthConfig(**{field: value}))
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_a_directory_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a synthetic dataset"):
        synthesize(tmp_path / "mine", SynthConfig(streams=1, seconds=5.0, width=32, height=32))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cli_data_synth_writes_the_tree_and_rejects_zero_streams(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["data", "synth", "--out", str(out), "--seconds", "6", "--seed", "3", "--width", "64", "--height", "48"]
    assert main(args + ["--streams", "1"]) == 0
    assert "1 synthetic streams" in capsys.readouterr().out
    assert (out / "manifest.jsonl").is_file() and (out / "streams" / "s0000.mp4").stat().st_size > 0
    assert (out / "kuailive" / "title_embeddings.npy").is_file() and (out / "truth" / "s0000.json").is_file()
    # Regenerating over a previous synthetic dataset is allowed.
    assert main(args + ["--streams", "2"]) == 0 and (out / "streams" / "s0001.mp4").is_file()
    assert main(args + ["--streams", "0"]) == 2
    assert "streams" in capsys.readouterr().err
