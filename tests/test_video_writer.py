"""mm_live.video_writer.write_video: what it writes, read back with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from mm_live.video_writer import write_video


def grey(n: int, size=(64, 48)) -> list[np.ndarray]:
    """Flat frames of level 8*i: the frame index survives H.264."""
    return [np.full((size[1], size[0], 3), 8 * i, np.uint8) for i in range(n)]


def read_back(path: Path) -> dict:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = [(f.time, int(round(f.to_ndarray(format="rgb24").mean() / 8)), f.key_frame) for f in c.decode(vs)]
        out = {"times": [t for t, _, _ in frames], "index": [i for _, i, _ in frames],
               "keys": [k for k, (_, _, key) in enumerate(frames) if key], "size": (vs.codec_context.width, vs.codec_context.height),
               "fps": float(vs.average_rate), "audio": None}
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            wave = np.concatenate([f.to_ndarray() for f in c.decode(a)], axis=1)
            out["audio"] = {"rate": a.sample_rate, "channels": wave.shape[0], "wave": wave}
    return out


def test_constant_rate_frames_times_and_fixed_gop(tmp_path):
    p = tmp_path / "cfr.mp4"
    times = write_video(p, iter(grey(25)), fps=10, gop=4, fixed_gop=True, crf=10)
    assert times == [i / 10 for i in range(25)]
    got = read_back(p)
    assert got["index"] == list(range(25)) and got["size"] == (64, 48) and got["fps"] == 10.0
    assert got["times"] == pytest.approx(times)
    assert got["keys"] == [0, 4, 8, 12, 16, 20, 24] and got["audio"] is None


def test_variable_rate_durations_are_the_stored_times(tmp_path):
    p = tmp_path / "vfr.mp4"
    durations = [0.05, 0.15, 0.1, 0.3, 0.04] * 3
    times = write_video(p, grey(15), fps=8, durations=durations, bframes=0)
    assert times == pytest.approx(np.concatenate([[0], np.cumsum(durations)[:-1]]).tolist())
    got = read_back(p)
    assert got["times"] == pytest.approx(times, abs=1e-3) and got["index"] == list(range(15))


@pytest.mark.parametrize("channels", [1, 2])
def test_audio_is_kept_to_the_video_rounded_up_to_a_second(tmp_path, channels):
    sr = 16000
    t = np.arange(5 * sr) / sr  # 5 s of audio for 2.5 s of video: cut at 3 s
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    audio = tone if channels == 1 else np.stack([tone, -tone])
    p = tmp_path / "a.mp4"
    write_video(p, grey(25), fps=10, audio=audio, sample_rate=sr)
    a = read_back(p)["audio"]
    assert a["rate"] == sr and a["channels"] == channels
    n = a["wave"].shape[1]
    assert 3 * sr <= n <= 3 * sr + 2048  # AAC pads to whole 1024-sample frames (+ priming)
    rms = np.sqrt((a["wave"][0, 4000:44000] ** 2).mean())
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_same_input_same_bytes_and_atomic_on_error(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 256, (90, 160, 3), dtype=np.uint8) for i in range(12)]
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    write_video(a, frames, fps=10, audio=audio)
    write_video(b, frames, fps=10, audio=audio)
    assert a.read_bytes() == b.read_bytes() and b"Lavf" not in a.read_bytes()  # bitexact: no version strings

    def failing():
        yield frames[0]
        raise RuntimeError("renderer failed")

    with pytest.raises(RuntimeError):
        write_video(a, failing(), fps=10)
    assert a.read_bytes() == b.read_bytes()  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]  # no temporary left


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "x.mp4", [], fps=10)
    with pytest.raises(ValueError, match="audio must be"):
        write_video(tmp_path / "x.mp4", grey(2), fps=10, audio=np.zeros((3, 100), np.float32))
    with pytest.raises(ValueError, match="durations has 3 entries for 2 frames"):
        write_video(tmp_path / "x.mp4", grey(2), fps=10, durations=[0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="durations has 1 entries for more frames"):
        write_video(tmp_path / "x.mp4", grey(2), fps=10, durations=[0.1])
    assert not any(tmp_path.iterdir())
