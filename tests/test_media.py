"""mm_live.media against PyAV on a real clip, and on tiny clips made here with PyAV."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import av
import decord
import numpy as np
import pytest
import torch
import torchaudio

from mm_live import media
from mm_live.errors import MediaError
from mm_live.media import iter_clip, load_clip, probe
from mm_live.video_writer import write_video

# ----------------------------------------------------------------------------- helpers


def make_clip(
    path: Path, *, durations_ms: list[int], size=(64, 48), gop: int = 5, audio_seconds: float | None = None,
    noise: bool = False, faststart: bool = False,
) -> list[float]:
    """Write an H.264 mp4 whose frame i is a flat grey of level 8*i (or noise), shown for
    ``durations_ms[i]`` (irregular values make a variable-frame-rate clip); optionally a 440 Hz AAC tone
    of ``audio_seconds``. Returns the frames' presentation times in seconds."""
    rng = np.random.default_rng(0)
    w, h = size
    frames = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if noise else np.full((h, w, 3), 8 * i, np.uint8)
              for i in range(len(durations_ms)))
    wave = None
    if audio_seconds:
        wave = (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(audio_seconds * 16000)) / 16000)).astype(np.float32)
    return write_video(path, frames, fps=round(1000 * len(durations_ms) / sum(durations_ms)), audio=wave,
                       sample_rate=16000, durations=[d / 1000 for d in durations_ms], gop=gop, bframes=0, crf=18,
                       faststart=faststart)


def frame_index(frames: torch.Tensor) -> list[int]:
    """Index i of each flat grey frame (level 8*i) in [..., 3, H, W]."""
    return [round(v / 8) for v in frames.float().mean(dim=(-3, -2, -1)).reshape(-1).tolist()]


def showing_at(times: list[float], t: float) -> int:
    """Index of the frame showing at time t: the last one whose time is <= t."""
    return max(i for i, s in enumerate(times) if s <= t + 1e-9)


def pyav_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Reference audio: PyAV decode, libswresample down-mix, torchaudio resample."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        mixer = av.AudioResampler(format="fltp", layout="mono", rate=stream.sample_rate)
        chunks = [m.to_ndarray()[0] for f in c.decode(stream) for m in mixer.resample(f)]
        native = stream.sample_rate
    return torchaudio.functional.resample(torch.from_numpy(np.concatenate(chunks)), native, sample_rate).numpy()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[Path, list[float]]]:
    d = tmp_path_factory.mktemp("clips")
    specs = {
        "audio": dict(durations_ms=[100] * 30, audio_seconds=1.5),  # 3 s video, audio ends at 1.5 s
        "silent": dict(durations_ms=[100] * 30),
        "vfr": dict(durations_ms=[50, 150, 100, 300, 40] * 6, audio_seconds=3.2),
    }
    return {name: (d / f"{name}.mp4", make_clip(d / f"{name}.mp4", **kw)) for name, kw in specs.items()}


# ----------------------------------------------------------------------------- the real clip vs PyAV


@pytest.fixture(scope="module")
def bbb_pyav(bigbuckbunny: Path):
    with av.open(str(bigbuckbunny)) as c:
        vs = c.streams.video[0]
        frames = [(f.time, f) for f in c.decode(vs)]
        times = [t for t, _ in frames]
        rgb = {i: f.to_ndarray(format="rgb24") for i, (_, f) in enumerate(frames)}
        fps = float(vs.average_rate)
    with av.open(str(bigbuckbunny)) as c:
        samples = sum(f.samples for f in c.decode(c.streams.audio[0]))
    return dict(times=times, rgb=rgb, fps=fps, samples=samples)


def test_probe_agrees_with_pyav(bigbuckbunny, bbb_pyav):
    info = probe(bigbuckbunny)
    assert info.num_frames == len(bbb_pyav["times"]) == 132
    assert info.fps == pytest.approx(bbb_pyav["fps"])
    assert info.duration == pytest.approx(bbb_pyav["times"][-1] + 1 / bbb_pyav["fps"], abs=1e-6)
    assert (info.width, info.height) == bbb_pyav["rgb"][0].shape[1::-1]
    assert info.has_audio and info.audio_sample_rate == 48000
    assert info.audio_samples == bbb_pyav["samples"]


