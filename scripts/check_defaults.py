"""Does a highlight run give scores a person can read? Separation on the held-out streams.

Scores every held-out stream of the manifest (the ``"split": "test"`` lines, else every 4th stream,
as training holds them out) with the run's best checkpoint, exactly as ``mm-live score`` does (or,
``--checkpoint last``, its last one, which no choice on these streams has touched), and reports
per stream and pooled: mean score on highlight steps, mean elsewhere, their ratio (the target for
the defaults is >= 2), the score range, and the AUC. Also reads the run's optimizer steps
and training wall time from ``metrics.jsonl``. Writes ``<run>/separation.json`` (``separation-last.json``).

    mm-live data synth --out D --streams 16 --seconds 60
    mm-live train highlight --data D/manifest.jsonl --out RUN
    python scripts/check_defaults.py RUN D/manifest.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from mm_live.data.manifest import read_manifest  # noqa: E402
from mm_live.fileio import write_json  # noqa: E402
from mm_live.metrics import auc  # noqa: E402
from mm_live.pipelines.highlight import load_model, score_clip  # noqa: E402
from mm_live.streams import highlight_steps, split_records  # noqa: E402


def separation(scores: np.ndarray, positives: np.ndarray) -> dict:
    """Mean score on highlight steps / mean elsewhere, and what it is made of."""
    hi, lo = float(scores[positives].mean()), float(scores[~positives].mean())
    return {"mean_highlight": round(hi, 4), "mean_elsewhere": round(lo, 4), "ratio": round(hi / max(lo, 1e-12), 3),
            "min": round(float(scores.min()), 4), "max": round(float(scores.max()), 4),
            "auc": round(float(auc(positives.astype(float), scores)), 4)}


def training_stats(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "step" in r and "time" in r]
    last = steps[-1] if steps else {}
    return {"optimizer_steps": last.get("step"), "epochs": (last.get("epoch", -1) + 1) if last else None,
            "train_wall_s": round(last.get("time", float("nan")), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run directory (holds best/ and metrics.jsonl)")
    p.add_argument("manifest", type=Path, help="the manifest the run was trained on")
    p.add_argument("--target", type=float, default=2.0, help="required ratio (default 2)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="best (what `mm-live score RUN` uses; chosen on these held-out streams) or last "
                        "(free of that choice); writes separation.json or separation-last.json")
    args = p.parse_args(argv)
    _, held = split_records(read_manifest(args.manifest))
    model = load_model(args.run if args.checkpoint == "best" else args.run / "last")
    per, all_s, all_p = {}, [], []
    for rec in held:
        res = score_clip(rec.clip, model=model, comments=rec.comments)
        n = min(len(res.scores), len(rec.labels))
        pos = highlight_steps(np.asarray(rec.labels, dtype=np.float32), rec.extra.get("highlights"), rec.step_seconds)[:n]
        s = np.asarray(res.scores[:n], dtype=np.float64)
        per[rec.id] = separation(s, pos)
        all_s.append(s)
        all_p.append(pos)
    pooled = separation(np.concatenate(all_s), np.concatenate(all_p))
    out = {"run": str(args.run), "checkpoint": args.checkpoint, "manifest": str(args.manifest), "held_out_streams": len(held), **training_stats(args.run),
           "pooled": pooled, "per_stream": per, "target_ratio": args.target, "meets_target": pooled["ratio"] >= args.target,
           "load_avg": [round(x, 2) for x in os.getloadavg()]}
    dest = args.run / ("separation.json" if args.checkpoint == "best" else "separation-last.json")
    write_json(dest, out)
    print(f"{'stream':>10}{'highlight':>11}{'elsewhere':>11}{'ratio':>8}{'min':>8}{'max':>8}{'AUC':>7}")
    for name, r in [*per.items(), ("pooled", pooled)]:
        print(f"{name:>10}{r['mean_highlight']:>11.3f}{r['mean_elsewhere']:>11.3f}{r['ratio']:>8.2f}{r['min']:>8.3f}"
              f"{r['max']:>8.3f}{r['auc']:>7.3f}")
    print(f"{out['optimizer_steps']} optimizer steps, {out['epochs']} epochs, {out['train_wall_s']} s of training; "
          f"ratio {pooled['ratio']:.2f} ({'meets' if out['meets_target'] else 'misses'} the target {args.target:g})")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
