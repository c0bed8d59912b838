"""``mm-live eval``: score Moment-DETR-style saliency predictions as each dataset's official evaluator.

Predictions: JSONL, one line per query/video/stream::

    {"qid": 2579, "vid": "NUsG9BgSes0_210.0_360.0", "pred_saliency_scores": [0.1, -0.3, ...]}

matched to the annotations by ``qid`` (compared as strings; for TVSum/YouTube Highlights the qid
is the video id, for KLive the live_id, for own logs the stream_id). One score per annotated
clip/step; a vector one clip shorter or longer is accepted (feature extractors round the clip count
— 13 of the official QVHighlights sample predictions are one clip short) and handled as the
official code does (QVHighlights pads with 0 / truncates; TVSum/YouTube rank the predicted clips);
any larger mismatch is an error.

Protocols (see :mod:`mm_live.metrics`):

- ``qvhighlights``: HL-min-{Fair,Good,VeryGood} mAP and HIT@1 (moment_detr standalone_eval);
- ``tvsum``: top-5 mAP per video (UMT), mean per domain, overall = mean of the 10 domains;
  annotations = ``ydata-tvsum50.mat`` or the Lighthouse JSONL;
- ``youtube_highlights``: AP per video (UMT), mean per domain, overall = mean of the domains;
- ``klive`` (a ``*_test_score_infer_output.log`` file or a folder of them) and ``own`` (a
  manifest): per-stream Kendall τ, Spearman ρ, NDCG@5 and NDCG@10 against the lvtr / ctr labels,
  averaged over streams — our choice of protocol (KuaiHL's evaluation code is not public).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mm_live import metrics
from mm_live.data.records import HighlightRecord, bad, get, numeric_array
from mm_live.data.sources import missing_error
from mm_live.errors import DataError
from mm_live.jsonl import check_file, iter_jsonl

DATASETS = ("qvhighlights", "tvsum", "youtube_highlights", "klive", "own")
LENGTH_SLACK = 1  # clips a prediction may be shorter/longer than the annotation


@dataclass
class EvalRow:
    """One table row: a domain (or "overall"), how many videos/streams it averages, its metrics."""

    name: str
    n: int
    metrics: dict[str, float]


@dataclass
class EvalResult:
    """Metrics of one evaluation: per-domain rows (if the dataset has domains) then the overall row."""

    dataset: str
    columns: list[str]
    rows: list[EvalRow]
    predictions: Path
    annotations: Path
    notes: list[str] = field(default_factory=list)

    @property
    def overall(self) -> dict[str, float]:
        return self.rows[-1].metrics

    def table(self) -> str:
        """Fixed-width text table: one row per domain plus ``overall``."""
        name_w = max(8, *(len(r.name) for r in self.rows))
        col_w = [max(8, len(c)) for c in self.columns]
        head = f"{'':{name_w}}  {'n':>5}  " + "  ".join(f"{c:>{w}}" for c, w in zip(self.columns, col_w))
        lines = [f"{self.dataset}: {self.predictions} vs {self.annotations}", head, "-" * len(head)]
        for r in self.rows:
            vals = "  ".join(f"{_fmt(r.metrics.get(c)):>{w}}" for c, w in zip(self.columns, col_w))
            lines.append(f"{r.name:{name_w}}  {r.n:>5}  {vals}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready: dataset, files, overall metrics, per-domain metrics (with n), notes."""
        clean = lambda m: {k: (None if v is None or math.isnan(v) else v) for k, v in m.items()}  # noqa: E731
        return {
            "dataset": self.dataset,
            "predictions": str(self.predictions),
            "annotations": str(self.annotations),
            "n": self.rows[-1].n,
            "metrics": clean(self.overall),
            "per_domain": {r.name: {"n": r.n, **clean(r.metrics)} for r in self.rows[:-1]},
            "notes": list(self.notes),
        }


def _fmt(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.2f}" if abs(v) >= 1.5 else f"{v:.4f}"


# ----------------------------------------------------------------------------- predictions


@dataclass
class _Pred:
    scores: np.ndarray
    line: int


def read_predictions(path: str | Path) -> dict[str, _Pred]:
    """Prediction JSONL → ``{str(qid): scores [T]}``; a repeated qid or a bad score list is an error."""
    path = Path(path)
    out: dict[str, _Pred] = {}
    for line, obj in iter_jsonl(path, "prediction"):
        qid = str(get(obj, "qid", path, line))
        scores = numeric_array(get(obj, "pred_saliency_scores", path, line), path, line, "pred_saliency_scores")
        if len(scores) == 0:
            raise bad(path, line, "pred_saliency_scores", "is empty")
        if qid in out:
            raise bad(path, line, "qid", f"{qid!r} already predicted on line {out[qid].line}")
        out[qid] = _Pred(scores, line)
    return out


def _align(records: list[HighlightRecord], preds: dict[str, _Pred], pred_path: Path) -> list[np.ndarray]:
    """Prediction of each record (same order); ONE error for all missing qids; length checks."""
    missing = [r.id for r in records if r.id not in preds]
    if missing:
        raise missing_error(f"predictions (qids) of {len(records)} annotated", missing, f"add them to {pred_path}")
    out = []
    for r in records:
        p = preds[r.id]
        t = r.n_steps
        if abs(len(p.scores) - t) > LENGTH_SLACK:
            raise bad(pred_path, p.line, "pred_saliency_scores",
                      f"has {len(p.scores)} scores but qid {r.id} has {t} annotated clips/steps (one per clip)")
        out.append(p.scores)
    return out


# ----------------------------------------------------------------------------- per dataset


