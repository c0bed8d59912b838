"""Benchmark retrieval: exact flat search vs our IndexPQ / IndexIVFPQ / IVFPQ + re-ranking, and learned vs post-hoc codebooks.

Data (synthetic, fixed seed), built to look like real embeddings:
  * d = 128; ``n`` database vectors (default 1M) and ``--queries`` query vectors from the same mixture;
  * clusters: n / 100 centres; a point's cluster is drawn with Zipf probabilities p_c ∝ 1 / c, so
    a few clusters are huge (the largest holds ~10 %) and most are small (popular vs niche content);
  * power-law spectrum: in a random orthonormal basis, direction j has standard deviation ∝ j^(-1/2)
    (variance ∝ 1/j), for the centres and for the within-cluster spread alike;
  * point = centre + 0.6 × within-cluster noise, then L2-normalised. Near neighbours are near-tied
    (cosine gap between the 1st and 10th neighbour ≈ 0.02), which is what makes short codes fail.

Methods, each built by ``mm_live.index.build_faiss_index`` (so each is wrapped in IndexIDMap for
64-bit ids, as exported) and searched for k = 10 with 2 OpenMP threads, all queries in one batch:
  exact (IndexFlatIP) | IndexPQ at 16, 32, 64 bytes (codebooks fitted by faiss on the vectors) |
  IVF1024,PQ32 at several nprobe | IVF1024,PQ32 re-ranked over SQ8 / full vectors (IndexRefine) |
  IVF1024,PQ{16,32} re-ranked by a 64-byte PQ of the residual (IndexIVFPQR).

Metrics: R@10 = share of the true 10 nearest found among the 10 returned; 1-R@10 = share of queries
whose true nearest is among the 10 returned; queries/s and its ratio to exact in this run;
bytes/vector = serialized index size / n (codes + ids + refine storage); RAM bytes/vector = growth
of a fresh process's resident memory when it loads the index; build = train + add seconds.
Serving footprint: the operating point ``--serve`` is also exported as an index directory (with a
sidecar of n synthetic segment rows) and opened with ``mm_live.index.open_index`` in a fresh
process: file sizes and resident memory per vector, id table included.

Learned vs post-hoc codebooks (``--learned-source``): on ≥ 20k embeddings, reconstruction error and
R@10 of IndexPQ search at equal m and nbits. Synthetic source: a small encoder (MLP 128→256→128,
L2-normalised) trained contrastively on two noisy views of each item, (a) alone, codebooks fitted
after training, and (b) with the product quantizer in the loop (straight-through quantized
embedding of the clean item must find its other view, + codebook/commitment loss; codebooks
k-means-initialised, unused codewords re-seeded every 100 steps).
``--embeddings E.npy [--codebooks C.npy]`` runs the same comparison on a run's own embeddings
(C: the run's learned codebooks [m, K, d/m]; without C the codebooks are trained with the PQ loss
on the fixed embeddings). The JSON states which source was used.

Timings on a shared machine are noisy (±20 % and more): every speed is a ratio to exact measured
in the same run, and the load average before/after is recorded.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning OpenMP workers between faiss and torch calls

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from mm_live.fileio import atomic_path, write_json  # noqa: E402
from mm_live.index import IndexSpec, build_faiss_index, faiss_pq_index, set_search_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
D = 128
K = 10


# ----------------------------------------------------------------------------- data


@dataclass
class ClusteredEmbeddings:
    """The mixture described in the module docstring; ``sample`` draws L2-normalised points."""

    d: int = D
    n_clusters: int = 10_000
    zipf: float = 1.0
    spread: float = 0.6
    seed: int = 0

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        self.scale = (np.arange(1, self.d + 1) ** -0.5).astype(np.float32)  # std of direction j ∝ j^(-1/2)
        self.basis = np.linalg.qr(rng.standard_normal((self.d, self.d)))[0].astype(np.float32)
        self.centres = (rng.standard_normal((self.n_clusters, self.d)).astype(np.float32) * self.scale) @ self.basis
        p = np.arange(1, self.n_clusters + 1, dtype=np.float64) ** -self.zipf
        self.p = p / p.sum()

    def sample(self, n: int, seed: int, clusters: np.ndarray | None = None, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
        """n points [n, d] float32 (unit norm) and their cluster labels [n]; ``clusters`` restricts
        the draw to those clusters (popularity renormalised), e.g. one user's interests."""
        rng = np.random.default_rng(seed)
        x = np.empty((n, self.d), np.float32)
        if clusters is None:
            labels = rng.choice(self.n_clusters, size=n, p=self.p)
        else:
            labels = rng.choice(clusters, size=n, p=self.p[clusters] / self.p[clusters].sum())
        for i in range(0, n, chunk):
            lab = labels[i:i + chunk]
            noise = (rng.standard_normal((len(lab), self.d)).astype(np.float32) * self.scale) @ self.basis
            x[i:i + chunk] = self.centres[lab] + self.spread * noise
        faiss.normalize_L2(x)
        return x, labels


