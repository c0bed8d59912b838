"""Viewer comments: reading a comment log and cutting it into per-step look-back bags.

A comment log is JSONL (one ``{"t": seconds, "user_id": ..., "text": ...}`` per line) or CSV with the
header ``t,user_id,text``, in UTF-8. ``t`` is seconds from the start of the clip. A malformed line
stops the read with one line naming the file and line (``<path>:<line>: <problem>; <fix>``, the format
of :mod:`mm_live.jsonl`, which reads the file) unless the user asks to skip bad lines
(``--skip-bad-lines``). Text is free (emoji, any script). Comments timed after the clip's end are
valid: they fall in no step's look-back bag and are simply unused.

Step ``i`` sees the comments of its look-back window ``(end_i - lookback, end_i]`` with
``end_i = step_starts[i] + step_seconds``: nothing posted after the step is used to score it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mm_live.errors import CommentsError
from mm_live.jsonl import check_file, iter_csv, iter_jsonl, line_error, open_text, skip_or_raise

_FIELDS = ("t", "user_id", "text")
_SKIP_HINT = "pass --skip-bad-lines"


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
    """A comment record whose fields are wrong; :func:`read_comments` names its line."""


def _parse(record: dict[str, Any]) -> Comment:
    """One parsed record -> Comment; raises _BadLine with the reason."""
    missing = [k for k in _FIELDS if k not in record or record[k] is None]
    if missing:
        raise _BadLine(f"missing field {', '.join(repr(k) for k in missing)}")
    t, user_id, text = record["t"], record["user_id"], record["text"]
    if isinstance(t, bool):
        raise _BadLine(f"'t' must be a number of seconds, got {t!r}")
    try:
        t = float(t)
    except (TypeError, ValueError, OverflowError):
        raise _BadLine(f"'t' must be a number of seconds, got {str(t)[:40]!r}") from None
    if not math.isfinite(t) or t < 0:
        raise _BadLine(f"'t' must be a finite number of seconds >= 0, got {t!r}")
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise _BadLine(f"'user_id' must be a string or an integer, got {str(user_id)[:40]!r}")
    if not isinstance(text, str):
        raise _BadLine(f"'text' must be a string, got {type(text).__name__}")
    return Comment(t=t, user_id=str(user_id), text=text)


def _csv_records(path: Path, skipped: list[tuple[int, str]] | None, hint: str | None) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, record) for each non-blank CSV row (header t,user_id,text)."""
    with open_text(path, "comments", error=CommentsError, newline="") as fh:
        rows = iter_csv(fh, path, error=CommentsError)
        first = next(rows, None)
        if first is None:
            return
        header = [h.strip() for h in first[1]]
        if sorted(header) != sorted(_FIELDS):
            raise line_error(path, first[0], f"CSV header must be t,user_id,text (got {','.join(header)[:80]})",
                             "fix the header", error=CommentsError)
        for lineno, row in rows:
            if all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                skip_or_raise(path, lineno, f"expected {len(header)} columns, got {len(row)}", "fix the line",
                              error=CommentsError, skipped=skipped, hint=hint)
            else:
                yield lineno, dict(zip(header, row))


def read_comments(path: str | Path, *, skip_bad_lines: bool = False, hint: str | None = _SKIP_HINT) -> CommentLog:
    """Read a ``.jsonl`` or ``.csv`` comment log, sorted by time.

    A malformed line (not UTF-8, broken JSON, a missing or mistyped field, a negative time) raises
    :class:`CommentsError` naming the file and line, unless ``skip_bad_lines`` (then it is recorded
    in ``CommentLog.skipped``); ``hint`` is the alternative fix the message offers (None where the
    command has no --skip-bad-lines). An empty file is an empty log. Any text is valid (emoji included);
    comments timed after the clip's end are kept here and simply fall in no step's bag.
    """
    path = check_file(path, "comments", error=CommentsError)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise CommentsError(f"{path}: comments must be a .jsonl or .csv file; convert it or rename it")
    skipped: list[tuple[int, str]] | None = [] if skip_bad_lines else None
    if suffix == ".csv":
        records = _csv_records(path, skipped, hint)
    else:
        records = iter_jsonl(path, "comments", error=CommentsError, skipped=skipped, hint=hint)
    comments: list[Comment] = []
    for lineno, record in records:
        try:
            comments.append(_parse(record))
        except _BadLine as exc:
            skip_or_raise(path, lineno, str(exc), "fix the line", error=CommentsError, skipped=skipped, hint=hint)
    comments.sort(key=lambda c: c.t)
    return CommentLog(path=str(path), comments=comments, skipped=skipped or [])


def check_comment_times(comments: Sequence[Comment], clip_end: float, path: str | Path) -> None:
    """Refuse a comment log none of whose comments falls inside the clip (``t`` > ``clip_end`` for
    all): its times are almost surely in other units or from another clock (unix seconds or
    milliseconds), and scoring would silently see no comments. Some comments past the end are fine."""
    first = min((c.t for c in comments), default=None)
    if first is not None and first > clip_end:
        raise CommentsError(f"{path}: all {len(comments)} comments are after the clip's end ({clip_end:g} s; the "
                            f"first at t={first:g}); 't' must be seconds from the start of the clip, not unix time or "
                            "milliseconds")


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
