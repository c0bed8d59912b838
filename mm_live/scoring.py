"""The scoring loop every task shares: a clip (and its comments) -> per-step model outputs.

Like segment-anything's predictor, the expensive, task-independent part runs once per step: the
clip is decoded window by window (:func:`~mm_live.media.iter_clip`, or the windows the caller passes:
highlight scoring decodes with :mod:`mm_live.live_source` like ``watch``; bounded memory), each window's
comments are bagged and prepared, and the encoders run on ``encode_batch`` steps at a time. What is
computed from the prepared steps is the caller's (``step_fn``): the highlight task fuses and pools,
gifting and EM3 take the Fusion-Q-Former's segment embedding. Time spent in each stage is recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from mm_live.comments import Comment, read_comments
from mm_live.config import Config
from mm_live.errors import MediaError
from mm_live.media import Clip, ClipInfo, iter_clip, probe
from mm_live.streams import clip_kwargs, comment_bags


@dataclass
class ClipSource:
    """A clip checked and its comments read, before any model is loaded (bad input fails fast)."""

    path: Path
    info: ClipInfo
    comments: list[Comment]

    @classmethod
    def open(cls, clip: str | Path, comments: str | Path | None = None, *, skip_bad_lines: bool = False) -> "ClipSource":
        path = Path(clip)
        info = probe(path)
        log = read_comments(comments, skip_bad_lines=skip_bad_lines).comments if comments else []
        return cls(path, info, log)


@dataclass
class EncodedClip:
    """Per-step outputs of ``step_fn`` in time order, the steps' start times and stage timings (s)."""

    outputs: list[Any]
    step_starts: np.ndarray  # [T] seconds
    timings: dict[str, float] = field(default_factory=dict)


def encode_clip(source: ClipSource, cfg: Config, encoder: Any, step_fn: Callable[[Any], Any], *,
                window_steps: int = 300, encode_batch: int = 32, device: torch.device | str = "cpu",
                streamer: torch.Tensor | None = None, windows: Iterable[Clip] | None = None) -> EncodedClip:
    """Run ``step_fn(inputs)`` on every ``encode_batch`` prepared steps of the clip, under inference mode.

    ``encoder`` is a :class:`~mm_live.multimodal.MultimodalEncoder` (its ``prepare``); ``streamer``
    is an optional ``[streamer_dim]`` embedding attached to every step. ``windows``: the clip's
    decoded steps when the caller decodes them itself (highlight scoring reads them with
    :func:`mm_live.live_source.clip_windows`, as ``watch`` does); default :func:`~mm_live.media.iter_clip`.
    Raises MediaError when the clip is shorter than one step.
    """
    timings = {"decode": 0.0, "prepare": 0.0, "model": 0.0}
    outputs: list[Any] = []
    starts: list[np.ndarray] = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        parts = windows if windows is not None else iter_clip(source.path, window_steps=window_steps, **clip_kwargs(cfg))
        for part in parts:
            t1 = time.perf_counter()
            s = None if streamer is None else streamer.expand(part.num_steps, -1)
            inputs = encoder.prepare(part, comment_bags(source.comments, part, cfg), s)
            t2 = time.perf_counter()
            timings["decode"] += t1 - t0
            timings["prepare"] += t2 - t1
            for a in range(0, len(inputs), encode_batch):
                outputs.append(step_fn(inputs[a : a + encode_batch].to(device)))
            timings["model"] += time.perf_counter() - t2
            starts.append(part.step_starts.numpy())
            t0 = time.perf_counter()
    if not outputs:
        raise MediaError(f"{source.path} is shorter than one step ({cfg.media.step_seconds} s): nothing to score; "
                         "pass a longer clip or train with a shorter media.step_seconds")
    return EncodedClip(outputs, np.concatenate(starts), timings)


@dataclass
class ScoreResult:
    """What scoring a clip gives: one score per step, the top windows, the clip embedding, the files."""

    clip: Path
    step_seconds: float
    step_starts: np.ndarray  # [T] seconds
    scores: np.ndarray  # [T] probabilities
    windows: list  # mm_live.report.Window, best first
    embedding: np.ndarray  # [d_emb]
    timings: dict[str, float]
    outputs: dict[str, Path] = field(default_factory=dict)


def finish_scores(source: ClipSource, enc: EncodedClip, scores: np.ndarray, embedding: np.ndarray, *,
                  step_seconds: float, top_k: int, out_dir: str | Path | None = None,
                  extra: dict[str, Any] | None = None) -> ScoreResult:
    """Top-k windows of ``scores`` [T] and, with ``out_dir``, the score files (scores.json/csv, a PNG
    of the curve with thumbnails at the peaks, Moment-DETR-style predictions.jsonl)."""
    from mm_live.report import highlight_windows, write_score_outputs

    windows = highlight_windows(scores, step_seconds, top_k)
    result = ScoreResult(source.path, step_seconds, enc.step_starts, scores, windows, embedding, enc.timings)
    if out_dir is not None:
        t0 = time.perf_counter()
        thumbs = thumbnails(source.path, peak_times(windows[:4], scores, enc.step_starts))
        info = {"duration": source.info.duration, "has_audio": source.info.has_audio, "comments": len(source.comments)}
        result.outputs = write_score_outputs(out_dir, clip_name=source.path.name, step_seconds=step_seconds,
                                             step_starts=enc.step_starts, scores=scores, windows=windows,
                                             embedding=embedding, thumbnails=thumbs, extra=info | (extra or {}))
        enc.timings["write"] = time.perf_counter() - t0
    return result


def segment_masks(step_starts: np.ndarray, step_seconds: float, segment_seconds: float) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """Consecutive segments of ``segment_seconds`` over T steps -> masks [n, T] bool and (start, end) seconds."""
    n, t = max(1, int(round(segment_seconds / step_seconds))), len(step_starts)
    firsts = range(0, t, n)
    steps = torch.arange(t)
    masks = torch.stack([(steps >= a) & (steps < a + n) for a in firsts])
    return masks, [(float(step_starts[a]), float(step_starts[min(a + n, t) - 1] + step_seconds)) for a in firsts]


def peak_times(windows: Sequence[Any], scores: np.ndarray, step_starts: np.ndarray) -> list[float]:
    """Start time of the best-scored step inside each window (``.start``/``.end`` in seconds)."""
    times = []
    for w in windows:
        inside = np.flatnonzero((step_starts >= w.start - 1e-6) & (step_starts < w.end - 1e-6))
        k = int(inside[np.argmax(scores[inside])]) if len(inside) else int(np.searchsorted(step_starts, w.start))
        times.append(float(step_starts[min(k, len(step_starts) - 1)]))
    return times


def thumbnails(clip: Path, times: Sequence[float], width: int = 192) -> list[tuple[float, np.ndarray]]:
    """The frame showing at each time, decoded again with one PyAV open (scoring keeps no frames,
    so memory stays bounded on long streams)."""
    import av

    out = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        height = max(2, round(width * stream.height / stream.width / 2) * 2)
        for t in times:
            container.seek(int(t / stream.time_base), stream=stream, backward=True)
            frame = next((f for f in container.decode(stream) if f.time is not None and f.time >= t - 1e-3), None)
            if frame is not None:
                out.append((t, frame.reformat(width=width, height=height, format="rgb24").to_ndarray()))
    return out
