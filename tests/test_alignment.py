"""Soft-DTW (value and analytic gradient), the contrastive alignment loss, causal hard DTW, re-alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mm_live import alignment
from mm_live.alignment import (
    _random_orders,
    alignment_loss,
    cosine_cost,
    hard_dtw,
    realign_comments,
    soft_dtw,
)

INF = float("inf")


def naive_soft_dtw(D: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-cell double loop, float64, autograd for the gradient — the KuaiHL reference style."""
    n, m = D.shape
    inf = torch.tensor(INF, dtype=torch.float64)
    R = [[inf] * (m + 1) for _ in range(n + 1)]
    R[0][0] = torch.tensor(0.0, dtype=torch.float64)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            r0, r1, r2 = -R[i - 1][j - 1] / gamma, -R[i - 1][j] / gamma, -R[i][j - 1] / gamma
            rmax = torch.maximum(torch.maximum(r0, r1), r2)
            rsum = torch.exp(r0 - rmax) + torch.exp(r1 - rmax) + torch.exp(r2 - rmax)
            R[i][j] = D[i - 1, j - 1] - gamma * (torch.log(rsum) + rmax)
    return R[n][m]


def naive_value_and_grad(D: torch.Tensor, gamma: float) -> tuple[float, torch.Tensor]:
    D = D.detach().double().requires_grad_(True)
    value = naive_soft_dtw(D, gamma)
    value.backward()
    return value.item(), D.grad


@pytest.fixture(params=["numba", "torch"])
def backend(request, monkeypatch):
    """Run a test on each soft-DTW implementation: the CPU numba kernels and the torch path
    (what CUDA tensors, other dtypes, and installs without numba get)."""
    if request.param == "torch":
        monkeypatch.setattr(alignment, "_numba_kernels", lambda: None)
    elif alignment._numba_kernels() is None:
        pytest.skip("numba is not installed")
    return request.param


def value_and_grad(D: torch.Tensor, *args, weights: torch.Tensor | None = None):
    D = D.detach().clone().requires_grad_(True)
    values = soft_dtw(D, *args)
    (values if weights is None else values * weights).sum().backward()
    return values.detach(), D.grad


