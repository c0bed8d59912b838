"""The own-logs manifest: the user's streams with per-step CTR labels (DESIGN.md "Formats").

JSONL, one stream per line; paths are relative to the manifest's folder::

    {"stream_id": "s0001", "clip": "streams/s0001.mp4", "comments": "streams/s0001.comments.jsonl",
     "streamer_id": 50001, "step_seconds": 1.0, "labels": {"ctr": [0.1, 0.12, ...]}}

``comments`` may be null or absent (a stream without comments still scores). Extra keys are kept
in ``record.extra`` (e.g. ``split``, ``highlights``, ``live_id``, ``truth``); ``split``, when present,
must be a string. Media files are checked all at once by :func:`check_media` (one error listing
every missing file), not here, so annotations can be evaluated without the videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mm_live.data.records import HighlightRecord, bad, get, number, numeric_array
from mm_live.data.sources import missing_error
from mm_live.errors import DataError, MMLiveError
from mm_live.jsonl import iter_jsonl

KNOWN_KEYS = ("stream_id", "clip", "comments", "streamer_id", "step_seconds", "labels")


def read_manifest(path: str | Path, split: str | None = None) -> list[HighlightRecord]:
    """Read an own-logs manifest: one record per stream (id = ``stream_id``), labels = ``labels.ctr``.

    ``split`` keeps only the lines whose ``"split"`` equals it. Duplicate stream ids are an error.
    """
    path = Path(path)
    base = path.parent
    records, seen = [], {}
    for line, obj in iter_jsonl(path, "manifest"):
        sid = get(obj, "stream_id", path, line)
        if not isinstance(sid, (str, int)) or isinstance(sid, bool) or str(sid) == "":
            raise bad(path, line, "stream_id", f"must be a non-empty string or integer, got {sid!r}")
        sid = str(sid)
        if sid in seen:
            raise bad(path, line, "stream_id", f"{sid!r} already used on line {seen[sid]}")
        seen[sid] = line
        clip = get(obj, "clip", path, line)
        if not isinstance(clip, str) or not clip:
            raise bad(path, line, "clip", f"must be a path relative to the manifest, got {clip!r}")
        comments = obj.get("comments")
        if comments is not None and (not isinstance(comments, str) or not comments):
            raise bad(path, line, "comments", f"must be a path relative to the manifest or null, got {comments!r}")
        step = number(get(obj, "step_seconds", path, line), path, line, "step_seconds", positive=True)
        labels = get(obj, "labels", path, line)
        if not isinstance(labels, dict):
            raise bad(path, line, "labels", 'must be an object like {"ctr": [...]}')
        ctr = numeric_array(get(labels, "ctr", path, line), path, line, "labels.ctr")
        if len(ctr) == 0:
            raise bad(path, line, "labels.ctr", "is empty; give one label per step")
        if np.abs(ctr).max() > np.finfo(np.float32).max:  # stored as float32 below
            raise bad(path, line, "labels.ctr", "holds values too large for float32; give rates such as 0.12")
        if obj.get("split") is not None and not isinstance(obj["split"], str):
            raise bad(path, line, "split", f"must be a string, got {obj['split']!r}")
        if split is not None and obj.get("split") != split:
            continue
        streamer = obj.get("streamer_id")
        records.append(HighlightRecord(
            id=sid, video_id=sid, duration=len(ctr) * step, step_seconds=step,
            labels=ctr.astype(np.float32), streamer_id=None if streamer is None else str(streamer),
            clip=base / clip, comments=None if comments is None else base / comments,
            extra={k: v for k, v in obj.items() if k not in KNOWN_KEYS} | {"line": line, "manifest": path},
        ))
    if not seen:
        raise DataError(f"{path}: the manifest lists no streams; write one stream per line as a JSON object "
                        "(docs/datasets.md)")
    return records


def check_media(records: list[HighlightRecord]) -> None:
    """Check every file the records name before any work starts: ONE DataError listing the clips and
    comment logs that do not exist, else ONE DataError for the comment logs that do not parse
    (training reads them lazily, so a broken line would otherwise stop it mid-epoch)."""
    from mm_live.comments import read_comments

    missing = [str(p) for r in records for p in (r.clip, r.comments) if p is not None and not p.is_file()]
    if missing:
        raise missing_error("manifest media files", missing, "fix the paths (relative to the manifest)")
    logs = list(dict.fromkeys(r.comments for r in records if r.comments is not None))
    broken = []
    for log in logs:
        try:
            read_comments(log, hint=None)  # training has no --skip-bad-lines
        except MMLiveError as exc:
            broken.append(str(exc))
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise DataError(f"{len(broken)} of {len(logs)} comment logs of the manifest cannot be read{more}; first: {broken[0]}")
