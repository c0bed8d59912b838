"""CPU soft-DTW kernels (numba): forward with the soft-min weights, and the E-recursion backward.

Imported lazily by :mod:`mm_live.alignment` (only for CPU float32/float64 inputs, and only when
numba is installed); everything here works on NumPy arrays and knows nothing about autograd.

Why hand-written kernels: torch spends microseconds of dispatch per op and the soft-DTW recursion
needs several ops per anti-diagonal, which dominates at the lengths training uses (n = 32..128);
tslearn's numba kernel walks the table cell by cell with scalar libm ``exp``/``log`` calls (a
dependency chain from each cell to the next). Here one item's table is swept along anti-diagonals,
whose cells are independent, so LLVM vectorises the loop; ``exp`` and ``log`` are written out as
polynomials because numba has no vectorised libm (SVML is not in the PyPI wheels). Arithmetic is
float64 whatever the input dtype.

Soft-DTW in units of ``Q = -R / γ``: ``Q_ij = -D_ij / γ + logsumexp(Q_{i-1,j-1}, Q_{i-1,j}, Q_{i,j-1})``.
The forward stores, per cell, the soft-min weights it gave its three predecessors (they sum to 1);
the backward is then Cuturi & Blondel's E-recursion with three multiply-adds a cell and no ``exp``.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Terms below e^-69 ≈ 1e-30 of the largest are dropped from a soft-min (far below float64
# resolution of the sum); keeping them would only create subnormal weights and gradients, which
# x86 computes with slow microcode. The E-recursion flushes values below the same bound (the
# gradient is computed for a seed of 1, so the bound is relative to the upstream gradient).
_CUTOFF = -69.0
_TINY = 1e-30
_PARALLEL_MIN_CELLS = 1 << 17  # below ~0.5 ms of work, one thread: a hand-over can cost that on a busy machine
_CHUNKS_PER_THREAD = 4

_OPTIONS = dict(nogil=True, error_model="numpy", fastmath={"contract"})  # contract: fused multiply-add


def _jit(**options):
    """``njit(cache=True)``, or without the disk cache where numba finds no writable cache folder
    (a read-only install with a read-only home): then every process compiles on first use."""

    def wrap(fn):
        try:
            return njit(cache=True, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(**options)(fn)

    return wrap


@intrinsic
def _int64_bits_as_float64(typingctx, bits):
    """Reinterpret an int64's bits as a float64 (builds 2^k from its exponent field)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93145751953125e-1  # ln 2 split in two so that k·ln2 is exact for |k| < 2^11 (Cody–Waite)
_LN2_LO = 1.42860682030941723212e-6
_LN2 = 0.6931471805599453
_SQRT2 = 1.4142135623730951
_ONE = np.uint64(1)  # unsigned indices: numba then emits no negative-index wraparound, which blocks vectorising


_EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(12, -1, -1))  # exp(r) to r^12, highest first
_ATANH_SERIES = tuple(1.0 / k for k in range(23, 0, -2))  # atanh(z) / z in z², to z^22, highest first


@_jit(inline="always", **_OPTIONS)
def _horner(x, coefficients):
    p = 0.0
    for c in coefficients:  # a constant tuple: unrolled
        p = p * x + c
    return p


@_jit(inline="always", **_OPTIONS)
def _exp_neg(x):
    """``exp(x)`` for ``x <= 0`` to ≈1 ulp; 0 below ``_CUTOFF`` (and for -inf); NaN stays NaN.

    ``exp(x) = 2^k · exp(r)``, ``|r| <= ln2 / 2``, exp(r) by its Taylor series to r^12 (error < 2e-17).
    """
    xc = x if x > _CUTOFF else _CUTOFF  # also for NaN, so that k stays a valid integer
    k = np.floor(xc * _LOG2E + 0.5)
    r = xc - k * _LN2_HI - k * _LN2_LO
    y = _horner(r, _EXP_TAYLOR) * _int64_bits_as_float64((np.int64(k) + 1023) << 52)
    return y if x > _CUTOFF else (0.0 if x <= _CUTOFF else x)


