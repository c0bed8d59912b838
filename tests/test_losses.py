"""Pointwise, border-aware pairwise and first-order difference losses, and their combination."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mm_live.losses import (
    border_aware_pairwise_loss,
    first_order_difference_loss,
    highlight_loss,
    pointwise_loss,
)


def nls(x: float) -> float:
    """-log sigmoid(x)."""
    return math.log1p(math.exp(-x))


def test_pointwise_bce_and_mse_ignore_padding():
    logits = torch.tensor([[0.5, -1.0, 3.0], [2.0, 9.0, -9.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.25, -1.0], [0.0, -1.0, -1.0]])
    bce = pointwise_loss(logits, labels)
    idx = ([0, 0, 1], [0, 1, 0])
    expected = F.binary_cross_entropy_with_logits(logits[idx], labels[idx])
    assert bce.item() == pytest.approx(expected.item(), rel=1e-6)
    bce.backward()
    assert logits.grad[0, 2] == 0 and logits.grad[1, 1:].abs().sum() == 0
    mse = pointwise_loss(logits, labels, kind="mse")
    assert mse.item() == pytest.approx(((torch.sigmoid(logits[idx]) - labels[idx]) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError):
        pointwise_loss(logits, labels, kind="hinge")


def test_bap_hand_computed():
    y = torch.tensor([[1.0, 0.5, 0.0]])
    # all three pairs are inside the border
    s = torch.tensor([[0.2, 0.3, 0.1]])
    expected = (nls(-0.1) + nls(0.1) + nls(0.2)) / 3
    assert border_aware_pairwise_loss(s, y).item() == pytest.approx(expected, rel=1e-5)
    # (0, 1): predicted gap 0.6 > label gap 0.5 → past the border, no loss
    s = torch.tensor([[0.9, 0.3, 0.1]])
    expected = (nls(0.8) + nls(0.2)) / 2
    assert border_aware_pairwise_loss(s, y).item() == pytest.approx(expected, rel=1e-5)


def test_bap_border_equality_is_included_and_ties_are_not_pairs():
    y = torch.tensor([[0.5, 0.0, 0.0]])
    s = torch.tensor([[0.75, 0.25, 0.5]])  # (0,1): gaps equal (0.5 - 0.5 = 0) → in P; (1,2): tie in y → not a pair
    expected = (nls(0.5) + nls(0.25)) / 2
    assert border_aware_pairwise_loss(s, y).item() == pytest.approx(expected, rel=1e-6)
    assert border_aware_pairwise_loss(s, y, sigma=2.0).item() == pytest.approx((nls(1.0) + nls(0.5)) / 2, rel=1e-6)


def test_bap_empty_pair_set_is_zero_without_nan():
    s = torch.tensor([[0.3, 0.9, 0.1], [0.2, 0.2, 0.2]], requires_grad=True)
    for y in (torch.full((2, 3), 0.5), torch.full((2, 3), -1.0), torch.tensor([[1.0, -1.0, -1.0], [0.0, 0.0, -1.0]])):
        loss = border_aware_pairwise_loss(s, y)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.isfinite(s.grad).all() and s.grad.abs().sum() == 0
        s.grad = None
    # every pair past the border: P empty too
    loss = border_aware_pairwise_loss(torch.tensor([[5.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == 0.0


def test_bap_batch_mean_of_streams_and_padding_ignored():
    y = torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.0, -1.0]])
    s = torch.tensor([[0.2, 0.3, 0.1], [0.4, 0.1, 123.0]])
    stream0 = (nls(-0.1) + nls(0.1) + nls(0.2)) / 3
    stream1 = nls(0.3)
    assert border_aware_pairwise_loss(s, y).item() == pytest.approx((stream0 + stream1) / 2, rel=1e-5)
    s2 = s.clone()
    s2[1, 2] = -55.0
    assert border_aware_pairwise_loss(s2, y).item() == pytest.approx((stream0 + stream1) / 2, rel=1e-5)
    y_flat = y.clone()
    y_flat[1] = torch.tensor([0.3, 0.3, -1.0])  # stream 1 has no pair: it is left out of the mean
    assert border_aware_pairwise_loss(s, y_flat).item() == pytest.approx(stream0, rel=1e-5)


def test_bap_clamps_huge_differences():
    s = torch.tensor([[-1e6, 1e6, 0.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.5]])
    loss = border_aware_pairwise_loss(s, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert loss.item() == pytest.approx((1e3 + 1e3 + 1e3) / 3, rel=1e-6)  # all three gaps clamped to -1e3


@pytest.mark.parametrize("chunk_size", [3, 7, 64])
def test_bap_chunked_equals_unchunked(chunk_size):
    g = torch.Generator().manual_seed(0)
    y = torch.rand(3, 50, generator=g)
    y[1, 40:] = -1.0
    y[2, :10] = -1.0
    y[0, ::5] = 0.5  # some ties
    base = torch.randn(3, 50, generator=g, dtype=torch.float64)
    s_full, s_chunk = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    full = border_aware_pairwise_loss(s_full, y.double(), chunk_size=512)
    chunked = border_aware_pairwise_loss(s_chunk, y.double(), chunk_size=chunk_size)
    full.backward()
    chunked.backward()
    assert chunked.item() == pytest.approx(full.item(), rel=1e-12)
    torch.testing.assert_close(s_chunk.grad, s_full.grad, rtol=1e-12, atol=1e-15)
    assert s_full.grad.abs().sum() > 0


def test_bap_long_stream_uses_default_chunking():
    g = torch.Generator().manual_seed(1)
    y, s = torch.rand(1, 700, generator=g), torch.rand(1, 700, generator=g, requires_grad=True)
    chunked = border_aware_pairwise_loss(s, y)  # T > 512 → chunked by default
    whole = border_aware_pairwise_loss(s, y, chunk_size=1000)
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-5)


def test_first_order_difference_hand_computed_and_masked():
    s = torch.tensor([[0.0, 0.5, 0.5, 0.9], [0.2, 0.2, 0.4, 0.0]])
    y = torch.tensor([[0.0, 1.0, 0.0, -1.0], [0.1, -1.0, 0.3, 0.3]])
    # stream 0 pairs (0,1): -0.5 → 0.125 ; (1,2): 1.0 → 0.5 ; stream 1 pair (2,3): -0.4 → 0.08
    assert first_order_difference_loss(s, y).item() == pytest.approx((0.125 + 0.5 + 0.08) / 3, rel=1e-5)
    assert first_order_difference_loss(s[:, :1], y[:, :1]).item() == 0.0  # no consecutive pair


def test_highlight_loss_combines_parts():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 12, generator=g, requires_grad=True)
    labels = torch.rand(2, 12, generator=g)
    labels[1, 9:] = -1.0
    align = torch.tensor(2.5)
    out = highlight_loss(logits, labels, alpha=0.7, beta=0.3, align_loss=align, align_weight=0.01)
    s = torch.sigmoid(logits)
    torch.testing.assert_close(out.point, pointwise_loss(logits, labels))
    torch.testing.assert_close(out.bap, border_aware_pairwise_loss(s, labels))
    torch.testing.assert_close(out.diff, first_order_difference_loss(s, labels))
    torch.testing.assert_close(out.total, out.point + 0.7 * out.bap + 0.3 * out.diff + 0.025)
    assert set(out.as_dict()) == {"total", "point", "bap", "diff", "align"}
    assert out.as_dict()["align"] == 2.5
    out.total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1, 9:].abs().sum() == 0
    no_align = highlight_loss(logits, labels, pointwise="mse")
    assert no_align.align.item() == 0.0


def test_symmetric_info_nce_by_hand_on_3x3_and_groups_masked():
    import math

    from mm_live.losses import symmetric_info_nce

    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    tau = 0.5
    r = 1 / math.sqrt(2)
    # S = norm(a) norm(b)^T / tau
    S = [[1 / tau, r / tau, 0.0], [0.0, r / tau, 1 / tau], [r / tau, 1 / tau, r / tau]]

    def ce(rows):
        return sum(-rows[i][i] + math.log(sum(math.exp(v) for v in rows[i])) for i in range(3)) / 3

    cols = [[S[j][i] for j in range(3)] for i in range(3)]
    expected = 0.5 * (ce(S) + ce(cols))
    got = symmetric_info_nce(a, b, temperature=tau)
    assert abs(float(got) - expected) < 1e-5
    assert abs(float(symmetric_info_nce(b, a, temperature=tau)) - expected) < 1e-5  # symmetric
    # rows 0 and 2 of one group: their off-diagonal logits drop out of both softmaxes
    masked = [[S[0][0], S[0][1]], [S[1][0], S[1][1], S[1][2]], [S[2][1], S[2][2]]]
    masked_cols = [[cols[0][0], cols[0][1]], [cols[1][0], cols[1][1], cols[1][2]], [cols[2][1], cols[2][2]]]

    def ce_rows(rows, diag):
        return sum(-d + math.log(sum(math.exp(v) for v in r)) for r, d in zip(rows, diag)) / 3

    exp_g = 0.5 * (ce_rows(masked, [S[0][0], S[1][1], S[2][2]]) + ce_rows(masked_cols, [S[0][0], S[1][1], S[2][2]]))
    got_g = symmetric_info_nce(a, b, torch.tensor([7, 8, 7]), temperature=tau)
    assert abs(float(got_g) - exp_g) < 1e-5
