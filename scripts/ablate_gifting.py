"""Does each gifting component earn its place? The full ranker vs three ablations and two baselines,
over several seeds, overall and for sparse users.

Variants (issue #9):
  full            content (streamer-conditioned Fusion-Q-Former segment) + graph interest expansion
                  (target attention over six metapaths) + LightGCN-initialised ID embeddings
  no_expansion    without the metapath target attention
  no_content      without the live-content embedding
  no_pretrain     ID embeddings randomly initialised instead of from LightGCN
  no_pretrain_no_expansion   neither (does either graph component stand in for the other?)
  popularity      baseline: gifts the streamer received before the view's graph window
  past_gifts      baseline: gifts the user sent that streamer before the view's graph window

Data: ``mm_live.data.gifting.synthesize_gifting`` (gifts depend on each step's planted excitement,
on group taste and on generosity; ``truth.json`` holds oracle AUCs). Each seed redraws users,
groups, generosity, schedule, views and gifts, and the training seed; the rooms' streams are the
same for every seed (the first seed's clips are copied), so the frozen encoders run once.
Affordability on a shared 2-core machine: the frame (EfficientNet-Lite0, 96 px) and comment
(MiniLM) backbones are frozen (LoRA off) and their tokens cached on disk; the log-mel transformer
is small and trains as always. Runs are evaluated at their last step (picking "best" on the
held-out views would tune on them). Held out: the latest 20% of views. Sparse users: at most 2
gifts before the view's window.

    python scripts/ablate_gifting.py [--seeds 3] [--epochs 30] [--workdir DIR]

Writes ``bench/ablate_gifting.json`` and ``docs/gifting_ablation.png``; prints mean ± std over
seeds and, in brackets, the paired difference to the full model (mean ± std over seeds of the
per-seed difference: every variant sees the same data and training seed as the full model).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads spin otherwise (scripts/bench_dtw.py)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mm_live.config import Config  # noqa: E402
from mm_live.data.gifting import GiftSynthConfig, read_gift_data, synthesize_gifting  # noqa: E402
from mm_live.fileio import atomic_path, write_json  # noqa: E402
from mm_live.pipelines.gifting import held_out, ranking_metrics, window_start  # noqa: E402
from mm_live.runs import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METRICS = ("auc", "gauc", "uauc", "sparse_auc", "sparse_gauc", "sparse_uauc")
VARIANTS = {
    "full": {},
    "no_expansion": {"gifting.expansion": False},
    "no_content": {"gifting.content": False},
    "no_pretrain": {"gifting.pretrain_epochs": 0},
    "no_pretrain_no_expansion": {"gifting.pretrain_epochs": 0, "gifting.expansion": False},
}
BASELINES = ("popularity", "past_gifts")


def base_config(epochs: int, cache_dir: str, threads: int) -> Config:
    frozen = {"lora": {"enabled": False}}
    return Config.from_dict({
        "media": {"frame_size": 96},
        "encoders": {"frame": frozen, "audio": {"backbone": "mel-transformer", "d_model": 32, "n_layers": 1, "n_heads": 2},
                     "comment": {**frozen, "max_comments_per_step": 8}, "cache_dir": cache_dir},
        "fusion": {"d": 32, "n_queries": 4, "n_heads": 2, "d_emb": 32, "n_layers": 1},
        "gifting": {"d_model": 32, "pretrain_epochs": 20, "dropout": 0.5},
        "train": {"epochs": epochs, "batch_size": 512, "lr": 5e-3, "warmup_steps": 5, "eval_every": 1_000_000,
                  "threads": threads},
    })


def make_data(work: Path, seed: int, args: argparse.Namespace) -> Path:
    data = work / f"data-{seed}"
    if not (data / "truth.json").is_file():
        synthesize_gifting(data, GiftSynthConfig(streamers=args.streamers, users=args.users, views_per_room=args.views,
                                                 seconds=args.seconds, seed=1000 + seed, stream_seed=1000))
        first = work / "data-0" / "synth"
        if seed > 0:  # same streams; x264 does not repeat its bytes exactly, the token cache keys on content
            shutil.rmtree(data / "synth")
            shutil.copytree(first, data / "synth")
    return data


def baselines(data: Path, cfg: Config) -> dict[str, dict[str, float]]:
    d = read_gift_data(data)
    rows, sparse = held_out(d, cfg)
    past = d.past_gifts(rows, window_start(cfg, d.time[rows]))
    y, users = d.label[rows], d.user[rows]
    return {"popularity": ranking_metrics(y, past["streamer"].astype(float), users, sparse),
            "past_gifts": ranking_metrics(y, past["pair"].astype(float), users, sparse)}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mm-live-ablate-gifting-"))
    names = [v for v in VARIANTS if v in args.variants]
    results: dict[str, list[dict]] = {v: [] for v in [*names, *BASELINES]}
    oracle, seconds, t_start = [], {v: [] for v in names}, time.perf_counter()
    for seed in range(args.seeds):
        data = make_data(work, seed, args)
        truth = json.loads((data / "truth.json").read_text())
        oracle.append({"held_out": truth["oracle_auc_held_out"], "sparse": truth["oracle_auc_held_out_sparse"],
                       "views": truth["views"], "gifting_views": truth["gifting_views"],
                       "held_out_sparse_views": truth["held_out_sparse_views"]})
        cfg = base_config(args.epochs, str(work / "token-cache"), args.threads).replace(**{"train.seed": seed})
        for name, metrics in baselines(data, cfg.replace(**{"task.name": "gifting"})).items():
            results[name].append(metrics)
        for name in names:
            t0 = time.perf_counter()
            res = train("gifting", data, work / f"run-{name}-{seed}", config=cfg.replace(**VARIANTS[name]), progress=False)
            seconds[name].append(time.perf_counter() - t0)
            results[name].append(res.last_eval)
            print(f"seed {seed} {name:24s} " + "  ".join(f"{m} {res.last_eval[m]:.3f}" for m in METRICS)
                  + f"  ({seconds[name][-1]:.0f} s)", flush=True)
    summary = {v: {m: [float(np.mean([r[m] for r in rs])), float(np.std([r[m] for r in rs], ddof=1)) if len(rs) > 1 else 0.0]
                   for m in METRICS} for v, rs in results.items()}
    return {"command": "python scripts/ablate_gifting.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                             if k in ("seeds", "epochs", "streamers", "users", "views", "seconds")),
            "config": base_config(args.epochs, "<work>/token-cache", args.threads).to_dict(),
            "metrics": list(METRICS), "summary": summary, "per_seed": results, "oracle": oracle,
            "seconds_per_run": {v: float(np.mean(s)) for v, s in seconds.items()},
            "total_seconds": time.perf_counter() - t_start, "workdir": str(work)}


def paired(out: dict) -> dict[str, dict[str, list[float]]]:
    """Per variant and metric: mean ± std over seeds of (variant − full) on the same seed's data."""
    full = out["per_seed"].get("full")
    if not full:
        return {}
    return {v: {m: [float(np.mean(d := [r[m] - f[m] for r, f in zip(rs, full)])), float(np.std(d, ddof=1)) if len(d) > 1 else 0.0]
                for m in out["metrics"]} for v, rs in out["per_seed"].items() if v != "full"}


