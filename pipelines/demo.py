"""``mm-live demo`` (``make demo``): the whole highlight journey on synthetic live streams.

1. synthesise streams with planted highlights (frames, audio, comments lagging 1-5 s);
2. train the highlight model with the default pretrained encoders (EfficientNet-Lite0, all-MiniLM-L6-v2,
   log-mel transformer) + LoRA + Fusion-Q-Former, on the ``train`` streams;
3. evaluate the best checkpoint on the held-out ``test`` streams (AUC, Kendall τ, top-5 mAP);
4. score a held-out clip and, when ``MM_LIVE_REAL_DATA`` holds it, the real ``bigbuckbunny.mp4``;
5. print the metrics and where every output is.

Sizes are chosen to finish in a few minutes on a 2-core CPU; ``DEMO_CONFIG`` is written next to
the outputs so the run can be repeated with ``mm-live train``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mm_live.config import Config, save_config
from mm_live.data.synthetic import SynthConfig, synthesize

# Smaller fusion/temporal widths than the defaults and 8 comments per bag keep the demo in minutes.
DEMO_CONFIG = {
    "encoders": {"comment": {"max_comments_per_step": 8}},
    "fusion": {"d": 128, "n_queries": 8, "n_heads": 4, "d_emb": 64},
    "highlight": {"d_model": 64, "n_heads": 4, "lookback_steps": 32},
    "train": {"epochs": 5, "batch_size": 3, "lr": 5e-4, "warmup_steps": 3, "eval_every": 3},
}


def _real_clip() -> Path | None:
    """The real clip under MM_LIVE_REAL_DATA (default ../shared/data, as for the tests), if present."""
    path = Path(os.environ.get("MM_LIVE_REAL_DATA") or "../shared/data") / "clips" / "bigbuckbunny.mp4"
    return path if path.is_file() else None


def run_demo(out_dir: str | Path = "demo_out", seed: int = 0, streams: int = 12, seconds: float = 24.0,
             config: Config | None = None, progress: bool = True) -> dict:
    """Run the demo into ``out_dir``; return ``{"metrics": ..., "outputs": {...}}``."""
    from mm_live.data.windows import window_datasets
    from mm_live.pipelines.highlight import evaluate, load_model, score_clip, train

    out_dir = Path(out_dir)
    cfg = config or Config.from_dict(DEMO_CONFIG).replace(**{"train.seed": seed})
    t0 = time.perf_counter()
    print(f"[1/4] synthesising {streams} streams of {seconds:.0f} s ...")
    summary = synthesize(out_dir / "synth", SynthConfig(streams=streams, seconds=seconds, seed=seed))
    print(summary.describe())
    save_config(cfg, out_dir / "config.json")

    print(f"\n[2/4] training (default pretrained encoders + LoRA + Fusion-Q-Former) -> {out_dir / 'run'}")
    result = train(summary.manifest, out_dir / "run", config=cfg, progress=progress)

    print("\n[3/4] evaluating the best checkpoint on the held-out streams ...")
    model = load_model(out_dir / "run")
    _, held_out = window_datasets(summary.manifest, model.cfg, model.steps.encoder, progress=False)
    metrics = evaluate(model, held_out, next(model.parameters()).device)

    print("\n[4/4] scoring clips ...")
    test_ids = [json.loads(line)["stream_id"] for line in summary.manifest.read_text().splitlines()
                if json.loads(line).get("split") == "test"]
    sid = test_ids[0]
    outputs = {}
    held = score_clip(summary.out_dir / "streams" / f"{sid}.mp4", out_dir / "run", model=model,
                      comments=summary.out_dir / "streams" / f"{sid}.comments.jsonl", out_dir=out_dir / "scored" / sid)
    outputs[sid] = held
    real = _real_clip()
    if real is not None:
        outputs[real.stem] = score_clip(real, out_dir / "run", model=model, out_dir=out_dir / "scored" / real.stem)

    print(f"\nheld-out synthetic streams ({len(held_out.streams)} streams, {sum(len(w) for w in held_out)} steps), "
          f"best step {result.best_step}:")
    print(_table([{"metric": k, "value": f"{v:.3f}"} for k, v in metrics.items()]))
    print("\nscored clips:")
    rows = []
    for name, res in outputs.items():
        dur = len(res.scores) * res.step_seconds
        total = sum(res.timings.values())
        best = res.windows[0] if res.windows else None
        rows.append({"clip": name, "steps": len(res.scores), "x real time": f"{dur / max(total, 1e-9):.1f}",
                     "top window": f"{best.start:.0f}-{best.end:.0f} s ({best.score:.2f})" if best else "-",
                     "outputs": str(res.outputs["scores.json"].parent)})
    print(_table(rows))
    truth = json.loads((summary.out_dir / "truth" / f"{sid}.json").read_text())
    planted = ", ".join(f"{h['start']:.0f}-{h['end']:.0f} s" for h in truth.get("highlights", []))
    print(f"\nplanted highlights of {sid}: {planted}")
    print(f"\nrun: {out_dir / 'run'} (best/, last/, metrics.jsonl)   config: {out_dir / 'config.json'}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return {"metrics": metrics, "outputs": {k: v.outputs for k, v in outputs.items()}, "best_step": result.best_step}


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)
