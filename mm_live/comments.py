"""Viewer comments: reading a comment log and cutting it into per-step look-back bags.

A comment log is JSONL (one ``{"t": seconds, "user_id": ..., "text": ...}`` per line) or CSV with the
header ``t,user_id,text``. ``t`` is seconds from the start of the clip. A malformed line stops the read
with its line number unless the user asks to skip bad lines (``--skip-bad-lines``).

Step ``i`` sees the comments of its look-back window ``(end_i - lookback, end_i]`` with
``end_i = step_starts[i] + step_seconds``: nothing posted after the step is used to score it.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mm_live.errors import CommentsError

_FIELDS = ("t", "user_id", "text")


@dataclass(frozen=True)
class Comment:
    t: float  # seconds from the start of the clip
    user_id: str
    text: str


@dataclass
class CommentLog:
    path: str
    comments: list[Comment]  # sorted by t (stable: equal times keep file order)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (1-based line number, reason)

    def __len__(self) -> int:
        return len(self.comments)


class _BadLine(ValueError):
    pass


def _parse(record: Any) -> Comment:
    """One parsed record (dict) -> Comment; raises _BadLine with the reason."""
    if not isinstance(record, dict):
        raise _BadLine(f"expected an object with fields {', '.join(_FIELDS)}, got {type(record).__name__}")
    missing = [k for k in _FIELDS if k not in record or record[k] is None]
    if missing:
        raise _BadLine(f"missing field {', '.join(repr(k) for k in missing)}")
    t, user_id, text = record["t"], record["user_id"], record["text"]
    if isinstance(t, bool):
        raise _BadLine(f"'t' must be a number of seconds, got {t!r}")
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise _BadLine(f"'t' must be a number of seconds, got {t!r}") from None
    if not math.isfinite(t) or t < 0:
        raise _BadLine(f"'t' must be a finite number of seconds >= 0, got {t!r}")
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise _BadLine(f"'user_id' must be a string or an integer, got {user_id!r}")
    if not isinstance(text, str):
        raise _BadLine(f"'text' must be a string, got {type(text).__name__}")
    return Comment(t=t, user_id=str(user_id), text=text)


def _jsonl_records(fh) -> Any:
    """Yield (line number, record or _BadLine) for each non-blank line of a JSONL file."""
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, _BadLine(f"not valid JSON ({exc.msg})")


def _csv_records(fh, path: Path) -> Any:
    """Yield (line number, record or _BadLine) for each non-blank CSV row (header t,user_id,text)."""
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    if sorted(header) != sorted(_FIELDS):
        raise CommentsError(
            f"{path}: line 1: CSV header must be t,user_id,text (got {','.join(header)}); fix the header"
        )
    line_end = reader.line_num
    for row in reader:
        lineno, line_end = line_end + 1, reader.line_num  # a quoted field may span lines
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            yield lineno, _BadLine(f"expected {len(header)} columns, got {len(row)}")
        else:
            yield lineno, dict(zip(header, row))


def read_comments(path: str | Path, *, skip_bad_lines: bool = False) -> CommentLog:
    """Read a ``.jsonl`` or ``.csv`` comment log, sorted by time.

    A malformed line raises :class:`CommentsError` naming the file and line, unless
    ``skip_bad_lines`` (then it is recorded in ``CommentLog.skipped``). An empty file is an empty log.
    """
    path = Path(path)
    if not path.is_file():
        raise CommentsError(f"{path}: comments file not found; check the path")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise CommentsError(f"{path}: comments must be a .jsonl or .csv file; convert it or rename it")
    comments: list[Comment] = []
    skipped: list[tuple[int, str]] = []
    try:
        with open(path, encoding="utf-8", newline="" if suffix == ".csv" else None) as fh:
            records = _csv_records(fh, path) if suffix == ".csv" else _jsonl_records(fh)
            for lineno, record in records:
                try:
                    if isinstance(record, _BadLine):
                        raise record
                    comments.append(_parse(record))
                except _BadLine as exc:
                    if not skip_bad_lines:
                        raise CommentsError(
                            f"{path}: line {lineno}: {exc}; fix the line or pass --skip-bad-lines"
                        ) from None
                    skipped.append((lineno, str(exc)))
    except UnicodeDecodeError as exc:
        raise CommentsError(f"{path}: not UTF-8 text (byte {exc.start}); re-save the file as UTF-8") from None
    comments.sort(key=lambda c: c.t)
    return CommentLog(path=str(path), comments=comments, skipped=skipped)


def lookback_bags(
    comments: Sequence[Comment],
    step_starts: Sequence[float] | np.ndarray,
    step_seconds: float,
    lookback: float,
    max_per_step: int | None = None,
) -> list[list[Comment]]:
    """The comments each step sees: bag ``i`` = ``{c : end_i - lookback < c.t <= end_i}``, by time.

    ``end_i = step_starts[i] + step_seconds``. ``max_per_step`` keeps the most recent comments.
    ``comments`` must be sorted by ``t`` (as :func:`read_comments` returns them).
    """
    if max_per_step is not None and max_per_step < 1:
        raise ValueError(f"max_per_step must be >= 1 or None, got {max_per_step}")
    times = np.fromiter((c.t for c in comments), dtype=np.float64, count=len(comments))
    if times.size and np.any(np.diff(times) < 0):
        raise ValueError("comments must be sorted by t (read_comments returns them sorted)")
    ends = np.asarray(step_starts, dtype=np.float64) + float(step_seconds)
    hi = np.searchsorted(times, ends, side="right")  # first index with t > end
    lo = np.searchsorted(times, ends - float(lookback), side="right")  # first index with t > end - lookback
    if max_per_step is not None:
        lo = np.maximum(lo, hi - max_per_step)
    return [list(comments[a:b]) for a, b in zip(lo.tolist(), hi.tolist())]
