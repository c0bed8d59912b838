"""KLive, the live-streaming highlight dataset of KuaiHL (Deng et al., ICME 2024).

Source: https://github.com/djx2726889/KLive (``src/dataset/README.md``; data on Google Drive).
Layout::

    KLive/
      live_id2aid.txt                         live_id, author_id (int64 each)
      train/{0..7}_test_score_infer_output.log
      test/{0..7}_test_score_infer_output.log

Each log row is one streaming frame: ``live_id`` (int64), ``timestamp`` (int64, seconds), ``lvtr``
(float, long-view-through rate of the frame — the label), ``image_feature`` and ``text_feature``
(float lists, e.g. ``[-0.0198, 0.0658, ...]``).

The README documents the fields and types but not the delimiter, so the reader accepts the
plausible encodings: tab-separated fields (lists bracketed or comma/space-separated inside their
field) or comma/space-separated fields with bracketed lists; an optional header row must name the
five fields in order. ``live_id2aid.txt`` rows are two integers separated by a tab, comma or spaces
(optional header). Licence: not stated by the release (research use; cite the paper).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mm_live.data.records import HighlightRecord, bad
from mm_live.errors import DataError
from mm_live.jsonl import iter_lines

LOG_FIELDS = ("live_id", "timestamp", "lvtr", "image_feature", "text_feature")
LOG_GLOB = "*_test_score_infer_output.log"

# Non-tab row: three scalars then two bracketed lists, separated by commas and/or whitespace.
_ROW = re.compile(r"^\s*([^\s,\[\]]+)[\s,]+([^\s,\[\]]+)[\s,]+([^\s,\[\]]+)[\s,]+(\[[^\]]*\])[\s,]+(\[[^\]]*\])\s*$")
_SEP = re.compile(r"[\s,]+")
_F32_MAX = float(np.finfo(np.float32).max)  # labels and features are stored as float32


def _int(text: str, path: Path, line: int, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise bad(path, line, name, f"must be an integer, got {text[:40]!r}") from None
    if not -(2**63) <= value < 2**63:
        raise bad(path, line, name, f"must fit in 64 bits (int64), got {text[:40]}")
    return value


def _float(text: str, path: Path, line: int, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise bad(path, line, name, f"must be a number, got {text!r}") from None
    if not abs(value) <= _F32_MAX:
        raise bad(path, line, name, f"must be a finite float32 value, got {text[:40]!r}")
    return value


def _vector(text: str, path: Path, line: int, name: str) -> np.ndarray:
    """Parse ``[a, b, ...]`` / ``a,b,...`` / ``a b ...`` into a float64 vector."""
    body = text.strip()
    if body.startswith("[") != body.endswith("]"):
        raise bad(path, line, name, "has an unbalanced '[' / ']'")
    items = [t for t in _SEP.split(body.strip("[]").strip()) if t]
    if not items:
        raise bad(path, line, name, "is empty")
    out = np.empty(len(items))
    for i, item in enumerate(items):
        try:
            out[i] = float(item)
        except ValueError:
            raise bad(path, line, name, f"item {i} is not a number: {item!r}") from None
    if not (np.abs(out) <= _F32_MAX).all():  # features are kept as float32
        raise bad(path, line, name, "holds NaN, infinite or out-of-float32-range values")
    return out


def _split_row(text: str, path: Path, line: int) -> list[str]:
    if "\t" in text:
        parts = text.rstrip("\r\n").split("\t")
    else:
        m = _ROW.match(text)
        if m is None:
            n = len(re.findall(r"\[[^\]]*\]|[^\s,\[\]]+", text))
            raise bad(path, line, None, f"expected 5 fields {', '.join(LOG_FIELDS)} "
                      f"(lists in [...]), got {n if n != 5 else 'an unparsable row'}")
        parts = list(m.groups())
    if len(parts) != len(LOG_FIELDS):
        raise bad(path, line, None, f"expected 5 tab-separated fields {', '.join(LOG_FIELDS)}, got {len(parts)}")
    return parts


def _check_header(text: str, path: Path, line: int) -> None:
    """An optional header row must name the five fields in order (the README's "feaure" spelling is accepted)."""
    names = [t for t in _SEP.split(text.strip()) if t]
    for i, want in enumerate(LOG_FIELDS):
        got = names[i] if i < len(names) else None
        if got is None or got.replace("feaure", "feature") != want:
            raise bad(path, line, got or want, f"is not the expected column {i + 1} '{want}'; "
                      f"the header must be {', '.join(LOG_FIELDS)}")
    if len(names) > len(LOG_FIELDS):
        raise bad(path, line, names[len(LOG_FIELDS)], f"unexpected extra column; the header must be {', '.join(LOG_FIELDS)}")


def read_live_id2aid(path: str | Path) -> dict[str, str]:
    """``live_id2aid.txt`` → ``{live_id: author_id}`` (both as decimal strings)."""
    path = Path(path)
    out: dict[str, str] = {}
    for line, text in iter_lines(path, "KLive live_id2aid"):
        parts = [p for p in _SEP.split(text.strip()) if p]
        if not parts:
            continue
        if line == 1 and parts[0].lower() == "live_id":
            if parts[1:] != ["author_id"]:
                raise bad(path, line, parts[1] if len(parts) > 1 else None, "header must be 'live_id author_id'")
            continue
        if len(parts) != 2:
            raise bad(path, line, None, f"expected 2 fields live_id, author_id, got {len(parts)}")
        out[str(_int(parts[0], path, line, "live_id"))] = str(_int(parts[1], path, line, "author_id"))
    return out


def read_klive_log(path: str | Path, authors: dict[str, str] | None = None) -> list[HighlightRecord]:
    """Read one ``*_test_score_infer_output.log``: one record per ``live_id``, rows sorted by timestamp.

    labels: [T] lvtr; features: ``image`` [T, d_img], ``text`` [T, d_txt] (float32);
    step_seconds: median timestamp gap (1 s when a room has one row); streamer_id from ``authors``.
    Duplicate (live_id, timestamp) rows are an error.
    """
    path = Path(path)
    rooms: dict[str, list[tuple[int, float, np.ndarray, np.ndarray, int]]] = {}
    dims: dict[str, tuple[int, int]] = {}
    for line, text in iter_lines(path, "KLive log"):
        if not text.strip():
            continue
        if not rooms and text.strip().lower().startswith("live_id"):
            _check_header(text, path, line)
            continue
        parts = _split_row(text, path, line)
        live_id = str(_int(parts[0].strip(), path, line, "live_id"))
        ts = _int(parts[1].strip(), path, line, "timestamp")
        lvtr = _float(parts[2].strip(), path, line, "lvtr")
        img = _vector(parts[3], path, line, "image_feature")
        txt = _vector(parts[4], path, line, "text_feature")
        if "first" not in dims:
            dims["first"] = (len(img), len(txt))
        for name, vec, want in (("image_feature", img, dims["first"][0]), ("text_feature", txt, dims["first"][1])):
            if len(vec) != want:
                raise bad(path, line, name, f"has {len(vec)} values, earlier rows have {want}")
        rooms.setdefault(live_id, []).append((ts, lvtr, img, txt, line))
    records = []
    for live_id, rows in rooms.items():
        rows.sort(key=lambda r: r[0])
        ts = np.array([r[0] for r in rows], dtype=np.int64)
        dup = np.nonzero(np.diff(ts) == 0)[0]
        if len(dup):
            raise bad(path, rows[dup[0] + 1][4], "timestamp", f"repeats {ts[dup[0]]} for live_id {live_id}")
        step = float(np.median(np.diff(ts))) if len(ts) > 1 else 1.0
        records.append(HighlightRecord(
            id=live_id, video_id=live_id, duration=len(rows) * step, step_seconds=step,
            labels=np.array([r[1] for r in rows], dtype=np.float32),
            streamer_id=(authors or {}).get(live_id),
            features={"image": np.stack([r[2] for r in rows]).astype(np.float32),
                      "text": np.stack([r[3] for r in rows]).astype(np.float32)},
            extra={"timestamps": ts, "source": path},
        ))
    return records


def read_klive(root: str | Path, split: str = "test") -> list[HighlightRecord]:
    """Read a KLive folder: ``live_id2aid.txt`` (optional) and every ``{split}/*_test_score_infer_output.log``."""
    root = Path(root)
    folder = root / split
    logs = sorted(folder.glob(LOG_GLOB)) if folder.is_dir() else []
    if not logs:
        raise DataError(f"no {LOG_GLOB} files in {folder}; point at the KLive folder holding train/ and test/")
    aid = root / "live_id2aid.txt"
    authors = read_live_id2aid(aid) if aid.is_file() else None
    records = [r for log in logs for r in read_klive_log(log, authors)]
    seen: dict[str, Path] = {}
    for r in records:
        if r.id in seen:
            raise DataError(f"live_id {r.id} appears in both {seen[r.id]} and {r.extra['source']}; one room per live_id")
        seen[r.id] = r.extra["source"]
    return records
