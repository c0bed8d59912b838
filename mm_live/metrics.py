"""Ranking and highlight metrics, as the official evaluators compute them.

Plain numpy (scipy for rank correlations); inputs may be lists, numpy arrays or torch tensors.
Everything is batched over the items of one list/stream; loops run over queries/streams only.

- :func:`auc`, :func:`gauc`, :func:`uauc` — CTR/gifting ranking quality (ties count one half, as
  scikit-learn's ``roc_auc_score``).
- :func:`qvhighlights_highlight_metrics` — QVHighlights ``HL-min-{Fair,Good,VeryGood}`` mAP and
  HIT@1, reproducing moment_detr's ``standalone_eval/eval.py``.
- :func:`tvsum_top5_ap` — TVSum top-5 mAP as UMT (``datasets/tvsum.py``) and Lighthouse
  (``training/evaluate.py``) compute it.
- :func:`youtube_highlights_ap` — YouTube Highlights AP as UMT (``datasets/youtube.py``) computes it.
- :func:`kendall_tau`, :func:`spearman_rho`, :func:`ndcg_at_k` — per-stream curve agreement.

This module is core: it never imports :mod:`mm_live.data`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "QVHL_THRESHOLDS",
    "auc",
    "gauc",
    "uauc",
    "highlight_ap",
    "qvhighlights_highlight_metrics",
    "trapezoid_ap",
    "tvsum_top5_ap",
    "youtube_highlights_ap",
    "kendall_tau",
    "spearman_rho",
    "ndcg_at_k",
]

# QVHighlights saliency thresholds: a clip is positive for an annotator when its 0-4 score is >= this.
QVHL_THRESHOLDS: dict[str, int] = {"Fair": 2, "Good": 3, "VeryGood": 4}


def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """Array view of a list / numpy array / torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


# ----------------------------------------------------------------------------- AUC family


