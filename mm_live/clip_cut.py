"""Cutting a highlight out of a stream by stream copy (PyAV remux, no re-encode).

The clip starts at the key frame at or before ``start - lead_in`` (a copied stream can only start
on a key frame, so it may begin up to one GOP earlier) and ends at ``end``; timestamps are shifted
so it starts at 0. The mp4 appears atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import av

from mm_live.errors import MediaError
from mm_live.fileio import atomic_path
from mm_live.live_source import ByteFeed

_SEEK_MARGIN_SECONDS = 20.0  # longer than any GOP a live encoder uses


def cut_clip(source: str | os.PathLike, start: float, end: float, out: str | os.PathLike, *, lead_in: float = 0.0) -> Path:
    """Write ``[keyframe <= start - lead_in, end)`` of the local file or ``.m3u8`` ``source`` to ``out`` (mp4)."""
    src, t0 = str(source), max(0.0, start - lead_in)
    feed = ByteFeed(src, stall_timeout=0.0) if src.lower().endswith(".m3u8") else None
    try:
        inp = av.open(feed if feed is not None else src)
    except av.FFmpegError:
        raise MediaError(f"{src}: cannot be reopened to cut a highlight; keep the recording in place while watching") from None
    with inp:
        streams = [inp.streams.video[0]] + list(inp.streams.audio[:1])
        video = streams[0]
        if feed is None:
            try:
                # MPEG-TS seeks by byte estimate and can land past the key frame asked for: seek well before
                # it; the loop below keeps the last key frame at or before t0
                inp.seek(int(max(0.0, t0 - _SEEK_MARGIN_SECONDS) / video.time_base), stream=video, backward=True,
                         any_frame=False)
            except av.FFmpegError:
                pass  # not seekable: demux from the start
        kept: list[av.Packet] = []
        key = None  # time of the key frame the clip starts at
        for pkt in inp.demux(streams):
            if pkt.dts is None or pkt.pts is None:
                continue
            t = float(pkt.pts * pkt.time_base)
            if pkt.stream is not video:
                if t < end:
                    kept.append(pkt)  # audio before the key frame is dropped when writing
                continue
            if pkt.is_keyframe and (key is None or t <= t0 + 1e-6):  # a key frame nearer start - lead_in
                key, kept = t, [p for p in kept if float(p.pts * p.time_base) >= t - 1e-6]
            if key is None:
                continue
            if float(pkt.dts * pkt.time_base) >= end - 1e-6:
                break
            kept.append(pkt)
        if key is None:
            raise MediaError(f"{src}: no key frame before {end:.1f} s; nothing to cut")
        with atomic_path(out) as tmp:
            with av.open(str(tmp), "w", format="mp4") as dst:
                mapping = {s.index: dst.add_stream_from_template(s) for s in streams}
                for pkt in kept:
                    if pkt.stream is not video and float(pkt.pts * pkt.time_base) < key - 1e-6:
                        continue
                    shift = int(round(key / pkt.time_base))
                    pkt.pts, pkt.dts = pkt.pts - shift, pkt.dts - shift
                    pkt.stream = mapping[pkt.stream.index]
                    dst.mux(pkt)
    return Path(out)
