"""Media decoding: a clip file -> frames and audio per step.

A *step* is ``step_seconds`` of the clip. For step ``i`` starting at ``s_i`` we take
``frames_per_step`` frames at times ``s_i + (k + 0.5) * step_seconds / F`` — the frame *showing* at
that time (the last frame whose presentation time is <= t), so variable-frame-rate clips are sampled
by time, not by index — and the audio of ``[s_i, s_i + step_seconds)`` resampled to mono
``sample_rate``.

Only complete steps are kept: ``T = floor((end - start) / step_seconds)``. A trailing part shorter
than one step is dropped so that every step carries the same amount of frames and audio (a model
never sees a half-empty step). Times are the file's presentation times in seconds; step 0 starts at
the video stream's start time (0 for almost every mp4).

Frames come from decord, which seeks to the key frame before each sampled frame and decodes only
from there (``VideoReader.get_batch`` with the sampled indices; resizing happens inside its decoder).
That still decodes most of every GOP, so decoding stays the ceiling (DESIGN.md: ~20-25x real time
at 720p). ``keyframes_only=True`` decodes key frames only with PyAV
(``codec_context.skip_frame = "NONKEY"``): each sample takes the latest key frame at or before its
time. Use it when a step is at least one GOP long; it is several times faster.

Audio comes from decord's ``AudioReader`` (which decodes the whole track when opened); PyAV plus
torchaudio's ``Resample`` is the fallback, and :func:`iter_clip` uses PyAV window by window for long
clips so memory stays bounded.

Bad input (missing paths, directories, empty, truncated, audio-only or non-video files, data
corrupted mid-file; out-of-range ``start``/``end``) raises :class:`~mm_live.errors.MediaError`.
Files are checked with PyAV before decord sees them: decord can crash the process on corrupt input.
A file whose index is intact but whose data is damaged is only found out while decoding; slight
damage the decoder conceals decodes with artefacts rather than failing.

Readers are released when a call returns or fails -- decord's by freeing their native handle
(:func:`_free`), not whenever the garbage collector gets to them -- so decoding many clips, or
keeping the errors of failed ones, holds no files open.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import decord
import numpy as np
import torch
import torchaudio

from mm_live.errors import MediaError

av.logging.set_level(av.logging.PANIC)  # FFmpeg's per-packet warnings on damaged input are noise here
decord.logging.set_level(decord.logging.QUIET)

# iter_clip keeps decord's whole-track audio array up to this length (30 min at 16 kHz = 115 MB);
# longer clips decode audio per window with PyAV.
_WHOLE_AUDIO_MAX_SECONDS = 1800.0
# PyAV audio windows are decoded with this margin on each side so the resampler's filter has context.
_AUDIO_MARGIN_SECONDS = 0.05
# Bounds that catch absurd arguments before they turn into a decoder failure or a huge allocation.
_MAX_FRAME_SIZE = 4096
_SAMPLE_RATES = (1000, 384_000)
_MAX_OVERSAMPLING = 2  # sampled frames per second may be at most twice the clip's frame rate


def _int_in(value: object, lo: int, hi: int | None) -> bool:
    """``value`` is an int (not a bool) in ``[lo, hi]`` (``hi`` None: no upper bound)."""
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value and (hi is None or value <= hi)


@dataclass
class ClipInfo:
    """What :func:`probe` reads from the container, without decoding frames."""

    path: str
    duration: float  # seconds of video
    fps: float  # average frame rate
    num_frames: int
    width: int
    height: int
    has_audio: bool
    audio_sample_rate: int | None  # native rate of the audio track
    audio_samples: int | None  # samples per channel of the audio track, at its native rate
    start_time: float = 0.0  # presentation time of the video stream's first frame, seconds


@dataclass
class Clip:
    """Frames and audio of consecutive steps of one clip."""

    frames: torch.Tensor  # [T, F, 3, H, W] uint8 RGB
    audio: torch.Tensor  # [T, S] float32 mono in [-1, 1], S = round(step_seconds * sample_rate)
    has_audio: torch.Tensor  # [T] bool; False without an audio track or past the audio's end
    step_starts: torch.Tensor  # [T] float64, seconds in the file
    step_seconds: float
    fps: float
    duration: float  # of the whole file's video, seconds
    sample_rate: int
    path: str

    @property
    def num_steps(self) -> int:
        return int(self.step_starts.shape[0])


# ----------------------------------------------------------------------------- native readers


def _free(reader) -> None:
    """Release a decord VideoReader/AudioReader (its decoder, buffers and open file) now.

    decord 0.6 has no ``close()``: its ``__del__`` frees the native handle. Left to the garbage
    collector, a reader lives as long as anything references it -- e.g. a kept exception whose
    traceback holds the decoding frame -- and keeps its file open. So call ``__del__`` here and
    clear the handle so the collector's later call frees nothing twice.
    """
    if reader is not None and getattr(reader, "_handle", None) is not None:
        reader.__del__()
        reader._handle = None


@contextlib.contextmanager
def _silence_native_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block.

    decord's C++ logger writes lines such as ``ERROR Fail to send packet.`` straight to fd 2 when an
    audio track is damaged, whatever ``decord.logging`` says; a user must see one error line, not
    decoder chatter. (Anything another thread writes to stderr meanwhile is lost too.)
    """
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# ----------------------------------------------------------------------------- checks and probe


