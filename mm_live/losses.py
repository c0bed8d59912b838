"""Ranking losses: pointwise BCE/MSE, border-aware pairwise (KuaiHL), first-order difference (ContentCTR),
the reaction reader's distant-supervision loss, and the in-batch InfoNCE losses that train embeddings
(symmetric: EM3's CIC; multi-positive: the highlight segment embedding).

Conventions (all functions): the model outputs ``logits [B, T]``; the score on the label's scale is
``s = sigmoid(logits)`` (a CTR/LVTR in (0, 1), like the label). Labels ``y [B, T]`` lie in [0, 1] and
padding steps carry ``-1``; a step is valid when ``y >= 0`` unless an explicit ``mask [B, T]`` is given.
Every loss is 0 (with zero gradient, never NaN) when it has nothing to average over.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

_DIFF_CLAMP = 1e3


def valid_mask(labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, T]`` bool: the given mask, or the steps whose label is not padding (``y >= 0``)."""
    return labels >= 0 if mask is None else mask.bool()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; 0 (still attached to the graph) when the mask is empty."""
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1)


def pointwise_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, kind: str = "bce"
) -> torch.Tensor:
    """Pointwise loss over valid steps: ``"bce"`` = BCE-with-logits on the soft target y in [0, 1];
    ``"mse"`` = ``(sigmoid(logits) - y)²``. ``logits, labels [B, T]`` → scalar."""
    valid = valid_mask(labels, mask)
    target = labels.clamp(0.0, 1.0)  # padding (-1) becomes a harmless 0; it is masked out anyway
    if kind == "bce":
        per_step = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif kind == "mse":
        per_step = (torch.sigmoid(logits) - target) ** 2
    else:
        raise ValueError(f"pointwise loss kind must be 'bce' or 'mse', got {kind!r}")
    return _masked_mean(per_step, valid)


def _bap_rows(s: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, i0: int, i1: int, sigma: float):
    """Border-aware pair terms for rows ``i in [i0, i1)`` against all ``j``.

    Returns ``(loss_sum [B], pair_count [B])``. The pair set is chosen on detached scores (it is a
    selection, not a function to differentiate).
    """
    si, yi, vi = s[:, i0:i1, None], y[:, i0:i1, None], valid[:, i0:i1, None]
    gap = (si - s[:, None, :]).clamp(-_DIFF_CLAMP, _DIFF_CLAMP)  # s_i - s_j, [B, rows, T]
    label_gap = yi - y[:, None, :]
    in_p = vi & valid[:, None, :] & (label_gap > 0) & (label_gap - gap.detach() >= 0)
    terms = -F.logsigmoid(sigma * gap)
    loss_sum = torch.where(in_p, terms, torch.zeros_like(terms)).sum(dim=(1, 2))
    return loss_sum, in_p.sum(dim=(1, 2))


def border_aware_pairwise_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    sigma: float = 1.0,
    chunk_size: int = 512,
) -> torch.Tensor:
    """KuaiHL's border-aware pairwise loss (BAP), exactly as DESIGN.md defines it.

    Per stream: ``P = {(i, j): y_i > y_j and (y_i - y_j) - (s_i - s_j) >= 0}`` (both steps valid);
    ``L = -mean_{(i,j) in P} log sigmoid(σ·(s_i - s_j))`` with ``s_i - s_j`` clamped to ±1e3. Pairs whose
    predicted gap already exceeds the label gap ("past the border") give no loss. The batch loss is
    the mean over the streams whose P is non-empty; 0 if all are empty.

    Args:
        scores: ``s [B, T]`` on the label's scale (e.g. ``sigmoid(logits)``).
        labels: ``y [B, T]``, padding -1.
        chunk_size: above this T, rows i are processed in chunks under activation checkpointing, so
            memory stays O(B·chunk·T) in forward and backward instead of O(B·T²).
    Returns:
        scalar.
    """
    valid = valid_mask(labels, mask)
    T = scores.shape[1]
    if T <= chunk_size:
        loss_sum, count = _bap_rows(scores, labels, valid, 0, T, sigma)
    else:
        parts = [
            checkpoint(_bap_rows, scores, labels, valid, i0, min(i0 + chunk_size, T), sigma, use_reentrant=False)
            for i0 in range(0, T, chunk_size)
        ]
        loss_sum = torch.stack([p[0] for p in parts]).sum(0)
        count = torch.stack([p[1] for p in parts]).sum(0)
    has_pairs = count > 0
    per_stream = loss_sum / count.clamp(min=1)
    return _masked_mean(per_stream, has_pairs)


def first_order_difference_loss(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, beta: float = 1.0
) -> torch.Tensor:
    """``L_diff = mean_t smoothL1((s_t - s_{t-1}) - (y_t - y_{t-1}))`` over consecutive valid pairs.

    ContentCTR's first-order difference constraint — our reading of its abstract (the paper's exact
    formula was not available): the predicted curve should follow the label's rises and falls.
    ``beta`` is smooth-L1's quadratic-to-linear threshold. ``scores, labels [B, T]`` → scalar.
    """
    valid = valid_mask(labels, mask)
    pair = valid[:, 1:] & valid[:, :-1]
    delta = (scores[:, 1:] - scores[:, :-1]) - (labels[:, 1:] - labels[:, :-1])
    per_pair = F.smooth_l1_loss(delta, torch.zeros_like(delta), reduction="none", beta=beta)
    return _masked_mean(per_pair, pair)


def reaction_targets(labels: torch.Tensor, lag: int) -> torch.Tensor:
    """``[B, T]`` target of a comment posted in step t: the highest label among steps ``t - lag .. t``
    (a chat reacts at most ``lag`` steps late; padding counts as 0). The first ``lag`` steps of a
    window only see the steps the window holds."""
    y = labels.clamp(min=0.0).unsqueeze(1)  # [B, 1, T]
    # max over the causal window t - lag .. t: max_pool1d over the sequence left-padded with lag zeros
    return F.max_pool1d(F.pad(y, (lag, 0)), lag + 1, stride=1).squeeze(1)


def reaction_loss(stats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean per-comment BCE-with-logits of the reaction reader (:mod:`mm_live.reaction`) from per-step
    statistics ``stats [B, T, 3] = (sum softplus(l), sum l, n)`` and per-step targets ``[B, T]``:
    ``sum_k BCE(l_k, y) = sum_k softplus(l_k) - y * sum_k l_k``. 0 when no step has comments."""
    per_step = stats[..., 0] - targets * stats[..., 1]
    return per_step.sum() / stats[..., 2].sum().clamp(min=1.0)


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, groups: torch.Tensor | None = None,
                       temperature: torch.Tensor | float = 0.1) -> torch.Tensor:
    """In-batch symmetric InfoNCE: ``S = norm(a)·norm(b)ᵀ/τ``, ``½[CE(S, I) + CE(Sᵀ, I)]``.

    a, b [B, d]: row i of ``a`` and row i of ``b`` are two views of one thing (the positive pair);
    groups [B] (optional): rows of the same group are not negatives of each other (their
    off-diagonal logits are masked), e.g. one item twice in a batch, two windows of one stream.
    """
    s = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature  # [B, B]
    if groups is not None:
        eye = torch.eye(len(groups), dtype=torch.bool, device=s.device)
        s = s.masked_fill((groups[:, None] == groups[None, :]) & ~eye, float("-inf"))
    target = torch.arange(len(s), device=s.device)
    return 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))