@_jit(inline="always", **_OPTIONS)
def _log_1_3(s):
    """``log(s)`` for ``1 <= s <= 3`` (a soft-min sum: its largest term is 1) to ≈1 ulp.

    ``s = 2^e · t`` with ``t`` in [1/√2, √2), ``log t = 2 atanh(z)``, ``z = (t-1)/(t+1)``, ``|z| < 0.172``;
    the atanh series to z^23 (error < 1e-19).
    """
    above1 = s >= _SQRT2
    above2 = s >= 2.0 * _SQRT2
    t = s * (1.0 - 0.5 * above1 - 0.25 * above2)
    z = (t - 1.0) / (t + 1.0)
    return 2.0 * z * _horner(z * z, _ATANH_SERIES) + (above1 + above2) * _LN2


@_jit(**_OPTIONS)
def _forward_items(D, len_x, len_y, gamma, store, W, values, start, stop):
    """Soft-DTW of items ``start..stop-1``.

    D ``[B, n, m]``; values ``[B]`` receives ``R_{n_b m_b}``. With ``store = 1``, W ``[B, 3, n·m + 1]``
    receives the weights (diagonal, up, left) each cell gave its predecessors, diagonal-major: the
    cells of anti-diagonal k = i + j (row i ascending) follow those of diagonal k - 1, so item b's
    block fills ``W[b, :, :n_b·m_b]`` exactly; entry ``n_b·m_b`` is set to 0 (the backward reads one
    past the end). With ``store = 0`` (value only), W ``[1, 3, n + 1]`` is scratch that every diagonal
    overwrites. ``store`` is used as an index factor, not a branch: choosing views blocks vectorising.
    """
    inv = -1.0 / gamma
    q0 = np.empty(D.shape[1] + 2)  # diagonal k (being computed), k - 1, k - 2; entry i = row i
    q1 = np.empty(D.shape[1] + 2)
    q2 = np.empty(D.shape[1] + 2)
    for b in range(start, stop):
        n, m = len_x[b], len_y[b]
        d = D[b]
        wd, wu, wl = W[b * store, 0], W[b * store, 1], W[b * store, 2]
        q2[:] = -np.inf  # diagonal 0: only R_00 = 0; diagonal 1: boundary (R = +inf)
        q2[0] = 0.0
        q1[:] = -np.inf
        q0[:] = -np.inf
        offset = 0  # cells on the diagonals before k
        for k in range(2, n + m + 1):
            lo, hi = max(1, k - m), min(n, k - 1) + 1  # rows of the real cells on this diagonal
            first = (offset - lo) * store + 1  # >= 0 (a diagonal before k holds at least one cell)
            wdk, wuk, wlk = wd[first:], wu[first:], wl[first:]  # row i at [i - 1]
            for i in range(np.uint64(lo), np.uint64(hi)):
                a, u, l = q2[i - _ONE], q1[i - _ONE], q1[i]  # (i-1, j-1), (i-1, j), (i, j-1)
                # logsumexp with one exp fewer: the largest term is exp(0) = 1, so only the other
                # two are computed (chosen by branch-free selects).
                is_l = (l >= a) & (l >= u)
                is_u = (u >= a) & ~is_l
                is_a = ~is_l & ~is_u
                top = max(a, max(u, l))
                e1 = _exp_neg((u if is_a else a) - top)
                e2 = _exp_neg((u if is_l else l) - top)
                ea = 1.0 if is_a else e1
                eu = e2 if is_l else (1.0 if is_u else e1)
                el = 1.0 if is_l else e2
                s = ea + eu + el
                r = 1.0 / s
                wdk[i - _ONE], wuk[i - _ONE], wlk[i - _ONE] = ea * r, eu * r, el * r
                q0[i] = d[i - _ONE, np.uint64(k) - i - _ONE] * inv + top + _log_1_3(s)
            q0[lo - 1] = -np.inf  # the neighbours read by the next two diagonals: boundary or beyond
            q0[hi] = -np.inf
            q2, q1, q0 = q1, q0, q2
            offset += hi - lo
        if store:
            W[b, :, n * m] = 0.0
        values[b] = -gamma * q1[n]


