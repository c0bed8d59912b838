"""Benchmark lookup-table attention over long coded histories vs exact target attention.

A ranker scores B candidate items against one user's history of L items (shared history, d = 128).
  * exact   — ``exact_target_attention``: <q, h> / sqrt(d) for all L raw float32 vectors, softmax,
              weighted sum (the baseline; L × 512 bytes of history in memory);
  * tables  — ``ApproxTargetAttention(top_k=100)`` on 16-byte PQ codes (m = 16, nbits = 8): lookup
              tables per candidate, m table reads per item, exact attention over the 100 best
              *decoded* items (L × 16 bytes in memory; nothing else needed);
  * tables+raw — the same, but a shortlist of S = max(400, L / 50) items is re-scored against the
              raw vectors before the top 100 are kept (codes in memory; the S raw vectors fetched per
              request, e.g. from a feature store: 16 bytes per item resident + S × 512 bytes touched).

History data: one user's interests are 20 clusters of the clustered mixture of bench_retrieval.py
(1 000 clusters with Zipf popularity, power-law spectrum, unit vectors), chosen by popularity; the
history and the candidates are drawn from those clusters, so many history items are near-tied for a
candidate. Codebooks are fitted by faiss on 20 000 items of the whole mixture. Candidates are scaled
so that a score is cosine / 0.05 (a trained ranker's attention is peaked; with cosine / sqrt(d) on
unit vectors the softmax would be almost uniform and no top-k could stand for it).

Metrics per L ∈ {1k, 10k, 100k} and B ∈ {1, 32}: median ms per call (torch, 2 threads,
inference mode), speed-up vs exact, resident bytes per history item, top-100 overlap with the exact
top-100 (share of the exact 100 best items among the 100 attended), the share of the exact softmax
mass on the attended items, and the cosine between the approximate and the exact attention output. Prints one table; writes bench/approx_attention.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_dtw.py: spinning OpenMP workers on a shared machine

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_retrieval import ClusteredEmbeddings  # noqa: E402  (the same synthetic embeddings)

from mm_live.fileio import write_json  # noqa: E402
from mm_live.quantization import ApproxTargetAttention, ProductQuantizer, exact_target_attention  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
D, M, NBITS, TOP_K, MIN_SHORTLIST, TAU = 128, 16, 8, 100, 400, 0.05


def median_ms(fn, budget_s: float = 3.0, max_repeats: int = 30) -> float:
    fn()  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < max_repeats and (len(times) < 5 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "approx_attention.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]

    mix = ClusteredEmbeddings(n_clusters=1000, seed=0)
    train, _ = mix.sample(20_000, seed=1)
    pq = ProductQuantizer(D, M, NBITS).fit(train).eval()
    interests = np.random.default_rng(2).choice(mix.n_clusters, size=20, replace=False, p=mix.p)
    approx = ApproxTargetAttention(pq, top_k=TOP_K)

    rows = []
    with torch.inference_mode():
        for L in args.lengths:
            hist_np, _ = mix.sample(L, seed=3, clusters=interests)
            history = torch.from_numpy(hist_np)
            codes = pq.encode(history)  # [L, m] uint8
            shortlist = max(MIN_SHORTLIST, L // 50)
            approx_raw = ApproxTargetAttention(pq, top_k=TOP_K, shortlist=shortlist)
            for B in args.batches:
                cand, _ = mix.sample(B, seed=4, clusters=interests)
                q = torch.from_numpy(cand) * (D ** 0.5 / TAU)  # scores = cosine / TAU
                ctx_exact, scores = exact_target_attention(q, history)
                weights_exact = torch.softmax(scores, -1)
                exact_top = scores.topk(min(TOP_K, L), dim=-1).indices
                row = {"L": L, "B": B,
                       "exact_ms": median_ms(lambda: exact_target_attention(q, history)),
                       "exact_bytes_per_item": history.element_size() * D}
                for name, module, kwargs, resident in (
                        ("tables", approx, {}, codes.element_size() * M),
                        ("tables_raw", approx_raw, {"history": history}, codes.element_size() * M)):
                    out = module(q, codes, **kwargs)
                    overlap = np.mean([len(set(a.tolist()) & set(e.tolist())) / exact_top.shape[1]
                                       for a, e in zip(out.indices, exact_top)])
                    cos = torch.nn.functional.cosine_similarity(out.context, ctx_exact, dim=-1).mean().item()
                    mass = torch.gather(weights_exact, 1, out.indices).sum(-1).mean().item()
                    ms = median_ms(lambda: module(q, codes, **kwargs))
                    row.update({f"{name}_ms": ms, f"{name}_speedup": row["exact_ms"] / ms,
                                f"{name}_bytes_per_item": resident, f"{name}_top100_overlap": float(overlap),
                                f"{name}_mass_covered": mass, f"{name}_context_cosine": cos})
                row["exact_top100_mass"] = weights_exact.topk(min(TOP_K, L), dim=-1).values.sum(-1).mean().item()
                row["tables_raw_shortlist"] = min(shortlist, L)
                row["tables_raw_fetched_bytes_per_request"] = min(shortlist, L) * history.element_size() * D
                rows.append(row)
    load_after = os.getloadavg()[0]

    result = {
        "benchmark": "lookup-table attention (PQ codes, top-100 exact) vs exact target attention",
        "command": " ".join(["python scripts/bench_approx_attention.py", *sys.argv[1:]]),
        "d": D, "m": M, "nbits": NBITS, "top_k": TOP_K, "shortlist_raw": f"max({MIN_SHORTLIST}, L / 50)", "tau": TAU,
        "threads": args.threads,
        "statistic": "median ms per call", "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "data": "one user's 20 interest clusters of bench_retrieval's mixture (1000 clusters); candidates from the same clusters",
        "load_average_1m_before_after": [load_before, load_after],
        "target": "faster than exact from 10k items on, top-100 overlap >= 0.8",
        "results": rows,
    }
    write_json(args.out, result)

    print(f"target attention, d={D}, scores cos/{TAU}, codes m={M} × {NBITS} bits ({M} B/item vs {D * 4} B raw), "
          f"top-{TOP_K}; +raw re-scores a shortlist of max({MIN_SHORTLIST}, L/50); {args.threads} threads, median ms "
          f"(load {load_before:.1f} → {load_after:.1f})")
    print(f"{'L':>7} {'B':>3} {'exact ms':>9} | {'codes ms':>8} {'×exact':>6} {'overlap':>7} {'mass':>5} {'cos':>5} | "
          f"{'+raw ms':>8} {'×exact':>6} {'overlap':>7} {'mass':>5} {'cos':>5} | {'top100 mass':>11}")
    for r in rows:
        print(f"{r['L']:>7} {r['B']:>3} {r['exact_ms']:>9.2f} | {r['tables_ms']:>8.2f} {r['tables_speedup']:>6.2f} "
              f"{r['tables_top100_overlap']:>7.3f} {r['tables_mass_covered']:>5.2f} {r['tables_context_cosine']:>5.2f} | "
              f"{r['tables_raw_ms']:>8.2f} {r['tables_raw_speedup']:>6.2f} {r['tables_raw_top100_overlap']:>7.3f} "
              f"{r['tables_raw_mass_covered']:>5.2f} {r['tables_raw_context_cosine']:>5.2f} | {r['exact_top100_mass']:>11.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