def _open_checked(path: Path) -> av.container.InputContainer:
    """Open ``path`` with PyAV after the cheap checks; every failure is a one-line MediaError."""
    if not path.exists():
        raise MediaError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise MediaError(f"{path}: is not a file; pass a video file such as clip.mp4")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes); re-download or re-export the clip")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise MediaError(
            f"{path}: cannot be read as a video ({reason}); the file is truncated or not a video, "
            "re-download or re-export it"
        ) from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: has no video stream; pass a video file (audio-only files are not clips)")
    if container.streams.video[0].codec_context is None:  # FFmpeg has no decoder for this codec
        container.close()
        raise MediaError(f"{path}: its video codec cannot be decoded here; re-encode it to H.264 "
                         "(ffmpeg -i in -c:v libx264 -c:a aac out.mp4)")
    return container


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _check_not_truncated(container: av.container.InputContainer, path: Path, end: float) -> None:
    """Demux the last GOP (cheap: one seek) and check its packets reach the stream's end.

    A file whose index is at its start (mp4 "faststart") but whose data was cut opens fine; its
    last packets are then missing or flagged corrupt.
    """
    vs = container.streams.video[0]
    tb = vs.time_base
    last_end = -math.inf
    try:
        container.seek(int(end / tb), stream=vs, backward=True, any_frame=False)
        for packet in container.demux(vs):
            if packet.size == 0 or packet.pts is None:
                continue
            if packet.is_corrupt:
                last_end = -math.inf
                break
            last_end = max(last_end, float((packet.pts + (packet.duration or 0)) * tb))
    except av.FFmpegError:
        last_end = -math.inf
    if last_end < end - max(1.0, 0.05 * end):
        raise MediaError(
            f"{path}: video data ends before its declared {end:.2f} s (file truncated?); re-download "
            "or re-export the clip"
        )


def _probe_open(container: av.container.InputContainer, path: Path) -> ClipInfo:
    vs = container.streams.video[0]
    start = _seconds(vs.start_time, vs.time_base) or 0.0
    duration = _seconds(vs.duration, vs.time_base)
    if duration is None and container.duration is not None:
        duration = container.duration / av.time_base - start
    fps = float(vs.average_rate or vs.guessed_rate or 0.0)
    num_frames = int(vs.frames or 0)
    if not duration or duration <= 0 or fps <= 0:
        raise MediaError(f"{path}: video stream has no duration or frame rate; remux it (ffmpeg -i in -c copy out.mp4)")
    if num_frames <= 0:
        num_frames = int(round(duration * fps))  # container without a frame count (mkv, webm)
    _check_not_truncated(container, path, start + duration)
    has_audio = bool(container.streams.audio)
    sr = samples = None
    if has_audio:
        ast = container.streams.audio[0]
        sr = int(ast.sample_rate)
        a_dur = _seconds(ast.duration, ast.time_base)
        if a_dur is None and container.duration is not None:
            a_dur = container.duration / av.time_base
        samples = int(round((a_dur or 0.0) * sr))
    return ClipInfo(
        path=str(path), duration=float(duration), fps=fps, num_frames=num_frames,
        width=int(vs.codec_context.width), height=int(vs.codec_context.height),
        has_audio=has_audio, audio_sample_rate=sr, audio_samples=samples, start_time=float(start),
    )


def probe(path: str | os.PathLike) -> ClipInfo:
    """Read duration, frame rate, size and audio facts of a clip; raises MediaError on bad files."""
    path = Path(path)
    with _open_checked(path) as container:
        return _probe_open(container, path)


# ----------------------------------------------------------------------------- audio sources