def _grouped_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC of every group in one pass (Mann-Whitney U with average ranks for ties).

    labels, scores, groups: [N]. Returns (auc [G], impressions [G]) for the groups that hold both
    classes; groups with a single class are skipped (their AUC is undefined).
    """
    _, g = np.unique(groups, return_inverse=True)
    g = g.ravel()
    # Sort by (group, score); a tie block is a run of equal (group, score).
    order = np.lexsort((scores, g))
    gs, ss, ys = g[order], scores[order], labels[order]
    new_block = np.ones(len(order), dtype=bool)
    new_block[1:] = (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])
    block = np.cumsum(new_block) - 1
    n_groups = int(g.max()) + 1 if len(g) else 0
    size = np.bincount(g, minlength=n_groups)
    group_start = np.concatenate([[0], np.cumsum(size)[:-1]])
    pos_in_group = np.arange(len(order)) - group_start[gs] + 1  # 1-based rank inside the group
    # Average rank of each tie block = mean of the 1-based positions it covers.
    block_rank = np.bincount(block, weights=pos_in_group) / np.bincount(block)
    ranks = block_rank[block]
    n_pos = np.bincount(gs, weights=ys, minlength=n_groups)
    n_neg = size - n_pos
    rank_sum_pos = np.bincount(gs, weights=ranks * ys, minlength=n_groups)
    ok = (n_pos > 0) & (n_neg > 0)
    aucs = (rank_sum_pos[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2) / (n_pos[ok] * n_neg[ok])
    return aucs, size[ok].astype(np.float64)


def _binary(labels: Any) -> np.ndarray:
    y = _np(labels)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("AUC labels must be 0/1")
    return y


def auc(labels: Any, scores: Any) -> float:
    """ROC AUC of one list. labels: [N] in {0,1}; scores: [N]. Ties count one half (= sklearn).

    Raises ValueError when only one class is present (the AUC is undefined).
    """
    y, s = _binary(labels), _np(scores)
    aucs, _ = _grouped_auc(y, s, np.zeros(len(y), dtype=np.int64))
    if len(aucs) == 0:
        raise ValueError("AUC is undefined when only one class is present")
    return float(aucs[0])


def gauc(labels: Any, scores: Any, groups: Any) -> float:
    """Group AUC: impression-weighted mean of per-group AUCs. labels/scores/groups: [N].

    ``GAUC = Σ_g n_g·AUC_g / Σ_g n_g`` over groups (usually users) that hold both classes; groups
    with a single class are skipped. Returns NaN when no group qualifies.
    """
    aucs, n = _grouped_auc(_binary(labels), _np(scores), np.asarray(groups).ravel())
    return float((aucs * n).sum() / n.sum()) if len(aucs) else float("nan")


def uauc(labels: Any, scores: Any, users: Any) -> float:
    """User AUC: unweighted mean of per-user AUCs over users with both classes. Inputs: [N]."""
    aucs, _ = _grouped_auc(_binary(labels), _np(scores), np.asarray(users).ravel())
    return float(aucs.mean()) if len(aucs) else float("nan")


# ----------------------------------------------------------------------------- QVHighlights


def _sorted_tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order clips by descending score; return (order [T], tie-group id per sorted position [T])."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] != s[:-1]
    return order, np.cumsum(new) - 1


def highlight_ap(y_true: Any, y_score: Any) -> np.ndarray:
    """Interpolated AP of moment_detr's ``get_ap`` (standalone_eval/utils.py), for many label columns.

    y_true: [T] or [T, C] binary labels; y_score: [T]. Returns AP per column ([C], or a scalar
    array for 1-D input). Follows the official code exactly, including its quirks:

    - a column that is all 0 scores 0 and a column that is all 1 scores 1;
    - tied scores form one threshold of sklearn's ``precision_recall_curve``; the AP is the
      mean, over the thresholds that recall at least one new positive, of the interpolated
      precision (max precision at that recall or higher) — a tied group holding several
      positives counts once, not once per positive.
    """
    y = _np(y_true)
    squeeze = y.ndim == 1
    y = y.reshape(len(y), -1)
    s = _np(y_score)
    order, tie = _sorted_tie_groups(s)
    n_groups = int(tie[-1]) + 1
    ys = y[order]  # [T, C], sorted by descending score
    # Cumulative counts at the end of each tie group (threshold = that group's score).
    tp_g = np.zeros((n_groups, y.shape[1]))
    np.add.at(tp_g, tie, ys)
    tp = np.cumsum(tp_g, axis=0)
    n_pred = np.cumsum(np.bincount(tie, minlength=n_groups))[:, None]
    precision = tp / n_pred
    # Interpolation: max precision over this and all lower thresholds (higher recall).
    interp = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
    adds_positive = tp_g > 0
    n_adds = adds_positive.sum(0)
    ap = (interp * adds_positive).sum(0) / np.maximum(n_adds, 1)
    n_pos = y.sum(0)
    ap = np.where(n_pos == 0, 0.0, np.where(n_pos == len(y), 1.0, ap))
    return ap[0] if squeeze else ap


def qvhighlights_highlight_metrics(
    pred_scores: Sequence[Any], gt_saliency: Sequence[Any]
) -> dict[str, dict[str, float]]:
    """QVHighlights highlight detection, as moment_detr's ``standalone_eval/eval.py`` (``eval_highlight``).

    pred_scores: per query a [T_pred] saliency score vector; gt_saliency: per query the full-video
    [T, 3] matrix of the 3 annotators' 0-4 scores (0 for clips outside ``relevant_clip_ids``).
    For each threshold name ("Fair" ≥ 2, "Good" ≥ 3, "VeryGood" ≥ 4) every annotator's scores are
    binarised separately:

    - HL-mAP: AP (:func:`highlight_ap`) per (query, annotator), mean over all of them ("min" = the
      threshold is a minimum score), ×100;
    - HL-Hit1: the top-scored clip (first on ties, ``np.argmax``) is a hit if ANY annotator marks it
      positive (max over annotators), mean over queries, ×100.

    As the official code, predictions longer than the video are truncated and shorter ones are
    padded with 0 for the AP; a top clip beyond the video counts as a miss. Values are rounded to
    2 decimals like the official output. Returns ``{"HL-min-Fair": {"HL-mAP", "HL-Hit1"}, ...}``.
    """
    if len(pred_scores) != len(gt_saliency):
        raise ValueError("pred_scores and gt_saliency must have one entry per query")
    out = {}
    n = len(pred_scores)
    names = list(QVHL_THRESHOLDS)
    ap = np.zeros((n, len(names), 3))
    hit = np.zeros((n, len(names)))
    for i, (p, g) in enumerate(zip(pred_scores, gt_saliency)):
        g = _np(g).reshape(-1, 3)
        p = _np(p).ravel()
        t = len(g)
        binary = np.concatenate([(g >= QVHL_THRESHOLDS[k]).astype(np.float64) for k in names], axis=1)  # [T, 3·K]
        top = int(np.argmax(p))
        if top < t:
            hit[i] = binary[top].reshape(len(names), 3).max(1)
        p_ap = p[:t] if len(p) >= t else np.concatenate([p, np.zeros(t - len(p))])
        ap[i] = highlight_ap(binary, p_ap).reshape(len(names), 3)
    for j, k in enumerate(names):
        out[f"HL-min-{k}"] = {
            "HL-mAP": float(f"{100 * ap[:, j].mean():.2f}"),
            "HL-Hit1": float(f"{100 * hit[:, j].mean():.2f}"),
        }
    return out


# ----------------------------------------------------------------------------- TVSum / YouTube


def trapezoid_ap(ranked_labels: Any) -> np.ndarray:
    """UMT's AP over a ranked list of 0/1 labels, batched over columns.

    ranked_labels: [K] or [K, C], already ordered by descending prediction. With hits_j the
    positives among the first j+1 items, ``rec_j = hits_j / num_gt`` and ``prc_j = hits_j / (j+1)``,
    ``AP = Σ_j (rec_j − rec_{j−1})·(prc_{j−1} + prc_j)/2`` with ``rec_{−1} = 0, prc_{−1} = 1``;
    ``num_gt`` counts positives IN THE LIST (for top-k lists: in the top k). No positive → 0.
    """
    y = _np(ranked_labels)
    squeeze = y.ndim == 1
    y = y.reshape(len(y), -1)
    hits = np.cumsum(y, axis=0)
    num_gt = hits[-1]
    rec = hits / np.maximum(num_gt, 1)
    prc = hits / np.arange(1, len(y) + 1)[:, None]
    rec_prev = np.vstack([np.zeros((1, y.shape[1])), rec[:-1]])
    prc_prev = np.vstack([np.ones((1, y.shape[1])), prc[:-1]])
    ap = ((rec - rec_prev) * (prc_prev + prc) / 2).sum(0)
    ap = np.where(num_gt > 0, ap, 0.0)
    return ap[0] if squeeze else ap


def tvsum_top5_ap(scores: Any, annotations: Any, k: int = 5) -> float:
    """TVSum top-k AP of one video, averaged over its annotators (UMT ``datasets/tvsum.py``).

    scores: [T'] predicted saliency per clip; annotations: [T, A] each annotator's 1-5 clip scores
    (A = 20). For each annotator: positive = score STRICTLY above that annotator's median over all
    T clips, where the median of an even-length column is the LOWER middle value (``torch.median``
    semantics, which UMT/Lighthouse use; for ``>`` on these scores it selects the same clips as
    the mean-of-middle median, since no score lies strictly between the two middle values); rank clips by descending prediction (stable: ties keep
    clip order — torch's unstable argsort leaves tie order unspecified); :func:`trapezoid_ap` over
    the top k. As Lighthouse (``pred[:len(label)]``), extra scores are dropped and, when T' < T,
    only the predicted clips are ranked. Returns the mean AP over annotators (in [0, 1]).
    """
    a = _np(annotations)
    a = a.reshape(len(a), -1)
    s = _np(scores).ravel()[: len(a)]
    lower_median = np.sort(a, axis=0)[(len(a) - 1) // 2]
    positive = (a > lower_median).astype(np.float64)
    top = np.argsort(-s, kind="stable")[:k]
    return float(trapezoid_ap(positive[top]).mean())


def youtube_highlights_ap(scores: Any, labels: Any) -> float:
    """YouTube Highlights AP of one video (UMT ``datasets/youtube.py``, Lighthouse ``evaluate.py``).

    scores: [T']; labels: [T] with positive = label > 0 (the raw ``match`` is −1/0/1, the Lighthouse
    JSONL ``label`` already 0/1). Clips ranked by descending score (stable on ties);
    :func:`trapezoid_ap` over the whole ranking (extra scores dropped; when T' < T only the
    predicted clips are ranked, as ``label[argsort(pred[:T])]`` does). A domain's mAP is the mean
    over its videos.
    """
    y = (_np(labels).ravel() > 0).astype(np.float64)
    s = _np(scores).ravel()[: len(y)]
    return float(trapezoid_ap(y[np.argsort(-s, kind="stable")]))


# ----------------------------------------------------------------------------- per-stream agreement


def kendall_tau(pred: Any, target: Any) -> float:
    """Kendall τ-b between one stream's predicted and true curves ([T] each); NaN if one is constant."""
    p, t = _np(pred).ravel(), _np(target).ravel()
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(stats.kendalltau(p, t).statistic)


def spearman_rho(pred: Any, target: Any) -> float:
    """Spearman ρ between one stream's predicted and true curves ([T] each); NaN if one is constant."""
    p, t = _np(pred).ravel(), _np(target).ravel()
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(stats.spearmanr(p, t).statistic)


def ndcg_at_k(relevance: Any, scores: Any, k: int) -> float:
    """NDCG@k of one list: gains = relevance (linear, ≥ 0), discount 1/log2(rank + 1).

    relevance, scores: [T]. Ties in scores are broken by position (stable). The ideal DCG ranks by
    relevance. Returns NaN when every relevance is 0 (the NDCG is undefined).
    """
    rel, s = _np(relevance).ravel(), _np(scores).ravel()
    if (rel < 0).any():
        raise ValueError("NDCG relevance must be non-negative")
    k = min(k, len(rel))
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (rel[np.argsort(-s, kind="stable")[:k]] * discount).sum()
    idcg = (np.sort(rel)[::-1][:k] * discount).sum()
    return float(dcg / idcg) if idcg > 0 else float("nan")