def test_frames_equal_pyav_frame_at_time(bigbuckbunny, bbb_pyav):
    clip = load_clip(bigbuckbunny, frame_size=None, frames_per_step=2)
    assert clip.num_steps == 5 and clip.frames.shape == (5, 2, 3, 720, 1280) and clip.frames.dtype == torch.uint8
    assert clip.fps == 25.0 and clip.duration == pytest.approx(5.28)
    assert clip.step_starts.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    times = bbb_pyav["times"]
    for i in range(5):
        for k, t in enumerate((i + 0.25, i + 0.75)):
            ours = clip.frames[i, k].permute(1, 2, 0).numpy().astype(np.float32)
            j = showing_at(times, t)
            assert np.abs(ours - bbb_pyav["rgb"][j]).mean() < 1.0  # same frame up to colour conversion
            # and no other frame of the clip is closer (on a pixel grid, to stay cheap)
            grid = [np.abs(ours[::8, ::8] - f[::8, ::8]).mean() for f in bbb_pyav["rgb"].values()]
            assert grid[j] <= min(grid) + 1e-6


def test_audio_close_to_pyav(bigbuckbunny):
    clip = load_clip(bigbuckbunny, frame_size=32)
    assert clip.audio.shape == (5, 16000) and clip.audio.dtype == torch.float32 and bool(clip.has_audio.all())
    ref = pyav_mono(bigbuckbunny, 16000)
    for i in range(5):
        ours, theirs = clip.audio[i].numpy(), ref[i * 16000 : (i + 1) * 16000]
        assert np.sqrt((ours**2).mean()) == pytest.approx(np.sqrt((theirs**2).mean()), rel=0.05)
        # decord's resampler delays by ~1 ms: the best match within +-2 ms must be near-identical
        best = max(np.corrcoef(ours[40:-40], theirs[40 + lag : len(theirs) - 40 + lag])[0, 1] for lag in range(-32, 33))
        assert best > 0.95  # the quiet first second differs most


def test_pyav_audio_fallback_when_decord_fails(bigbuckbunny, monkeypatch):
    def broken(*args, **kwargs):
        raise decord.DECORDError("simulated")

    monkeypatch.setattr(media.decord, "AudioReader", broken)
    clip = load_clip(bigbuckbunny, frame_size=32)
    ref = pyav_mono(bigbuckbunny, 16000)
    np.testing.assert_allclose(clip.audio.reshape(-1).numpy(), ref[: 5 * 16000], atol=1e-3)


# ----------------------------------------------------------------------------- tiny clips


def test_samples_by_time_constant_rate(clips):
    path, times = clips["audio"]
    clip = load_clip(path, frames_per_step=2, frame_size=32)
    assert clip.frames.shape == (3, 2, 3, 32, 32)
    expected = [showing_at(times, i + (k + 0.5) / 2) for i in range(3) for k in range(2)]
    assert frame_index(clip.frames) == expected == [2, 7, 12, 17, 22, 27]


def test_samples_by_time_variable_rate(clips):
    path, times = clips["vfr"]
    clip = load_clip(path, step_seconds=0.5, frame_size=None)
    assert clip.frames.shape[-2:] == (48, 64)
    expected = [showing_at(times, 0.5 * i + 0.25) for i in range(clip.num_steps)]
    assert frame_index(clip.frames) == expected
    assert expected != [round((0.5 * i + 0.25) * clip.fps) for i in range(clip.num_steps)]  # index sampling would differ


def test_audio_track_and_its_end(clips):
    clip = load_clip(clips["audio"][0], frame_size=16)
    assert clip.has_audio.tolist() == [True, True, False]
    rms = clip.audio.pow(2).mean(dim=1).sqrt().tolist()
    assert rms[0] == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    assert rms[2] == 0.0


def test_clip_without_audio(clips):
    clip = load_clip(clips["silent"][0], frame_size=16, sample_rate=8000)
    assert clip.audio.shape == (3, 8000)
    assert not clip.has_audio.any() and not clip.audio.any()


def test_start_end_select_steps(clips):
    path, times = clips["audio"]
    clip = load_clip(path, start=0.5, end=2.6, frame_size=16)
    assert clip.step_starts.tolist() == [0.5, 1.5]
    assert frame_index(clip.frames) == [showing_at(times, 1.0), showing_at(times, 2.0)]


