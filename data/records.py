"""The record type every dataset reader yields, and the small parsing helpers they share.

A :class:`HighlightRecord` is one scored unit: a QVHighlights query on its video, a TVSum or YouTube
Highlights video, a KLive room, or a stream of the user's own logs. Labels are per step
(``step_seconds`` each: 2 s clips for QVHighlights/TVSum, 1 s for KLive and own logs).

Every malformed input raises :class:`~mm_live.errors.DataError` with one line naming the file, the
line and the field (see :func:`bad`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mm_live.errors import DataError


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
    """A :class:`DataError` naming ``path:line``, the field and the problem (one line)."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    what = f" field '{field_name}'" if field_name else ""
    return DataError(f"{where}:{what} {problem}")


def require_file(path: Path | str, what: str) -> Path:
    """``path`` as a Path, or a DataError saying which file is missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path} (check the path)")
    return path


def iter_jsonl(path: Path | str, what: str) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for every non-blank line of a JSONL file (1-based lines)."""
    path = require_file(path, what)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise bad(path, lineno, None, f"is not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise bad(path, lineno, None, f"must be a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def get(obj: dict, key: str, path: Path, line: int) -> Any:
    """``obj[key]``, or a DataError naming the missing field."""
    if key not in obj:
        raise bad(path, line, key, "is missing")
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
