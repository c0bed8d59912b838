"""Benchmark soft-DTW forward+backward: ours vs tslearn and the slower routes, every size in one table.

All methods run on the same cost matrices ``D = 1 - cos(text, frames)`` [B, n, n] (frame embeddings
with noisy copies as text, as the alignment loss's positive pair), γ = 0.1, float32, fwd+bwd:
  * ours       — :func:`mm_live.alignment.soft_dtw` as shipped (on the CPU: the numba kernels);
  * torch      — our torch anti-diagonal path with the analytic backward (what runs on CUDA or
                 without numba; it was "ours" before the numba kernels);
  * autograd   — the same anti-diagonal recursion with plain autograd (no custom backward);
  * naive      — a per-cell Python double loop with autograd (the KuaiHL reference style);
  * tslearn    — tslearn's numba ``SoftDTWLossPyTorch`` kernel (a dev dependency).
Under load from other processes every figure inflates; the methods are timed in interleaved rounds
(one call of each per round) so that they share it, and the load average is recorded. The naive
loop (seconds per call) is timed after the rounds, one to three calls.

First-call time (numba compiles on first use): each measured in a fresh process, ours with an empty
and with a filled on-disk cache (NUMBA_CACHE_DIR), tslearn (which does not cache its kernels).

Prints one table and writes bench/dtw.json atomically:
    python scripts/bench_dtw.py [--sizes 32 64 128 256 512] [--batch 16]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("NUMBA_NUM_THREADS", "2")
# The machine is shared: with OpenMP's default active wait, torch's idle worker thread spins after
# every parallel region and takes the core the serial diagonal recursion needs (measured 5-10× slower
# for every torch method under load). Passive wait removes that; it must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mm_live.alignment import _SoftDTW, cosine_cost, soft_dtw  # noqa: E402
from mm_live.fileio import write_json  # noqa: E402

GAMMA = 0.1
_BIG = 1e10  # a finite +inf for the autograd baselines (inf - inf in backward would give NaN)
METHODS = ("ours", "torch", "autograd", "naive", "tslearn")


def naive_soft_dtw(D: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-cell double loop (KuaiHL style), vectorised over the batch only; autograd backward."""
    b, n, m = D.shape
    big = D.new_full((b,), _BIG)
    R = [[big] * (m + 1) for _ in range(n + 1)]
    R[0][0] = D.new_zeros(b)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            r = torch.stack([R[i - 1][j - 1], R[i - 1][j], R[i][j - 1]]) / -gamma
            R[i][j] = D[:, i - 1, j - 1] - gamma * torch.logsumexp(r, dim=0)
    return R[n][m]


def antidiag_autograd_soft_dtw(D: torch.Tensor, gamma: float) -> torch.Tensor:
    """The anti-diagonal recursion with autograd through every diagonal (no analytic backward).

    The diagonals of D are taken with one ``as_strided`` view and ``unbind`` (whose backward is a
    single stack), so autograd costs O(n·m) overall rather than a full-size gradient per diagonal.
    """
    b, n, m = D.shape
    w = n + m
    padded = torch.nn.functional.pad(D, (0, n))  # [B, n, m + n]; row tails are the zeros read below
    diagonals = padded.as_strided((b, n + m - 1, n), (n * w, 1, w - 1)).unbind(1)  # diag c: [B, n] over i
    i = torch.arange(1, n + 1)
    prev2 = torch.cat([D.new_zeros(b, 1), D.new_full((b, n), _BIG)], dim=1)  # diagonal 0: only (0, 0)
    prev1 = D.new_full((b, n + 1), _BIG)  # diagonal 1: (0, 1) and (1, 0) are boundary
    for k in range(2, n + m + 1):
        j = k - i
        ok = (j >= 1) & (j <= m)
        r = torch.stack([prev2[:, :-1], prev1[:, :-1], prev1[:, 1:]]) / -gamma
        cur = torch.where(ok, diagonals[k - 2] - gamma * torch.logsumexp(r, dim=0), _BIG)
        prev2, prev1 = prev1, torch.cat([D.new_full((b, 1), _BIG), cur], dim=1)
    return prev1[:, n]


def torch_path_soft_dtw(D: torch.Tensor, gamma: float) -> torch.Tensor:
    full = torch.full((D.shape[0],), D.shape[1], dtype=torch.long)
    return _SoftDTW.apply(D, full, full, gamma)


