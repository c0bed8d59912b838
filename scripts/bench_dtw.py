"""Benchmark soft-DTW forward+backward: ours (anti-diagonals + analytic backward) vs baselines.

Baselines, all on the same cost matrices D [B, n, n], γ = 0.1, float32:
  * naive      — a per-cell Python double loop with autograd (the KuaiHL reference style), batched over B;
  * antidiag   — the same anti-diagonal recursion with plain autograd (no custom backward);
  * tslearn    — tslearn's numba ``SoftDTWLossPyTorch`` kernel, if importable.

tslearn is not a project dependency. To include it:
    $PY -m pip install --target /tmp/tslearn-pkgs tslearn numba
    MM_LIVE_BENCH_EXTRA_PATH=/tmp/tslearn-pkgs $PY scripts/bench_dtw.py
(the extra path is appended to sys.path, so the project's own numpy/torch still win).

Prints one table from one run (medians of several repeats) and writes bench/dtw.json atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("NUMBA_NUM_THREADS", "2")
# The machine is shared: with OpenMP's default active wait, torch's idle worker thread spins after
# every parallel region and takes the core the serial diagonal recursion needs (measured 5-10× slower
# for every torch method under load). Passive wait removes that; it must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for extra in filter(None, os.environ.get("MM_LIVE_BENCH_EXTRA_PATH", "").split(os.pathsep)):
    sys.path.append(extra)

import torch  # noqa: E402

from mm_live.alignment import soft_dtw  # noqa: E402
from mm_live.fileio import write_json  # noqa: E402

GAMMA = 0.1
_BIG = 1e10  # a finite +inf for the autograd baselines (inf - inf in backward would give NaN)


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


def load_tslearn():
    try:
        import tslearn
        from tslearn.metrics.soft_dtw_loss_pytorch import _SoftDTWLossPyTorch
    except ImportError:
        return None, None
    return (lambda D, gamma: _SoftDTWLossPyTorch.apply(D, gamma)), tslearn.__version__


def time_call(
    fn: Callable[[torch.Tensor], torch.Tensor], D: torch.Tensor, repeats: int, budget_s: float, min_repeats: int = 3
) -> float:
    """Median wall time (ms) of forward+backward over up to ``repeats`` runs (stops early past the budget)."""
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        x = D.detach().clone().requires_grad_(True)
        t0 = time.perf_counter()
        fn(x).sum().backward()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times) >= min_repeats:
            break
    return statistics.median(times) * 1e3


def command_line() -> str:
    extra = os.environ.get("MM_LIVE_BENCH_EXTRA_PATH")
    prefix = f"MM_LIVE_BENCH_EXTRA_PATH={extra} " if extra else ""
    return prefix + " ".join(["python scripts/bench_dtw.py", *sys.argv[1:]]).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--naive-cap-s", type=float, default=30.0, help="skip the naive loop when its estimate exceeds this")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "bench" / "dtw.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tslearn_fn, tslearn_version = load_tslearn()
    load_before = os.getloadavg()[0]  # other work on the machine inflates every figure; record it

    ours = lambda D: soft_dtw(D, GAMMA)  # noqa: E731
    methods: dict[str, Callable] = {
        "ours": ours,
        "antidiag_autograd": lambda D: antidiag_autograd_soft_dtw(D, GAMMA),
    }
    if tslearn_fn is not None:
        methods["tslearn"] = lambda D: tslearn_fn(D, GAMMA)

    rows = []
    naive_last: tuple[int, float] | None = None
    for n in args.sizes:
        D = torch.rand(args.batch, n, n, generator=torch.Generator().manual_seed(n))
        ref = soft_dtw(D.double(), GAMMA)
        row: dict = {"n": n}
        for name, fn in methods.items():
            got = fn(D.clone()).detach().double()
            row[f"{name}_max_rel_err"] = float(((got - ref).abs() / ref.abs()).max())
            fn(D.clone().requires_grad_(True)).sum().backward()  # warm-up (numba JIT, allocator)
            row[f"{name}_ms"] = time_call(fn, D, args.repeats, budget_s=5.0)
        # The naive loop's cost grows with the number of cells: estimate from the previous size.
        est_s = None if naive_last is None else naive_last[1] / 1e3 * (n / naive_last[0]) ** 2
        if est_s is not None and est_s > args.naive_cap_s:
            row["naive_ms"] = None
            row["naive_note"] = f"skipped (est. {est_s:.0f} s per call)"
        else:
            row["naive_ms"] = time_call(lambda x: naive_soft_dtw(x, GAMMA), D, 3, budget_s=10.0, min_repeats=1)
            naive_last = (n, row["naive_ms"])
        row.setdefault("tslearn_ms", None)
        row["speedup_vs_naive"] = None if row["naive_ms"] is None else row["naive_ms"] / row["ours_ms"]
        row["speedup_vs_antidiag_autograd"] = row["antidiag_autograd_ms"] / row["ours_ms"]
        row["speedup_vs_tslearn"] = None if row["tslearn_ms"] is None else row["tslearn_ms"] / row["ours_ms"]
        rows.append(row)

    fmt = lambda v, spec=".1f": "—" if v is None else format(v, spec)  # noqa: E731
    print(f"soft-DTW forward+backward, B={args.batch}, γ={GAMMA}, float32, {args.threads} threads, median ms per call")
    if tslearn_fn is None:
        print("tslearn not installed (set MM_LIVE_BENCH_EXTRA_PATH to a folder holding tslearn + numba)")
    header = f"{'n':>5} {'ours':>9} {'naive loop':>12} {'antidiag autograd':>18} {'tslearn':>9} {'×naive':>8} {'×antidiag':>10} {'×tslearn':>9}"
    print(header)
    for r in rows:
        naive = fmt(r["naive_ms"]) if r["naive_ms"] is not None else r["naive_note"].split(" (")[0]
        print(
            f"{r['n']:>5} {fmt(r['ours_ms']):>9} {naive:>12} {fmt(r['antidiag_autograd_ms']):>18} "
            f"{fmt(r['tslearn_ms']):>9} {fmt(r['speedup_vs_naive']):>8} {fmt(r['speedup_vs_antidiag_autograd']):>10} "
            f"{fmt(r['speedup_vs_tslearn'], '.2f'):>9}"
        )
    for r in rows:
        if r.get("naive_note"):
            print(f"n={r['n']}: naive loop {r['naive_note']}")
    print(f"load average (1 min) before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}")
    print("×X = X's time / ours (>1: ours is faster). Max relative value error vs float64 ours:",
          ", ".join(f"{k[:-12]}@{r['n']}={r[k]:.1e}" for r in rows for k in r if k.endswith("_max_rel_err")))
    write_json(
        args.out,
        {
            "benchmark": "soft-DTW forward+backward",
            "command": command_line(),
            "batch": args.batch,
            "gamma": GAMMA,
            "dtype": "float32",
            "threads": args.threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "repeats_max": args.repeats,
            "statistic": "median ms per call",
            "torch": torch.__version__,
            "tslearn": tslearn_version,
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "load_average_1m_before_after": [load_before, os.getloadavg()[0]],
            "results": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
