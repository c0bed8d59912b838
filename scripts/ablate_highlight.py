"""Does each highlight component earn its place? Full model vs three ablations, over several seeds.

Variants (DESIGN.md / issue #5):
  full          pointwise + border-aware pairwise + first-order terms, soft-DTW alignment loss, re-alignment
  no_align      (a) without the alignment loss and the comment re-alignment
  pointwise     (b) pointwise loss only (no border-aware pairwise, no first-order term)
  frames_only   (c) the model sees frames only (audio and comments masked)

Data: held-out synthetic streams whose comment bursts lag their event by 1-5 s (``data synth``;
every 4th stream is held out). For each seed the data and the training seed change together.
Affordability: the backbones are frozen (LoRA off) and their tokens cached, so each run trains the
Fusion-Q-Former, the text/frame projections and the temporal head only; the LoRA path is what
``make demo`` exercises.

Metrics on the held-out streams: AUC (highlight step vs not), Kendall tau against the CTR labels
(mean over streams), top-5 mAP (highlight steps as positives). Prints mean ± std per variant and
the difference to the full model; writes ``bench/ablate_highlight.json`` and ``docs/ablation.png``.

    python scripts/ablate_highlight.py [--seeds 3] [--streams 16] [--seconds 30] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see scripts/bench_dtw.py: idle OpenMP threads spin otherwise
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mm_live.config import Config  # noqa: E402
from mm_live.data.synthetic import SynthConfig, synthesize  # noqa: E402
from mm_live.fileio import atomic_path, write_json  # noqa: E402
from mm_live.data.windows import window_datasets  # noqa: E402
from mm_live.pipelines.highlight import evaluate, load_model, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METRICS = ("auc", "kendall_tau", "top5_map")
VARIANTS = {
    "full": dict(),
    "no_align": dict(alignment=False),
    "pointwise": dict(overrides={"highlight.alpha_bap": 0.0, "highlight.beta_diff": 0.0}),
    "frames_only": dict(modalities=("frame",)),
}


def base_config(epochs: int, cache_dir: str) -> Config:
    frozen = {"lora": {"enabled": False}}
    return Config.from_dict({
        "encoders": {"frame": frozen, "audio": {"backbone": "mel-transformer"},
                     "comment": {**frozen, "max_comments_per_step": 8}, "cache_dir": cache_dir},
        "fusion": {"d": 128, "n_queries": 8, "n_heads": 4, "d_emb": 64},
        "highlight": {"d_model": 64, "n_heads": 4, "lookback_steps": 32},
        "train": {"epochs": epochs, "batch_size": 3, "lr": 1e-3, "warmup_steps": 3, "eval_every": 1000},
    })


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mm-live-ablate-"))
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    t_start = time.perf_counter()
    for seed in range(args.seeds):
        data = work / f"synth-{seed}"
        if not (data / "manifest.jsonl").is_file():
            synthesize(data, SynthConfig(streams=args.streams, seconds=args.seconds, seed=1000 + seed))
        for name, spec in VARIANTS.items():
            cfg = base_config(args.epochs, str(work / "token-cache")).replace(**{"train.seed": seed, **spec.get("overrides", {})})
            t0 = time.perf_counter()
            out = work / f"run-{name}-{seed}"
            train(data / "manifest.jsonl", out, config=cfg, progress=False, modalities=spec.get("modalities"),
                  alignment=spec.get("alignment"))
            # the LAST checkpoint: picking "best" on the held-out streams would tune on the test set
            model = load_model(out / "last")
            _, held = window_datasets(data / "manifest.jsonl", model.cfg, model.steps.encoder, progress=False)
            m = evaluate(model, held, next(model.parameters()).device)
            m["seconds"] = time.perf_counter() - t0
            results[name].append(m)
            print(f"seed {seed}  {name:12s} " + "  ".join(f"{k} {m[k]:.3f}" for k in METRICS) + f"  ({m['seconds']:.0f} s)",
                  flush=True)
    summary = {}
    for name, rows in results.items():
        summary[name] = {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0,
                             "per_seed": [r[k] for r in rows]} for k in METRICS}
    report = {
        "benchmark": "highlight ablation on held-out synthetic streams (comments lag 1-5 s)",
        "command": "python scripts/ablate_highlight.py " + " ".join(sys.argv[1:]),
        "seeds": args.seeds, "streams": args.streams, "seconds": args.seconds, "epochs": args.epochs,
        "held_out": "every 4th stream (split=test)", "backbones": "frozen (LoRA off), tokens cached",
        "total_seconds": time.perf_counter() - t_start, "results": summary,
    }
    return report


def print_table(report: dict) -> None:
    res = report["results"]
    head = f"{'variant':12s} " + " ".join(f"{k:>20s}" for k in METRICS) + "   " + " ".join(f"{'Δ ' + k:>14s}" for k in METRICS)
    print("\n" + head)
    for name, r in res.items():
        cells = " ".join(f"{r[k]['mean']:>12.3f} ± {r[k]['std']:.3f}" for k in METRICS)
        delta = " ".join(f"{r[k]['mean'] - res['full'][k]['mean']:>+14.3f}" for k in METRICS)
        print(f"{name:12s} {cells}   {delta}")
    print(f"\n(Δ = variant − full; {report['seeds']} seeds; std is the sample std over seeds)")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["results"]
    names = list(res)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 3.2), dpi=110)
    for ax, k in zip(axes, METRICS):
        means = [res[n][k]["mean"] for n in names]
        stds = [res[n][k]["std"] for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color=["#1f5fa8", "#f2a33a", "#7aa95c", "#b85450"])
        for i, n in enumerate(names):
            ax.scatter([i] * len(res[n][k]["per_seed"]), res[n][k]["per_seed"], color="k", s=8, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_title(k, fontsize=10)
    fig.suptitle(f"highlight ablation, held-out synthetic streams, {report['seeds']} seeds (mean ± std, dots = seeds)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", help="reuse synthetic data and token cache here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "ablate_highlight.json")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "ablation.png")
    args = p.parse_args()
    report = run(args)
    print_table(report)
    write_json(args.out, report)
    plot(report, args.plot)
    print(f"\nwrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
