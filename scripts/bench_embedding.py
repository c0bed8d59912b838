"""Is the clip embedding worth indexing? Nearest neighbours by the trained head vs a random head.

For each held-out synthetic stream (``"split": "test"`` in the manifest) the run embeds every
``--segment-seconds`` segment (``Task.embed_clip``, the vectors ``export-index`` writes). For each
segment we take its nearest other segment by cosine and ask whether it shares the planted content:

* same stream — the generator gives each stream its own look (palette, moving objects, voice);
* same event type — both segments overlap a planted highlight, or neither does.

The same run with its embedding head re-initialised at random (everything else identical) is the
baseline: it shows how much comes from training the head (the InfoNCE between window halves)
rather than from the temporal states alone. Chance rates are printed next to them.

    python scripts/bench_embedding.py --run RUN --manifest MANIFEST [--segment-seconds 5] [--out bench/embedding.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mm_live.data.manifest import read_manifest  # noqa: E402
from mm_live.fileio import write_json  # noqa: E402
from mm_live.runs import load_run  # noqa: E402
from mm_live.scoring import ClipSource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def neighbour_rates(vecs: np.ndarray, stream: np.ndarray, event: np.ndarray) -> dict[str, float]:
    """Share of segments whose nearest other segment (cosine) is of the same stream / event type."""
    x = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nn = sim.argmax(1)
    return {"same_stream": float((stream[nn] == stream).mean()), "same_event": float((event[nn] == event).mean())}


def chance(labels: np.ndarray) -> float:
    """Expected rate when the neighbour is any other segment at random."""
    n = len(labels)
    _, counts = np.unique(labels, return_counts=True)
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--segment-seconds", type=float, default=5.0)
    p.add_argument("--seeds", type=int, default=3, help="random heads drawn for the baseline")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "embedding.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    run = load_run(args.run, device="cpu")
    records = [r for r in read_manifest(args.manifest) if r.extra.get("split") == "test"] or read_manifest(args.manifest)
    models = {"trained head": run.model}
    for s in range(args.seeds):
        m = copy.deepcopy(run.model)
        torch.manual_seed(1000 + s)
        m.embed_head.reset_parameters()
        models[f"random head {s}"] = m
    vecs = {k: [] for k in models}
    stream, event = [], []
    for i, rec in enumerate(records):
        src = ClipSource.open(rec.clip, rec.comments)
        for name, model in models.items():
            v, spans = run.task.embed_clip(model, src, segment_seconds=args.segment_seconds, streamer_id=rec.streamer_id)
            vecs[name].append(v)
        hl = rec.extra.get("highlights") or []
        stream += [i] * len(spans)
        event += [int(any(a < e and s < b for s, e in hl)) for a, b in spans]
    stream, event = np.array(stream), np.array(event)
    rows = {name: neighbour_rates(np.concatenate(v), stream, event) for name, v in vecs.items()}
    rand = [r for k, r in rows.items() if k.startswith("random")]
    summary = {"trained head": rows["trained head"],
               "random head (mean)": {k: float(np.mean([r[k] for r in rand])) for k in ("same_stream", "same_event")},
               "chance": {"same_stream": chance(stream), "same_event": chance(event)}}
    print(f"{len(stream)} segments of {args.segment_seconds:g} s from {len(records)} held-out streams\n")
    print(f"{'embedding':20s} {'NN same stream':>15s} {'NN same event type':>19s}")
    for name, r in summary.items():
        print(f"{name:20s} {r['same_stream']:15.3f} {r['same_event']:19.3f}")
    write_json(args.out, {"benchmark": "nearest neighbours of held-out segment embeddings",
                          "command": "python scripts/bench_embedding.py " + " ".join(sys.argv[1:]),
                          "segments": int(len(stream)), "streams": len(records), "summary": summary, "per_head": rows})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