# ----------------------------------------------------------------------------- measuring


_SERVE_PROBE = """
import os, sys
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
import faiss, numpy
from mm_live.index import open_index
before = rss()
index = open_index(sys.argv[1])
print(rss() - before)
"""


def id_wrapper_ram(xb: np.ndarray) -> dict:
    """Resident bytes per vector of IndexIDMap vs IndexIDMap2 around the same IndexPQ16 (both hold an
    8-byte id per vector; IndexIDMap2 adds an id -> position hash map)."""
    from mm_live.quantization import ProductQuantizer

    codebooks = ProductQuantizer(D, 16, 8).fit(xb[:65_536], niter=5).codebooks_numpy()
    ids = np.arange(len(xb), dtype=np.int64)
    out = {}
    for name, wrap in (("IndexPQ16 alone", None), ("IndexIDMap", faiss.IndexIDMap), ("IndexIDMap2", faiss.IndexIDMap2)):
        index = faiss_pq_index(codebooks)
        if wrap is None:
            index.add(xb)
        else:
            index = wrap(index)
            index.add_with_ids(xb, ids)
        out[name] = loaded_ram_bytes(faiss.serialize_index(index)) / len(xb)
        del index
    return out


def serving_footprint(spec: IndexSpec, blob: np.ndarray, n: int) -> dict:
    """Write the index with a sidecar of n segment rows (3600 one-second segments per stream) and
    measure what ``open_index`` costs a fresh process."""
    import subprocess
    import tempfile

    from mm_live.index import ItemRow, make_sidecar, write_index_dir

    rows = [ItemRow(f"stream{i // 3600:05d}", float(i % 3600), float(i % 3600 + 1)) for i in range(n)]
    sidecar = make_sidecar(spec, config_hash="bench", ids=np.arange(n), rows=rows, used_model_codebooks=False)
    del rows
    with tempfile.TemporaryDirectory() as tmp:
        out = write_index_dir(Path(tmp) / "index", faiss.deserialize_index(blob), sidecar)
        t0 = time.perf_counter()
        probe = subprocess.run([sys.executable, "-c", _SERVE_PROBE, str(out)], capture_output=True, text=True, check=True,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
        return {"index_file_bytes_per_vector": (out / "index.faiss").stat().st_size / n,
                "sidecar_bytes_per_vector": (out / "index.json").stat().st_size / n,
                "open_index_ram_bytes_per_vector": int(probe.stdout.strip()) / n,
                "open_index_s_incl_python_start": time.perf_counter() - t0}


_RSS_PROBE = """
import os, sys, faiss
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
before = rss()
index = faiss.read_index(sys.argv[1])
print(rss() - before)
"""


def loaded_ram_bytes(blob: np.ndarray) -> int:
    """Resident memory a fresh process gains by loading this index (a fresh process: the growth is
    not hidden by memory an earlier index freed)."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".faiss") as fh:
        blob.tofile(fh.name)
        out = subprocess.run([sys.executable, "-c", _RSS_PROBE, fh.name], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def recalls(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(R@10, 1-R@10) of ``found`` [nq, 10] against the exact ``truth`` [nq, 10]."""
    r10 = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)])
    one = np.mean([t[0] in set(f) for f, t in zip(found, truth)])
    return float(r10), float(one)


