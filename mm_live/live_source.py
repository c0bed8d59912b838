"""Reading a stream step by step while it is still being written: bytes, then decoded steps.

Two layers:

* :class:`ByteFeed` — a read-only file object over a *growing* source: a local file a recorder is
  writing (.ts/.flv/fragmented mp4), or a local HLS playlist whose segments keep arriving (the
  segments' bytes are fed in playlist order, after the ``EXT-X-MAP`` init segment if any, which is
  a valid MPEG-TS or fragmented-mp4 byte stream). At the current end it waits for more; it ends
  (EOF) when the source stalls for ``stall_timeout`` s, vanishes, an HLS playlist gets
  ``#EXT-X-ENDLIST``, or ``stop`` is set. FFmpeg demuxes it through PyAV like any file, so every
  container FFmpeg reads from a pipe works. Any other source (rtmp/http/srt URL) is opened by FFmpeg
  itself, with ``stall_timeout`` as its read timeout.
* :class:`StepReader` — decodes a container front to back and yields one :class:`StepData` per
  step as soon as it is complete: its frames are the frames *showing* at the step's sample times
  (as :mod:`mm_live.media` samples a file) and its audio is ``[s, s + step)`` mono at the model's
  rate. Frames are decoded sequentially (no seeking: a growing stream cannot seek) and only sampled
  frames are converted to RGB; memory is one frame plus a few seconds of audio.

``mm-live score`` (highlight) decodes through :class:`StepReader` as well, so a finished file gives
the same steps whether it was watched live or scored afterwards.
"""

from __future__ import annotations

import io
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch
import torchaudio

from mm_live.errors import MediaError
from mm_live.media import Clip

_POLL_SECONDS = 0.05  # how often a waiting feed looks for new bytes
_AUDIO_MARGIN_SECONDS = 0.05  # resampling context on each side of a step (as mm_live.media)
_AUDIO_PREROLL_SECONDS = 0.25  # decoded before a resume point so the AAC overlap is warmed up
# a step waits at most this far behind the video for its audio (a declared track that sends nothing
# must not hold every step back): then it takes what arrived, and has_audio says whether anything did
_AUDIO_WAIT_SECONDS = 5.0
_AUDIO_KEEP_SECONDS = 60.0  # audio kept ahead of the oldest waiting step, at most


def is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


