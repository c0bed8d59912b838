"""Benchmark the gifting graphs and metapath tables: build time, peak memory, neighbour-lookup throughput.

Inputs: synthetic gift logs of 1 M and 10 M events shaped like live-streaming gifts — power-law
user activity (Zipf 0.9) and streamer popularity (Zipf 1.0), 50 communities with 80% of a user's
gifts inside its own, times uniform over 30 days, KuaiLive-like gift prices; E/10 users and E/100
streamers. Generated once per size and seed into ``--work`` (not timed).

Each build runs in a fresh subprocess (its peak RSS is the figure): load the events, U2A, Swing
A2A + U2U, the six metapath tables, written to disk. Compared side by side with

* **uncapped** — the same build with the hub caps lifted (what the caps buy), at 1 M;
* **python swing** — a plain-Python dict-of-sets Swing, the usual per-streamer loop over user
  pairs, on the same capped graph (checked to give the same A2A), at 1 M;
* **target** — 10 M edges in ≤ 60 s and ≤ 2 GB on 2 cores;
* **lookup** — a batch neighbour lookup from the memory-mapped tables against the same lookup
  from arrays loaded into RAM.

Prints one table and writes bench/graph.json atomically. The machine is shared: the load average
before and after is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mm_live.fileio import write_json
from mm_live.graph import (
    USER_METAPATHS,
    GiftEvents,
    GiftGraphs,
    GraphConfig,
    capped_u2a,
    load_tables,
    metapath_tables,
    save_tables,
    swing_and_cogifting,
    u2a_graph,
)

REPO = Path(__file__).resolve().parents[1]
PRICES = np.array([1, 2, 5, 10, 20, 52, 99, 188, 520])
PRICE_P = np.array([0.30, 0.20, 0.15, 0.12, 0.08, 0.06, 0.05, 0.03, 0.01])
UNCAPPED = 10**9


def synthetic_gifts(n_events: int, seed: int = 0, n_communities: int = 50, days: int = 30, in_community: float = 0.8):
    """(user, streamer, time_ms, value, n_users, n_streamers) with power-law activity/popularity and communities."""
    rng = np.random.default_rng(seed)
    n_users, n_streamers = max(n_events // 10, 10), max(n_events // 100, 10)
    activity = rng.permutation(1.0 / np.arange(1, n_users + 1) ** 0.9)
    popularity = rng.permutation(1.0 / np.arange(1, n_streamers + 1) ** 1.0)
    user_com, streamer_com = rng.integers(n_communities, size=n_users), rng.integers(n_communities, size=n_streamers)
    user = rng.choice(n_users, size=n_events, p=activity / activity.sum())
    # Streamers sorted by community: a community's streamers are one slice of the popularity CDF.
    order = np.lexsort((-popularity, streamer_com))
    first = np.searchsorted(streamer_com[order], np.arange(n_communities + 1))
    cdf = np.cumsum(popularity[order])
    c = user_com[user]
    lo = np.where(first[c] > 0, cdf[np.maximum(first[c] - 1, 0)], 0.0)
    hi = np.where(first[c + 1] > first[c], cdf[np.maximum(first[c + 1] - 1, 0)], lo)
    local = order[np.minimum(np.searchsorted(cdf, lo + rng.random(n_events) * (hi - lo)), len(cdf) - 1)]
    anywhere = order[np.minimum(np.searchsorted(cdf, rng.random(n_events) * cdf[-1]), len(cdf) - 1)]
    streamer = np.where((rng.random(n_events) < in_community) & (hi > lo), local, anywhere)
    time_ms = np.sort(rng.integers(0, days * 86_400_000, size=n_events))
    value = PRICES[rng.choice(len(PRICES), size=n_events, p=PRICE_P)]
    return (user.astype(np.int32), streamer.astype(np.int32), time_ms.astype(np.int64), value.astype(np.float32),
            n_users, n_streamers)


def events_file(work: Path, n_events: int, seed: int) -> Path:
    path = work / f"gifts-{n_events}-seed{seed}.npz"
    if not path.is_file():
        t0 = time.perf_counter()
        u, a, t, v, nu, na = synthetic_gifts(n_events, seed)
        work.mkdir(parents=True, exist_ok=True)
        np.savez(path.with_suffix(".tmp.npz"), user=u, streamer=a, time=t, value=v, n=np.array([nu, na]))
        os.replace(path.with_suffix(".tmp.npz"), path)
        print(f"generated {n_events:,} events in {time.perf_counter() - t0:.1f} s -> {path}", file=sys.stderr)
    return path


def load_events(path: Path) -> GiftEvents:
    d = np.load(path)
    nu, na = (int(x) for x in d["n"])
    return GiftEvents.from_arrays(d["user"], d["streamer"], d["time"], d["value"], n_users=nu, n_streamers=na)


def child_build(events: Path, out: Path, capped: bool) -> None:
    """(Fresh subprocess) build graphs + tables, write them, print stage times and peak RSS as JSON."""
    cfg = GraphConfig() if capped else GraphConfig(max_users_per_streamer=UNCAPPED, max_streamers_per_user=UNCAPPED)
    times = {}
    t = time.perf_counter()
    ev = load_events(events)
    times["load_s"] = time.perf_counter() - t
    t0 = t = time.perf_counter()
    cpu0 = time.process_time()
    u2a = u2a_graph(ev, cfg.weight)
    times["u2a_s"] = time.perf_counter() - t
    t = time.perf_counter()
    a2a, u2u = swing_and_cogifting(u2a, cfg)
    times["swing_u2u_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tables = metapath_tables(GiftGraphs(u2a, a2a, u2u, None, len(ev)), cfg)
    times["tables_s"] = time.perf_counter() - t
    t = time.perf_counter()
    save_tables(tables, out)
    times["write_s"] = time.perf_counter() - t
    times["build_s"] = time.perf_counter() - t0
    times["build_cpu_s"] = time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Where Swing/U2U time goes: partial products of B Bᵀ = Σ over streamers of (users kept)².
    pair_work = {name: float((np.diff(m.tocsc().indptr).astype(np.float64) ** 2).sum())
                 for name, m in (("pair_work", capped_u2a(u2a, cfg)), ("pair_work_uncapped", u2a))}
    print(json.dumps({**times, "peak_rss_mb": peak, **pair_work, "u2a_edges": int(u2a.nnz), "a2a_edges": int(a2a.nnz),
                      "u2u_edges": int(u2u.nnz), "n_users": ev.n_users, "n_streamers": ev.n_streamers}))


def run_build(events: Path, out: Path, capped: bool, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child-build", str(events), "--child-out", str(out)] + ([] if capped else ["--uncapped"])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def python_swing(b, alpha: float, top_k: int) -> tuple[dict, float]:
    """Plain-Python Swing over binary CSR ``b`` (users × streamers): per streamer, every pair of its
    users, their common streamers as set intersections. Returns ({a: {b: sim}} top-k, seconds)."""
    t0 = time.perf_counter()
    streamers_of = [set(b.indices[b.indptr[u]:b.indptr[u + 1]].tolist()) for u in range(b.shape[0])]
    bt = b.T.tocsr()
    sim: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for a in range(bt.shape[0]):
        users = bt.indices[bt.indptr[a]:bt.indptr[a + 1]].tolist()
        row = sim[a]
        for i, u in enumerate(users):
            su = streamers_of[u]
            for v in users[i + 1:]:
                common = su & streamers_of[v]
                if len(common) < 2:
                    continue
                w = 2.0 / (alpha + len(common))  # ordered pairs (u, v) and (v, u)
                for other in common:
                    if other != a:
                        row[other] += w
    top = {a: dict(sorted(row.items(), key=lambda kv: -kv[1])[:top_k]) for a, row in sim.items() if row}
    return top, time.perf_counter() - t0


def compare_swing(events: Path) -> dict:
    """Our Swing vs the plain-Python one on the same capped 1 M graph: time and agreement."""
    cfg = GraphConfig()
    u2a = u2a_graph(load_events(events), cfg.weight)
    t, cpu = time.perf_counter(), time.process_time()
    a2a, _ = swing_and_cogifting(u2a, cfg)
    ours_s, ours_cpu = time.perf_counter() - t, time.process_time() - cpu
    capped = capped_u2a(u2a, cfg)
    cpu = time.process_time()
    ref, py_s = python_swing(capped, cfg.swing_alpha, cfg.a2a_top_k)
    py_cpu = time.process_time() - cpu
    # Same top-k values per streamer (the sets can differ only among exact ties).
    worst = 0.0
    for a in range(a2a.shape[0]):
        mine = np.sort(a2a.data[a2a.indptr[a]:a2a.indptr[a + 1]])[::-1]
        theirs = np.sort(np.fromiter(ref.get(a, {}).values(), dtype=np.float64))[::-1]
        if len(mine) != len(theirs):
            worst = float("inf")
            break
        if len(mine):
            worst = max(worst, float(np.max(np.abs(mine - theirs) / theirs)))
    return {"ours_swing_u2u_s": ours_s, "ours_swing_u2u_cpu_s": ours_cpu, "python_swing_s": py_s,
            "python_swing_cpu_s": py_cpu, "max_rel_diff_topk": worst}


def lookup_throughput(table_dir: Path, batch: int, rounds: int) -> dict:
    """Rows per second of ``neighbours`` (ids + weights, the three user metapaths) for random user
    batches, memory-mapped vs loaded into RAM, interleaved batch by batch so load hits both alike."""
    tables = {"memmap": load_tables(table_dir, mmap=True), "in_ram": load_tables(table_dir, mmap=False)}
    spent = dict.fromkeys(tables, 0.0)
    rng = np.random.default_rng(0)
    n_users = tables["memmap"].n_users
    for _ in range(rounds):
        nodes = rng.integers(n_users, size=batch)
        for name, t in tables.items():
            t0 = time.perf_counter()
            for mp in USER_METAPATHS:
                t.neighbours(mp, nodes)
            spent[name] += time.perf_counter() - t0
    return {f"{name}_rows_per_s": rounds * batch * len(USER_METAPATHS) / s for name, s in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mm-live-bench-graph"), help="events and tables (large)")
    parser.add_argument("--batch", type=int, default=4096, help="nodes per lookup batch")
    parser.add_argument("--timeout", type=float, default=900.0, help="per build subprocess")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "graph.json")
    parser.add_argument("--child-build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--uncapped", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_build:
        child_build(args.child_build, args.child_out, capped=not args.uncapped)
        return
    load_before = os.getloadavg()[0]
    sizes = [int(s) for s in args.sizes]
    results = []
    for i, n in enumerate(sizes):
        events = events_file(args.work, n, args.seed)
        tables_dir = args.work / f"tables-{n}"
        row = {"events": n, "ours": run_build(events, tables_dir, True, args.timeout)}
        print(f"{n:,}: built", file=sys.stderr)
        if "error" not in row["ours"]:
            row["lookup"] = lookup_throughput(tables_dir, args.batch, rounds=300)
        if i == 0:  # the baselines are only affordable at the smallest size
            row["uncapped"] = run_build(events, args.work / f"tables-{n}-uncapped", False, args.timeout)
            print(f"{n:,}: uncapped built", file=sys.stderr)
            row["swing"] = compare_swing(events)
            print(f"{n:,}: python swing done", file=sys.stderr)
        results.append(row)
    load_after = os.getloadavg()[0]

    def fmt(v, spec=".1f"):
        return "—" if v is None else format(v, spec)

    print(f"gifting graph + metapath tables (k={GraphConfig().k}, caps {GraphConfig().max_users_per_streamer} users/streamer, "
          f"{GraphConfig().max_streamers_per_user} streamers/user), fresh subprocess per build")
    print(f"{'events':>11} {'what':<34} {'ours':>10} {'baseline':>10} {'base/ours':>9}")
    for r in results:
        n, o = f"{r['events']:,}", r["ours"]
        if "error" in o:
            print(f"{n:>11} {'build':<34} {o['error']}")
            continue
        base = r.get("uncapped", {})
        has = bool(base) and "error" not in base
        for key, label in (("build_s", "build wall s (vs uncapped)"), ("build_cpu_s", "build CPU s (vs uncapped)")):
            print(f"{n if key == 'build_s' else '':>11} {label:<34} {o[key]:>10.1f} "
                  f"{fmt(base.get(key) if has else None):>10} {fmt(base[key] / o[key] if has else None, '.2f'):>9}")
        print(f"{'':>11} {'peak RSS MB (vs uncapped)':<34} {o['peak_rss_mb']:>10.0f} "
              f"{fmt(base.get('peak_rss_mb') if has else None, '.0f'):>10} {fmt(base['peak_rss_mb'] / o['peak_rss_mb'] if has else None, '.2f'):>9}")
        if not has and base:
            print(f"{'':>11} {'uncapped':<34} {base['error']}")
        elif not base:
            print(f"{'':>11} {'uncapped':<34} not run (see the Σdeg² ratio: its pair work alone)")
        if "swing" in r:
            s = r["swing"]
            print(f"{'':>11} {'Swing+U2U CPU s (vs Python Swing)':<34} {s['ours_swing_u2u_cpu_s']:>10.1f} "
                  f"{s['python_swing_cpu_s']:>10.1f} {s['python_swing_cpu_s'] / s['ours_swing_u2u_cpu_s']:>9.1f}")
        print(f"{'':>11} {'build wall s (vs 60 s target)':<34} {o['build_s']:>10.1f} {60.0:>10.1f} {60.0 / o['build_s']:>9.2f}")
        print(f"{'':>11} {'peak RSS MB (vs 2 GB target)':<34} {o['peak_rss_mb']:>10.0f} {2048.0:>10.0f} {2048.0 / o['peak_rss_mb']:>9.2f}")
        print(f"{'':>11} {'user-pair work Σdeg² (vs uncapped)':<34} {o['pair_work']:>10.3g} {o['pair_work_uncapped']:>10.3g} "
              f"{o['pair_work_uncapped'] / o['pair_work']:>9.1f}")
        lk = r["lookup"]
        print(f"{'':>11} {'lookup rows/s (memmap vs RAM)':<34} {lk['memmap_rows_per_s']:>10.3g} {lk['in_ram_rows_per_s']:>10.3g} "
              f"{lk['in_ram_rows_per_s'] / lk['memmap_rows_per_s']:>9.2f}")
        print(f"{'':>11} stages s: load {o['load_s']:.1f} | u2a {o['u2a_s']:.1f} | swing+u2u {o['swing_u2u_s']:.1f} | "
              f"tables {o['tables_s']:.1f} | write {o['write_s']:.1f}; edges u2a {o['u2a_edges']:,} a2a {o['a2a_edges']:,} "
              f"u2u {o['u2u_edges']:,}")
    if results and "swing" in results[0]:
        print(f"Swing agreement with the plain-Python loop (max relative difference of top-k values): "
              f"{results[0]['swing']['max_rel_diff_topk']:.1e}")
    print("base/ours > 1: ours is faster / smaller. Build = U2A + Swing/U2U + six tables + write (not the event load);")
    print("CPU s = user + system time of the build (single-threaded numpy/scipy): wall s minus waiting for a shared core.")
    print(f"load average (1 min) before/after: {load_before:.1f}/{load_after:.1f} on {os.cpu_count()} cpus")
    write_json(args.out, {
        "benchmark": "gifting graph + metapath table build, neighbour lookup",
        "command": " ".join(["python scripts/bench_graph.py", *sys.argv[1:]]),
        "inputs": "synthetic gifts: Zipf 0.9 user activity, Zipf 1.0 streamer popularity, 50 communities (80% in), "
                  "30 days, E/10 users, E/100 streamers",
        "graph_config": asdict(GraphConfig()),
        "lookup_batch": args.batch,
        "statistic": "one fresh subprocess per build; peak RSS = ru_maxrss of that process",
        "target": {"events": 10_000_000, "build_s": 60, "peak_rss_mb": 2048},
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "load_average_1m_before_after": [load_before, load_after],
        "results": results,
    })


if __name__ == "__main__":
    main()
