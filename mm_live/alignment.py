"""Text–video temporal alignment: batched soft-DTW, its contrastive loss, and causal hard DTW.

* :func:`soft_dtw` — soft-DTW (Cuturi & Blondel, 2017) of a batch of cost matrices with the analytic
  backward (their E-recursion) in a ``torch.autograd.Function``. Two implementations of the same
  recursion: on the CPU (float32/float64, numba installed) the numba kernels of
  :mod:`mm_live._soft_dtw_numba`, one compiled sweep per item; elsewhere (CUDA, other dtypes, no
  numba) torch ops along anti-diagonals. Autograd through every diagonal works but is several
  times slower; the analytic backward needs only three multiply-adds per cell.
* :func:`alignment_loss` — KuaiHL's modality temporal alignment (MTAM): the true text order is the
  positive, random permutations of the text order are negatives, logits ``-R_nn``, cross-entropy.
* :func:`hard_dtw` / :func:`realign_comments` — ContentCTR's hard DTW with a causal Sakoe–Chiba band
  (text step i may align only to video steps j in [i - w, i]) in O(n·w), used at scoring time to move
  each comment step's embedding to the video step it refers to.

tslearn's soft-DTW is not used: it has no padding masks, moves every table through torch and NumPy
on each call, and is slower at every length we measured; ``scripts/bench_dtw.py`` compares against it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Soft-DTW
# ---------------------------------------------------------------------------------------------


# Layout. The DP table has rows i = 0..n+1 and columns j = 0..m+1 (row/column 0 is the boundary,
# n+1 / m+1 are "beyond the end", read only as successors in the backward). It is stored skewed,
# ``[k = i + j, i, B]`` (diagonal-major, batch last), so one anti-diagonal is one contiguous block
# and its three predecessors (or successors) are slices of the neighbouring diagonals.
_BIG = 1e30  # stands for +inf where the backward subtracts it from itself (inf - inf would be NaN)


def _skew_view(y: torch.Tensor) -> torch.Tensor:
    """View ``y [n1, K, B]`` (contiguous, row i column j) as ``[K, n1, B]`` with entry (k, i) = y[i, k - i].

    Entries with k - i outside [0, K) read the tail of the previous row, which callers keep at the
    fill value (K >= n1 + m + 1 ensures the tail lies past column m + 1). No copy.
    """
    n1, K, b = y.shape
    return y.as_strided((K, n1, b), (b, (K - 1) * b, 1))


def _unskew(xs: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Skewed ``[K, n + 2, B]`` → the real cells ``[B, n, m]`` (entry (i, j) = xs[i + j, i], 1-based)."""
    _, n1, b = xs.shape
    return xs.as_strided((n, m, b), ((n1 + 1) * b, n1 * b, 1), xs.storage_offset() + (2 * n1 + 1) * b).permute(2, 0, 1)