class ByteFeed(io.RawIOBase):
    """A growing local file or HLS playlist as one readable byte stream (see the module docstring).

    ``reason`` tells why it ended: ``"end"`` (playlist ENDLIST), ``"stalled"``, ``"vanished"``,
    ``"stopped"``.
    """

    def __init__(self, path: str | os.PathLike, *, stall_timeout: float = 10.0, stop: threading.Event | None = None):
        super().__init__()
        self.path = Path(path)
        self.stall_timeout, self.stop = float(stall_timeout), stop or threading.Event()
        self.hls = self.path.suffix.lower() == ".m3u8"
        self.reason: str | None = None
        self.bytes_read = 0
        if not self.path.is_file():
            raise MediaError(f"{self.path}: no such file; pass a file being recorded, a .m3u8 playlist or a URL")
        self._fh = None if self.hls else open(self.path, "rb")
        self._ident = self._identity()
        self._chunk = b""  # HLS: unread bytes of the current segment
        self._fed: set[int] = set()  # HLS: media-sequence numbers already fed
        self._init_fed = False
        self._ended = False  # HLS: the playlist has ENDLIST

    def readable(self) -> bool:
        return True

    def _identity(self):
        """The file's identity (a recorder that replaces it starts a new file); a playlist: its existence
        (HLS writers replace the playlist file on every update)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return True if self.hls else (st.st_ino, st.st_dev)

    def readinto(self, buf) -> int:
        n = len(buf)
        waited_since = None
        while True:
            data = self._read_now(n)
            if data:
                buf[: len(data)] = data
                self.bytes_read += len(data)
                return len(data)
            if self.reason is not None:
                return 0
            if self.stop.is_set():
                self.reason = "stopped"
                return 0
            if self.hls and self._ended:
                self.reason = "end"
                return 0
            if self._identity() != self._ident:
                self.reason = "vanished"
                return 0
            now = time.monotonic()
            waited_since = waited_since or now
            if now - waited_since > self.stall_timeout:
                self.reason = "stalled"
                return 0
            time.sleep(_POLL_SECONDS)

    def _read_now(self, n: int) -> bytes:
        if not self.hls:
            return self._fh.read(n) or b""
        if not self._chunk:
            self._chunk = self._next_segment()
        out, self._chunk = self._chunk[:n], self._chunk[n:]
        return out

    def _next_segment(self) -> bytes:
        """The bytes of the next playlist entry not fed yet (b"" when none has arrived)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return b""
        seq, init, entries, endlist = 0, None, [], False
        for line in (raw.strip() for raw in lines):
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                seq = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-MAP:") and 'URI="' in line:
                init = line.split('URI="', 1)[1].split('"', 1)[0]
            elif line.startswith("#EXT-X-ENDLIST"):
                endlist = True
            elif line and not line.startswith("#"):
                entries.append(line)
        self._ended = endlist and all(seq + i in self._fed for i in range(len(entries)))
        parts = []
        if init is not None and not self._init_fed:
            parts.append(self._segment_bytes(init))
            self._init_fed = True
        for i, name in enumerate(entries):
            if seq + i not in self._fed:
                self._fed.add(seq + i)
                parts.append(self._segment_bytes(name))
                break
        if self._fed and len(self._fed) > 4096:  # keep the set bounded on endless playlists
            self._fed = {k for k in self._fed if k >= seq}
        return b"".join(parts)

    def _segment_bytes(self, name: str) -> bytes:
        path = self.path.parent / name
        try:
            return path.read_bytes()
        except OSError:
            raise MediaError(f"{path}: listed in {self.path.name} but unreadable; check the recorder's output folder") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        super().close()


def _moov_after_mdat(path: str) -> bool | None:
    """For an mp4/mov: True when its index ('moov') follows the media data (a finished plain mp4),
    None when the data has no index yet (a plain mp4 still being written), False otherwise (index
    first: faststart or fragmented, both readable as a stream)."""
    seen_mdat = False
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        pos = 0
        while pos + 8 <= size:
            fh.seek(pos)
            head = fh.read(16)
            n, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if n == 1 and len(head) == 16:
                n = int.from_bytes(head[8:16], "big")
            if kind == b"moov":
                return seen_mdat
            seen_mdat |= kind == b"mdat"
            if n < 8:  # size 0 = "to the end of the file"
                break
            pos += n
    return None if seen_mdat else False


def open_container(source: str | os.PathLike, *, live: bool, stall_timeout: float = 10.0,
                   stop: threading.Event | None = None) -> tuple[av.container.InputContainer, ByteFeed | None]:
    """Open ``source`` for demuxing: a local file (``live``: through a :class:`ByteFeed` that waits for
    more bytes), a local ``.m3u8`` (always fed segment by segment), or a URL FFmpeg opens."""
    src = str(source)
    feed = None
    try:
        layout = None
        if not is_url(src) and Path(src).suffix.lower() in (".mp4", ".mov", ".m4v") and Path(src).is_file():
            layout = _moov_after_mdat(src)
            if layout is None and live:
                raise MediaError(f"{src}: a plain mp4 has no index until the recorder finishes it; record to "
                                 ".ts, .flv or fragmented mp4 (-movflags frag_keyframe+empty_moov) to watch it live")
        if is_url(src):
            container = av.open(src, timeout=(stall_timeout, stall_timeout))
        elif layout:  # a finished plain mp4: FFmpeg must seek to its index, so it is read as a file
            container = av.open(src)
        elif live or src.lower().endswith(".m3u8"):
            feed = ByteFeed(src, stall_timeout=stall_timeout, stop=stop)
            # a short probe: FFmpeg would otherwise wait for 5 MB / 5 s of a stream before the first step
            container = av.open(feed, options={"probesize": "65536", "analyzeduration": "1000000"})
        else:
            container = av.open(src)
    except av.FFmpegError as exc:
        if feed is not None:
            feed.close()
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise MediaError(f"{src}: cannot be opened as a stream ({reason}); check the path or URL and that it is video") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{src}: has no video stream; pass a video stream")
    return container, feed


