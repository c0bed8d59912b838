"""YouTube Highlights (Sun et al., ECCV 2014): 6 domains of user videos with per-clip highlight labels.

Source: the Lighthouse JSONL (https://github.com/line/lighthouse,
``data/youtube_highlight/youtube_highlight_{train,val}_release.jsonl``), derived from UMT's release
of the original annotations (https://github.com/aliensunmin/DomainSpecificHighlight). One line per
video: ``qid = vid``, ``query`` (= domain), ``domain``, ``duration`` (seconds), ``fps``, ``frames``,
``clip`` (frame span of each clip), ``match`` (raw per-clip label: 1 highlight, −1 not, 0 unlabeled)
and ``label`` (per-clip ``[[0|1]]``, = ``match > 0`` as UMT's ``get_saliency``).

Clips are 100-frame windows with a 50-frame hop (their spans are in ``clip``); ``step_seconds`` is
the duration divided by the clip count. Licence: the dataset authors' terms (research use).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mm_live.data.records import HighlightRecord, bad, get, number, numeric_array
from mm_live.jsonl import iter_jsonl

YOUTUBE_DOMAINS = ("dog", "gymnastics", "parkour", "skating", "skiing", "surfing")


def read_youtube_highlights(path: str | Path) -> list[HighlightRecord]:
    """Read a YouTube Highlights JSONL: one record per video (id = ``qid``).

    labels: [T] 0/1 (positive = ``match > 0``, or the ``label`` column when ``match`` is absent);
    ``extra["match"]`` keeps the raw −1/0/1 labels.
    """
    path = Path(path)
    records = []
    for line, obj in iter_jsonl(path, "YouTube Highlights annotation"):
        vid = str(get(obj, "vid", path, line))
        domain = get(obj, "domain", path, line)
        if domain not in YOUTUBE_DOMAINS:
            raise bad(path, line, "domain", f"must be one of {list(YOUTUBE_DOMAINS)}, got {domain!r}")
        duration = number(get(obj, "duration", path, line), path, line, "duration", positive=True)
        if obj.get("match") is not None:
            match = numeric_array(obj["match"], path, line, "match")
            if not np.isin(match, (-1, 0, 1)).all():
                raise bad(path, line, "match", "must hold -1/0/1 per clip")
        else:
            match = numeric_array(get(obj, "label", path, line), path, line, "label", ndim=2)[:, 0]
        labels = (match > 0).astype(np.float32)
        if obj.get("label") is not None:
            lab = numeric_array(obj["label"], path, line, "label", ndim=2)
            if lab.shape != (len(match), 1) or not np.array_equal(lab[:, 0] > 0, labels > 0):
                raise bad(path, line, "label", "disagrees with 'match' (expected label = match > 0, one per clip)")
        if len(labels) == 0:
            raise bad(path, line, "label", "is empty")
        records.append(HighlightRecord(
            id=str(obj.get("qid", vid)), video_id=vid, duration=duration, step_seconds=duration / len(labels),
            labels=labels, query=obj.get("query"), domain=domain,
            extra={"match": match.astype(np.int8), "clip": obj.get("clip"), "fps": obj.get("fps"), "line": line},
        ))
    return records
