"""EM3 ablation: which item representation ranks synthetic rooms best, warm and cold.

Variants (same rooms, users, impressions and split; ``--seeds`` training seeds each):

  id              item = ID embedding only (a DIN over IDs)
  content_titles  item = content only, from the rooms' title vectors (the KuaiLive text route)
  content_frozen  item = content only, from features the frozen encoders extract once per room
                  (mean of the frame/audio/comment tokens over the room's segment), then a trained MLP
  content_e2e     item = content only, LoRA encoders + Fusion-Q-Former trained by the click loss
  content_id      item = [ID ; content e2e], no CIC
  content_id_cic  item = [ID ; content e2e] + CIC (λ = 0.1, τ = 0.1)

Metrics are the last evaluation of each run (no checkpoint picked on the held-out data): AUC and
GAUC on held-out impressions of warm rooms and of cold rooms (never seen in training).

The encoders are the tiny random backbones (the machine has 2 shared cores; pretrained backbones
per step would not fit the time box); see docs/em3.md for what that means for the frozen variant.

    python scripts/ablate_em3.py --work /tmp/em3_ablate --seeds 0 1 2 --out bench/ablate_em3.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from mm_live import runs
from mm_live.config import Config
from mm_live.data.rooms import RoomsConfig, read_clicks, synthesize_rooms
from mm_live.fileio import write_json
from mm_live.ops import masked_mean

# Tiny random backbones; small widths; 32 px frames (the rooms' look is their colours).
BASE = {
    "media": {"frame_size": 32},
    "encoders": {"frame": {"backbone": "tiny"}, "audio": {"backbone": "tiny"},
                 "comment": {"backbone": "tiny", "max_comments_per_step": 8}},
    "fusion": {"d": 32, "n_queries": 4, "n_layers": 1, "n_heads": 2, "d_emb": 16},
    "quant": {"m": 4},
    "em3": {"d_id": 16, "d_hidden": 32, "history_len": 20, "segment_steps": 2, "n_items": 4096},
    "train": {"batch_size": 64, "lr": 0.003, "warmup_steps": 5, "eval_every": 100000},
}
VARIANTS = {
    "id": ("rooms", {"em3.item": "id"}),
    "content_titles": ("titles", {"em3.item": "content"}),
    "content_frozen": ("frozen", {"em3.item": "content"}),
    "content_e2e": ("rooms", {"em3.item": "content"}),
    "content_id": ("rooms", {"em3.item": "both", "em3.cic_weight": 0.0}),
    "content_id_cic": ("rooms", {"em3.item": "both", "em3.cic_weight": 0.1}),
}
METRICS = ("auc", "gauc", "cold_auc", "cold_gauc")


def table_folder(rooms: Path, out: Path, titles: np.ndarray | None = None) -> Path:
    """A KuaiLive folder without clips (feature route): the room dataset's tables, and ``titles`` as
    the room vectors when given (else its own title embeddings)."""
    out.mkdir(parents=True, exist_ok=True)
    for f in (rooms / "kuailive").iterdir():
        if f.suffix == ".csv" and not (out / f.name).exists():
            os.symlink(f.resolve(), out / f.name)
    target = out / "title_embeddings.npy"
    target.unlink(missing_ok=True)
    if titles is None:
        os.symlink((rooms / "kuailive" / "title_embeddings.npy").resolve(), target)
    else:
        np.save(target, titles.astype(np.float32))
    return out


def frozen_features(rooms: Path, cfg: Config) -> np.ndarray:
    """[R, d_frame + d_audio + d_comment]: the frozen encoders' tokens of each room's segment, pooled
    per modality and averaged over the segment's steps (LoRA untrained = the frozen backbones)."""
    from mm_live.pipelines.em3 import build_model, prepare_segment

    torch.manual_seed(0)
    model = build_model(cfg.replace(**{"em3.item": "content", "task.route": "clips"})).eval()
    encoder = model.content.encoder
    clicks = read_clicks(rooms)
    out = []
    with torch.no_grad():
        for clip, comments in clicks.clips:
            toks = encoder.tokens(prepare_segment(clip, comments, cfg, encoder))
            out.append(torch.cat([masked_mean(t.tokens, t.mask) for t in toks], -1).mean(0).numpy())
    return np.stack(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="a room dataset (default: synthesize one under --work)")
    p.add_argument("--work", type=Path, default=Path("/tmp/em3_ablate"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=Path("bench/ablate_em3.json"))
    args = p.parse_args()
    torch.set_num_threads(2)
    load = [os.getloadavg()[0]]
    rooms_cfg = RoomsConfig(rooms=32, users=240, impressions_per_user=20, seed=0)
    rooms = args.data
    if rooms is None:
        rooms = args.work / "rooms"
        if not (rooms / "truth.json").is_file():
            synthesize_rooms(rooms, rooms_cfg)
    cfg = Config.from_dict(BASE).replace(**{"train.epochs": args.epochs})
    folders = {"rooms": rooms, "titles": table_folder(rooms, args.work / "titles")}
    if "content_frozen" in args.variants:
        folders["frozen"] = table_folder(rooms, args.work / "frozen", frozen_features(rooms, cfg))
    clicks = read_clicks(rooms)
    truth = json.loads((rooms / "truth.json").read_text())
    results: dict[str, list[dict]] = {}
    for name in args.variants:
        where, over = VARIANTS[name]
        for seed in args.seeds:
            t0 = time.perf_counter()
            res = runs.train("em3", folders[where], args.work / "runs" / f"{name}-{seed}", config=cfg,
                             overrides={**over, "train.seed": seed}, progress=False)
            row = {"seed": seed, "steps": res.steps, "seconds": round(time.perf_counter() - t0, 1),
                   **{k: round(float(res.last_eval[k]), 4) for k in METRICS}}
            results.setdefault(name, []).append(row)
            print(name, row, flush=True)
            load.append(os.getloadavg()[0])
    summary = {name: {k: {"mean": round(float(np.mean([r[k] for r in rows])), 4),
                          "std": round(float(np.std([r[k] for r in rows])), 4)} for k in METRICS}
               for name, rows in results.items()}
    print(f"\n{'variant':16s} " + " ".join(f"{k:>15s}" for k in METRICS))
    for name, s in summary.items():
        print(f"{name:16s} " + " ".join(f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}".rjust(15) for k in METRICS))
    print(f"oracle (true P(click)) AUC on all held-out impressions: {truth['oracle_auc_held_out']}")
    write_json(args.out, {
        "what": "EM3 item representations on synthetic rooms (tiny random encoders), last evaluation of each run",
        "command": f"python scripts/ablate_em3.py --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs}",
        "data": {"rooms": rooms_cfg.__dict__ if args.data is None else str(args.data),
                 "train_impressions": int(clicks.train.sum()), "held_out_warm": int((~clicks.train & ~clicks.cold).sum()),
                 "held_out_cold": int(clicks.cold.sum()), "oracle_auc_held_out": truth["oracle_auc_held_out"]},
        "config": cfg.to_dict(), "variants": {k: VARIANTS[k][1] | {"data": VARIANTS[k][0]} for k in args.variants},
        "results": results, "summary": summary,
        "machine": {"cpus": os.cpu_count(), "loadavg_1min": [round(x, 1) for x in load],
                    "note": "2 cores shared with other engineers' benchmarks; times are wall-clock under that load"},
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