def _pad_mask(len_x: torch.Tensor, len_y: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """``[B, n, m]`` True on the cells outside each item's ``len_x × len_y`` block."""
    i = torch.arange(n, device=len_x.device).view(1, n, 1)
    j = torch.arange(m, device=len_x.device).view(1, 1, m)
    return (i >= len_x.view(-1, 1, 1)) | (j >= len_y.view(-1, 1, 1))


def _diag_range(k: int, n: int, m: int) -> tuple[int, int]:
    """Rows ``i`` (1-based, half-open ``[lo, hi)``) of the real cells on anti-diagonal ``k = i + j``."""
    return max(1, k - m), min(n, k - 1) + 1


def _soft_dtw_forward(D: torch.Tensor, len_x: torch.Tensor, len_y: torch.Tensor, gamma: float):
    """Soft-DTW table in the skewed layout, in units of ``Q = -R / gamma``.

    ``softmin_γ(a, b, c) = -γ log Σ exp(-·/γ)`` becomes two ``logaddexp`` on ``Q``, so one
    anti-diagonal costs three kernels. Returns ``(values [B], Q, Dq)``, both ``[n+m+3, n+2, B]``,
    with ``Dq = -D / gamma`` (0 outside the real cells and on padding). Padding cells of Q are set to
    ``_BIG`` after the sweep so the backward gives them, and takes from them, zero weight.
    """
    b, n, m = D.shape
    n1, K = n + 2, n + m + 3
    pad = None if bool((len_x == n).all() & (len_y == m).all()) else _pad_mask(len_x, len_y, n, m)
    y = D.new_zeros((n1, K, b))
    y[1 : n + 1, 1 : m + 1] = (D if pad is None else D.masked_fill(pad, 0.0)).permute(1, 2, 0) / -gamma
    Dq = _skew_view(y)
    Q = torch.full((K, n1, b), _BIG, dtype=D.dtype, device=D.device)
    Q[1:, 0] = -torch.inf  # row i = 0 (R = +inf)
    diag = torch.arange(1, n + 1, device=D.device)
    Q[diag, diag] = -torch.inf  # column j = 0
    Q[0, 0] = 0.0  # R_00 = 0
    for k in range(2, n + m + 1):
        lo, hi = _diag_range(k, n, m)
        best = torch.logaddexp(Q[k - 2, lo - 1 : hi - 1], Q[k - 1, lo - 1 : hi - 1])  # (i-1,j-1), (i-1,j)
        best = torch.logaddexp(best, Q[k - 1, lo:hi])  # (i, j-1)
        torch.add(best, Dq[k, lo:hi], out=Q[k, lo:hi])
    values = Q[len_x + len_y, len_x, torch.arange(b, device=D.device)] * -gamma
    if pad is not None:
        qpad = torch.zeros((n1, K, b), dtype=torch.bool, device=D.device)
        qpad[1 : n + 1, 1 : m + 1] = pad.permute(1, 2, 0)
        Q.masked_fill_(_skew_view(qpad), _BIG)
    return values, Q, Dq


def _soft_dtw_backward(Q: torch.Tensor, Dq: torch.Tensor, len_x: torch.Tensor, len_y: torch.Tensor, grad_out):
    """Cuturi & Blondel's E-recursion along anti-diagonals: ``E_ij = ∂R_{n_b m_b} / ∂D_ij``.

    ``E_ij = a·E_{i+1,j} + b·E_{i,j+1} + c·E_{i+1,j+1}`` with ``a = exp((R_{i+1,j} - R_ij - D_{i+1,j})/γ)``
    etc. — the soft-min weight the successor gave to cell (i, j). Weights are computed for blocks of
    diagonals at once (a few MB, cache-sized); only three multiply-adds run per diagonal. Successors
    beyond the matrix or in padding hold Q = _BIG, so their weight is exp(-1e30) = 0. Returns ``[B, n, m]``.
    """
    K, n1, b = Q.shape
    n, m = n1 - 2, K - n1 - 1
    E = torch.zeros_like(Q)
    E[len_x + len_y, len_x, torch.arange(b, device=Q.device)] = grad_out.to(Q.dtype)  # seeds at (n_b, m_b)
    block = max(1, (1 << 18) // (n1 * b))  # diagonals per block: ~1 MB of weights each
    k1 = n + m + 1
    while k1 > 2:
        k0 = max(2, k1 - block)
        i0, i1 = _diag_range(k0, n, m)[0], _diag_range(k1 - 1, n, m)[1]  # rows used by the block
        T = Dq[k0 + 1 : k1 + 2, i0 : i1 + 1] - Q[k0 + 1 : k1 + 2, i0 : i1 + 1]  # successor terms
        q = Q[k0:k1, i0:i1]
        wa = torch.add(q, T[:-1, 1:]).exp_()  # successor (i+1, j): diagonal k+1, row i+1
        wb = torch.add(q, T[:-1, :-1]).exp_()  # successor (i, j+1): diagonal k+1, row i
        wc = torch.add(q, T[1:, 1:]).exp_()  # successor (i+1, j+1): diagonal k+2, row i+1
        for k in range(k1 - 1, k0 - 1, -1):
            lo, hi = _diag_range(k, n, m)
            r, a, z = k - k0, lo - i0, hi - i0
            e = E[k, lo:hi]
            e.addcmul_(wa[r, a:z], E[k + 1, lo + 1 : hi + 1])
            e.addcmul_(wb[r, a:z], E[k + 1, lo:hi])
            e.addcmul_(wc[r, a:z], E[k + 2, lo + 1 : hi + 1])
        k1 = k0
    return _unskew(E, n, m)


class _SoftDTW(torch.autograd.Function):
    """Torch anti-diagonal path (any device/dtype)."""

    @staticmethod
    def forward(ctx, D, len_x, len_y, gamma):
        values, Q, Dq = _soft_dtw_forward(D, len_x, len_y, gamma)
        ctx.save_for_backward(Q, Dq, len_x, len_y)
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        Q, Dq, len_x, len_y = ctx.saved_tensors
        return _soft_dtw_backward(Q, Dq, len_x, len_y, grad_out), None, None, None


@functools.cache
def _numba_kernels() -> ModuleType | None:
    """The CPU kernels, or ``None`` when numba is not installed (or disabled by NUMBA_DISABLE_JIT)."""
    try:
        import numba

        from mm_live import _soft_dtw_numba
    except ImportError:
        return None
    return None if numba.config.DISABLE_JIT else _soft_dtw_numba


class _SoftDTWNumba(torch.autograd.Function):
    """CPU numba path: the forward keeps the soft-min weights, the backward is the E-recursion."""

    @staticmethod
    def forward(ctx, D, len_x, len_y, gamma, store):
        kernels, threads = _numba_kernels(), torch.get_num_threads()
        lx, ly = len_x.numpy().copy(), len_y.numpy().copy()  # kept for the backward
        values, weights = kernels.forward(D.detach().contiguous().numpy(), lx, ly, gamma, store, threads)
        ctx.weights, ctx.lengths, ctx.shape = weights, (lx, ly), D.shape[1:]
        return torch.from_numpy(values).to(D.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        kernels, threads = _numba_kernels(), torch.get_num_threads()
        grad = grad_out.detach().double().contiguous().numpy()
        G = kernels.backward(ctx.weights, *ctx.lengths, grad, *ctx.shape, threads)
        return torch.from_numpy(G), None, None, None, None


def soft_dtw(
    D: torch.Tensor,
    gamma: float = 0.1,
    len_x: torch.Tensor | None = None,
    len_y: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft-DTW value ``R_{n_b, m_b}`` of each cost matrix, differentiable in ``D``.

    ``R_ij = D_ij + softmin_γ(R_{i-1,j-1}, R_{i-1,j}, R_{i,j-1})``, ``softmin_γ(a) = -γ log Σ exp(-a/γ)``,
    ``R_00 = 0`` and ``R = +inf`` on the rest of row/column 0.

    Args:
        D: costs ``[B, n, m]`` (float32 or float64).
        gamma: smoothing γ > 0.
        len_x, len_y: valid lengths ``[B]`` (1 <= len_x <= n, 1 <= len_y <= m); item b uses the block
            ``D[b, :len_x[b], :len_y[b]]`` and padding gets zero gradient. ``None`` = full.
    Returns:
        values ``[B]``. Double backward is not supported.

    Precision: the CPU kernels (float32/float64 on the CPU, numba installed) compute in float64
    whatever the input dtype, so float32 values are float64 ones rounded, and float32 gradients are
    within ~1e-6 relative of float64 ones (the soft-min weights are kept in the input dtype);
    soft-min terms below e^-69 of the largest, and gradient entries below 1e-30 times the upstream
    gradient, are dropped. The torch path (CUDA, other dtypes, no numba) computes in the
    input dtype: in float32 its gradient carries an absolute error of about ``|R|/γ · 1e-7`` (the
    soft-min weights subtract two values of size R/γ): ≈1e-4 at n = 128, ≈7e-4 at n = 512 for costs
    in [0, 1]; pass float64 when that matters.
    """
    if D.dim() != 3:
        raise ValueError(f"soft_dtw expects D [B, n, m], got shape {tuple(D.shape)}")
    if gamma <= 0:
        raise ValueError(f"soft_dtw needs gamma > 0, got {gamma}")
    b, n, m = D.shape
    len_x = torch.full((b,), n, dtype=torch.long, device=D.device) if len_x is None else len_x.to(D.device, torch.long)
    len_y = torch.full((b,), m, dtype=torch.long, device=D.device) if len_y is None else len_y.to(D.device, torch.long)
    if bool((len_x < 1).any() | (len_x > n).any() | (len_y < 1).any() | (len_y > m).any()):
        raise ValueError(f"soft_dtw lengths must lie in [1, {n}] × [1, {m}]")
    if D.device.type == "cpu" and D.dtype in (torch.float32, torch.float64) and _numba_kernels() is not None:
        return _SoftDTWNumba.apply(D, len_x, len_y, float(gamma), torch.is_grad_enabled() and D.requires_grad)
    return _SoftDTW.apply(D, len_x, len_y, float(gamma))


def cosine_cost(z: torch.Tensor, v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``D = 1 - cos(z_i, v_j)``: ``z [B, n, d]``, ``v [B, m, d]`` → ``[B, n, m]`` in [0, 2]."""
    zn = F.normalize(z, dim=-1, eps=eps)
    vn = F.normalize(v, dim=-1, eps=eps)
    return 1.0 - zn @ vn.transpose(1, 2)


def _random_orders(lengths: torch.Tensor, n: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """``[B, k, n]`` index orders: a uniform random permutation of ``0..len_b-1``, identity after it."""
    b = lengths.shape[0]
    pos = torch.arange(n).expand(b, k, n)
    keys = torch.rand(b, k, n, generator=generator)
    keys = torch.where(pos < lengths.cpu().view(b, 1, 1), keys, 2.0 + pos)  # padding sorts last, in order
    return keys.argsort(dim=-1)


def alignment_loss(
    z: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor | None = None,
    n_negatives: int = 7,
    gamma: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """KuaiHL's contrastive soft-DTW alignment loss (MTAM), averaged over the batch.

    For stream b, ``D = 1 - cos(z_i, v_j)``; the positive is the true text order, the negatives are
    ``n_negatives`` random permutations of the text order (rows of D permuted inside the valid
    length; a permutation may by chance be the identity — it then simply duplicates the positive).
    Logits are ``-R_nn`` (soft-DTW values), and the loss is the cross-entropy to the positive.

    Args:
        z: text embeddings ``[B, n, d]``; v: frame embeddings ``[B, n, d]`` (same steps).
        lengths: valid steps per stream ``[B]`` (``None`` = all n); steps past it are padding.
        generator: CPU generator for the permutations (determinism).
    Returns:
        scalar loss.
    """
    b, n, _ = z.shape
    if v.shape[:2] != (b, n):
        raise ValueError(f"alignment_loss expects z and v with equal [B, n], got {tuple(z.shape)} and {tuple(v.shape)}")
    lengths = torch.full((b,), n, dtype=torch.long) if lengths is None else lengths.long()
    D = cosine_cost(z, v)  # [B, n, n]
    orders = _random_orders(lengths, n, n_negatives, generator).to(z.device)  # [B, K, n]
    identity = torch.arange(n, device=z.device).expand(b, 1, n)
    orders = torch.cat([identity, orders], dim=1)  # [B, 1 + K, n], positive first
    rows = orders.unsqueeze(-1).expand(-1, -1, -1, n)
    Dk = torch.gather(D.unsqueeze(1).expand(-1, orders.shape[1], -1, -1), 2, rows)  # [B, 1 + K, n, n]
    lens = lengths.to(z.device).repeat_interleave(orders.shape[1])
    values = soft_dtw(Dk.reshape(-1, n, n), gamma, lens, lens).view(b, -1)
    target = torch.zeros(b, dtype=torch.long, device=z.device)
    return F.cross_entropy(-values, target)


# ---------------------------------------------------------------------------------------------
# Hard DTW with a causal band (scoring time)
# ---------------------------------------------------------------------------------------------


@dataclass
class HardDTWResult:
    """Result of :func:`hard_dtw`.

    path: ``[L, 2]`` int array of (text step i, video step j), in order from (0, 0).
    index: ``[n]`` int array; ``index[i]`` = the video step text step i refers to (among the path
        cells of row i, the one of lowest cost; ties → the earliest).
    cost: sum of ``D`` over the path.
    """

    path: np.ndarray
    index: np.ndarray
    cost: float


def _as_float64(D: torch.Tensor | np.ndarray) -> np.ndarray:
    return D.detach().cpu().double().numpy() if isinstance(D, torch.Tensor) else np.asarray(D, dtype=np.float64)


def _entry_terms(C: np.ndarray, band_d: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    """``P_o - S_{o-1}`` for row i (inf where the row cannot be entered), and the running sums S."""
    prev = C[i - 1]
    P = np.minimum(prev, np.append(prev[1:], np.inf))  # diag (i-1, j-1) at o, up (i-1, j) at o+1
    S = np.cumsum(band_d[i])
    return P - (S - band_d[i]), S


def _band_table(D: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Accumulated costs ``C [n, w+1]`` of the causal band (column o ↔ video step j = i - w + o)
    and ``D`` on the band (0 outside). Row i depends on rows <= i of ``D`` only."""
    n, m = D.shape
    if w < 0:
        raise ValueError(f"hard_dtw needs w >= 0, got {w}")
    W = w + 1
    off = np.arange(W)
    C = np.full((n, W), np.inf)
    band_d = np.zeros((n, W))  # D on the band, 0 outside (so running sums stay finite)
    for i in range(n):
        j = i - w + off
        ok = (j >= 0) & (j < m)
        band_d[i, ok] = D[i, j[ok]]
    C[0, w] = D[0, 0]
    for i in range(1, n):
        j = i - w + off
        ok = (j >= 0) & (j < m)
        T, S = _entry_terms(C, band_d, i)
        row = S + np.minimum.accumulate(np.where(ok, T, np.inf))
        C[i] = np.where(ok, row, np.inf)
    return C, band_d


def online_dtw_index(D: torch.Tensor | np.ndarray, w: int) -> np.ndarray:
    """Open-end (online) variant of :func:`hard_dtw`: ``index[i]`` = the end of the cheapest band
    path over text steps ``0..i``, i.e. the argmin of row i of the accumulated cost.

    Unlike the backtracked global path, row i uses nothing after text step i, so re-aligning with
    it keeps scoring causal up to the band: video step j receives comments of steps ``<= j + w``
    only. The price is that a later step cannot revise an earlier step's choice. O(n·w).
    """
    D = _as_float64(D)
    C, _ = _band_table(D, w)
    return np.arange(len(D)) - w + np.argmin(C, axis=1)


def hard_dtw(D: torch.Tensor | np.ndarray, w: int) -> HardDTWResult:
    """Hard DTW of one cost matrix ``D [n, m]`` inside the causal band ``i - w <= j <= i``.

    Steps (1, 1), (1, 0), (0, 1); ``C_ij = D_ij + min(C_{i-1,j-1}, C_{i-1,j}, C_{i,j-1})`` over band
    cells only. Boundaries: the path starts at (0, 0) — the first text step can only refer to the
    first video step — and ends at the cheapest cell of the last text row (j in [n-1-w, n-1] ∩ [0, m-1]):
    at the live edge the latest video steps may not have been commented on yet. Near the start the
    band is cut at j = 0. Raises ``ValueError`` if no band path reaches the last row (m too small).

    Each row is solved in O(w) vector operations: within row i,
    ``C_j = S_j + min_{j' <= j}(P_j' - S_{j'-1})`` with ``S`` the running sum of ``D_i`` and
    ``P_j = min(C_{i-1,j-1}, C_{i-1,j})``, i.e. a cumulative minimum. Total O(n·w) time and memory.
    """
    D = _as_float64(D)
    n, m = D.shape
    C, band_d = _band_table(D, w)
    W = w + 1

    def entry_terms(i: int) -> tuple[np.ndarray, np.ndarray]:
        return _entry_terms(C, band_d, i)

    if not np.isfinite(C[n - 1]).any():
        raise ValueError(f"hard_dtw: no path within band w={w} for D of shape {(n, m)}")
    o_end = int(np.argmin(C[n - 1]))
    cost = float(C[n - 1, o_end])

    # Backtrack row by row: find where the path entered row i, then which predecessor it came from.
    cells: list[tuple[int, int]] = []
    o = o_end
    for i in range(n - 1, 0, -1):
        T, _ = entry_terms(i)
        o_in = int(np.argmin(T[: o + 1]))
        cells.extend((i, i - w + q) for q in range(o, o_in - 1, -1))
        diag = C[i - 1, o_in]
        up = C[i - 1, o_in + 1] if o_in + 1 < W else np.inf
        o = o_in if diag <= up else o_in + 1  # same o = diagonal step; o + 1 = vertical step
    cells.extend((0, 0 - w + q) for q in range(o, w - 1, -1))
    path = np.array(cells[::-1], dtype=np.int64)

    index = np.empty(n, dtype=np.int64)
    best = np.full(n, np.inf)
    for i, j in path:  # ascending j per row, so strict '<' keeps the earliest on ties
        if D[i, j] < best[i]:
            best[i], index[i] = D[i, j], j
    return HardDTWResult(path=path, index=index, cost=cost)


def realign_comments(
    comment_emb: torch.Tensor,
    video_emb: torch.Tensor,
    w: int,
    comment_mask: torch.Tensor | None = None,
    online: bool = False,
    by: str = "dtw",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each comment step's embedding to the video step it refers to (hard causal DTW).

    ``by="shift"`` is the ablation of the matching: every comment step moves back by the whole band,
    to ``max(i - w, 0)``, whatever the comments and frames are (``highlight.realign_by``).

    ``online=True`` uses :func:`online_dtw_index` (each step's choice sees no later step) instead of
    the backtracked global path: then the output at video step j depends on steps ``<= j + w`` only.

    Cost ``1 - cos(comment_i, video_j)`` in the band ``j in [i - w, i]`` (see :func:`hard_dtw` for
    the boundaries). Video steps that several comment steps refer to get their mean; video steps
    that none refers to keep zeros and ``mask = False``.

    Args:
        comment_emb: ``[n, d]`` per-step comment embeddings; video_emb: ``[n, d]``.
        w: the band width (``max_comment_lag`` steps).
        comment_mask: ``[n]`` bool, steps that have comments (``None`` = all). Steps without comments
            take part in the alignment but are not moved anywhere.
    Returns:
        ``(realigned [n, d], mask [n] bool)``.
    """
    n, d = comment_emb.shape
    if video_emb.shape[0] != n:
        raise ValueError(f"realign_comments expects equal step counts, got {n} and {video_emb.shape[0]}")
    if by == "shift":
        index = np.maximum(np.arange(n) - w, 0)
    elif by == "dtw":
        with torch.no_grad():
            D = cosine_cost(comment_emb[None].float(), video_emb[None].float())[0]
        index = online_dtw_index(D, w) if online else hard_dtw(D, w).index
    else:
        raise ValueError(f"realign_comments: by must be 'dtw' or 'shift', got {by!r}")
    index = torch.from_numpy(index).to(comment_emb.device)
    keep = torch.ones(n, dtype=torch.bool, device=comment_emb.device) if comment_mask is None else comment_mask.bool()
    out = torch.zeros_like(comment_emb).index_add(0, index[keep], comment_emb[keep])
    counts = torch.bincount(index[keep], minlength=n)
    mask = counts > 0
    out = out / counts.clamp(min=1).unsqueeze(-1).to(out.dtype)
    return out, mask