def test_keyframes_only_takes_latest_key_frame(clips):
    path, times = clips["audio"]  # a key frame every 5 frames = every 0.5 s
    clip = load_clip(path, frames_per_step=4, frame_size=16, keyframes_only=True)
    sample_times = [i + (k + 0.5) / 4 for i in range(3) for k in range(4)]
    expected = [5 * (showing_at(times, t) // 5) for t in sample_times]
    assert frame_index(clip.frames) == expected
    assert expected != [showing_at(times, t) for t in sample_times]


def test_iter_clip_windows_concatenate_to_load_clip(clips):
    path, _ = clips["vfr"]
    kw = dict(step_seconds=0.4, frames_per_step=2, frame_size=24)
    whole = load_clip(path, **kw)  # 24 px: decord scales to 32 px wide, torch finishes
    parts = list(iter_clip(path, window_steps=3, **kw))
    assert whole.num_steps == 9 and [p.num_steps for p in parts] == [3, 3, 3]
    assert torch.equal(torch.cat([p.frames for p in parts]), whole.frames)
    assert torch.equal(torch.cat([p.step_starts for p in parts]), whole.step_starts)
    assert torch.equal(torch.cat([p.audio for p in parts]), whole.audio)
    keys = load_clip(path, keyframes_only=True, **kw)
    key_parts = list(iter_clip(path, window_steps=4, keyframes_only=True, **kw))  # seeks per window
    assert torch.equal(torch.cat([p.frames for p in key_parts]), keys.frames)


def test_iter_clip_windowed_pyav_audio_matches_whole_track(clips, monkeypatch):
    path, _ = clips["vfr"]
    monkeypatch.setattr(media.decord, "AudioReader", lambda *a, **k: (_ for _ in ()).throw(decord.DECORDError("x")))
    whole = load_clip(path, frame_size=16)  # PyAV over the whole span
    monkeypatch.setattr(media, "_WHOLE_AUDIO_MAX_SECONDS", 0.0)
    parts = list(iter_clip(path, window_steps=1, frame_size=16))  # PyAV window by window
    np.testing.assert_allclose(torch.cat([p.audio for p in parts]).numpy(), whole.audio.numpy(), atol=2e-3)
    assert torch.equal(torch.cat([p.has_audio for p in parts]), whole.has_audio)


# ----------------------------------------------------------------------------- errors


def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _bad_files(tmp: Path, clips) -> dict[str, Path]:
    out = {"missing": tmp / "nope.mp4", "zero": tmp / "zero.mp4", "text": tmp / "text.mp4"}
    out["zero"].write_bytes(b"")
    out["text"].write_text("this is not a video\n" * 20)
    out["truncated"] = _truncate(clips["audio"][0], tmp / "half.mp4")  # index at the end: lost
    make_clip(tmp / "fast.mp4", durations_ms=[100] * 20, noise=True, faststart=True)
    out["truncated_faststart"] = _truncate(tmp / "fast.mp4", tmp / "fasthalf.mp4")  # index kept, data cut
    with av.open(str(tmp / "audio_only.m4a"), "w") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        c.mux(s.encode(af))
        c.mux(s.encode())
    out["no_video"] = tmp / "audio_only.m4a"
    out["no_video_named_mp4"] = tmp / "audio_only.mp4"
    out["no_video_named_mp4"].write_bytes(out["no_video"].read_bytes())
    out["directory"] = tmp / "dir.mp4"
    out["directory"].mkdir()
    out["one_frame"] = tmp / "one_frame.mp4"  # 0.1 s: shorter than one step
    write_video(out["one_frame"], [np.zeros((48, 64, 3), np.uint8)], fps=10)
    out["unknown_codec"] = tmp / "unknown_codec.mp4"  # an H.264 stream relabelled with a codec FFmpeg lacks
    out["unknown_codec"].write_bytes(clips["silent"][0].read_bytes().replace(b"avc1", b"zzzz"))
    return out


def _assert_one_line_media_error(path: Path) -> None:
    for fn in (probe, load_clip):
        with pytest.raises(MediaError) as err:
            fn(path)
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg


@pytest.mark.parametrize("kind", ["missing", "zero", "text", "truncated", "truncated_faststart", "no_video",
                                  "no_video_named_mp4", "directory", "unknown_codec"])
def test_bad_files_raise_one_line_media_error(kind, tmp_path, clips):
    _assert_one_line_media_error(_bad_files(tmp_path, clips)[kind])


def test_clip_shorter_than_one_step(tmp_path, clips):
    path = _bad_files(tmp_path, clips)["one_frame"]
    assert probe(path).duration == pytest.approx(0.1)
    with pytest.raises(MediaError, match=r"0\.1 s from start to end is shorter than one step"):
        load_clip(path)
    assert load_clip(path, step_seconds=0.1, frame_size=16).num_steps == 1


def test_first_half_of_real_clip_raises_media_error(bigbuckbunny, tmp_path):
    _assert_one_line_media_error(_truncate(bigbuckbunny, tmp_path / "bbb_half.mp4"))


@pytest.mark.parametrize(
    "kwargs",
    [dict(start=-1.0), dict(start=3.0), dict(end=3.5), dict(start=2.0, end=1.0), dict(start=2.5),
     dict(step_seconds=0), dict(step_seconds=float("nan")), dict(frames_per_step=0), dict(frame_size=0),
     dict(step_seconds=10.0),
     # absurd values: before they reach the decoder (a crash) or an allocation (MemoryError, std::bad_alloc)
     dict(step_seconds=True), dict(frame_size=True), dict(frame_size=100_000), dict(sample_rate=10**9),
     dict(step_seconds=1e-4), dict(step_seconds=1e-9), dict(frames_per_step=10**7), dict(frames_per_step=30)],
)
def test_bad_arguments_raise_media_error(kwargs, clips):
    path = clips["silent"][0]
    with pytest.raises(MediaError) as err:
        load_clip(path, **kwargs)
    assert str(path) in str(err.value)


@pytest.fixture(scope="module")
def corrupt_middle(tmp_path_factory) -> Path:
    """A 6 s clip with audio whose middle third (container index intact) is overwritten with noise."""
    d = tmp_path_factory.mktemp("corrupt")
    make_clip(d / "good.mp4", durations_ms=[100] * 60, noise=True, audio_seconds=6.0)
    data = bytearray((d / "good.mp4").read_bytes())
    a, b = len(data) // 3, 2 * len(data) // 3
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    (d / "corrupt.mp4").write_bytes(bytes(data))
    return d / "corrupt.mp4"


@pytest.mark.parametrize("keyframes_only", [False, True])
def test_video_corrupted_in_the_middle_is_one_clean_media_error(corrupt_middle, keyframes_only, capfd):
    assert probe(corrupt_middle).duration == pytest.approx(6.0)  # the index is intact: only decoding can tell
    for run in (lambda: load_clip(corrupt_middle, frame_size=16, keyframes_only=keyframes_only),
                lambda: list(iter_clip(corrupt_middle, frame_size=16, window_steps=2, keyframes_only=keyframes_only))):
        with pytest.raises(MediaError) as err:
            run()
        assert str(corrupt_middle) in str(err.value) and "\n" not in str(err.value)
    out, err_text = capfd.readouterr()
    assert err_text == ""  # decoders' own logging (decord's C++ "Fail to send packet.") stays off stderr


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_readers_are_released_after_use_even_when_errors_are_kept(clips, corrupt_middle, monkeypatch):
    path = clips["audio"][0]
    load_clip(path, frame_size=16)  # warm-up: libraries open what they keep for the process once
    kept = []
    gc.disable()  # only deterministic releases count, not a collector pass
    try:
        before = _open_fds()
        for _ in range(10):
            load_clip(path, frame_size=16)
            load_clip(path, frame_size=16, keyframes_only=True)
            next(iter(iter_clip(path, window_steps=1, frame_size=16)))  # an abandoned generator
            for kw in ({}, {"keyframes_only": True}):
                with pytest.raises(MediaError) as err:
                    load_clip(corrupt_middle, frame_size=16, **kw)
                kept.append(err.value)  # its traceback references the decoding frames and their readers
        with monkeypatch.context() as m:  # audio that fails after the frame reader is open
            m.setattr(media, "_open_audio", lambda *a, **k: (_ for _ in ()).throw(MediaError("simulated")))
            for _ in range(5):
                with pytest.raises(MediaError) as err:
                    load_clip(path, frame_size=16)
                kept.append(err.value)
        after = _open_fds()
    finally:
        gc.enable()
    assert after == before, f"{after - before} file descriptors left open"