@_jit(**_OPTIONS)
def _backward_items(W, len_x, len_y, grad, G, start, stop):
    """E-recursion for items ``start..stop-1``: ``G[b] = grad[b] · ∂R_{n_b m_b} / ∂D_b`` (0 on padding).

    ``E_ij = wu(i+1, j) E_{i+1,j} + wl(i, j+1) E_{i,j+1} + wd(i+1, j+1) E_{i+1,j+1}``, swept along
    anti-diagonals from the seed ``E_{n_b m_b} = 1``; W as written by :func:`_forward_items`.
    Successors outside the block hold E = 0, so the weight read for them (a neighbouring cell's,
    finite) does not matter.
    """
    e0 = np.empty(G.shape[1] + 2)  # diagonal k (being computed), k + 1, k + 2
    e1 = np.empty(G.shape[1] + 2)
    e2 = np.empty(G.shape[1] + 2)
    for b in range(start, stop):
        n, m = len_x[b], len_y[b]
        wd, wu, wl = W[b, 0], W[b, 1], W[b, 2]
        g = grad[b]
        out = G[b]
        out[n:, :] = 0.0
        out[:n, m:] = 0.0
        e0[:] = 0.0
        e1[:] = 0.0
        e2[:] = 0.0
        e1[n] = 1.0
        out[n - 1, m - 1] = g
        offset1, lo1 = n * m - 1, n  # diagonal k + 1 = n + m: the last cell
        offset2, lo2 = n * m, n + 1  # diagonal k + 2: none (its weights read below meet E = 0)
        for k in range(n + m - 1, 1, -1):
            lo, hi = max(1, k - m), min(n, k - 1) + 1
            first1, first2 = offset1 - lo1 + 1, offset2 - lo2 + 1
            wu1, wl1, wd2 = wu[first1:], wl[first1:], wd[first2:]  # row r of diagonal k + 1 / k + 2 at [r - 1]
            for i in range(np.uint64(lo), np.uint64(hi)):
                e = wu1[i] * e1[i + _ONE] + wl1[i - _ONE] * e1[i] + wd2[i] * e2[i + _ONE]
                e = 0.0 if e < _TINY else e  # (NaN stays NaN)
                e0[i] = e
                out[i - _ONE, np.uint64(k) - i - _ONE] = e * g
            e0[lo - 1] = 0.0
            e0[hi] = 0.0
            e2, e1, e0 = e1, e0, e2
            offset2, lo2 = offset1, lo1
            offset1, lo1 = offset1 - (hi - lo), lo


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mm-live-soft-dtw")


os.register_at_fork(after_in_child=_pool.cache_clear)  # a forked child has the pools but not their threads


def _run_split(kernel, args: tuple, batch: int, cells_per_item: int, threads: int) -> None:
    """Run ``kernel(*args, start, stop)`` over the batch, on up to ``threads`` threads (the kernels
    release the GIL) when there is enough work, the caller being one of them. Items are handed out
    in small chunks as threads come free rather than split up front: on a busy machine a thread
    that is descheduled then holds up at most one chunk."""
    if threads < 2 or batch < 2 or batch * cells_per_item < _PARALLEL_MIN_CELLS:
        kernel(*args, 0, batch)
        return
    chunk = -(-batch // (_CHUNKS_PER_THREAD * threads))
    chunks = -(-batch // chunk)
    counter = itertools.count()  # next() on it is atomic under the GIL

    def work() -> None:
        while (c := next(counter)) < chunks:
            kernel(*args, c * chunk, min(batch, (c + 1) * chunk))

    futures = [_pool(threads - 1).submit(work) for _ in range(min(threads, chunks) - 1)]
    work()
    for f in futures:
        f.result()


def forward(D: np.ndarray, len_x: np.ndarray, len_y: np.ndarray, gamma: float, store: bool, threads: int):
    """Soft-DTW values ``[B]`` (float64) of ``D [B, n, m]`` (C-contiguous float32/float64), and the
    weights for :func:`backward` (``None`` unless ``store``)."""
    b, n, m = D.shape
    W = np.empty((b, 3, n * m + 1) if store else (1, 3, n + 1), dtype=D.dtype)
    values = np.empty(b)
    _run_split(_forward_items, (D, len_x, len_y, gamma, int(store), W, values), b, n * m, threads)
    return values, (W if store else None)


def backward(W: np.ndarray, len_x: np.ndarray, len_y: np.ndarray, grad: np.ndarray, n: int, m: int, threads: int):
    """``grad[b] · ∂value_b / ∂D_b`` as ``[B, n, m]`` in the weights' dtype; ``grad`` float64 ``[B]``."""
    b = W.shape[0]
    G = np.empty((b, n, m), dtype=W.dtype)
    _run_split(_backward_items, (W, len_x, len_y, grad, G), b, n * m, threads)
    return G
