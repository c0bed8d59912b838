"""Metrics against hand-computed values and against scikit-learn / scipy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score, precision_recall_curve, roc_auc_score

from mm_live import metrics


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- AUC family


def test_auc_hand_computed_with_tie():
    # Pairs (pos, neg): (0.8,0.1)=1, (0.8,0.4)=1, (0.4,0.1)=1, (0.4,0.4)=0.5 -> 3.5/4
    assert metrics.auc([1, 0, 1, 0], [0.8, 0.1, 0.4, 0.4]) == pytest.approx(0.875)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_many_ties(seed):
    rng = _rng(seed)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 7, 300) / 7.0  # heavy ties
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_single_class_raises_and_torch_input():
    with pytest.raises(ValueError):
        metrics.auc([1, 1], [0.2, 0.3])
    assert metrics.auc(torch.tensor([0, 1]), torch.tensor([0.1, 0.9])) == 1.0


def test_gauc_hand_computed_weighted_and_single_class_group_skipped():
    labels = [1, 0, 0, 1, 0, 1, 1]
    scores = [0.9, 0.1, 0.5, 0.2, 0.6, 0.3, 0.4]
    groups = ["a", "a", "b", "b", "b", "c", "c"]
    # a: AUC 1 (2 impressions); b: pos 0.2 vs negs 0.5, 0.6 -> 0 (3 impressions); c: one class, skipped.
    assert metrics.gauc(labels, scores, groups) == pytest.approx((1 * 2 + 0 * 3) / 5)
    assert metrics.uauc(labels, scores, groups) == pytest.approx(0.5)


def test_gauc_matches_sklearn_per_group():
    rng = _rng(1)
    n = 600
    y, s, g = rng.integers(0, 2, n), rng.integers(0, 5, n) / 5.0, rng.integers(0, 30, n)
    aucs, weights = [], []
    for k in np.unique(g):
        m = g == k
        if len(np.unique(y[m])) == 2:
            aucs.append(roc_auc_score(y[m], s[m]))
            weights.append(m.sum())
    assert metrics.gauc(y, s, g) == pytest.approx(np.average(aucs, weights=weights), abs=1e-12)
    assert metrics.uauc(y, s, g) == pytest.approx(np.mean(aucs), abs=1e-12)
    assert math.isnan(metrics.gauc([1, 1], [0.1, 0.2], [0, 0]))


# ----------------------------------------------------------------------------- QVHighlights AP


def _reference_get_ap(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Independent reading of moment_detr's get_ap: sklearn PR curve, running-max interpolation,
    mean precision where recall changes."""
    if len(set(y_true.tolist())) == 1:
        return float(y_true[0] == 1)
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    precision = np.maximum.accumulate(precision)
    return float(np.mean(precision[np.nonzero(np.diff(recall.astype(np.float32)))]))


