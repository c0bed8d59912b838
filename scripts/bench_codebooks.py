"""Learned vs post-hoc PQ codebooks on the highlight model's own segment embeddings.

Data: synthetic streams as per-step features (``mm_live.data.synthetic_features``, cached as .npz
under ``--workdir``, shared with ``bench_embedding.py``): the model trains on 160 streams, the
collection is every 4-step segment of ``--segments / 15`` other 60 s streams (>= 20 000 segments),
and ``--queries`` segments of yet other streams are the queries.

For each ``M x nbits`` of ``--grid``:

* **learned**: a run with ``quant.learn`` -- the quantizer trains with the model (k-means start on
  the first ``4 * 2**nbits`` segment embeddings, then straight-through + commitment, the embedding
  term on the quantized vectors, unused codewords re-seeded every ``quant.restart_every`` steps);
  the collection is coded with the codebooks the run learned;
* **post-hoc on the same embeddings**: faiss PQ k-means fitted after training on that run's
  collection embeddings (what ``export-index`` does today);
* **post-hoc, plain run**: a run trained without the quantizer (same seed, same steps), its
  collection embeddings, faiss PQ k-means (one plain run serves every grid point).

Reconstruction error is ``mean ||x - decode(encode(x))||^2 / mean ||x||^2`` over the collection;
R@10 is the share of the exact top-10 (inner product on the float embeddings of the same run) that
IndexPQ search with those codebooks returns; "used" is the share of codewords some collection
vector is coded with.

    python scripts/bench_codebooks.py [--segments 20000] [--grid 8x8,16x8,32x8,16x4] [--steps 1000]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_embedding import bench_config, feature_items, train_run  # noqa: E402
from mm_live.fileio import write_json  # noqa: E402
from mm_live.index import faiss_pq_index  # noqa: E402
from mm_live.pipelines.highlight import embed_features  # noqa: E402
from mm_live.quantization import ProductQuantizer, learned_codebooks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLLECTION_OFFSET, QUERY_OFFSET = 200_000, 300_000  # generator indices: never the training streams


def embed_all(model, items, segment_steps: int) -> np.ndarray:
    return np.concatenate([embed_features(model, video, text, segment_steps)[0] for _, video, text, _ in items])


def exact_top(db: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ db.T), axis=1, kind="stable")[:, :k]


def measure(codebooks: np.ndarray, db: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> dict[str, float]:
    """Reconstruction error, R@k against ``truth`` and codeword use of ``codebooks`` on ``db``."""
    m, kc, dsub = codebooks.shape
    pq = ProductQuantizer(m * dsub, m, kc.bit_length() - 1)
    with torch.no_grad():
        pq.codebooks.copy_(torch.from_numpy(codebooks))
        pq.fitted.fill_(True)
    codes = pq.encode(db)
    recon = pq.decode(codes).numpy()
    index = faiss_pq_index(codebooks)
    index.add(np.ascontiguousarray(db, dtype=np.float32))
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)])
    used = np.mean([len(np.unique(codes[:, j].long().numpy())) / kc for j in range(m)])
    return {"recon_err": float(((db - recon) ** 2).sum(1).mean() / (db ** 2).sum(1).mean()),
            f"R@{k}": float(recall), "codewords_used": float(used)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=20_000, help="collection size (segments)")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--grid", default="8x8,16x8,32x8,16x4", help="comma-separated MxNBITS")
    p.add_argument("--train-streams", type=int, default=160)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps per training run")
    p.add_argument("--segment-steps", type=int, default=4)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/mm-live-bench-embedding"))
    p.add_argument("--out", type=Path, default=REPO / "bench" / "codebooks.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    per_stream = int(args.seconds) // args.segment_steps
    train = feature_items(range(args.train_streams), args.seconds, args.workdir)
    coll = feature_items(range(COLLECTION_OFFSET, COLLECTION_OFFSET + math.ceil(args.segments / per_stream)), args.seconds, args.workdir)
    qry = feature_items(range(QUERY_OFFSET, QUERY_OFFSET + math.ceil(args.queries / per_stream)), args.seconds, args.workdir)
    cfg = bench_config(**{"highlight.embed_segment_steps": args.segment_steps})
    grid = [tuple(int(v) for v in g.split("x")) for g in args.grid.split(",")]

    def embeddings(model):
        db, q = embed_all(model, coll, args.segment_steps), embed_all(model, qry, args.segment_steps)[: args.queries]
        return db, q, exact_top(db, q, args.k)

    plain, _ = train_run(cfg, train, args.workdir / "run-plain", args.steps)
    plain_db, plain_q, plain_truth = embeddings(plain)
    rows = []
    for m, nbits in grid:
        learned, _ = train_run(cfg.replace(**{"quant.learn": True, "quant.m": m, "quant.nbits": nbits}), train,
                               args.workdir / f"run-learned-{m}x{nbits}", args.steps)
        db, q, truth = embeddings(learned)
        posthoc_plain = ProductQuantizer(db.shape[1], m, nbits).fit(plain_db).codebooks_numpy()
        posthoc_same = ProductQuantizer(db.shape[1], m, nbits).fit(db).codebooks_numpy()
        for name, books, (x, xq, tr) in (
                ("plain run, post-hoc codebooks", posthoc_plain, (plain_db, plain_q, plain_truth)),
                ("learned run, learned codebooks", learned_codebooks(learned), (db, q, truth)),
                ("learned run, post-hoc codebooks", posthoc_same, (db, q, truth))):
            rows.append({"m": m, "nbits": nbits, "bytes": m * nbits / 8, "method": name, **measure(books, x, xq, tr, args.k)})
            r = rows[-1]
            print(f"M={m:2d} nbits={nbits}  {name:34s} recon {r['recon_err']:.4f}  R@{args.k} {r[f'R@{args.k}']:.3f}  "
                  f"used {r['codewords_used']:.3f}", flush=True)
    load1 = os.getloadavg()[0]
    print(f"\n{len(plain_db)} collection segments, {len(plain_q)} queries; load average {load0:.1f} -> {load1:.1f}")
    print(f"\n| M | nbits | B/vec | codebooks | recon err | R@{args.k} | codewords used |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['m']} | {r['nbits']} | {r['bytes']:g} | {r['method']} | {r['recon_err']:.4f} | {r[f'R@{args.k}']:.3f} | "
              f"{r['codewords_used']:.3f} |")
    write_json(args.out, {
        "benchmark": "learned (quant.learn) vs post-hoc (faiss k-means) PQ codebooks on the model's segment embeddings",
        "command": "python scripts/bench_codebooks.py " + " ".join(sys.argv[1:]),
        "collection_segments": int(len(plain_db)), "queries": int(len(plain_q)), "train_streams": len(train),
        "steps": args.steps, "d_emb": cfg.fusion.d_emb, "k": args.k, "rows": rows,
        "seconds": time.perf_counter() - t0, "load_average": [load0, load1]})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
