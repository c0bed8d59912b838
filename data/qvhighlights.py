"""QVHighlights (Lei et al., NeurIPS 2021) highlight annotations.

Source: https://github.com/jayleicn/moment_detr (``data/highlight_{train,val,test}_release.jsonl``),
CC BY-NC-SA 4.0. One line per query::

    {"qid": 2579, "query": "...", "duration": 150, "vid": "NUsG9BgSes0_210.0_360.0",
     "relevant_clip_ids": [41, 42, ...], "saliency_scores": [[1, 1, 2], ...],
     "relevant_windows": [[82, 150]]}

Videos are cut into 2 s clips (``int(duration / 2)`` of them); ``saliency_scores[i]`` holds the 3
annotators' 0-4 scores of clip ``relevant_clip_ids[i]``; every other clip scores 0 (as the official
``mk_gt_scores``). The test split ships without ``relevant_clip_ids``/``saliency_scores``: its
records have ``labels = None``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mm_live.data.records import HighlightRecord, bad, get, number, numeric_array
from mm_live.jsonl import iter_jsonl

CLIP_SECONDS = 2.0
N_ANNOTATORS = 3


def _saliency_matrix(obj: dict, n_clips: int, path: Path, line: int) -> np.ndarray:
    """Full-video [n_clips, 3] matrix of 0-4 scores (0 outside ``relevant_clip_ids``)."""
    ids = numeric_array(get(obj, "relevant_clip_ids", path, line), path, line, "relevant_clip_ids")
    scores = numeric_array(get(obj, "saliency_scores", path, line), path, line, "saliency_scores", ndim=2)
    if scores.shape[1] != N_ANNOTATORS:
        raise bad(path, line, "saliency_scores", f"must hold {N_ANNOTATORS} annotator scores per clip, got {scores.shape[1]}")
    if len(ids) != len(scores):
        raise bad(path, line, "saliency_scores", f"has {len(scores)} rows for {len(ids)} relevant_clip_ids")
    if ((scores < 0) | (scores > 4)).any():
        raise bad(path, line, "saliency_scores", "must be 0-4")
    if (ids != np.round(ids)).any() or (ids < 0).any() or (ids >= n_clips).any():
        raise bad(path, line, "relevant_clip_ids", f"must be integers in [0, {n_clips}) for a {n_clips}-clip video")
    full = np.zeros((n_clips, N_ANNOTATORS))
    full[ids.astype(np.int64)] = scores
    return full


def read_qvhighlights(path: str | Path) -> list[HighlightRecord]:
    """Read a QVHighlights ``highlight_*_release.jsonl``: one record per query (id = ``qid``).

    labels: [T] mean of the 3 annotators' 0-4 scores; annotators: [T, 3]; T = ``int(duration / 2)``.
    """
    path = Path(path)
    records = []
    for line, obj in iter_jsonl(path, "QVHighlights annotation"):
        qid = get(obj, "qid", path, line)
        vid = get(obj, "vid", path, line)
        duration = number(get(obj, "duration", path, line), path, line, "duration", positive=True)
        n_clips = int(duration / CLIP_SECONDS)
        if n_clips == 0:
            raise bad(path, line, "duration", f"must be at least {CLIP_SECONDS:g} s (one clip), got {duration:g}")
        labelled = obj.get("saliency_scores") is not None
        sal = _saliency_matrix(obj, n_clips, path, line) if labelled else None
        records.append(HighlightRecord(
            id=str(qid), video_id=str(vid), duration=duration, step_seconds=CLIP_SECONDS,
            labels=sal.mean(1).astype(np.float32) if labelled else None,
            annotators=sal.astype(np.float32) if labelled else None,
            query=obj.get("query"),
            extra={"qid": qid, "relevant_windows": obj.get("relevant_windows"), "line": line},
        ))
    return records