def supervised_info_nce(x: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Multi-positive in-batch InfoNCE (SupCon, Khosla et al. 2020) of ``x`` [N, d] under ``labels`` [N].

    ``S = norm(x)·norm(x)ᵀ/τ`` without its diagonal; each row i with at least one other row of its
    label averages ``-log softmax_j(S_i)`` over those rows (its positives); every other row is a
    negative. The loss is the mean over such anchors; 0 (attached to the graph) when there are none.
    """
    if len(x) < 2:
        return x.sum() * 0.0
    x = F.normalize(x, dim=-1)
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    logp = F.log_softmax((x @ x.T / temperature).masked_fill(eye, float("-inf")), dim=1)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        return x.sum() * 0.0
    per_row = -logp.masked_fill(~pos, 0.0).sum(1) / n_pos.clamp(min=1)
    return per_row[anchors].mean()


@dataclass
class HighlightLoss:
    """The total loss and its parts (each a scalar tensor); :meth:`as_dict` gives floats for logging."""

    total: torch.Tensor
    point: torch.Tensor
    bap: torch.Tensor
    diff: torch.Tensor
    align: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name).detach()) for name in ("total", "point", "bap", "diff", "align")}


def highlight_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    pointwise: str = "bce",
    sigma: float = 1.0,
    align_loss: torch.Tensor | None = None,
    align_weight: float = 0.01,
    chunk_size: int = 512,
) -> HighlightLoss:
    """``L = L_point + α·L_BAP + β·L_diff + align_weight·L_align`` (DESIGN.md "Highlight CTR").

    Args:
        logits: ``[B, T]`` model outputs; BAP and the difference term use ``s = sigmoid(logits)``.
        labels: ``[B, T]`` CTR/LVTR targets in [0, 1], padding -1.
        align_loss: the soft-DTW alignment loss (:func:`mm_live.alignment.alignment_loss`), computed
            by the caller from the text/frame embeddings; ``None`` = 0.
    Returns:
        :class:`HighlightLoss`.
    """
    valid = valid_mask(labels, mask)
    scores = torch.sigmoid(logits)
    point = pointwise_loss(logits, labels, valid, pointwise)
    bap = border_aware_pairwise_loss(scores, labels, valid, sigma, chunk_size)
    diff = first_order_difference_loss(scores, labels, valid)
    align = logits.new_zeros(()) if align_loss is None else align_loss
    total = point + alpha * bap + beta * diff + align_weight * align
    return HighlightLoss(total=total, point=point, bap=bap, diff=diff, align=align)