def table(out: dict) -> str:
    lines = ["| variant | " + " | ".join(out["metrics"]) + " |", "|---" * (len(out["metrics"]) + 1) + "|"]
    for v, s in out["summary"].items():
        cells = []
        for m in out["metrics"]:
            mean, std = s[m]
            delta = f" ({out['paired'][v][m][0]:+.3f} ± {out['paired'][v][m][1]:.3f})" if v in out["paired"] else ""
            cells.append(f"{mean:.3f} ± {std:.3f}{delta}")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    o = out["oracle"]
    for key in ("held_out", "sparse"):
        lines.append(f"| oracle ({key}: true P, then with one term replaced by its mean) | "
                     + ", ".join(f"{k} {np.mean([x[key][k] for x in o]):.3f}" for k in o[0][key]) + " |")
    return "\n".join(lines)


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants, metrics = list(out["summary"]), out["metrics"]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        mean = [out["summary"][v][m][0] for m in metrics]
        std = [out["summary"][v][m][1] for m in metrics]
        ax.bar(np.arange(len(metrics)) + i * width, mean, width, yerr=std, capsize=2, label=v)
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics)
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_ylabel("held-out, mean ± std over seeds")
    ax.legend(ncol=len(variants), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    ax.set_title("Gifting ablation on synthetic rooms (sparse_*: users with at most 2 past gifts)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--streamers", type=int, default=16)
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--views", type=int, default=200, help="views per room")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--workdir", help="keep data, token cache and runs here (default: a new temp dir)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "ablate_gifting.json")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "gifting_ablation.png")
    p.add_argument("--render", action="store_true", help="only redo the table, paired deltas and plot of --out")
    args = p.parse_args()
    out = json.loads(args.out.read_text()) if args.render else run(args)
    out["paired"] = paired(out)
    print(table(out))
    print(f"total {out['total_seconds']:.0f} s; per run " + ", ".join(f"{k} {v:.0f} s" for k, v in out["seconds_per_run"].items()))
    write_json(args.out, out)
    plot(out, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