@dataclass
class StepData:
    """One complete step: frames [F, H, W, 3] uint8, audio [S] float32 mono, has_audio, its start
    time (s, stream time) and the monotonic clock time its data became complete."""

    index: int
    start: float
    frames: np.ndarray
    audio: np.ndarray
    has_audio: bool
    ready: float


class _Audio:
    """Decoded audio as a ring of native-rate mono samples indexed by absolute sample number."""

    def __init__(self, rate: int):
        self.rate = rate
        self.native = self.resample = self.mixer = None  # known from the first frame (a live probe may not know it)
        self.base: int | None = None  # absolute sample number of buf[0]
        self.buf = np.zeros(0, dtype=np.float32)
        self.ended = False

    def push(self, frame: av.AudioFrame) -> None:
        if self.native is None:
            self.native = int(frame.sample_rate)
            self.resample = None if self.native == self.rate else torchaudio.transforms.Resample(self.native, self.rate)
            self.mixer = av.AudioResampler(format="fltp", layout="mono", rate=self.native)
        for mono in self.mixer.resample(frame):
            samples = mono.to_ndarray()[0].astype(np.float32, copy=False)
            if self.base is None:
                self.base = int(round(float(frame.time or 0.0) * self.native))
            self.buf = np.concatenate([self.buf, samples])
        extra = len(self.buf) - int(_AUDIO_KEEP_SECONDS * self.native)
        if extra > 0:  # the video stopped while audio goes on: keep memory bounded
            self.buf, self.base = self.buf[extra:], self.base + extra

    @property
    def end_time(self) -> float:
        return -math.inf if self.base is None else (self.base + len(self.buf)) / self.native

    def ready(self, end: float) -> bool:
        margin = 0.0 if self.resample is None else _AUDIO_MARGIN_SECONDS
        return self.ended or self.end_time >= end + margin

    def read(self, t0: float, seconds: float) -> tuple[np.ndarray, bool]:
        """[round(seconds·rate)] samples of ``[t0, t0 + seconds)`` (zeros outside) and whether any exist."""
        n = int(round(seconds * self.rate))
        if self.base is None or t0 >= self.end_time:
            return np.zeros(n, dtype=np.float32), False
        if self.resample is None:
            return self._native(int(round(t0 * self.native)), n), True
        m = int(round(_AUDIO_MARGIN_SECONDS * self.native))
        a = int(round(t0 * self.native))
        span = self._native(a - m, int(round(seconds * self.native)) + 2 * m)
        wave = self.resample(torch.from_numpy(span)).numpy()
        o = int(round(m * self.rate / self.native))
        out = np.zeros(n, dtype=np.float32)
        part = wave[o : o + n]
        out[: len(part)] = part
        return out, True

    def _native(self, a: int, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        lo, hi = max(a, self.base), min(a + n, self.base + len(self.buf))
        if hi > lo:
            out[lo - a : hi - a] = self.buf[lo - self.base : hi - self.base]
        return out

    def drop_before(self, t: float) -> None:
        if self.base is None:
            return
        k = int(round(t * self.native)) - self.base
        if k > 0:
            self.buf, self.base = self.buf[k:], self.base + k


class StepReader:
    """Decode ``container`` front to back; yield each :class:`StepData` as soon as it is complete.

    Steps start at ``origin`` (default: the first video frame's time) every ``step_seconds``; a step
    is complete once its ``frames_per_step`` sample times are resolved (a later frame was decoded),
    the video covers its end, and its audio has arrived (or the audio track ended). ``first_step``
    resumes at that step: packets before the key frame preceding it are demuxed but not decoded.
    """

    def __init__(self, container: av.container.InputContainer, *, step_seconds: float = 1.0, frames_per_step: int = 1,
                 frame_size: int | None = 224, sample_rate: int = 16000, keyframes_only: bool = False,
                 origin: float | None = None, first_step: int = 0):
        self.container = container
        self.video = container.streams.video[0]
        self.audio_stream = container.streams.audio[0] if container.streams.audio else None
        self.step, self.f, self.size, self.rate = float(step_seconds), int(frames_per_step), frame_size, int(sample_rate)
        self.keyframes_only = keyframes_only
        self.origin, self.first_step = origin, int(first_step)
        self.fps = float(self.video.average_rate or self.video.guessed_rate or 25.0)
        self.cpu_seconds = 0.0  # CPU time of the decoding thread (set by whoever runs the iteration)

    # ------------------------------------------------------------------ frames
    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """[H, W, 3] uint8 at ``frame_size`` (as mm_live.media's decord path: scale to a width that is a
        multiple of 32 with bilinear swscale, then an antialiased bilinear resize to the square)."""
        if self.size is None:
            return frame.to_ndarray(format="rgb24")
        fs = self.size
        pix = frame.reformat(width=-(-fs // 32) * 32, height=fs, format="rgb24", interpolation="BILINEAR").to_ndarray()
        if pix.shape[1] != fs:
            x = torch.from_numpy(pix[None]).permute(0, 3, 1, 2).float()
            x = torch.nn.functional.interpolate(x, size=(fs, fs), mode="bilinear", antialias=True)
            pix = x.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
        return pix

    def _times(self, i: int) -> np.ndarray:
        return self.origin + i * self.step + (np.arange(self.f) + 0.5) * self.step / self.f

    def __iter__(self) -> Iterator[StepData]:
        if self.keyframes_only:
            self.video.codec_context.skip_frame = "NONKEY"
        audio = None if self.audio_stream is None else _Audio(self.rate)
        streams = [self.video] + ([self.audio_stream] if audio is not None else [])
        state = _Sampler(self)
        resume = None if self.first_step == 0 or self.origin is None else self.origin + self.first_step * self.step
        gop: list[av.Packet] = []  # video packets since the last key frame while skipping to ``resume``
        try:
            for packet in self.container.demux(streams):
                packets = [packet]
                if resume is not None and packet.dts is not None:  # (a packet without dts flushes its decoder)
                    t = float((packet.pts if packet.pts is not None else packet.dts) * packet.time_base)
                    if packet.stream is self.video:
                        gop = [packet] if packet.is_keyframe else gop + [packet]
                        if t < resume:
                            continue
                        packets, resume = gop, None
                    elif t < resume - _AUDIO_PREROLL_SECONDS:
                        continue
                for pk in packets:
                    for frame in pk.decode():
                        state.push(frame, audio)
                yield from state.complete(audio, eof=False)
        except av.FFmpegError as exc:
            raise MediaError(f"{self.container.name}: the stream could not be decoded ({type(exc).__name__}): it is "
                             "damaged; re-download or re-export the clip") from None
        if audio is not None:
            audio.ended = True
        yield from state.complete(audio, eof=True)


class _Sampler:
    """The sample-time bookkeeping of :class:`StepReader`: sample k (step k // F) takes the last
    frame whose time is <= its time + 1e-6, known once a later frame is decoded."""

    def __init__(self, reader: StepReader):
        self.r = reader
        self.k = reader.first_step * reader.f  # next sample to resolve
        self.i = reader.first_step  # next step to yield
        self.picked: dict[int, list[np.ndarray]] = {}
        self.prev: av.VideoFrame | None = None
        self.prev_rgb: np.ndarray | None = None
        self.last_time, self.frame_dur = -math.inf, 1.0 / reader.fps

    def _sample_time(self, k: int) -> float:
        r = self.r
        return r.origin + (k // r.f) * r.step + (k % r.f + 0.5) * r.step / r.f

    def _take(self, frame: av.VideoFrame) -> None:
        if frame is not self.prev or self.prev_rgb is None:
            self.prev_rgb = self.r._rgb(frame)
        self.picked.setdefault(self.k // self.r.f, []).append(self.prev_rgb)
        self.k += 1

    def push(self, frame, audio: _Audio | None) -> None:
        if isinstance(frame, av.AudioFrame):
            audio.push(frame)
            return
        if frame.time is None:
            return
        t = float(frame.time)
        if self.r.origin is None:
            self.r.origin = t
        while t > self._sample_time(self.k) + 1e-6:  # every earlier sample shows prev (or this first frame)
            if self.prev is None:
                self.prev, self.prev_rgb = frame, None
            self._take(self.prev)
        if t > self.last_time:
            if self.last_time > -math.inf:
                self.frame_dur = t - self.last_time
            self.last_time = t
        if frame is not self.prev:
            self.prev, self.prev_rgb = frame, None

    def complete(self, audio: _Audio | None, *, eof: bool) -> Iterator[StepData]:
        r = self.r
        while r.origin is not None and self.prev is not None:
            start, end = r.origin + self.i * r.step, r.origin + (self.i + 1) * r.step
            if self.last_time + self.frame_dur < end - 1e-6:  # the video does not cover the step (yet)
                return
            if eof:
                while self.k < (self.i + 1) * r.f:
                    self._take(self.prev)
            audio_late = audio is not None and not audio.ready(end) and self.last_time < end + _AUDIO_WAIT_SECONDS
            if len(self.picked.get(self.i, ())) < r.f or audio_late:
                return
            n = int(round(r.step * r.rate))
            wave, present = (np.zeros(n, np.float32), False) if audio is None else audio.read(start, r.step)
            yield StepData(self.i, float(start), np.stack(self.picked.pop(self.i)), wave, present, time.monotonic())
            if audio is not None:
                audio.drop_before(end - _AUDIO_MARGIN_SECONDS)
            self.i += 1


def steps_to_clip(steps: list[StepData], *, step_seconds: float, sample_rate: int, fps: float, path: str) -> Clip:
    """Consecutive :class:`StepData` -> one :class:`~mm_live.media.Clip` of ``len(steps)`` steps."""
    frames = torch.from_numpy(np.stack([s.frames for s in steps])).permute(0, 1, 4, 2, 3).contiguous()
    return Clip(frames=frames, audio=torch.from_numpy(np.clip(np.stack([s.audio for s in steps]), -1.0, 1.0)),
                has_audio=torch.tensor([s.has_audio for s in steps]),
                step_starts=torch.tensor([s.start for s in steps], dtype=torch.float64), step_seconds=step_seconds,
                fps=fps, duration=float(steps[-1].start + step_seconds), sample_rate=sample_rate, path=path)


def clip_windows(path: str | os.PathLike, *, window_steps: int = 300, step_seconds: float = 1.0, frames_per_step: int = 1,
                 frame_size: int | None = 224, sample_rate: int = 16000, keyframes_only: bool = False) -> Iterator[Clip]:
    """A finished file's steps, decoded by :class:`StepReader`, as Clips of at most ``window_steps``
    steps (the windows :func:`mm_live.scoring.encode_clip` consumes; the same steps ``watch`` sees)."""
    container, _ = open_container(path, live=False)
    with container:
        reader = StepReader(container, step_seconds=step_seconds, frames_per_step=frames_per_step, frame_size=frame_size,
                            sample_rate=sample_rate, keyframes_only=keyframes_only)
        batch: list[StepData] = []
        for step in reader:
            batch.append(step)
            if len(batch) == window_steps:
                yield steps_to_clip(batch, step_seconds=step_seconds, sample_rate=sample_rate, fps=reader.fps, path=str(path))
                batch = []
        if batch:
            yield steps_to_clip(batch, step_seconds=step_seconds, sample_rate=sample_rate, fps=reader.fps, path=str(path))