def timed_search(index, queries: np.ndarray, repeats: int = 3) -> tuple[np.ndarray, float]:
    """Search all queries in one batch; median wall time over repeats (one when a search takes > 3 s)."""
    times, ids = [], None
    for r in range(repeats):
        t0 = time.perf_counter()
        _, ids = index.search(queries, K)
        times.append(time.perf_counter() - t0)
        if times[-1] > 3.0:
            break
    return ids, statistics.median(times)


# ----------------------------------------------------------------------------- the ANN table


def ann_rows(xb: np.ndarray, xq: np.ndarray, truth: np.ndarray, train_size: int, ivf_lists: int,
             keep: str) -> tuple[list[dict], tuple[IndexSpec, np.ndarray] | None]:
    """Build each configuration with the library, sweep its search parameters, one row per setting;
    also return the spec and serialized index of the configuration named ``keep``."""
    configs = [
        ("PQ16", IndexSpec(D, 16, 8, train_size=train_size), [(None, None)]),
        ("PQ32", IndexSpec(D, 32, 8, train_size=train_size), [(None, None)]),
        ("PQ64", IndexSpec(D, 64, 8, train_size=train_size), [(None, None)]),
        (f"IVF{ivf_lists},PQ32", IndexSpec(D, 32, 8, ivf_lists=ivf_lists, train_size=train_size),
         [(4, None), (16, None), (64, None)]),
        (f"IVF{ivf_lists},PQ32+SQ8", IndexSpec(D, 32, 8, ivf_lists=ivf_lists, refine="sq8", train_size=train_size),
         [(16, 16), (32, 32), (64, 32)]),
        (f"IVF{ivf_lists},PQ32+Flat", IndexSpec(D, 32, 8, ivf_lists=ivf_lists, refine="flat", train_size=train_size),
         [(16, 16), (32, 32)]),
        (f"IVF{ivf_lists},PQ16+PQ64r", IndexSpec(D, 16, 8, ivf_lists=ivf_lists, refine="pq64", train_size=train_size),
         [(16, 16), (32, 16), (32, 32), (64, 32)]),
        (f"IVF{ivf_lists},PQ32+PQ64r", IndexSpec(D, 32, 8, ivf_lists=ivf_lists, refine="pq64", train_size=train_size),
         [(16, 16), (32, 16), (64, 16)]),
    ]
    rows, kept = [], None
    for name, spec, settings in tqdm(configs, desc="index configs", file=sys.stderr):
        t0 = time.perf_counter()
        index = build_faiss_index(xb, spec)
        build_s = time.perf_counter() - t0
        blob = faiss.serialize_index(index)
        del index
        ram = loaded_ram_bytes(blob) / len(xb)
        index = faiss.deserialize_index(blob)
        for nprobe, k_factor in settings:
            set_search_params(index, nprobe or 1, k_factor or 1)
            ids, secs = timed_search(index, xq)
            r10, one = recalls(ids, truth)
            qps = len(xq) / secs
            rows.append({"method": name, "nprobe": nprobe, "k_factor": k_factor, "R@10": r10, "1-R@10": one,
                         "qps": qps, "bytes_per_vector": blob.nbytes / len(xb),
                         "ram_bytes_per_vector": ram, "build_s": build_s})
        if name == keep:
            kept = (spec, blob)
        del index, blob
    return rows, kept


# ----------------------------------------------------------------------------- learned vs post-hoc


