"""Does each highlight component earn its place, and does the model beat the simple tricks?

On the HARD synthetic generator (``mm-live data synth --difficulty hard``): each event carries its cue
in a subset of modalities (seen + heard + commented; heard off-screen + commented; only commented)
and distractors mimic one modality without a CTR rise (the visual event nobody reacts to, a roar over
a dull scene, a spam flood); reactions lag 1-8 s; comment text is realistic (data/chat.py).

Rows, in one table (each model row is the default model with one thing changed):
  full          the default model: pointwise + border-aware pairwise + first-order terms, soft-DTW
                alignment and re-alignment, the comment look-ahead (highlight.comment_lookahead: score t
                attends to the comments of steps t .. t + max_comment_lag, mm_live/lookahead.py), the
                reaction reader and its loss, and the loudness term when the run has 30 or more
                training streams (highlight.level_skip unset: --streams 40 and up)
  no_reader     without the reaction reader (highlight.reaction_reader: the per-comment reaction probe
                whose count joins each step's pooled comments, mm_live/reaction.py)
  no_lookahead  without the comment look-ahead
  no_align      without the alignment loss and the comment re-alignment
  pointwise     pointwise loss only (no border-aware pairwise, no first-order term)
  frames_only   the model sees frames only
  frames_audio  the model sees frames and audio (no comments)
  level_token   with the audio level token (encoders.audio.level_token, off by default; encoders/audio.py)
  align_scene   comments aligned to the step's frames and audio (highlight.align_to: scene) instead of frames
  level_skip    each score plus a learned non-negative multiple of the step's loudness (highlight.level_skip
                forced on: the same model as `full` from 30 training streams, where `no_level_skip` is the ablation)
  comment_density / audio_rms / visual_change / random   the baselines of mm_live/baselines.py
  labels_as_scores   the held-out CTR labels scored as predictions: what a perfect CTR model would get
Diagnostic rows, only when named in --variants / --lora-variants: no_realign (soft-DTW loss kept,
comments as posted), realign_shift (re-alignment without the matching: every comment moved back by
max_comment_lag steps, highlight.realign_by: shift), no_bap and no_diff (one of the two terms `pointwise` drops), level_no_reader
(the level token on and the reaction reader off), level_skip_no_reader (level_skip on, the reader off),
no_level_skip (the loudness term forced off).

Metrics on the held-out streams (every 4th stream, never trained on): AUC (highlight step vs not,
pooled), Kendall τ vs the CTR labels (mean per stream), top-5 mAP; the same per event type (a
highlight type against background + distractors, the other highlight types left out; a distractor
type: AUC of all highlight steps against its steps), and the highlight types once more without the
TAIL_STEPS steps after each highlight, where the CTR label decays (a score that follows the label
there is ranking a labelled reaction, not background), with their negatives split into plain
background, the LEAD_STEPS background steps before a highlight starts (where reading comments ahead
can rise too early) and each distractor. Model and baselines go through the same
:func:`mm_live.baselines.highlight_metrics` (checked equal to the pipeline's ``evaluate``).

Routes: ``frozen`` — backbones frozen, tokens cached, each run trains the Fusion-Q-Former,
projections and temporal head (``--seeds`` seeds; each seed changes data and training seed);
``lora`` — frame and comment encoders adapted with LoRA end to end (``--lora-seeds``, fewer: each
run costs ~10x). Writes ``bench/ablate_highlight.json`` and ``docs/ablation.png``.

    python scripts/ablate_highlight.py --seeds 3 --lora-seeds 1 --workdir /tmp/abl

--reuse measures the run directories already in --workdir (after checking each one's config is the
row's) instead of training them again, e.g. to add a metric to rows trained before it existed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see scripts/bench_dtw.py: idle OpenMP threads spin otherwise
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mm_live.baselines import BASELINES, baseline_scores, event_masks, event_metrics, highlight_metrics  # noqa: E402
from mm_live.config import Config  # noqa: E402
from mm_live.data.manifest import read_manifest  # noqa: E402
from mm_live.data.synthetic import HARD_TYPES, SynthConfig, synthesize  # noqa: E402
from mm_live.data.windows import window_datasets  # noqa: E402
from mm_live.fileio import atomic_path, write_json  # noqa: E402
from mm_live.pipelines.highlight import evaluate, load_model, predict_streams, resolve_level_skip, train  # noqa: E402
from mm_live.scoring import ClipSource  # noqa: E402
from mm_live.streams import highlight_steps, split_records  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METRICS = ("auc", "kendall_tau", "top5_map")
RISING = tuple(k for k, v in HARD_TYPES.items() if v.rises)
DISTRACTORS = tuple(k for k, v in HARD_TYPES.items() if not v.rises)
VARIANTS = {
    "full": dict(),
    "no_reader": dict(overrides={"highlight.reaction_reader": False}),
    "no_lookahead": dict(overrides={"highlight.comment_lookahead": False}),
    "no_align": dict(alignment=False),
    "pointwise": dict(overrides={"highlight.alpha_bap": 0.0, "highlight.beta_diff": 0.0}),
    "frames_only": dict(modalities=("frame",)),
    "frames_audio": dict(modalities=("frame", "audio")),
    "level_token": dict(overrides={"encoders.audio.level_token": True}),
    "align_scene": dict(overrides={"highlight.align_to": "scene"}),
    "level_skip": dict(overrides={"highlight.level_skip": True}),
}
# Diagnostics, not in the default table: keep the soft-DTW alignment loss but feed the as-posted
# comments; drop one of the two terms that `pointwise` drops together.
EXTRA = {"no_realign": dict(overrides={"highlight.realign": False}),
         # re-alignment without the matching: every comment moves back by the whole band
         "realign_shift": dict(overrides={"highlight.realign_by": "shift"}),
         "no_bap": dict(overrides={"highlight.alpha_bap": 0.0}),  # the pairwise term's share of `pointwise`
         "no_diff": dict(overrides={"highlight.beta_diff": 0.0}),  # the first-order term's share
         # the advice for 30+ training streams (reader off) with the audio level token on top
         "level_no_reader": dict(overrides={"encoders.audio.level_token": True, "highlight.reaction_reader": False}),
         "level_skip_no_reader": dict(overrides={"highlight.level_skip": True, "highlight.reaction_reader": False}),
         # the default without the loudness term where it has it (30+ training streams)
         "no_level_skip": dict(overrides={"highlight.level_skip": False})}


def base_config(route: str, epochs: int, cache_dir: str) -> Config:
    """The ablation's model: small fusion/temporal sizes; DTW band 8 steps (the generator's longest lag)."""
    lora = {"lora": {"enabled": route == "lora"}}
    return Config.from_dict({
        "media": {"max_comment_lag": 8},
        "encoders": {"frame": lora, "audio": {"backbone": "mel-transformer"}, "comment": {**lora, "max_comments_per_step": 8},
                     "cache_dir": cache_dir},
        "fusion": {"d": 128, "n_queries": 8, "n_heads": 4, "d_emb": 64},
        "highlight": {"d_model": 64, "n_heads": 4, "lookback_steps": 32, "window_steps": 32},
        "train": {"epochs": epochs, "batch_size": 4, "lr": 1e-3, "warmup_steps": 5, "eval_every": 100000},
    })


def annotated_streams(manifest: Path, train: bool = False) -> list[dict]:
    """Per held-out stream (``train``: per training stream): record, labels [T], positives [T],
    event masks {type: [T]}."""
    fit, test = split_records(read_manifest(manifest))
    out = []
    for rec in fit if train else test:
        truth = json.loads((manifest.parent / rec.extra["truth"]).read_text(encoding="utf-8"))
        labels = np.asarray(rec.labels, np.float64)
        out.append({"rec": rec, "labels": labels, "positives": highlight_steps(labels, rec.extra.get("highlights"), rec.step_seconds),
                    "masks": event_masks(truth["events"], len(labels), rec.step_seconds)})
    return out


TAIL_STEPS = 8  # the generator's longest reaction lag: the CTR label decays over about this many steps after an event
LEAD_STEPS = 4  # background this close before a highlight already has its reaction burst ahead: a score that reads comments ahead can rise here


def measure(scores: list[np.ndarray], streams: list[dict]) -> dict:
    """Overall and per-event-type metrics of per-stream scores (each cut to the stream's labelled steps)."""
    n = [min(len(s), len(h["labels"])) for s, h in zip(scores, streams)]
    s = [x[:k] for x, k in zip(scores, n)]
    y = [h["labels"][:k] for h, k in zip(streams, n)]
    q = [h["positives"][:k] for h, k in zip(streams, n)]
    m = [{t: v[:k] for t, v in h["masks"].items()} for h, k in zip(streams, n)]
    return {**highlight_metrics(s, y, q), "per_type": event_metrics(s, y, q, m, RISING, DISTRACTORS),
            "per_type_no_tails": event_metrics(s, y, q, m, RISING, (), tail_steps=TAIL_STEPS, split_negatives=DISTRACTORS,
                                               lead_steps=LEAD_STEPS)}


ORACLE = "labels_as_scores"
SAME_SEEDS = " (same seeds)"  # a LoRA-route baseline row: measured on the seeds the LoRA route ran


def oracle_row(streams: list[dict]) -> dict:
    """The ceiling of a CTR model: the held-out CTR labels themselves scored as if predicted. Where it
    stays below a baseline, the metric rewards something other than the CTR the model is trained on."""
    return measure([h["labels"] for h in streams], streams)


def run_model(name: str, spec: dict, route: str, seed: int, data: Path, streams: list[dict], args, work: Path,
              check: bool) -> dict:
    cfg = base_config(route, args.epochs if route == "frozen" else args.lora_epochs, str(work / f"token-cache-{seed}"))
    cfg = cfg.replace(**{"train.seed": seed, **spec.get("overrides", {})})
    out = work / f"run-{route}-{name}-{seed}"
    t0 = time.perf_counter()
    reused = args.reuse and (out / "last").is_dir()
    if not reused:
        train(data / "manifest.jsonl", out, config=cfg, progress=False, modalities=spec.get("modalities"),
              alignment=spec.get("alignment"))
    train_s = time.perf_counter() - t0
    # the LAST checkpoint: picking "best" on the held-out streams would tune on the test set
    model = load_model(out / "last")
    if reused:
        _check_reused(out, model.cfg, resolve_level_skip(cfg, data / "manifest.jsonl"), spec)
    fit, held = window_datasets(data / "manifest.jsonl", model.cfg, model.steps.encoder, progress=False)
    device = next(model.parameters()).device
    m = measure(_scores(predict_streams(model, held, device), streams), streams)
    if args.train_fit:  # the same metrics on the streams it trained on: how much of the gap is generalisation
        seen = annotated_streams(data / "manifest.jsonl", train=True)
        m["train_streams"] = measure(_scores(predict_streams(model, fit, device), seen), seen)
    if check:  # the shared metric code reproduces the pipeline's own evaluation
        ref = evaluate(model, held, device)
        for k in METRICS:
            assert math.isclose(ref[k], m[k], rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(ref[k]) and math.isnan(m[k])), (k, ref, m)
    m["train_seconds"] = None if reused else train_s
    if reused:
        m["reused"] = str(out / "last")
    m["seconds"] = time.perf_counter() - t0
    return m


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _check_reused(run: Path, saved: Config, cfg: Config, spec: dict) -> None:
    """--reuse: the checkpoint in ``run`` must hold the model this row would train (its token cache may
    live elsewhere); anything else would put another model's figures in the row."""
    want = cfg.replace(**{k: v for k, v in {"highlight.alignment": spec.get("alignment"),
                                              "task.modalities": list(spec["modalities"]) if spec.get("modalities") else None}.items()
                          if v is not None})
    a, b = _flat(want.to_dict()), _flat(saved.to_dict())
    diff = sorted(k for k in set(a) | set(b) if k != "encoders.cache_dir" and a.get(k) != b.get(k))
    if diff:
        print(f"error: --reuse: {run}/last was trained with another config ({', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}); "
              "move it away or drop --reuse to train this row", file=sys.stderr)
        raise SystemExit(2)


def _scores(preds, streams: list[dict]) -> list[np.ndarray]:
    """predict_streams output -> scores [T] per stream, in the order of ``streams``."""
    order = {h["rec"].id: i for i, h in enumerate(streams)}
    scores = [None] * len(streams)
    for windows, p in preds:
        scores[order[windows[0].stream_id]] = p.astype(np.float64)
    return scores


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mm-live-ablate-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, list[dict]]] = {"frozen": {}, "lora": {}}
    load = {"start": os.getloadavg()}
    t_start = time.perf_counter()
    chat_text, shares = None, []
    checked = False
    for i in range(max(args.seeds, args.lora_seeds)):
        seed = args.first_seed + i
        data = work / f"hard-{seed}"
        synth = SynthConfig.hard(streams=args.streams, seconds=args.seconds, seed=1000 + seed)
        if not (data / "manifest.jsonl").is_file():
            summary = synthesize(data, synth)
            print(summary.describe(), flush=True)
            chat_text, shares = summary.chat_text, shares + summary.distinct_share
        streams = annotated_streams(data / "manifest.jsonl")
        # baselines: one decoding pass per held-out stream, the model's media settings
        bcfg = base_config("frozen", 1, "")
        per = {b: [] for b in BASELINES}
        for h in tqdm(streams, desc=f"baselines seed {seed}", unit="stream", disable=not args.progress):
            sc, _ = baseline_scores(ClipSource.open(h["rec"].clip, h["rec"].comments), bcfg, seed=seed)
            for b in BASELINES:
                per[b].append(sc[b])
        # each route gets the baselines of its own seeds, so its full − baseline table pairs them: the
        # frozen rows under their names, the LoRA rows (fewer seeds) as "name (same seeds)"
        base_rows = {b: measure(per[b], streams) for b in BASELINES} | {ORACLE: oracle_row(streams)}
        for route, suffix, n in (("frozen", "", args.seeds), ("lora", SAME_SEEDS, args.lora_seeds)):
            if i < n:
                for b, m in base_rows.items():
                    rows[route].setdefault(b + suffix, []).append(m)
        chosen = {k: {**VARIANTS, **EXTRA}[k] for k in args.variants}
        routes = [("frozen", chosen)] if i < args.seeds else []
        if i < args.lora_seeds:
            routes.append(("lora", {k: {**VARIANTS, **EXTRA}[k] for k in args.lora_variants}))
        for route, variants in routes:
            for name, spec in variants.items():
                m = run_model(name, spec, route, seed, data, streams, args, work, check=not checked)
                checked = True
                rows[route].setdefault(name, []).append(m)
                print(f"seed {seed}  {route:6s} {name:13s} " + "  ".join(f"{k} {m[k]:.3f}" for k in METRICS)
                      + "  " + " ".join(f"{t}:{m['per_type'][t]['auc']:.2f}" for t in RISING + DISTRACTORS)
                      + f"  ({m['seconds']:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
        for b in BASELINES:
            m = base_rows[b]
            print(f"seed {seed}  base   {b:15s} " + "  ".join(f"{k} {m[k]:.3f}" for k in METRICS)
                  + "  " + " ".join(f"{t}:{m['per_type'][t]['auc']:.2f}" for t in RISING + DISTRACTORS), flush=True)
    load["end"] = os.getloadavg()
    # model rows first, then the baselines and the oracle (their rows were started before the models')
    summary = {route: {name: summarise(by_name[name]) for name in sorted(by_name, key=_is_baseline)}
               for route, by_name in rows.items() if by_name}
    return {
        "benchmark": "highlight ablation + baselines on held-out HARD synthetic streams",
        "command": "python scripts/ablate_highlight.py " + " ".join(sys.argv[1:]),
        "seeds": args.seeds, "lora_seeds": args.lora_seeds, "lora_variants": list(args.lora_variants),
        "streams": args.streams, "seconds": args.seconds, "epochs": args.epochs, "lora_epochs": args.lora_epochs,
        "generator": "SynthConfig.hard (data synth --difficulty hard), seed 1000 + seed",
        "chat_text": chat_text, "distinct_comment_share_per_stream": float(np.mean(shares)) if shares else None,
        "held_out": "every 4th stream (split=test)", "event_types": {"highlights": list(RISING), "distractors": list(DISTRACTORS)},
        "load_average": load, "total_seconds": time.perf_counter() - t_start, "results": summary,
    }


def _is_baseline(name: str) -> bool:
    """A baseline or oracle row (either route's name for it), not a model variant."""
    return name.removesuffix(SAME_SEEDS) in (*BASELINES, ORACLE)


def _stat(values: list[float]) -> dict:
    v = [x for x in values if not math.isnan(x)]
    return {"mean": float(np.mean(v)) if v else float("nan"),
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "per_seed": values}


def summarise(runs: list[dict]) -> dict:
    out = {k: _stat([r[k] for r in runs]) for k in METRICS}
    for view in ("per_type", "per_type_no_tails"):
        if view in runs[0]:
            out[view] = {t: {k: _stat([r[view][t][k] for r in runs]) for k in runs[0][view][t]} for t in runs[0][view]}
    if "train_streams" in runs[0]:
        out["train_streams"] = summarise([r["train_streams"] for r in runs])
    if "seconds" in runs[0]:
        out["seconds_per_run"] = float(np.mean([r["seconds"] for r in runs]))
    return out


def _cell(r: dict, ref: dict | None = None) -> str:
    """mean ± std; with ``ref``: (Δ mean ± std of the per-seed differences — seeds share data, so the
    paired spread is the one that says whether a difference is more than seed noise)."""
    s = f"{r['mean']:.3f} ± {r['std']:.3f}"
    if ref is None:
        return s
    d = _stat([a - b for a, b in zip(r["per_seed"], ref["per_seed"])])
    return s + f" (Δ {d['mean']:+.3f} ± {d['std']:.3f})"


def table(report: dict) -> str:
    """Markdown tables: overall, then AUC per event type."""
    lines = []
    for route, res in report["results"].items():
        full = res.get("full")
        lines += [f"\n{route} route ({report['seeds'] if route == 'frozen' else report['lora_seeds']} seeds)\n",
                  "| variant | AUC | Kendall τ | top-5 mAP |", "|---|---|---|---|"]
        for name, r in res.items():
            ref = full if full is not None and name != "full" else None
            lines.append(f"| {name} | " + " | ".join(_cell(r[k], ref and ref[k]) for k in METRICS) + " |")
        lines += ["", "| variant | " + " | ".join(f"AUC {t}" for t in RISING + DISTRACTORS) + " | τ " + " | τ ".join(RISING) + " |",
                  "|---|" + "---|" * (len(RISING) * 2 + len(DISTRACTORS))]
        for name, r in res.items():
            pt = r["per_type"]
            lines.append(f"| {name} | " + " | ".join(_cell(pt[t]["auc"]) for t in RISING + DISTRACTORS) + " | "
                         + " | ".join(_cell(pt[t]["kendall_tau"]) for t in RISING) + " |")
        baselines = [b for b in res if b.removesuffix(SAME_SEEDS) in BASELINES]  # the oracle is not one to beat
        if full is not None and baselines:  # the target: full beats every baseline by more than the spread, per type too
            lines += ["", "| full − baseline (paired Δ) | AUC | Kendall τ | " + " | ".join(f"AUC {t}" for t in RISING + DISTRACTORS)
                      + " | τ " + " | τ ".join(RISING) + " |",
                      "|---|" + "---|" * (2 + 2 * len(RISING) + len(DISTRACTORS))]
            for b in baselines:
                cells = [_delta(full[k], res[b][k]) for k in ("auc", "kendall_tau")]
                cells += [_delta(full["per_type"][t]["auc"], res[b]["per_type"][t]["auc"]) for t in RISING + DISTRACTORS]
                cells += [_delta(full["per_type"][t]["kendall_tau"], res[b]["per_type"][t]["kendall_tau"]) for t in RISING]
                lines.append(f"| {b} | " + " | ".join(cells) + " |")
        if full is not None and "per_type_no_tails" in full:
            lines += ["", f"Highlight types without the {TAIL_STEPS} steps after each highlight (where the CTR label decays):", "",
                      "| variant | " + " | ".join(f"AUC {t}" for t in RISING) + " | " + " | ".join(f"full − it, AUC {t}" for t in RISING) + " |",
                      "|---|" + "---|" * (2 * len(RISING))]
            for name, r in res.items():
                if "per_type_no_tails" not in r:
                    continue
                pt = r["per_type_no_tails"]
                cells = [_cell(pt[t]["auc"]) for t in RISING]
                cells += ["" if name == "full" else _delta(full["per_type_no_tails"][t]["auc"], pt[t]["auc"]) for t in RISING]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines += ["", "The same negatives against each event's first step, and against its later steps:", "",
                      "| variant | " + " | ".join(f"first step {t} | later steps {t}" for t in RISING) + " |",
                      "|---|" + "---|" * (2 * len(RISING))]
            for name, r in res.items():
                pt = r.get("per_type_no_tails", {})
                if all("auc_first_step" in pt.get(t, {}) for t in RISING):
                    lines.append(f"| {name} | " + " | ".join(f"{_cell(pt[t]['auc_first_step'])} | {_cell(pt[t]['auc_later_steps'])}"
                                                              for t in RISING) + " |")
            lead = ("lead",) if "auc_vs_lead" in full["per_type_no_tails"][RISING[0]] else ()
            split = ("background",) + lead + DISTRACTORS
            lines += ["", "The same negatives split: plain background" + (f" (and, within it, the {LEAD_STEPS} steps before a "
                      "highlight starts: lead)" if lead else "") + ", and each distractor's steps:", "",
                      "| variant | " + " | ".join(f"{t} vs {n}" for t in RISING for n in split) + " |",
                      "|---|" + "---|" * (len(RISING) * len(split))]
            for name, r in res.items():
                pt = r.get("per_type_no_tails", {})
                if all(f"auc_vs_{n}" in pt.get(t, {}) for t in RISING for n in split):
                    lines.append(f"| {name} | " + " | ".join(_cell(pt[t][f"auc_vs_{n}"]) for t in RISING for n in split) + " |")
        fitted = {name: r for name, r in res.items() if "train_streams" in r}
        if fitted:
            lines += ["", "The same models on the streams they trained on (no-tails view per type) against the held-out streams:", "",
                      "| variant | streams | AUC | Kendall τ | " + " | ".join(f"AUC {t}" for t in RISING) + " |",
                      "|---|---|" + "---|" * (2 + len(RISING))]
            for name, r in fitted.items():
                for where, x in (("training", r["train_streams"]), ("held out", r)):
                    lines.append(f"| {name} | {where} | {_cell(x['auc'])} | {_cell(x['kendall_tau'])} | "
                                 + " | ".join(_cell(x["per_type_no_tails"][t]["auc"]) for t in RISING) + " |")
    return "\n".join(lines)


def _delta(a: dict, b: dict) -> str:
    """Paired difference of two rows' per-seed values, mean ± std; ✓ when the mean exceeds the std
    (and every seed is positive)."""
    diffs = [x - y for x, y in zip(a["per_seed"], b["per_seed"])]
    d = _stat(diffs)
    win = d["mean"] > d["std"] and all(x > 0 for x in diffs)
    return f"{d['mean']:+.3f} ± {d['std']:.3f}" + (" ✓" if win else "")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    route = "frozen" if "frozen" in report["results"] else "lora"  # the frozen route when it ran (more seeds)
    res = report["results"][route]
    names = list(res)
    panels = [("overall", k) for k in METRICS] + [(t, "auc") for t in RISING + DISTRACTORS]
    fig, axes = plt.subplots(3, 3, figsize=(13, 9), dpi=100)
    colours = ["#6aa56a" if n.removesuffix(SAME_SEEDS) == ORACLE else "#999999" if _is_baseline(n) else "#1f5fa8" for n in names]
    for ax, (group, k) in zip(axes.ravel(), panels):
        get = (lambda n: res[n][k]) if group == "overall" else (lambda n: res[n]["per_type"][group][k])
        ax.bar(range(len(names)), [get(n)["mean"] for n in names], yerr=[get(n)["std"] for n in names], capsize=3, color=colours)
        for i, n in enumerate(names):
            ax.scatter([i] * len(get(n)["per_seed"]), get(n)["per_seed"], color="k", s=6, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{k} ({group})" if group == "overall" else f"AUC, {group}" + (" (distractor)" if group in DISTRACTORS else ""),
                     fontsize=9)
        if k == "auc":
            ax.axhline(0.5, color="r", lw=0.6, ls="--")
    fig.suptitle(f"highlight ablation on held-out hard synthetic streams ({report['streams']} per seed, every 4th held out), "
                 f"{route} route, {report['seeds' if route == 'frozen' else 'lora_seeds']} seeds\n"
                 "(blue = model variants, grey = baselines, green = the CTR labels as scores; mean ± std, dots = seeds)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="frozen-route seeds (data + training)")
    p.add_argument("--lora-seeds", type=int, default=1, help="LoRA-route seeds (the first ones of --seeds)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS) + list(EXTRA),
                   help="frozen-route model rows (default: all of VARIANTS)")
    p.add_argument("--lora-variants", nargs="+", default=["full", "frames_audio"], choices=list(VARIANTS) + list(EXTRA))
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ...")
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lora-epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--train-fit", action="store_true", help="also score each model on its own training streams")
    p.add_argument("--workdir", help="reuse synthetic data and token caches here (default: a temp dir)")
    p.add_argument("--reuse", action="store_true",
                   help="measure a run directory already in --workdir (run-ROUTE-VARIANT-SEED/last) instead of training "
                        "it again, when its config is the one the row would train (e.g. to add a new metric)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "ablate_highlight.json")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "ablation.png")
    args = p.parse_args()
    report = run(args)
    print(table(report))
    print(f"\nmean ± sample std over seeds; (Δ) = variant − full, paired by seed; load average start {report['load_average']['start']}, "
          f"end {report['load_average']['end']}; {report['total_seconds']:.0f} s")
    write_json(args.out, report)
    plot(report, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
