"""Writing H.264 (+ AAC) clips: the one encoder the synthetic generator, the benchmarks and the tests use.

:func:`write_video` encodes RGB frames with libx264 (yuv420p) and, optionally, a float waveform
with AAC into an mp4, through PyAV. The file appears atomically (:func:`mm_live.fileio.atomic_path`).

Audio is muxed one second at a time after the second of video it belongs to, so a long clip never
holds more than one second of encoded packets in the muxer's interleaving queue. Audio that runs
past the video, rounded up to a whole second, is not written: a clip is as long as its video.

Determinism: with ``bitexact=True`` (the default) and ``threads=1`` the muxer and both encoders
write no version strings and x264 runs single-threaded, so the same frames and audio give the
same bytes (the synthetic data relies on it).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Iterable, Sequence

import av
import numpy as np

from mm_live.fileio import atomic_path

_LAYOUTS = {1: "mono", 2: "stereo"}
_VFR_TIME_BASE = Fraction(1, 1000)  # frame times of variable-rate clips are kept in milliseconds


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    *,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    durations: Sequence[float] | None = None,
    gop: int | None = None,
    fixed_gop: bool = False,
    bframes: int | None = None,
    crf: int = 23,
    preset: str = "veryfast",
    threads: int = 1,
    bitexact: bool = True,
    audio_bit_rate: int | None = None,
    faststart: bool = False,
) -> list[float]:
    """Encode ``frames`` (and ``audio``) into the mp4 ``path``; returns each frame's time in seconds.

    frames: iterable of [H, W, 3] uint8 RGB arrays, all of one even size; a generator is consumed
        lazily, so a long clip is never held in memory.
    fps: the stream's frame rate; frame ``i`` is shown at ``i / fps`` unless ``durations`` is given.
    audio: [S] (mono) or [C, S] (C = 1 or 2) float32 in [-1, 1] at ``sample_rate``, starting at t = 0.
    durations: seconds each frame is shown (one per frame): a variable-frame-rate clip whose frame
        times are the running sums, stored in milliseconds.
    gop: frames between key frames (x264 may add key frames at scene cuts unless ``fixed_gop``,
        which puts one exactly every ``gop`` frames and nowhere else).
    bframes: x264's B-frame count (None: the preset's).
    crf, preset: x264 quality and speed. threads: encoder threads (0 = FFmpeg picks).
    bitexact: no library version strings in the file. faststart: index at the start of the file.
    """
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        audio = audio[None] if audio.ndim == 1 else audio
        if audio.ndim != 2 or audio.shape[0] not in _LAYOUTS:
            raise ValueError(f"audio must be [S] or [C, S] with C in (1, 2), got shape {audio.shape}")
    if durations is not None:
        pts_ms = np.round(np.concatenate([[0.0], np.cumsum(durations)]) * 1000).astype(np.int64)
    fmt_options = {"fflags": "+bitexact"} if bitexact else {}
    if faststart:
        fmt_options["movflags"] = "faststart"
    x264 = {"preset": preset, "crf": str(crf), "threads": str(threads)}
    if fixed_gop:
        if gop is None:
            raise ValueError("fixed_gop needs gop")
        x264 |= {"keyint_min": str(gop), "sc_threshold": "0"}
    if bframes is not None:
        x264["bf"] = str(bframes)
    times: list[float] = []
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4", options=fmt_options) as out:
        vs = out.add_stream("libx264", rate=fps, options=x264)
        vs.pix_fmt = "yuv420p"
        if gop is not None:
            vs.codec_context.gop_size = gop
        vs.codec_context.thread_count = threads
        if durations is not None:
            vs.codec_context.time_base = _VFR_TIME_BASE
        aus = None
        if audio is not None:
            aus = out.add_stream("aac", rate=sample_rate, layout=_LAYOUTS[audio.shape[0]])
            if audio_bit_rate is not None:
                aus.codec_context.bit_rate = audio_bit_rate
        if bitexact:
            for s in (vs, aus):
                if s is not None:
                    s.codec_context.flags |= int(av.codec.context.Flags.bitexact)
        second = 0  # audio of the seconds before this one is written

        def mux_audio(until: int) -> None:  # audio of seconds [second, until)
            nonlocal second
            if aus is not None and until > second:
                a0, a1 = second * sample_rate, min(until * sample_rate, audio.shape[1])
                if a1 > a0:
                    af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, a0:a1]), format="fltp",
                                                    layout=_LAYOUTS[audio.shape[0]])
                    af.sample_rate, af.pts = sample_rate, a0
                    out.mux(aus.encode(af))
            second = max(second, until)

        for i, rgb in enumerate(frames):
            if durations is not None and i >= len(durations):
                raise ValueError(f"durations has {len(durations)} entries for more frames")
            if i == 0:
                vs.width, vs.height = rgb.shape[1], rgb.shape[0]
            t = i / fps if durations is None else int(pts_ms[i]) / 1000  # the time stored in the file
            mux_audio(math.floor(t + 1e-9))  # a new second of video starts: the previous seconds' audio
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if durations is None:
                frame.pts = i
            else:
                frame.pts, frame.time_base = int(pts_ms[i]), _VFR_TIME_BASE
            times.append(t)
            out.mux(vs.encode(frame))
        if not times:
            raise ValueError("write_video got no frames")
        if durations is not None and len(durations) != len(times):
            raise ValueError(f"durations has {len(durations)} entries for {len(times)} frames")
        end = times[-1] + (1 / fps if durations is None else float(durations[-1]))
        mux_audio(math.ceil(end - 1e-9))
        out.mux(vs.encode(None))
        if aus is not None:
            out.mux(aus.encode(None))
    return times