@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_soft_dtw_matches_naive_reference_in_float64(gamma, backend):
    g = torch.Generator().manual_seed(0)
    D = (torch.rand(3, 7, 5, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    len_x, len_y = torch.tensor([7, 4, 1]), torch.tensor([5, 5, 3])
    values = soft_dtw(D, gamma, len_x, len_y)
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)  # distinct upstream grads per item
    (values * weights).sum().backward()
    for b in range(3):
        n, m = int(len_x[b]), int(len_y[b])
        ref_value, ref_grad = naive_value_and_grad(D[b, :n, :m], gamma)
        assert values[b].item() == pytest.approx(ref_value, rel=1e-6)
        torch.testing.assert_close(D.grad[b, :n, :m], weights[b] * ref_grad, rtol=1e-6, atol=1e-12)
        assert D.grad[b, n:].abs().sum() == 0 and D.grad[b, :, m:].abs().sum() == 0  # padding: no gradient


def test_soft_dtw_float32_is_close_to_float64(backend):
    g = torch.Generator().manual_seed(1)
    D64 = torch.rand(4, 20, 17, generator=g, dtype=torch.float64).requires_grad_(True)
    D32 = D64.detach().float().requires_grad_(True)
    soft_dtw(D64).sum().backward()
    soft_dtw(D32).sum().backward()
    torch.testing.assert_close(soft_dtw(D32).double(), soft_dtw(D64).detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(D32.grad.double(), D64.grad, rtol=1e-4, atol=1e-5)


def test_numba_float32_is_float64_rounded_at_training_length():
    """The CPU kernels compute in float64 for float32 inputs too: at n = 128 the float32 gradient is
    the float64 one to float32 rounding (the torch path's float32 gradient is off by ~1e-4 here)."""
    if alignment._numba_kernels() is None:
        pytest.skip("numba is not installed")
    D32 = torch.rand(2, 128, 128, generator=torch.Generator().manual_seed(12))
    v64, g64 = value_and_grad(D32.double())
    v32, g32 = value_and_grad(D32)
    assert v32.dtype == g32.dtype == torch.float32
    torch.testing.assert_close(v32.double(), v64, rtol=1e-7, atol=0)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-6, atol=1e-9)


def test_cpu_float_inputs_use_the_numba_kernels():
    if alignment._numba_kernels() is None:
        pytest.skip("numba is not installed")
    for dtype in (torch.float32, torch.float64):
        D = torch.rand(2, 5, 4, dtype=dtype, requires_grad=True)
        assert type(soft_dtw(D).grad_fn).__name__ == "_SoftDTWNumbaBackward"


def test_backends_agree_on_a_padded_batch(monkeypatch):
    if alignment._numba_kernels() is None:
        pytest.skip("numba is not installed")
    g = torch.Generator().manual_seed(13)
    D = torch.rand(5, 40, 33, generator=g, dtype=torch.float64) * 2
    lens = (torch.tensor([40, 1, 17, 40, 9]), torch.tensor([33, 20, 1, 5, 33]))
    weights = torch.tensor([1.0, -0.5, 2.0, 0.25, -3.0], dtype=torch.float64)
    v_numba, g_numba = value_and_grad(D, 0.1, *lens, weights=weights)
    monkeypatch.setattr(alignment, "_numba_kernels", lambda: None)
    v_torch, g_torch = value_and_grad(D, 0.1, *lens, weights=weights)
    torch.testing.assert_close(v_numba, v_torch, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_numba, g_torch, rtol=1e-9, atol=1e-14)


def test_soft_dtw_without_grad_gives_the_same_values(backend):
    D = torch.rand(3, 12, 9, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    with_grad, _ = value_and_grad(D)
    with torch.no_grad():
        torch.testing.assert_close(soft_dtw(D.requires_grad_(True)), with_grad, rtol=0, atol=0)


def test_soft_dtw_nan_cost_in_the_block_gives_nan(backend):
    D = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    for i, j in [(0, 0), (2, 3), (5, 5), (5, 0)]:
        dirty = D.clone()
        dirty[0, i, j] = float("nan")
        values = soft_dtw(dirty)
        assert torch.isnan(values[0]) and values[1] == soft_dtw(D)[1]


def test_numba_kernels_split_across_threads_exactly():
    kernels = alignment._numba_kernels()
    if kernels is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(16)
    D = rng.random((20, 100, 90))  # enough cells to be split
    len_x, len_y = rng.integers(1, 101, size=20), rng.integers(1, 91, size=20)
    grad = rng.normal(size=20)
    results = []
    for threads in (1, 2, 3):
        values, weights = kernels.forward(D, len_x, len_y, 0.1, True, threads)
        results.append((values, kernels.backward(weights, len_x, len_y, grad, 100, 90, threads)))
    assert D[0].size * len(D) >= kernels._PARALLEL_MIN_CELLS
    for values, G in results[1:]:
        np.testing.assert_array_equal(values, results[0][0])
        np.testing.assert_array_equal(G, results[0][1])


def test_numba_kernels_stay_in_bounds(monkeypatch):
    """Bounds-checked builds of the kernels over edge shapes (one row or column, one item, padding,
    value only): numba does not check indices by default, and a stray write corrupts the heap."""
    kernels = alignment._numba_kernels()
    if kernels is None:
        pytest.skip("numba is not installed")
    from numba import njit

    for name in ("_forward_items", "_backward_items"):
        checked = njit(boundscheck=True, **kernels._OPTIONS)(getattr(kernels, name).py_func)
        monkeypatch.setattr(kernels, name, checked)
    rng = np.random.default_rng(17)
    for len_x, len_y in [([1], [1]), ([1], [6]), ([6], [1]), ([5, 1, 2], [1, 4, 4]), ([3, 7], [7, 2])]:
        len_x, len_y = np.array(len_x), np.array(len_y)
        D = rng.random((len(len_x), len_x.max(), len_y.max()))
        values, weights = kernels.forward(D, len_x, len_y, 0.1, True, 1)
        kernels.backward(weights, len_x, len_y, np.ones(len(D)), *D.shape[1:], 1)
        np.testing.assert_array_equal(kernels.forward(D, len_x, len_y, 0.1, False, 1)[0], values)


def test_numba_jit_works_where_no_cache_folder_can_be_found():
    """numba refuses ``cache=True`` when it finds no writable cache location (here: a function
    without a source file, as in a read-only install with a read-only home); the kernels then
    compile without the disk cache instead of failing at import."""
    numba = pytest.importorskip("numba")
    from mm_live._soft_dtw_numba import _jit

    namespace: dict = {}
    exec("def twice(x):\n    return 2.0 * x\n", namespace)
    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(namespace["twice"])
    assert _jit()(namespace["twice"])(1.5) == 3.0


def test_soft_dtw_gradcheck_tiny(backend):
    g = torch.Generator().manual_seed(2)
    D = torch.rand(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: soft_dtw(d, 0.1), (D,))
    lens = (torch.tensor([4, 2]), torch.tensor([2, 3]))
    assert torch.autograd.gradcheck(lambda d: soft_dtw(d, 0.5, *lens), (D,))


@pytest.mark.parametrize("n,m", [(1, 1), (1, 5), (5, 1)])
def test_soft_dtw_single_row_or_column_is_the_sum(n, m, backend):
    D = torch.rand(2, n, m, generator=torch.Generator().manual_seed(n + m), dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(soft_dtw(D, 0.1), D.sum(dim=(1, 2)))
    assert torch.autograd.gradcheck(lambda d: soft_dtw(d, 0.1), (D,))


def test_soft_dtw_padding_values_never_leak(backend):
    g = torch.Generator().manual_seed(3)
    D = torch.rand(2, 6, 6, generator=g, dtype=torch.float64)
    len_x, len_y = torch.tensor([6, 3]), torch.tensor([4, 6])
    clean = D.clone().requires_grad_(True)
    dirty = D.clone()
    dirty[0, :, 4:] = float("nan")
    dirty[1, 3:] = INF
    dirty.requires_grad_(True)
    v_clean, v_dirty = soft_dtw(clean, 0.1, len_x, len_y), soft_dtw(dirty, 0.1, len_x, len_y)
    v_clean.sum().backward()
    v_dirty.sum().backward()
    torch.testing.assert_close(v_dirty, v_clean)
    torch.testing.assert_close(dirty.grad, clean.grad)
    assert torch.isfinite(dirty.grad).all()


def brute_force_dtw_cost(D: np.ndarray) -> float:
    """Unconstrained DTW by a plain double loop (for the γ → 0 limit of soft-DTW)."""
    n, m = D.shape
    C = np.full((n + 1, m + 1), INF)
    C[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            C[i, j] = D[i - 1, j - 1] + min(C[i - 1, j - 1], C[i - 1, j], C[i, j - 1])
    return float(C[n, m])


def test_soft_dtw_tends_to_hard_dtw_as_gamma_shrinks(backend):
    D = torch.rand(1, 9, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    hard = brute_force_dtw_cost(D[0].numpy())
    assert soft_dtw(D, 1e-4).item() == pytest.approx(hard, abs=1e-2)
    assert soft_dtw(D, 1.0).item() < hard  # softmin <= min


def test_soft_dtw_rejects_bad_inputs():
    with pytest.raises(ValueError):
        soft_dtw(torch.rand(4, 4))
    with pytest.raises(ValueError):
        soft_dtw(torch.rand(1, 4, 4), 0.0)
    with pytest.raises(ValueError):
        soft_dtw(torch.rand(1, 4, 4), 0.1, torch.tensor([0]))


def test_cosine_cost_values():
    z = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    v = torch.tensor([[[3.0, 0.0], [-1.0, 0.0], [1.0, 1.0]]])
    expected = torch.tensor([[[0.0, 2.0, 1 - 1 / math.sqrt(2)], [1.0, 1.0, 1 - 1 / math.sqrt(2)]]])
    torch.testing.assert_close(cosine_cost(z, v), expected)


def test_random_orders_permute_only_inside_the_valid_length():
    lengths = torch.tensor([5, 3, 1])
    orders = _random_orders(lengths, 6, 7, torch.Generator().manual_seed(0))
    assert orders.shape == (3, 7, 6)
    for b, n_b in enumerate(lengths.tolist()):
        for k in range(7):
            assert sorted(orders[b, k, :n_b].tolist()) == list(range(n_b))
            assert orders[b, k, n_b:].tolist() == list(range(n_b, 6))
    assert any(orders[0, k, :5].tolist() != list(range(5)) for k in range(7))


def test_alignment_loss_equals_manual_cross_entropy(backend):
    g = torch.Generator().manual_seed(5)
    z, v = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    lengths = torch.tensor([5, 4])
    loss = alignment_loss(z, v, lengths, n_negatives=3, gamma=0.1, generator=torch.Generator().manual_seed(9))
    orders = _random_orders(lengths, 5, 3, torch.Generator().manual_seed(9))
    D = cosine_cost(z, v).double()
    total = 0.0
    for b, n_b in enumerate(lengths.tolist()):
        rows = [list(range(5))] + orders[b].tolist()
        logits = torch.stack([-naive_soft_dtw(D[b][order][:n_b, :n_b], 0.1) for order in rows])
        total += -torch.log_softmax(logits, 0)[0].item()
    assert loss.item() == pytest.approx(total / 2, rel=1e-4)


def test_alignment_loss_prefers_true_order_and_ignores_padding():
    g = torch.Generator().manual_seed(6)
    v = torch.randn(3, 12, 16, generator=g)
    aligned = v + 0.1 * torch.randn(3, 12, 16, generator=g)
    unrelated = torch.randn(3, 12, 16, generator=g)
    seed = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert alignment_loss(aligned, v, generator=seed()) < alignment_loss(unrelated, v, generator=seed())
    lengths = torch.tensor([12, 8, 5])
    padded = aligned.clone()
    padded[1, 8:] = 1e3
    padded[2, 5:] = -7.0
    torch.testing.assert_close(
        alignment_loss(padded, v, lengths, generator=seed()), alignment_loss(aligned, v, lengths, generator=seed())
    )
    z = aligned.clone().requires_grad_(True)
    alignment_loss(z, v, lengths, generator=seed()).backward()
    assert z.grad[0].abs().sum() > 0 and z.grad[1, 8:].abs().sum() == 0


# --- hard DTW -----------------------------------------------------------------------------------


def brute_force_band_dtw(D: np.ndarray, w: int) -> tuple[float, list[tuple[int, int]]]:
    """Textbook band DTW: double loop over every cell, start (0, 0), free end in the last row."""
    n, m = D.shape
    inband = lambda i, j: 0 <= j < m and i - w <= j <= i  # noqa: E731
    C = np.full((n, m), INF)
    back: dict[tuple[int, int], tuple[int, int]] = {}
    C[0, 0] = D[0, 0]
    for i in range(n):
        for j in range(m):
            if (i, j) == (0, 0) or not inband(i, j):
                continue
            preds = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
            preds = [p for p in preds if p[0] >= 0 and p[1] >= 0 and inband(*p) and np.isfinite(C[p])]
            if preds:
                best = min(preds, key=lambda p: C[p])
                C[i, j] = D[i, j] + C[best]
                back[(i, j)] = best
    j_end = int(np.argmin(C[n - 1]))
    path = [(n - 1, j_end)]
    while path[-1] != (0, 0):
        path.append(back[path[-1]])
    return float(C[n - 1, j_end]), path[::-1]


def enumerate_band_paths(n: int, m: int, w: int):
    """Every monotone path from (0, 0) to the last row inside the band (tiny n only)."""
    inband = lambda i, j: 0 <= j < m and i - w <= j <= i  # noqa: E731

    def grow(path):
        i, j = path[-1]
        if i == n - 1:
            yield list(path)
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            if i + di < n and inband(i + di, j + dj):
                yield from grow(path + [(i + di, j + dj)])

    yield from grow([(0, 0)])


@pytest.mark.parametrize("n,m,w", [(7, 7, 2), (9, 6, 3), (6, 6, 0), (8, 8, 20), (10, 10, 1)])
def test_hard_dtw_matches_brute_force(n, m, w):
    rng = np.random.default_rng(n * 100 + m * 10 + w)
    for _ in range(3):
        D = rng.random((n, m))
        res = hard_dtw(D, w)
        ref_cost, ref_path = brute_force_band_dtw(D, w)
        assert res.cost == pytest.approx(ref_cost, rel=1e-12)
        assert [tuple(p) for p in res.path.tolist()] == ref_path
        assert res.cost == pytest.approx(D[tuple(res.path.T)].sum(), rel=1e-12)
        assert all(i - w <= j <= i for i, j in res.path.tolist())


def test_hard_dtw_is_optimal_over_all_paths_on_tiny_cases():
    rng = np.random.default_rng(7)
    for n, w in [(4, 1), (5, 2), (5, 4)]:
        D = rng.random((n, n))
        best = min(sum(D[i, j] for i, j in p) for p in enumerate_band_paths(n, n, w))
        assert hard_dtw(torch.from_numpy(D), w).cost == pytest.approx(best, rel=1e-12)


def test_hard_dtw_without_a_path_raises():
    with pytest.raises(ValueError):
        hard_dtw(np.random.default_rng(0).random((10, 2)), 3)


def planted_lag(n: int = 20, d: int = 16, lag: int = 3):
    """Video steps of random directions; comment step i describes video step i - lag (clamped at 0)."""
    g = torch.Generator().manual_seed(11)
    video = torch.randn(n, d, generator=g)
    comments = video[(torch.arange(n) - lag).clamp(min=0)] + 0.05 * torch.randn(n, d, generator=g)
    return comments, video


def test_hard_dtw_recovers_a_planted_lag():
    comments, video = planted_lag(lag=3)
    res = hard_dtw(cosine_cost(comments[None], video[None])[0], w=5)
    assert res.index.tolist() == [0, 0, 0] + list(range(0, 17))
    assert {(i, i - 3) for i in range(3, 20)} <= {tuple(p) for p in res.path.tolist()}
    assert tuple(res.path[-1]) == (19, 16)  # free end: the last 3 video steps are not commented yet


def test_realign_comments_moves_averages_and_masks():
    comments, video = planted_lag(lag=3)
    out, mask = realign_comments(comments, video, w=5)
    assert out.shape == comments.shape and mask.dtype == torch.bool
    torch.testing.assert_close(out[0], comments[:4].mean(0))  # comment steps 0..3 all refer to video 0
    torch.testing.assert_close(out[1:17], comments[4:20])
    assert mask[:17].all() and not mask[17:].any()
    assert out[17:].abs().sum() == 0
    has_comments = torch.ones(20, dtype=torch.bool)
    has_comments[[1, 10]] = False  # no comment at steps 1 and 10: not moved anywhere
    out2, mask2 = realign_comments(comments, video, w=5, comment_mask=has_comments)
    torch.testing.assert_close(out2[0], comments[[0, 2, 3]].mean(0))
    assert not mask2[7] and out2[7].abs().sum() == 0
    assert mask2[6] and mask2[8]


def test_realign_by_shift_moves_every_comment_back_by_the_band():
    """by="shift" ignores the frames: comment step i lands on max(i - w, 0); steps without comments stay put."""
    comments, video = planted_lag(lag=3)
    has_comments = torch.ones(20, dtype=torch.bool)
    has_comments[10] = False
    out, mask = realign_comments(comments, video, w=5, comment_mask=has_comments, by="shift")
    torch.testing.assert_close(out[0], comments[:6].mean(0))  # steps 0..5 all move to 0
    torch.testing.assert_close(out[1:15], torch.where(has_comments[6:20, None], comments[6:20], 0.0))
    assert mask[:15].tolist() == [True] * 5 + [False] + [True] * 9 and not mask[15:].any()
    out_random, _ = realign_comments(comments, torch.randn_like(video), w=5, comment_mask=has_comments, by="shift")
    torch.testing.assert_close(out_random, out)
    with pytest.raises(ValueError, match="'dtw' or 'shift'"):
        realign_comments(comments, video, w=5, by="nearest")


def test_realign_with_zero_band_is_identity():
    comments, video = planted_lag(lag=3)
    out, mask = realign_comments(comments, video, w=0)
    torch.testing.assert_close(out, comments)
    assert mask.all()


def test_online_index_is_causal_and_in_band():
    from mm_live.alignment import online_dtw_index

    rng = np.random.default_rng(0)
    D = rng.random((30, 30))
    idx = online_dtw_index(D, 4)
    i = np.arange(30)
    assert ((idx >= np.maximum(i - 4, 0)) & (idx <= i)).all()
    D2 = D.copy()
    D2[18:] = rng.random((12, 30))  # change the future rows only
    np.testing.assert_array_equal(online_dtw_index(D2, 4)[:18], idx[:18])
    # a planted lag of 3 is recovered online too (after the first w steps)
    v = rng.normal(size=(40, 8))
    z = np.roll(v, 3, axis=0)
    z[:3] = rng.normal(size=(3, 8))
    zt, vt = torch.tensor(z), torch.tensor(v)
    cost = cosine_cost(zt[None], vt[None])[0]
    assert (online_dtw_index(cost, 5)[6:] == np.arange(6, 40) - 3).all()
