"""Is the segment embedding worth indexing? Nearest neighbours on held-out synthetic streams.

Streams come from the synthetic generator as per-step features (``mm_live.data.synthetic_features``:
the generator's frames rendered small, audio bands, hashed comments, no mp4 round trip), so hundreds
of streams train and probe in minutes; they are cached as ``.npz`` under ``--workdir``. A highlight
model is trained on the feature route (``--train-streams`` streams), then every ``--segment-steps``
segment of ``--test-streams`` streams it never saw is embedded (``embed_features``, the feature
route's ``embed_clip``). For each segment we take its nearest other segment by cosine and ask
whether it shares the planted content:

* same stream: the generator gives each stream its own look (palette, moving objects' phases);
* same event: both segments lie at least half inside a planted highlight, or both do not;
* same event kind: the planted event overlapping the segment longest (none, highlight, scene cut,
  noise burst, chatter burst) is the same;
* same stream and event: both of the first two at once (what "more moments like this" asks for).

Rows, all measured in one run: the trained run; the same run with only its embedding head
re-initialised (``--head-seeds`` draws, mean); the same model untrained (everything random);
a run trained without the embedding term (``highlight.embed_weight = 0``: the CTR losses alone
shape the states, the head stays random); chance (a random other segment). The highlight metrics
of both trained runs on the held-out streams show what the embedding term costs the CTR task.

    python scripts/bench_embedding.py [--train-streams 160] [--test-streams 48] [--steps 1500] [--out bench/embedding.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mm_live.config import Config  # noqa: E402
from mm_live.data.synthetic import SynthConfig  # noqa: E402
from mm_live.data.synthetic_features import (EVENT_KINDS, TEXT_DIM, VIDEO_DIM, segment_labels,  # noqa: E402
                                             stream_features)
from mm_live.fileio import write_json  # noqa: E402
from mm_live.neighbours import chance_rate, neighbour_rates  # noqa: E402
from mm_live.pipelines.highlight import build_model, embed_features, evaluate, fit_feature_items  # noqa: E402
from mm_live.streams import FeatureWindows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEST_OFFSET = 100_000  # held-out streams are generator indices from here on (never trained on)


def bench_config(**over) -> Config:
    """The feature-route highlight model both embedding benchmarks train (moderate width, CPU-friendly)."""
    cfg = Config.from_dict({
        "task": {"route": "features", "feature_dims": [VIDEO_DIM, TEXT_DIM]},
        "fusion": {"d": 64, "d_emb": 64},
        "quant": {"m": 16},
        "highlight": {"d_model": 64, "n_layers": 2, "n_heads": 4, "lookback_steps": 16, "window_steps": 32,
                      "realign": False},
        "train": {"epochs": 100000, "batch_size": 8, "warmup_steps": 20, "lr": 0.002, "eval_every": 10 ** 9}})
    return cfg.replace(**over) if over else cfg


def feature_items(indices, seconds: float, workdir: Path, progress: bool = True) -> list:
    """Per-step features of the generator's streams ``indices`` (cached as one .npz per stream)."""
    from tqdm.auto import tqdm

    from mm_live.data.records import HighlightRecord

    synth = SynthConfig(seconds=seconds, seed=0)
    cache = workdir / f"features-{seconds:g}s"
    cache.mkdir(parents=True, exist_ok=True)
    items = []
    for k in tqdm(list(indices), desc="stream features", unit="stream", disable=not progress):
        path = cache / f"{k}.npz"
        if path.is_file():
            z = np.load(path, allow_pickle=False)
            meta = json.loads(str(z["meta"]))
            rec = HighlightRecord(id=meta["id"], video_id=meta["id"], duration=seconds, step_seconds=1.0,
                                  labels=z["labels"], extra=meta["extra"])
            items.append((rec, z["video"], z["text"], z["labels"]))
            continue
        rec, video, text, labels = stream_features(k, synth)
        np.savez(path, video=video, text=text, labels=labels, meta=json.dumps({"id": rec.id, "extra": rec.extra}))
        items.append((rec, video, text, labels))
    return items