def pq_quality(emb: np.ndarray, queries: np.ndarray, codebooks: np.ndarray) -> dict:
    """Relative reconstruction error, R@10 of IndexPQ search with ``codebooks`` over ``emb``, and
    the share of codewords that some item of ``emb`` uses."""
    index = faiss_pq_index(codebooks)
    index.add(emb)
    codes = index.sa_encode(emb)
    recon = index.sa_decode(codes)
    err = float(((emb - recon) ** 2).sum(1).mean() / (emb ** 2).sum(1).mean())
    m, k, _ = codebooks.shape
    use = np.mean([len(np.unique(faiss.unpack_bitstrings(codes, m, k.bit_length() - 1)[:, j])) / k for j in range(m)])
    flat = faiss.IndexFlatIP(emb.shape[1])
    flat.add(emb)
    truth = flat.search(queries, K)[1]
    r10, one = recalls(index.search(queries, K)[1], truth)
    return {"recon_rel_err": err, "R@10": r10, "1-R@10": one, "codeword_use": float(use)}


def posthoc_codebooks(emb: np.ndarray, m: int, nbits: int) -> np.ndarray:
    from mm_live.quantization import ProductQuantizer

    return ProductQuantizer(emb.shape[1], m, nbits).fit(emb).codebooks_numpy()


def train_codebooks_on_fixed(emb: np.ndarray, m: int, nbits: int, steps: int, seed: int) -> np.ndarray:
    """Codebooks trained by the PQ loss alone (codebook + commitment terms) on fixed embeddings,
    started from randomly chosen embeddings (no k-means), Adam, batches of 1024."""
    import torch

    from mm_live.quantization import ProductQuantizer

    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(emb)
    pq = ProductQuantizer(emb.shape[1], m, nbits)
    with torch.no_grad():
        init = x[torch.randperm(len(x), generator=g)[: pq.k]].reshape(pq.k, m, pq.dsub).transpose(0, 1)
        pq.codebooks.copy_(init)
        pq.fitted.fill_(True)
    opt = torch.optim.Adam(pq.parameters(), lr=1e-2)
    for _ in tqdm(range(steps), desc="codebooks on fixed embeddings", file=sys.stderr):
        batch = x[torch.randint(len(x), (1024,), generator=g)]
        opt.zero_grad()
        pq(batch).loss.backward()
        opt.step()
    return pq.codebooks_numpy()