def test_highlight_ap_hand_computed():
    # Ranked 1,0,1: precision 1, 1/2, 2/3; interpolated 1, 2/3, 2/3; positives at ranks 1 and 3.
    assert metrics.highlight_ap([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx((1 + 2 / 3) / 2)
    # One tied group holding both positives counts once, with precision 2/3.
    assert metrics.highlight_ap([1, 0, 1], [0.5, 0.5, 0.5]) == pytest.approx(2 / 3)
    assert metrics.highlight_ap([0, 0, 0], [0.1, 0.2, 0.3]) == 0.0
    assert metrics.highlight_ap([1, 1], [0.1, 0.2]) == 1.0


@pytest.mark.parametrize("seed", range(10))
def test_highlight_ap_matches_sklearn_reference_batched(seed):
    rng = _rng(seed)
    t = int(rng.integers(2, 60))
    y = (rng.random((t, 4)) < 0.3).astype(float)
    s = np.round(rng.normal(size=t), 1)  # ties
    got = metrics.highlight_ap(y, s)
    want = [_reference_get_ap(y[:, c], s) for c in range(4)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_qvhighlights_metrics_hand_computed():
    # Query 1: 3 clips; annotators' scores; prediction ranks clip 2 first.
    g1 = np.array([[4, 1, 2], [0, 0, 0], [2, 3, 4]])
    p1 = [0.1, 0.2, 0.9]
    # Query 2: top clip 0 is positive for nobody at Fair (all < 2).
    g2 = np.array([[1, 1, 0], [3, 3, 3]])
    p2 = [0.8, 0.1]
    out = metrics.qvhighlights_highlight_metrics([p1, p2], [g1, g2])
    # Fair (>=2): q1 annotators positives {0,2},{2},{0,2}; ranking 2,1,0 -> AP 5/6, 1, 5/6.
    # q2: positives {1} for all, ranked second -> AP 1/2 each.  mAP = (5/6+1+5/6+1.5)/6.
    assert out["HL-min-Fair"]["HL-mAP"] == pytest.approx(round(100 * (5 / 6 + 1 + 5 / 6 + 1.5) / 6, 2))
    assert out["HL-min-Fair"]["HL-Hit1"] == 50.0
    # VeryGood (>=4): q1 annotator 0: positive clip 0 ranked 3rd -> AP 1/3; annotator 1: none -> 0;
    # annotator 2: clip 2 ranked 1st -> 1. q2: no positives -> 0 each.
    assert out["HL-min-VeryGood"]["HL-mAP"] == pytest.approx(round(100 * (1 / 3 + 0 + 1 + 0 + 0 + 0) / 6, 2))
    assert out["HL-min-VeryGood"]["HL-Hit1"] == 50.0


def test_qvhighlights_metrics_pad_short_prediction_like_official():
    # A prediction one clip short is padded with 0: the missing clip ranks by score 0.
    g = np.array([[4, 4, 4], [0, 0, 0], [4, 4, 4]])
    short = metrics.qvhighlights_highlight_metrics([[1.0, -1.0]], [g])
    padded = metrics.qvhighlights_highlight_metrics([[1.0, -1.0, 0.0]], [g])
    assert short == padded


# ----------------------------------------------------------------------------- TVSum / YouTube


def test_trapezoid_ap_hand_computed():
    # hits 1,1,2; rec .5,.5,1; prc 1,.5,2/3 -> .5·(1+1)/2 + .5·(.5+2/3)/2
    assert metrics.trapezoid_ap([1, 0, 1]) == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
    assert metrics.trapezoid_ap([0, 0]) == 0.0
    # Column 2 ranks its positive second: prc 0 then 1/2 -> 1·(0 + 0.5)/2.
    np.testing.assert_allclose(metrics.trapezoid_ap(np.array([[1, 0], [0, 1]])), [1.0, 0.25])


def test_tvsum_top5_ap_hand_computed():
    # 6 clips, 2 annotators. Annotator 0: lower median of [1,2,3,4,5,5] is 3 -> positives clips 3,4,5.
    # Annotator 1: [5,5,1,1,1,1] lower median 1 -> positives clips 0,1.
    anno = np.array([[1, 5], [2, 5], [3, 1], [4, 1], [5, 1], [5, 1]])
    scores = np.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])  # ranks clips 0..5 in order; top 5 = clips 0..4
    # Annotator 0 top-5 labels [0,0,0,1,1]: num_gt 2; hits at ranks 4,5:
    #   rank4: rec .5, prc 1/4, prev prc 0 (rank3) -> .5·(0 + .25)/2; rank5: rec 1, prc 2/5 -> .5·(.25+.4)/2
    a0 = 0.5 * (0 + 0.25) / 2 + 0.5 * (0.25 + 0.4) / 2
    # Annotator 1 top-5 labels [1,1,0,0,0]: AP 1.
    assert metrics.tvsum_top5_ap(scores, anno) == pytest.approx((a0 + 1.0) / 2)


def test_youtube_ap_labels_as_scores_is_one_and_ties_are_stable():
    y = np.array([-1, 1, 0, 1, -1])
    assert metrics.youtube_highlights_ap(y, y) == 1.0
    # All scores tied: ranking keeps clip order [0,1,0,1,0] -> hits at 2 and 4.
    ap = metrics.youtube_highlights_ap(np.zeros(5), y)
    assert ap == pytest.approx(0.5 * (0 + 0.5) / 2 + 0.5 * (1 / 3 + 0.5) / 2)


# ----------------------------------------------------------------------------- per-stream agreement


def test_rank_correlations():
    x = np.arange(10.0)
    assert metrics.kendall_tau(x, x**2) == pytest.approx(1.0)
    assert metrics.spearman_rho(x, -x) == pytest.approx(-1.0)
    assert math.isnan(metrics.kendall_tau(np.ones(5), x[:5]))
    # τ-b with a tie, hand-computed: pairs of ([1,2,2],[1,2,3]): concordant 2, tied-in-x 1 -> 2/sqrt(2·3)
    assert metrics.kendall_tau([1, 2, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))


def test_ndcg_hand_computed_and_sklearn():
    rel, s = np.array([3.0, 2.0, 0.0]), np.array([0.1, 0.9, 0.5])
    want = (2 + 0 + 3 / math.log2(4)) / (3 + 2 / math.log2(3))
    assert metrics.ndcg_at_k(rel, s, 3) == pytest.approx(want)
    rng = _rng(3)
    rel, s = rng.random(20), rng.random(20)  # no ties
    assert metrics.ndcg_at_k(rel, s, 5) == pytest.approx(ndcg_score(rel[None], s[None], k=5))
    assert math.isnan(metrics.ndcg_at_k(np.zeros(3), s[:3], 2))