class _DecordAudio:
    """The whole audio track, mono at ``sample_rate``, decoded once by decord's AudioReader."""

    def __init__(self, path: Path, sample_rate: int, start: float):
        reader = None
        try:
            with _silence_native_stderr():
                reader = decord.AudioReader(str(path), sample_rate=sample_rate, mono=True)
            # AudioReader's slicing builds a Python list of every sample index; its decoded array (a
            # numpy copy of the native buffer, so it outlives the reader) is the data we want.
            self.samples = np.ascontiguousarray(reader._array[0], dtype=np.float32)
        finally:
            _free(reader)
        self.sample_rate, self.start = sample_rate, start
        self.end = start + len(self.samples) / sample_rate

    def read(self, t0: float, n: int) -> np.ndarray:
        """[n] float32 samples from time ``t0``; zeros outside the track."""
        i0 = int(round((t0 - self.start) * self.sample_rate))
        out = np.zeros(n, dtype=np.float32)
        a, b = max(i0, 0), min(i0 + n, len(self.samples))
        if b > a:
            out[a - i0 : b - i0] = self.samples[a:b]
        return out


class _PyAVAudio:
    """Audio decoded span by span with PyAV: libswresample down-mixes to mono at the native rate
    (the same matrix decord uses), torchaudio's ``Resample`` changes the rate."""

    def __init__(self, path: Path, sample_rate: int, info: ClipInfo):
        self.container = av.open(str(path))
        try:
            self.stream = self.container.streams.audio[0]
            self.native = int(self.stream.sample_rate)
            self.sample_rate = sample_rate
            self.start = _seconds(self.stream.start_time, self.stream.time_base) or 0.0
            self.end = self.start + (info.audio_samples or 0) / self.native
            self.resample = torchaudio.transforms.Resample(self.native, sample_rate)
        except BaseException:
            self.container.close()
            raise

    def read(self, t0: float, n: int) -> np.ndarray:
        """[n] float32 samples from time ``t0``; zeros outside the track."""
        t1 = t0 + n / self.sample_rate
        lo, hi = t0 - _AUDIO_MARGIN_SECONDS, t1 + _AUDIO_MARGIN_SECONDS
        self.container.seek(max(int(lo / self.stream.time_base), 0), stream=self.stream, backward=True)
        mixer = av.AudioResampler(format="fltp", layout="mono", rate=self.native)
        chunks, first = [], None
        for frame in self.container.decode(self.stream):
            if frame.time is not None and frame.time >= hi:
                break
            for mono in mixer.resample(frame):
                first = frame.time if first is None else first
                chunks.append(mono.to_ndarray()[0])
        out = np.zeros(n, dtype=np.float32)
        if not chunks:
            return out
        wave = self.resample(torch.from_numpy(np.concatenate(chunks).astype(np.float32))).numpy()
        i0 = int(round((t0 - first) * self.sample_rate))
        a, b = max(i0, 0), min(i0 + n, len(wave))
        if b > a:
            out[a - i0 : b - i0] = wave[a:b]
        return out

    def close(self) -> None:
        self.container.close()


# ----------------------------------------------------------------------------- frame sources