def _labelled(records: list[HighlightRecord], path: Path) -> list[HighlightRecord]:
    if not records:
        raise DataError(f"{path}: no annotated records; pass the dataset's annotation file")
    if any(r.labels is None for r in records):
        raise DataError(f"{path}: has no labels (e.g. saliency_scores); the test split cannot be evaluated locally")
    return records


def _domain_rows(records: list[HighlightRecord], per_video: list[float], column: str) -> list[EvalRow]:
    """Mean per domain (×100), then overall = mean of the domain means."""
    by: dict[str, list[float]] = {}
    for r, v in zip(records, per_video):
        by.setdefault(r.domain or "-", []).append(v)
    rows = [EvalRow(d, len(v), {column: 100 * float(np.mean(v))}) for d, v in sorted(by.items())]
    rows.append(EvalRow("overall", len(records), {column: float(np.mean([r.metrics[column] for r in rows]))}))
    return rows


def _eval_qvhighlights(ann: Path, preds: dict[str, _Pred], pred_path: Path) -> tuple[list[str], list[EvalRow], list[HighlightRecord]]:
    from mm_live.data.qvhighlights import read_qvhighlights

    records = _labelled(read_qvhighlights(ann), ann)
    scores = _align(records, preds, pred_path)
    hl = metrics.qvhighlights_highlight_metrics(scores, [r.annotators for r in records])
    flat = {f"{name}-{k.split('-')[1]}": v for name, d in hl.items() for k, v in d.items()}
    return list(flat), [EvalRow("overall", len(records), flat)], records


def _eval_tvsum(ann: Path, preds: dict[str, _Pred], pred_path: Path) -> tuple[list[str], list[EvalRow], list[HighlightRecord]]:
    from mm_live.data.tvsum import read_tvsum

    records = _labelled(read_tvsum(ann), ann)
    scores = _align(records, preds, pred_path)
    per_video = [metrics.tvsum_top5_ap(s, r.annotators) for r, s in zip(records, scores)]
    return ["top5-mAP"], _domain_rows(records, per_video, "top5-mAP"), records


def _eval_youtube(ann: Path, preds: dict[str, _Pred], pred_path: Path) -> tuple[list[str], list[EvalRow], list[HighlightRecord]]:
    from mm_live.data.youtube_highlights import read_youtube_highlights

    records = _labelled(read_youtube_highlights(ann), ann)
    scores = _align(records, preds, pred_path)
    per_video = [metrics.youtube_highlights_ap(s, r.labels) for r, s in zip(records, scores)]
    return ["mAP"], _domain_rows(records, per_video, "mAP"), records


RANK_COLUMNS = ["kendall_tau", "spearman_rho", "ndcg@5", "ndcg@10"]


def _rank_rows(records: list[HighlightRecord], scores: list[np.ndarray]) -> list[EvalRow]:
    """Per-stream curve agreement, averaged over the streams where it is defined."""
    per: dict[str, list[float]] = {c: [] for c in RANK_COLUMNS}
    for r, s in zip(records, scores):
        t = min(len(s), len(r.labels))
        y, p = r.labels[:t], s[:t]
        per["kendall_tau"].append(metrics.kendall_tau(p, y))
        per["spearman_rho"].append(metrics.spearman_rho(p, y))
        rel = y - min(0.0, float(y.min()))  # NDCG needs non-negative gains
        per["ndcg@5"].append(metrics.ndcg_at_k(rel, p, 5))
        per["ndcg@10"].append(metrics.ndcg_at_k(rel, p, 10))
    mean = {c: float(np.nanmean(v)) if not np.isnan(v).all() else float("nan") for c, v in per.items()}
    return [EvalRow("overall", len(records), mean)]


def _eval_klive(ann: Path, preds: dict[str, _Pred], pred_path: Path) -> tuple[list[str], list[EvalRow], list[HighlightRecord]]:
    from mm_live.data.klive import LOG_GLOB, read_klive_log

    if ann.is_dir():
        logs = sorted(ann.glob(LOG_GLOB))
        if not logs:
            raise DataError(f"no {LOG_GLOB} files in {ann}; pass a KLive log or the folder holding them")
        records = [r for log in logs for r in read_klive_log(log)]
    else:
        records = read_klive_log(ann)
    records = _labelled(records, ann)
    return RANK_COLUMNS, _rank_rows(records, _align(records, preds, pred_path)), records


def _eval_own(ann: Path, preds: dict[str, _Pred], pred_path: Path) -> tuple[list[str], list[EvalRow], list[HighlightRecord]]:
    from mm_live.data.manifest import read_manifest

    records = _labelled(read_manifest(ann), ann)
    return RANK_COLUMNS, _rank_rows(records, _align(records, preds, pred_path)), records


_EVALUATORS: dict[str, Callable] = {
    "qvhighlights": _eval_qvhighlights,
    "tvsum": _eval_tvsum,
    "youtube_highlights": _eval_youtube,
    "klive": _eval_klive,
    "own": _eval_own,
}


def evaluate(dataset: str, *, predictions: str | Path, annotations: str | Path) -> EvalResult:
    """Score ``predictions`` (Moment-DETR-style JSONL) against ``annotations`` of ``dataset``.

    dataset: one of :data:`DATASETS`. Raises :class:`DataError` (one line naming file, line and
    field) for a missing file, a malformed line, a missing prediction or a wrong-length score list.
    """
    if dataset not in _EVALUATORS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    predictions, annotations = Path(predictions), Path(annotations)
    if not annotations.is_dir():
        check_file(annotations, f"{dataset} annotation")
    preds = read_predictions(predictions)
    columns, rows, records = _EVALUATORS[dataset](annotations, preds, predictions)
    notes = []
    extra = len(set(preds) - {r.id for r in records})
    if extra:
        notes.append(f"{extra} predicted qids have no annotation and were ignored")
    return EvalResult(dataset, columns, rows, predictions, annotations, notes)