def train_run(cfg: Config, items: list, out: Path, steps: int, seed: int = 0):
    """(trained model, the same model before training), trained with the project's Trainer."""
    cfg = cfg.replace(**{"train.seed": seed})
    torch.manual_seed(seed)
    model = build_model(cfg)
    untrained = copy.deepcopy(model).eval()
    return fit_feature_items(model, items, out, steps, progress=True), untrained


def embed_segments(model, items: list, segment_steps: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Segment embeddings [n, d_emb] of ``items`` and their labels (stream, event, kind, both)."""
    out = [embed_features(model, video, text, segment_steps) for _, video, text, _ in items]
    return np.concatenate([v for v, _ in out]), segment_labels(items, [spans for _, spans in out])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-streams", type=int, default=160)
    p.add_argument("--test-streams", type=int, default=48)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps per training run")
    p.add_argument("--segment-steps", type=int, default=4)
    p.add_argument("--head-seeds", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/mm-live-bench-embedding"))
    p.add_argument("--out", type=Path, default=REPO / "bench" / "embedding.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    train = feature_items(range(args.train_streams), args.seconds, args.workdir)
    test = feature_items(range(TEST_OFFSET, TEST_OFFSET + args.test_streams), args.seconds, args.workdir)
    cfg = bench_config(**{"highlight.embed_segment_steps": args.segment_steps})
    model, untrained = train_run(cfg, train, args.workdir / "run-embed", args.steps)
    ctr_only, _ = train_run(cfg.replace(**{"highlight.embed_weight": 0.0}), train, args.workdir / "run-ctr-only", args.steps)
    rows: dict[str, dict[str, float]] = {}
    vecs, labels = embed_segments(model, test, args.segment_steps)
    rows["trained"] = neighbour_rates(vecs, labels)
    heads = []
    for s in range(args.head_seeds):
        m = copy.deepcopy(model)
        torch.manual_seed(1000 + s)
        m.embed_head.reset_parameters()
        heads.append(neighbour_rates(embed_segments(m, test, args.segment_steps)[0], labels))
    rows["same run, random head"] = {k: float(np.mean([h[k] for h in heads])) for k in labels}
    rows["random model"] = neighbour_rates(embed_segments(untrained, test, args.segment_steps)[0], labels)
    rows["trained without the embedding term"] = neighbour_rates(embed_segments(ctr_only, test, args.segment_steps)[0], labels)
    rows["chance"] = {k: chance_rate(y) for k, y in labels.items()}
    held = FeatureWindows(test, window_steps=cfg.highlight.window_steps)
    ctr = {"with the embedding term": evaluate(model, held), "without it": evaluate(ctr_only, held)}
    load1 = os.getloadavg()[0]
    cols = [("stream", "same stream"), ("event", "same event"), ("kind", "same event kind"), ("both", "stream & event")]
    print(f"\n{len(vecs)} segments of {args.segment_steps} steps from {len(test)} held-out streams "
          f"(models trained on {len(train)} streams, {args.steps} steps)\n")
    print(f"{'embedding':36s}" + "".join(f"{c:>17s}" for _, c in cols))
    for name, r in rows.items():
        print(f"{name:36s}" + "".join(f"{r[k]:17.3f}" for k, _ in cols))
    print("\nheld-out highlight metrics:", {k: {m: round(v, 3) for m, v in d.items()} for k, d in ctr.items()})
    write_json(args.out, {
        "benchmark": "nearest neighbour of held-out segment embeddings shares the planted content",
        "command": "python scripts/bench_embedding.py " + " ".join(sys.argv[1:]),
        "segments": int(len(vecs)), "held_out_streams": len(test), "train_streams": len(train),
        "segment_steps": args.segment_steps, "steps": args.steps, "event_kinds": list(EVENT_KINDS),
        "config": {"fusion.d": cfg.fusion.d, "d_model": cfg.highlight.d_model, "d_emb": cfg.fusion.d_emb,
                   "embed_weight": cfg.highlight.embed_weight, "embed_temperature": cfg.highlight.embed_temperature},
        "rates": rows, "random_heads": heads, "highlight_metrics": ctr,
        "seconds": time.perf_counter() - t0, "load_average": [load0, load1]})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