class _DecordFrames:
    """Frames at given times from decord: seek-based ``get_batch`` of just the sampled indices."""

    def __init__(self, path: Path, frame_size: int | None):
        # decord 0.6 scales only to widths that are a multiple of 32 (other widths fail with "size
        # must exactly match"): it scales to the next multiple and torch finishes the resize.
        self.frame_size = frame_size
        size = {} if frame_size is None else {"width": -(-frame_size // 32) * 32, "height": frame_size}
        self.reader = None
        try:
            self.reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **size)
            self.times = self.reader.get_frame_timestamp(np.arange(len(self.reader)))[:, 0]
        except decord.DECORDError:
            self.close()
            raise MediaError(f"{path}: decord cannot decode this video; remux it to mp4 (ffmpeg -i in -c copy out.mp4)") from None
        except BaseException:
            self.close()
            raise

    def at(self, times: np.ndarray, path: Path) -> np.ndarray:
        """[N, H, W, 3] uint8: the frame showing at each time."""
        idx = np.clip(np.searchsorted(self.times, times + 1e-6, side="right") - 1, 0, len(self.times) - 1)
        try:
            pix = self.reader.get_batch(idx).asnumpy()
        except decord.DECORDError:
            raise MediaError(
                f"{path}: decord could not decode frames (corrupt data, or a container it cannot seek in); "
                "re-export it or remux it to mp4 (ffmpeg -i in -c copy out.mp4)"
            ) from None
        if self.frame_size is not None and pix.shape[2] != self.frame_size:
            x = torch.from_numpy(pix).permute(0, 3, 1, 2).float()
            x = torch.nn.functional.interpolate(x, size=(self.frame_size,) * 2, mode="bilinear", antialias=True)
            pix = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return pix

    def close(self) -> None:
        _free(self.reader)
        self.reader = None


class _KeyFrames:
    """Key frames only, decoded with PyAV (``skip_frame = "NONKEY"``): each time takes the latest
    key frame at or before it (the first key frame for times before it)."""

    def __init__(self, path: Path, frame_size: int | None):
        self.container = av.open(str(path))
        try:
            self.stream = self.container.streams.video[0]
            self.stream.codec_context.skip_frame = "NONKEY"
        except BaseException:
            self.container.close()
            raise
        self.size = {} if frame_size is None else {"width": frame_size, "height": frame_size}

    def at(self, times: np.ndarray, path: Path) -> np.ndarray:
        """[N, H, W, 3] uint8 for times sorted ascending."""
        tb = self.stream.time_base
        self.container.seek(max(int(times[0] / tb), 0), stream=self.stream, backward=True, any_frame=False)
        out: list[np.ndarray] = []
        current = None
        try:
            for frame in self.container.decode(self.stream):
                while len(out) < len(times) and times[len(out)] < frame.time - 1e-6:
                    current = current if current is not None else self._rgb(frame)
                    out.append(current)
                if len(out) == len(times):
                    break
                current = self._rgb(frame)
        except av.FFmpegError:
            raise MediaError(f"{path}: key frames could not be decoded (corrupt data?); re-download or re-export the clip") from None
        if current is None:
            raise MediaError(f"{path}: no key frame found; the file is damaged, re-export it")
        out.extend([current] * (len(times) - len(out)))
        return np.stack(out)

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        return frame.to_ndarray(format="rgb24", **self.size)

    def close(self) -> None:
        self.container.close()


# ----------------------------------------------------------------------------- loading


@dataclass
class _Plan:
    info: ClipInfo
    step_starts: np.ndarray  # [T] float64
    step_seconds: float
    frames_per_step: int
    sample_rate: int


def _plan(path: Path, step_seconds: float, frames_per_step: int, sample_rate: int,
          start: float | None, end: float | None) -> _Plan:
    if isinstance(step_seconds, bool) or not (isinstance(step_seconds, (int, float)) and math.isfinite(step_seconds)
                                                and step_seconds > 0):
        raise MediaError(f"{path}: step_seconds must be a positive number, got {step_seconds!r}; pass e.g. --step-seconds 1")
    if not _int_in(frames_per_step, 1, None):
        raise MediaError(f"{path}: frames_per_step must be an integer >= 1, got {frames_per_step!r}; pass e.g. 1")
    if not _int_in(sample_rate, *_SAMPLE_RATES):
        raise MediaError(f"{path}: sample_rate must be an integer from {_SAMPLE_RATES[0]} to {_SAMPLE_RATES[1]} Hz, "
                         f"got {sample_rate!r}; pass e.g. 16000")
    info = probe(path)
    rate = frames_per_step / step_seconds
    if rate > _MAX_OVERSAMPLING * info.fps:
        raise MediaError(
            f"{path}: frames_per_step={frames_per_step} every step_seconds={step_seconds:g} samples {rate:g} frames/s "
            f"from a {info.fps:g} fps clip (each frame taken more than {_MAX_OVERSAMPLING} times); "
            "use fewer frames per step or longer steps"
        )
    t_begin, t_end = info.start_time, info.start_time + info.duration
    s = t_begin if start is None else float(start)
    e = t_end if end is None else float(end)
    eps = 1e-6
    if not (t_begin - eps <= s < t_end):
        raise MediaError(f"{path}: start={s:g} s is outside the clip [{t_begin:g}, {t_end:g}) s; pick a start inside it")
    if not (s < e <= t_end + eps):
        raise MediaError(f"{path}: end={e:g} s must be after start={s:g} s and at most the clip's end {t_end:g} s")
    n = int(math.floor((e - s) / step_seconds + eps))
    if n < 1:
        raise MediaError(
            f"{path}: {e - s:g} s from start to end is shorter than one step ({step_seconds:g} s); "
            "use a shorter step_seconds or a longer span"
        )
    starts = s + np.arange(n, dtype=np.float64) * step_seconds
    return _Plan(info, starts, float(step_seconds), frames_per_step, sample_rate)


def _open_audio(path: Path, plan: _Plan, *, whole: bool):
    """The audio source: decord's whole-track reader (``whole``), else or on failure PyAV."""
    info = plan.info
    if not info.has_audio:
        return None
    if whole:
        try:
            # decord's array begins at the audio track's first sample, which mp4 puts at t = 0
            return _DecordAudio(path, plan.sample_rate, start=0.0)
        except decord.DECORDError:
            pass  # decord could not read this audio track; PyAV below
    try:
        return _PyAVAudio(path, plan.sample_rate, info)
    except av.FFmpegError:
        return None  # an unreadable audio track: the clip still scores from frames


def _window(path: Path, plan: _Plan, steps: np.ndarray, frames, audio) -> Clip:
    """Decode the steps starting at ``steps`` ([n] float64) into a Clip."""
    step, f = plan.step_seconds, plan.frames_per_step
    times = (steps[:, None] + (np.arange(f) + 0.5) * step / f).reshape(-1)
    pix = frames.at(times, path)  # [n*F, H, W, 3]
    n, (h, w) = len(steps), pix.shape[1:3]
    video = torch.from_numpy(pix).reshape(n, f, h, w, 3).permute(0, 1, 4, 2, 3).contiguous()
    s = int(round(step * plan.sample_rate))
    wave = np.zeros((n, s), dtype=np.float32)
    present = np.zeros(n, dtype=bool)
    if audio is not None:
        span = audio.read(float(steps[0]), int(round((steps[-1] - steps[0]) * plan.sample_rate)) + s)
        for i, t in enumerate(steps):
            o = int(round((t - steps[0]) * plan.sample_rate))
            wave[i] = span[o : o + s]
        present = steps < audio.end
    return Clip(
        frames=video, audio=torch.from_numpy(np.clip(wave, -1.0, 1.0)), has_audio=torch.from_numpy(present),
        step_starts=torch.from_numpy(steps.copy()), step_seconds=step, fps=plan.info.fps,
        duration=plan.info.duration, sample_rate=plan.sample_rate, path=str(path),
    )


def _sources(path: Path, plan: _Plan, frame_size: int | None, keyframes_only: bool, whole_audio: bool):
    if frame_size is not None and not _int_in(frame_size, 1, _MAX_FRAME_SIZE):
        raise MediaError(f"{path}: frame_size must be an integer from 1 to {_MAX_FRAME_SIZE} or None (native size), "
                         f"got {frame_size!r}; pass e.g. 224")
    frames = _KeyFrames(path, frame_size) if keyframes_only else _DecordFrames(path, frame_size)
    try:
        return frames, _open_audio(path, plan, whole=whole_audio)
    except BaseException:
        frames.close()
        raise


def _close(*sources) -> None:
    """Close the frame and audio sources (None and the already-decoded decord audio need nothing)."""
    for src in sources:
        if hasattr(src, "close"):
            src.close()


def load_clip(
    path: str | os.PathLike, *, step_seconds: float = 1.0, frames_per_step: int = 1, frame_size: int | None = 224,
    sample_rate: int = 16000, start: float | None = None, end: float | None = None, keyframes_only: bool = False,
) -> Clip:
    """Decode the steps of ``[start, end)`` (default: the whole clip) into one :class:`Clip`.

    ``frame_size``: frames are resized to ``frame_size x frame_size``; ``None`` keeps the native size.
    """
    path = Path(path)
    plan = _plan(path, step_seconds, frames_per_step, sample_rate, start, end)
    frames, audio = _sources(path, plan, frame_size, keyframes_only, whole_audio=True)
    try:
        return _window(path, plan, plan.step_starts, frames, audio)
    finally:
        _close(frames, audio)


def iter_clip(
    path: str | os.PathLike, *, window_steps: int = 60, step_seconds: float = 1.0, frames_per_step: int = 1,
    frame_size: int | None = 224, sample_rate: int = 16000, start: float | None = None, end: float | None = None,
    keyframes_only: bool = False,
) -> Iterator[Clip]:
    """Yield consecutive Clips of at most ``window_steps`` steps; the readers are opened once.

    Memory is bounded by one window's frames (plus, for clips up to 30 min, decord's whole-track audio).
    Concatenating the windows gives the same frames as :func:`load_clip` with the same arguments.
    """
    path = Path(path)
    if not _int_in(window_steps, 1, None):
        raise MediaError(f"{path}: window_steps must be an integer >= 1, got {window_steps!r}")
    plan = _plan(path, step_seconds, frames_per_step, sample_rate, start, end)
    whole = plan.info.duration <= _WHOLE_AUDIO_MAX_SECONDS
    frames, audio = _sources(path, plan, frame_size, keyframes_only, whole_audio=whole)
    try:
        for i in range(0, len(plan.step_starts), window_steps):
            yield _window(path, plan, plan.step_starts[i : i + window_steps], frames, audio)
    finally:
        _close(frames, audio)