def synthetic_learned_vs_posthoc(n_items: int, n_queries: int, m: int, nbits: int, steps: int, seed: int,
                                 restart_every: int = 100) -> dict:
    """Two encoders, identical but for the quantizer in the loop; see the module docstring."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from mm_live.quantization import ProductQuantizer

    torch.manual_seed(seed)
    mix = ClusteredEmbeddings(n_clusters=max(1, n_items // 100), seed=seed + 1)
    items, _ = mix.sample(n_items + n_queries, seed=seed + 2)
    items_t = torch.from_numpy(items)
    scale, basis = torch.from_numpy(mix.scale), torch.from_numpy(mix.basis)

    def make_encoder() -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(D, 256), nn.GELU(), nn.Linear(256, D))

    def view(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x + 0.5 * (torch.randn(x.shape, generator=g) * scale) @ basis  # noise with the data's spectrum

    def info_nce(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits = a @ b.t() / 0.1
        target = torch.arange(len(a))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2

    def train(with_pq: bool, restarts: bool = True):
        enc = make_encoder()
        pq = ProductQuantizer(D, m, nbits, commitment=0.25) if with_pq else None
        g = torch.Generator().manual_seed(seed + 3)
        train_items = items_t[:n_items]
        if pq is not None:
            with torch.no_grad():
                pq.fit(F.normalize(enc(train_items[:8192]), dim=-1).numpy())  # k-means initialisation
        params = list(enc.parameters()) + (list(pq.parameters()) if pq is not None else [])
        opt = torch.optim.Adam(params, lr=1e-3)
        desc = f"encoder {'with' if with_pq else 'without'} PQ{'' if restarts or not with_pq else ', no restarts'}"
        for step in tqdm(range(steps), desc=desc, file=sys.stderr):
            x = train_items[torch.randint(n_items, (512,), generator=g)]
            a = F.normalize(enc(view(x, g)), dim=-1)
            b = F.normalize(enc(view(x, g)), dim=-1)
            loss = info_nce(a, b)
            if pq is not None:
                # The embedding that gets exported (of the clean item) is quantized, and its
                # quantized form must still find the item's other view.
                clean = F.normalize(enc(x), dim=-1)
                out = pq(clean)
                loss = loss + info_nce(out.quantized, b) + out.loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if pq is not None and restarts and step % restart_every == restart_every - 1:
                pq.restart_unused(clean, generator=g)
        with torch.no_grad():
            emb = F.normalize(enc(items_t), dim=-1).numpy()
        return emb, pq

    plain_emb, _ = train(False)
    joint_emb, pq = train(True)
    stuck_emb, stuck_pq = train(True, restarts=False)
    split = n_items
    rows = [
        {"model": "trained without PQ", "codebooks": "post-hoc k-means",
         **pq_quality(plain_emb[:split], plain_emb[split:], posthoc_codebooks(plain_emb[:split], m, nbits))},
        {"model": "trained with PQ (STE + commitment)", "codebooks": "learned with the model",
         **pq_quality(joint_emb[:split], joint_emb[split:], pq.codebooks_numpy())},
        {"model": "trained with PQ (STE + commitment)", "codebooks": "post-hoc k-means on its embeddings",
         **pq_quality(joint_emb[:split], joint_emb[split:], posthoc_codebooks(joint_emb[:split], m, nbits))},
        {"model": "trained with PQ, unused codewords never re-seeded", "codebooks": "learned with the model",
         **pq_quality(stuck_emb[:split], stuck_emb[split:], stuck_pq.codebooks_numpy())},
    ]
    return {"source": f"synthetic: {n_items} items + {n_queries} held-out queries from the clustered mixture "
                      f"({n_items // 100} clusters); encoders trained {steps} steps, batch 512, Adam 1e-3; "
                      f"unused codewords re-seeded every {restart_every} steps",
            "m": m, "nbits": nbits, "rows": rows}


def npy_learned_vs_posthoc(path: Path, codebooks_path: Path | None, m: int, nbits: int, n_queries: int,
                           steps: int, seed: int) -> dict:
    emb = np.load(path).astype(np.float32)
    if emb.ndim != 2 or len(emb) < 2 * n_queries:
        sys.exit(f"bench_retrieval: {path} must hold [n, d] embeddings with n well above --queries ({n_queries})")
    faiss.normalize_L2(emb)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(emb))
    base, queries = emb[perm[n_queries:]], emb[perm[:n_queries]]
    if codebooks_path is not None:
        learned = np.load(codebooks_path).astype(np.float32)
        m, k, _ = learned.shape
        nbits = k.bit_length() - 1
        learned_label = f"learned with the model ({codebooks_path})"
    else:
        learned = train_codebooks_on_fixed(base, m, nbits, steps, seed)
        learned_label = "trained by the PQ loss on these fixed embeddings (no model in the loop)"
    rows = [
        {"model": str(path), "codebooks": "post-hoc k-means", **pq_quality(base, queries, posthoc_codebooks(base, m, nbits))},
        {"model": str(path), "codebooks": learned_label, **pq_quality(base, queries, learned)},
    ]
    return {"source": f"embeddings file {path} ({len(base)} items + {n_queries} held-out queries)",
            "m": m, "nbits": nbits, "rows": rows}


# ----------------------------------------------------------------------------- report


def plot(rows: list[dict], exact: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for name in methods:
        pts = [r for r in rows if r["method"] == name]
        ax.plot([p["qps"] for p in pts], [p["R@10"] for p in pts], "o-", label=f"{name} ({pts[0]['bytes_per_vector']:.0f} B/vec)")
    ax.plot([exact["qps"]], [1.0], "k*", markersize=14, label=f"exact IndexFlatIP ({exact['bytes_per_vector']:.0f} B/vec)")
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.axvline(10 * exact["qps"], color="grey", lw=0.8, ls=":")
    ax.text(10 * exact["qps"], 0.02, " 10× exact", color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("queries / s (2 threads, k = 10)")
    ax.set_ylabel("R@10")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{exact['n']:,} × {D}-d clustered unit vectors: recall vs speed")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="database vectors")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ivf-lists", type=int, default=1024)
    parser.add_argument("--train-size", type=int, default=65_536, help="vectors sampled to train each index")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--learned-items", type=int, default=24_000, help="synthetic items for learned vs post-hoc")
    parser.add_argument("--learned-steps", type=int, default=600)
    parser.add_argument("--learned-m", type=int, default=16)
    parser.add_argument("--embeddings", type=Path, help="learned vs post-hoc on these embeddings [n, d] (.npy)")
    parser.add_argument("--codebooks", type=Path, help="with --embeddings: the run's learned codebooks [m, K, d/m] (.npy)")
    parser.add_argument("--skip-ann", action="store_true", help="only the learned vs post-hoc comparison")
    parser.add_argument("--serve", default="IVF1024,PQ16+PQ64r", help="configuration whose serving footprint is measured")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "retrieval.json")
    parser.add_argument("--plot", type=Path, default=REPO / "bench" / "retrieval.png")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    result: dict = {
        "benchmark": "retrieval: exact vs PQ / IVFPQ / IVFPQ + re-ranking; learned vs post-hoc codebooks",
        "command": " ".join(["python scripts/bench_retrieval.py", *sys.argv[1:]]),
        "faiss": faiss.__version__, "threads": args.threads, "k": K,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
    }

    if not args.skip_ann:
        t0 = time.perf_counter()
        mix = ClusteredEmbeddings(n_clusters=max(1, args.n // 100))
        xb, _ = mix.sample(args.n, seed=1)
        xq, _ = mix.sample(args.queries, seed=2)
        gen_s = time.perf_counter() - t0
        flat = faiss.IndexIDMap(faiss.IndexFlatIP(D))
        flat.add_with_ids(xb, np.arange(args.n, dtype=np.int64))
        truth, exact_s = timed_search(flat, xq)
        scores = flat.search(xq, K)[0]
        exact = {"method": "exact IndexFlatIP", "n": args.n,
                 "bytes_per_vector": faiss.serialize_index(flat).nbytes / args.n,
                 "cos_gap_1st_10th_median": float(np.median(scores[:, 0] - scores[:, -1]))}
        blob_flat = faiss.serialize_index(flat)
        del flat
        exact["ram_bytes_per_vector"] = loaded_ram_bytes(blob_flat) / args.n
        rows, kept = ann_rows(xb, xq, truth, args.train_size, args.ivf_lists, keep=args.serve)
        # Exact is timed again after the others (load on a shared machine drifts); ratios use the mean.
        flat = faiss.deserialize_index(blob_flat)
        del blob_flat
        exact_s_after = timed_search(flat, xq)[1]
        del flat
        exact["qps_before_after"] = [len(xq) / exact_s, len(xq) / exact_s_after]
        exact["qps"] = len(xq) / ((exact_s + exact_s_after) / 2)
        for r in rows:
            r["speedup"] = r["qps"] / exact["qps"]
        for r in rows:
            r["memory_ratio_vs_exact"] = exact["bytes_per_vector"] / r["bytes_per_vector"]
            r["ram_ratio_vs_exact"] = exact["ram_bytes_per_vector"] / r["ram_bytes_per_vector"]
        serve = None if kept is None else {"method": args.serve, **serving_footprint(*kept, args.n)}
        id_ram = id_wrapper_ram(xb)
        del kept
        meets = [r for r in rows if r["R@10"] >= 0.9 and r["speedup"] >= 10 and r["memory_ratio_vs_exact"] >= 4]
        result.update({
            "data": {"n": args.n, "queries": args.queries, "d": D, "clusters": mix.n_clusters, "zipf": mix.zipf,
                     "spectrum": "std of direction j ∝ j^-0.5 in a random basis", "spread": mix.spread,
                     "largest_cluster_share": float(mix.p[0]), "generate_s": gen_s},
            "exact": exact, "rows": rows, "serving": serve, "id_wrapper_ram_bytes_per_vector": id_ram,
            "target": "R@10 >= 0.9 at >= 10x exact queries/s with >= 4x less memory (index bytes per vector)",
            "meets_target": [f"{r['method']} nprobe={r['nprobe']} k_factor={r['k_factor']}" for r in meets],
        })
        del xb

    if args.embeddings is not None:
        lvp = npy_learned_vs_posthoc(args.embeddings, args.codebooks, args.learned_m, 8, args.queries,
                                     args.learned_steps, seed=0)
    else:
        lvp = synthetic_learned_vs_posthoc(args.learned_items, args.queries, args.learned_m, 8, args.learned_steps, seed=0)
    result["learned_vs_posthoc"] = lvp
    result["load_average_1m_before_after"] = [load_before, os.getloadavg()[0]]
    result["total_s"] = time.perf_counter() - t_start
    write_json(args.out, result)

    if "rows" in result:
        ex = result["exact"]
        print(f"{args.n:,} × {D}-d clustered unit vectors, {args.queries} queries, k={K}, {args.threads} threads "
              f"(load {load_before:.1f} → {result['load_average_1m_before_after'][1]:.1f}); exact timed before/after: "
              f"{ex['qps_before_after'][0]:.0f} / {ex['qps_before_after'][1]:.0f} q/s, ratios use the mean")
        print(f"{'method':<24} {'nprobe':>6} {'k_fac':>5} {'R@10':>6} {'1-R@10':>6} {'q/s':>8} {'×exact':>7} "
              f"{'B/vec':>6} {'×mem':>5} {'RAM B':>6} {'×RAM':>5} {'build s':>8}")
        print(f"{'exact IndexFlatIP':<24} {'':>6} {'':>5} {1.0:>6.3f} {1.0:>6.3f} {ex['qps']:>8.0f} {1.0:>7.1f} "
              f"{ex['bytes_per_vector']:>6.0f} {1.0:>5.1f} {ex['ram_bytes_per_vector']:>6.0f} {1.0:>5.1f} {'':>8}")
        for r in result["rows"]:
            print(f"{r['method']:<24} {r['nprobe'] or '':>6} {r['k_factor'] or '':>5} {r['R@10']:>6.3f} {r['1-R@10']:>6.3f} "
                  f"{r['qps']:>8.0f} {r['speedup']:>7.1f} {r['bytes_per_vector']:>6.0f} {r['memory_ratio_vs_exact']:>5.1f} "
                  f"{r['ram_bytes_per_vector']:>6.0f} {r['ram_ratio_vs_exact']:>5.1f} {r['build_s']:>8.1f}")
        print("meets the target (R@10 ≥ 0.9, ≥ 10× exact q/s, ≥ 4× less memory):", ", ".join(result["meets_target"]) or "none")
        if result["serving"]:
            sv = result["serving"]
            print(f"serving {sv['method']} through open_index: index.faiss {sv['index_file_bytes_per_vector']:.0f} B/vec, "
                  f"index.json {sv['sidecar_bytes_per_vector']:.0f} B/vec, resident after open_index "
                  f"{sv['open_index_ram_bytes_per_vector']:.0f} B/vec (faiss index + id table)")
        print("resident B/vec of the id wrapper around IndexPQ16: "
              + ", ".join(f"{k} {v:.0f}" for k, v in result["id_wrapper_ram_bytes_per_vector"].items()))
        plot(result["rows"], ex, args.plot)
    print(f"\nlearned vs post-hoc codebooks, m={lvp['m']}, nbits={lvp['nbits']} — {lvp['source']}")
    print(f"{'embeddings':<50} {'codebooks':<40} {'recon err':>9} {'R@10':>6} {'1-R@10':>6} {'cw use':>6}")
    for r in lvp["rows"]:
        print(f"{r['model'][:50]:<50} {r['codebooks'][:40]:<40} {r['recon_rel_err']:>9.4f} {r['R@10']:>6.3f} "
              f"{r['1-R@10']:>6.3f} {r['codeword_use']:>6.3f}")
    print(f"\ntotal {result['total_s']:.0f} s; wrote {args.out}" + (f" and {args.plot}" if "rows" in result else ""))


if __name__ == "__main__":
    main()