def tslearn_soft_dtw():
    """tslearn's torch loss function, or ``None`` if tslearn is not installed."""
    try:
        from tslearn.metrics.soft_dtw_loss_pytorch import _SoftDTWLossPyTorch
    except ImportError:
        return None
    return lambda D, gamma: _SoftDTWLossPyTorch.apply(D, gamma)


def cost_matrices(batch: int, n: int, dim: int = 64) -> torch.Tensor:
    """``1 - cos`` between frame embeddings and noisy copies of them (the positive pair's costs)."""
    g = torch.Generator().manual_seed(n)
    frames = torch.randn(batch, n, dim, generator=g)
    text = frames + 0.7 * torch.randn(batch, n, dim, generator=g)
    return cosine_cost(text, frames).contiguous()


def fwd_bwd_ms(fn: Callable[[torch.Tensor], torch.Tensor], D: torch.Tensor) -> float:
    x = D.detach().clone().requires_grad_(True)
    t0 = time.perf_counter()
    fn(x).sum().backward()
    return (time.perf_counter() - t0) * 1e3


def value_and_grad(fn: Callable[[torch.Tensor], torch.Tensor], D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = D.detach().clone().requires_grad_(True)
    values = fn(x)
    values.sum().backward()
    return values.detach().double(), x.grad.double()


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def first_call(method: str, n: int, batch: int) -> None:
    """(Child process) print the wall time of the first fwd+bwd call in this process, in ms."""
    fn = {"ours": lambda D: soft_dtw(D, GAMMA), "tslearn": lambda D: tslearn_soft_dtw()(D, GAMMA)}[method]
    D = cost_matrices(batch, n)
    first = fwd_bwd_ms(fn, D)
    print(f"{first:.3f} {statistics.median(fwd_bwd_ms(fn, D) for _ in range(5)):.3f}")


def first_call_row(method: str, n: int, batch: int, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--first-call", method, "--batch", str(batch), "--sizes", str(n)],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout.split()
    return {"first_ms": float(out[0]), "steady_ms": float(out[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (each method once per round)")
    parser.add_argument("--budget-s", type=float, default=20.0, help="stop a size's rounds after this (>= 3 rounds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--naive-cap-s", type=float, default=10.0, help="skip the naive loop when its estimate exceeds this")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "bench" / "dtw.json")
    parser.add_argument("--first-call", choices=["ours", "tslearn"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.first_call:
        first_call(args.first_call, args.sizes[0], args.batch)
        return
    tslearn_fn = tslearn_soft_dtw()
    load_before = os.getloadavg()[0]  # other work on the machine inflates every figure; record it

    fns: dict[str, Callable] = {
        "ours": lambda D: soft_dtw(D, GAMMA),
        "torch": lambda D: torch_path_soft_dtw(D, GAMMA),
        "autograd": lambda D: antidiag_autograd_soft_dtw(D, GAMMA),
        "naive": lambda D: naive_soft_dtw(D, GAMMA),
    }
    if tslearn_fn is not None:
        fns["tslearn"] = lambda D: tslearn_fn(D, GAMMA)

    rows = []
    naive_history: list[tuple[int, float]] = []
    for n in tqdm(args.sizes, desc="sizes", file=sys.stderr):
        D = cost_matrices(args.batch, n)
        ref_v, ref_g = value_and_grad(lambda x: torch_path_soft_dtw(x, GAMMA), D.double())  # float64 reference
        row: dict = {"n": n}
        # The naive loop's cost grows faster than the cell count: extrapolate from the sizes measured.
        est_s = 0.0
        if naive_history:
            n1, t1 = naive_history[-1]
            power = 2.0
            if len(naive_history) > 1:
                n0, t0 = naive_history[-2]
                power = math.log(t1 / t0) / math.log(n1 / n0)
            est_s = t1 / 1e3 * (n / n1) ** power
        active = [k for k in fns if k != "naive" or est_s <= args.naive_cap_s]
        if "naive" not in active:
            row["naive_note"] = f"skipped (est. {est_s:.0f} s per call)"
        for name in active:
            v, g = value_and_grad(fns[name], D)  # also the warm-up (JIT, allocator)
            row[f"{name}_value_rel_err"] = float(((v - ref_v).abs() / ref_v.abs()).max())
            row[f"{name}_grad_abs_err"] = float((g - ref_g).abs().max())
        fast = [k for k in active if k != "naive"]
        times: dict[str, list[float]] = {k: [] for k in active}
        start = time.perf_counter()
        for r in range(args.rounds):
            for name in fast[r % len(fast):] + fast[: r % len(fast)]:  # rotate who goes first
                times[name].append(fwd_bwd_ms(fns[name], D))
            if r >= 2 and time.perf_counter() - start > args.budget_s:
                break
        if "naive" in active:  # seconds per call: timed on its own, at most three calls
            times["naive"] = [fwd_bwd_ms(fns["naive"], D) for _ in range(1 if est_s > args.naive_cap_s / 3 else 3)]
        for name in METHODS:
            row[f"{name}_ms"] = statistics.median(times[name]) if name in times else None
            row[f"{name}_calls"] = len(times.get(name, []))
        if row["naive_ms"] is not None:
            naive_history.append((n, row["naive_ms"]))
        for name in METHODS[1:]:
            row[f"speedup_vs_{name}"] = None if row[f"{name}_ms"] is None else row[f"{name}_ms"] / row["ours_ms"]
        rows.append(row)

    first_calls = {}
    with tempfile.TemporaryDirectory() as cache:
        n0 = args.sizes[0]
        first_calls["ours_empty_cache"] = first_call_row("ours", n0, args.batch, {"NUMBA_CACHE_DIR": cache})
        first_calls["ours_filled_cache"] = first_call_row("ours", n0, args.batch, {"NUMBA_CACHE_DIR": cache})
    if tslearn_fn is not None:
        first_calls["tslearn"] = first_call_row("tslearn", n0, args.batch, {})
    load_after = os.getloadavg()[0]

    fmt = lambda v, spec=".1f": "—" if v is None else format(v, spec)  # noqa: E731
    print(f"soft-DTW forward+backward, B={args.batch}, γ={GAMMA}, float32, {args.threads} threads, median ms per call")
    if tslearn_fn is None:
        print("tslearn not installed (pip install -r requirements-dev.txt)")
    head = f"{'n':>5} {'ours':>8} {'tslearn':>8} {'torch':>8} {'autograd':>9} {'naive':>9}   {'×tslearn':>8} {'×torch':>7} {'×autograd':>9} {'×naive':>7}"
    print(head)
    for r in rows:
        print(
            f"{r['n']:>5} {fmt(r['ours_ms'], '.2f'):>8} {fmt(r['tslearn_ms'], '.2f'):>8} {fmt(r['torch_ms']):>8} "
            f"{fmt(r['autograd_ms']):>9} {fmt(r['naive_ms'], '.0f'):>9}   {fmt(r['speedup_vs_tslearn'], '.2f'):>8} "
            f"{fmt(r['speedup_vs_torch']):>7} {fmt(r['speedup_vs_autograd']):>9} {fmt(r['speedup_vs_naive'], '.0f'):>7}"
        )
    for name, fc in first_calls.items():
        print(f"first call n={args.sizes[0]} ({name.replace('_', ' ')}): {fc['first_ms']:.0f} ms (then {fc['steady_ms']:.2f} ms per call)")
    for r in rows:
        if r.get("naive_note"):
            print(f"n={r['n']}: naive loop {r['naive_note']}")
    print("×X = X's time / ours (>1: ours is faster). ours/torch: the shipped CPU path / the CUDA and no-numba path.")
    print("Max error vs the float64 torch path (value relative, gradient absolute):")
    for r in rows:
        print(f"  n={r['n']}: " + ", ".join(
            f"{k}: {r[f'{k}_value_rel_err']:.1e} / {r[f'{k}_grad_abs_err']:.1e}" for k in METHODS if f"{k}_value_rel_err" in r
        ))
    print(f"load average (1 min) before/after: {load_before:.1f}/{load_after:.1f}")
    write_json(
        args.out,
        {
            "benchmark": "soft-DTW forward+backward",
            "command": " ".join(["python scripts/bench_dtw.py", *sys.argv[1:]]),
            "inputs": "D = 1 - cos(frames + 0.7 noise, frames), 64-d Gaussian frame embeddings",
            "batch": args.batch,
            "gamma": GAMMA,
            "dtype": "float32",
            "threads": args.threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "statistic": "median ms per call over interleaved rounds",
            "reference": "float64 torch path",
            "torch": torch.__version__,
            "numba": version("numba"),
            "tslearn": version("tslearn"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "load_average_1m_before_after": [load_before, load_after],
            "first_call": {"n": args.sizes[0], **first_calls},
            "results": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
