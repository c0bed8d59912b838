"""The record type every dataset reader yields, and the small parsing helpers they share.

A :class:`HighlightRecord` is one scored unit: a QVHighlights query on its video, a TVSum or YouTube
Highlights video, a KLive room, or a stream of the user's own logs. Labels are per step
(``step_seconds`` each: 2 s clips for QVHighlights/TVSum, 1 s for KLive and own logs).

Every malformed input raises :class:`~mm_live.errors.DataError` with one line naming the file, the
line and the field (see :func:`bad`); files are read with :mod:`mm_live.jsonl`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_live.errors import DataError
from mm_live.jsonl import line_error


@dataclass
class HighlightRecord:
    """One video/stream with per-step labels.

    id: the unit that is scored and matched to predictions (``qid``; for datasets without queries
    the video/stream id). labels: [T] float32 per-step target (mean over annotators where there are
    several) or None for unlabeled splits; annotators: [T, A] per-annotator scores where the
    dataset has them. features: per-step feature matrices shipped inside the annotation files
    (KLive: ``image`` [T, d_img], ``text`` [T, d_txt]). clip / comments / feature_path: media
    paired by :mod:`mm_live.data.sources` or given by the own-logs manifest.
    """

    id: str
    video_id: str
    duration: float
    step_seconds: float
    labels: np.ndarray | None
    annotators: np.ndarray | None = None
    query: str | None = None
    streamer_id: str | None = None
    domain: str | None = None
    clip: Path | None = None
    comments: Path | None = None
    feature_path: Path | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        """Number of labelled steps (T); from the duration when the record has no labels."""
        if self.labels is not None:
            return len(self.labels)
        return int(self.duration // self.step_seconds)


def bad(path: Path | str, line: int | None, field_name: str | None, problem: str) -> DataError:
    """A :class:`DataError` ``<path>:<line>: field '<name>' <problem>`` (one line, see :mod:`mm_live.jsonl`)."""
    return line_error(path, line, f"field '{field_name}' {problem}" if field_name else problem)


def get(obj: dict, key: str, path: Path, line: int) -> Any:
    """``obj[key]``, or a DataError naming the missing field."""
    if key not in obj:
        raise bad(path, line, key, "is missing; add it to the line (formats: docs/datasets.md)")
    return obj[key]


def number(value: Any, path: Path, line: int, key: str, *, positive: bool = False) -> float:
    """A finite float (bools rejected), or a DataError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(path, line, key, f"must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise bad(path, line, key, f"must be > 0, got {value!r}")
    return float(value)


def numeric_array(value: Any, path: Path, line: int, key: str, ndim: int = 1) -> np.ndarray:
    """A float64 array of ``ndim`` dimensions with finite entries, or a DataError naming the field."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise bad(path, line, key, f"must be a {'list' if ndim == 1 else 'matrix'} of numbers") from None
    if arr.ndim != ndim:
        shape = "a flat list" if ndim == 1 else f"a {ndim}-D list (rows of numbers)"
        raise bad(path, line, key, f"must be {shape}, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise bad(path, line, key, "holds NaN or infinite values")
    return arr
