"""Benchmark the default encoders + Fusion-Q-Former on this CPU.

1. Scoring throughput: steps/s of encode+fuse for 1-fps steps at 224 px (EfficientNet-Lite0,
   mel transformer, MiniLM with 5 comments per step), ``torch.inference_mode``, all steps of a 60 s
   clip in one batch; ``channels_last`` side by side with the as-shipped memory format. Measured
   with ``encoders.frozen_prefix`` off, so the frame encoder runs whole inside encode+fuse.
2. One training step (forward, backward, AdamW) with LoRA vs full fine-tuning of the same
   backbones, batch of ``--train-batch`` steps: trainable parameters (encoders alone and with the
   fusion, which trains in both), time, and peak memory (peak RSS, VmHWM, of a fresh subprocess per
   variant, and its rise during the step; tracemalloc does not see torch's allocations). The mel
   transformer trains fully in both variants; frozen prefix off in both.
3. One LoRA training step of the default highlight training shape (``--windows`` windows of
   ``--window-steps`` 1-fps steps at 224 px, default Config() encoders + Fusion-Q-Former, a linear
   loss on the mean-pooled queries), the full path (``encoders.frozen_prefix`` off) against the
   frozen prefix precomputed by ``prepare``: step time (wall and process CPU time, the machine is
   shared), the one-off preparation cost, bytes held by the prepared inputs, peak RSS, and where
   the step's time goes (each modality's forward+backward and the fusion's, timed alone). Comments
   arrive at ``--comment-rate`` per second and each step sees a 5 s look-back; their texts are
   QVHighlights queries when the shared real data is present (else sentences built from templates),
   with some chat repeats; the share of distinct texts is printed.

    python scripts/bench_encoders.py [--steps 60] [--train-batch 8] [--windows 8] [--window-steps 64]
                                     [--sections scoring,train_step,lora_step] [--out bench/encoders.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mm_live.config import Config  # noqa: E402
from mm_live.fileio import write_json  # noqa: E402
from mm_live.multimodal import MODALITIES, MultimodalEncoder, MultimodalInputs  # noqa: E402
from mm_live.streams import nbytes  # noqa: E402

WORDS = "goal what a save nice play lol gg hype clip that again wow amazing no way".split()


def synthetic_clip(steps: int, size: int = 224, rate: int = 16000) -> tuple[SimpleNamespace, list[list[str]]]:
    """A clip as mm_live.media.Clip holds it (random content: timing does not depend on it) and 5 comments/step."""
    g = torch.Generator().manual_seed(0)
    clip = SimpleNamespace(
        frames=torch.randint(0, 256, (steps, 1, 3, size, size), dtype=torch.uint8, generator=g),
        audio=0.1 * torch.randn(steps, rate, generator=g), has_audio=torch.ones(steps, dtype=torch.bool),
        step_starts=torch.arange(steps, dtype=torch.float64), step_seconds=1.0, sample_rate=rate)
    bags = [[" ".join(WORDS[(t + i + k) % len(WORDS)] for k in range(4)) for i in range(5)] for t in range(steps)]
    return clip, bags


def throughput(steps: int, repeats: int) -> dict[str, dict]:
    """Scoring time of the as-shipped and channels_last frame encoder, runs interleaved, best of ``repeats``."""
    clip, bags = synthetic_clip(steps)
    runs = {}
    for name, cl in (("as_shipped", False), ("channels_last", True)):
        model = MultimodalEncoder.from_config(Config().replace(**{"encoders.frame.channels_last": cl,
                                                                  "encoders.frozen_prefix": False})).eval()
        t0 = time.perf_counter()
        inputs = model.prepare(clip, bags)
        runs[name] = {"model": model, "inputs": inputs, "prepare_s": time.perf_counter() - t0, "times": []}
    with torch.inference_mode():
        for r in runs.values():
            r["model"](r["inputs"][:2])  # warm-up
        for _ in range(repeats):
            for r in runs.values():
                t0 = time.perf_counter()
                r["model"](r["inputs"])
                r["times"].append(time.perf_counter() - t0)
    out = {}
    for name, r in runs.items():
        best = min(r["times"])  # the least-disturbed run on a shared machine
        out[name] = {"channels_last": name == "channels_last", "steps": steps, "prepare_s": round(r["prepare_s"], 3),
                     "encode_fuse_s": round(best, 3), "steps_per_s": round(steps / best, 2)}
    return out


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MiB. ru_maxrss is not used: after fork+exec it
    still reports the parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def train_step(variant: str, batch: int, repeats: int) -> dict:
    """Run in a fresh subprocess: a warm-up and ``repeats`` timed training steps (best); report memory."""
    cfg = Config().replace(**{"encoders.frame.lora.enabled": variant == "lora",
                              "encoders.comment.lora.enabled": variant == "lora", "encoders.frozen_prefix": False})
    model = MultimodalEncoder.from_config(cfg)
    if variant == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()  # after unfreezing: a trainable backbone is not held in eval mode
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    clip, bags = synthetic_clip(batch)
    inputs = model.prepare(clip, bags)
    rss_before = _status_mb("VmRSS")
    times = []
    for _ in range(1 + repeats):  # the first step (warm-up, optimizer state allocation) is not timed
        t0 = time.perf_counter()
        out = model(inputs)
        loss = out.embedding.square().sum() + out.queries.mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    peak = _status_mb("VmHWM")
    encoders = [p for name in ("frame", "audio", "comment") for p in getattr(model, name).parameters()]
    return {"variant": variant, "batch_steps": batch, "trainable_params": sum(p.numel() for p in params),
            "encoder_trainable_params": sum(p.numel() for p in encoders if p.requires_grad),
            "encoder_params": sum(p.numel() for p in encoders),
            "total_params": sum(p.numel() for p in model.parameters()), "step_s": round(min(times[1:]), 3),
            "rss_before_step_mb": round(rss_before, 1), "peak_rss_mb": round(peak, 1),
            "step_memory_mb": round(peak - rss_before, 1)}


# -- 3. LoRA step of the highlight training shape: full path vs frozen prefix -----------------

CHAT = ["lol", "666", "gg", "what a goal", "no way", "wow", "hahaha", "nice one"]
SUBJECTS = ["the streamer", "a player in red", "the goalkeeper", "my cat", "the chef", "a kid", "the crowd", "the host",
            "a man in a hat", "two friends", "the guitarist", "a woman with a dog"]
ACTIONS = ["scores from far out", "drops the ball", "laughs at the chat", "opens a huge box", "burns the toast",
           "jumps over a fence", "reads a donation", "misses an easy shot", "plays the final chord",
           "starts to dance", "finds a hidden door", "falls off the chair"]
PLACES = ["in the kitchen", "at the stadium", "on stage", "in the rain", "at night", "on the beach", "in a car",
          "in slow motion", "again", "live right now"]


def comment_texts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """``n`` chat texts: 90% drawn without replacement from QVHighlights queries (shared real data,
    when present) or from template sentences, 10% short chat repeats. Returns (texts, source)."""
    root = Path(os.environ.get("MM_LIVE_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    qvh = root / "qvhighlights" / "highlight_val_release.jsonl"
    if qvh.is_file():
        with qvh.open(encoding="utf-8") as fh:
            pool, source = [json.loads(line)["query"] for line in fh if line.strip()], f"QVHighlights queries ({qvh})"
    else:
        pool = [f"{s} {a} {p}" for s, a, p in itertools.product(SUBJECTS, ACTIONS, PLACES)]
        source = "template sentences (QVHighlights not found; set MM_LIVE_REAL_DATA)"
    rng = random.Random(seed)
    rng.shuffle(pool)
    drawn = itertools.cycle(pool)
    return [rng.choice(CHAT) if rng.random() < 0.1 else next(drawn) for _ in range(n)], source


def highlight_batch(model: MultimodalEncoder, windows: int, steps: int, rate: float, lookback: float = 5.0,
                    size: int = 224, sample_rate: int = 16000) -> tuple[MultimodalInputs, dict]:
    """Prepared inputs of ``windows`` windows of ``steps`` 1-fps steps (each from another stretch of a
    stream, prepared separately and concatenated as the training loop does), and the preparation stats."""
    g = torch.Generator().manual_seed(0)
    rng = random.Random(1)
    per_window = round(rate * (steps + lookback))  # the window and the look-back before its first step
    texts, source = comment_texts(per_window * windows)
    parts, t0, used = [], time.perf_counter(), 0
    for w in range(windows):
        clip = SimpleNamespace(
            frames=torch.randint(0, 256, (steps, 1, 3, size, size), dtype=torch.uint8, generator=g),
            audio=0.1 * torch.randn(steps, sample_rate, generator=g), has_audio=torch.ones(steps, dtype=torch.bool),
            step_starts=torch.arange(steps, dtype=torch.float64), step_seconds=1.0, sample_rate=sample_rate)
        times = sorted(rng.uniform(-lookback, steps) for _ in range(per_window))
        chat = [SimpleNamespace(t=t, text=x) for t, x in zip(times, texts[used : used + per_window])]
        used += per_window
        bags = [[c for c in chat if s + 1 - lookback < c.t <= s + 1] for s in range(steps)]
        parts.append(model.prepare(clip, bags))
    prepare_s = time.perf_counter() - t0
    inputs = MultimodalInputs.cat(parts)
    in_bags = inputs.comments.input_ids[inputs.comments.mask]
    return inputs, {"prepare_s": round(prepare_s, 2), "comments": used, "comment_rate": rate, "distinct_share": round(len(set(texts)) / len(texts), 3),
                    "comment_slots": int(inputs.comments.mask.sum()), "distinct_in_batch": int(torch.unique(in_bags, dim=0).shape[0]),
                    "comment_source": source}


def _timed(fn) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def lora_step(variant: str, windows: int, steps: int, rate: float, repeats: int) -> dict:
    """Run in a fresh subprocess: prepare, a warm-up and ``repeats`` timed LoRA steps, then a breakdown."""
    model = MultimodalEncoder.from_config(Config().replace(**{"encoders.frozen_prefix": variant == "prefix"})).train()
    head = torch.nn.Linear(model.fusion.queries.embedding_dim, 1)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    inputs, prep = highlight_batch(model, windows, steps, rate)
    target = torch.rand(len(inputs), 1, generator=torch.Generator().manual_seed(0))
    rss_before = _status_mb("VmRSS")

    def step() -> None:
        out = model(inputs)
        loss = (head(out.queries.mean(1)) - target).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    runs = [_timed(step) for _ in range(1 + repeats)][1:]  # the first (warm-up, optimizer state) is not timed
    peak = _status_mb("VmHWM")

    def part(name: str) -> None:  # one modality alone: its tokens' forward and backward
        model.modality_tokens(name, inputs).tokens.square().mean().backward()
        model.zero_grad(set_to_none=True)

    with torch.no_grad():
        toks = [model.modality_tokens(name, inputs) for name in MODALITIES]

    def fusion() -> None:
        model.fusion(toks).queries.mean().backward()
        model.zero_grad(set_to_none=True)

    breakdown = {f"{name}_s": round(_timed(lambda: part(name))[0], 2) for name in MODALITIES}
    breakdown["fusion_s"] = round(_timed(fusion)[0], 2)
    best = min(runs)  # the least-disturbed run on a shared machine
    return {"variant": variant, "steps": len(inputs), "windows": windows, "window_steps": steps, **prep,
            "step_s": round(best[0], 2), "step_cpu_s": round(best[1], 2), "step_s_runs": [round(r[0], 2) for r in runs],
            "inputs_mb": round(nbytes(inputs) / 2**20, 1), "inputs_kb_per_step": round(nbytes(inputs) / 1024 / len(inputs), 1),
            "rss_before_step_mb": round(rss_before, 1), "peak_rss_mb": round(peak, 1),
            "step_memory_mb": round(peak - rss_before, 1), "breakdown": breakdown}


def _child(args: argparse.Namespace, *flags: str) -> dict:
    res = subprocess.run([sys.executable, __file__, *flags, "--threads", str(args.threads), "--repeats", str(args.repeats),
                          "--train-batch", str(args.train_batch), "--windows", str(args.windows),
                          "--window-steps", str(args.window_steps), "--comment-rate", str(args.comment_rate)],
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="steps (seconds at 1 fps) scored in one batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-batch", type=int, default=8, help="steps per training batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=8, help="windows per highlight training batch")
    ap.add_argument("--window-steps", type=int, default=64, help="1-fps steps per window")
    ap.add_argument("--comment-rate", type=float, default=3.0, help="comments per second")
    ap.add_argument("--lora-repeats", type=int, default=2, help="timed highlight-shape steps per variant")
    ap.add_argument("--sections", default="scoring,train_step,lora_step",
                    help="comma-separated sections to measure; the others are kept from --out")
    ap.add_argument("--out", default="bench/encoders.json")
    ap.add_argument("--_train-variant", dest="train_variant", help=argparse.SUPPRESS)
    ap.add_argument("--_lora-step", dest="lora_step", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.train_variant:  # child processes
        print(json.dumps(train_step(args.train_variant, args.train_batch, args.repeats)))
        return
    if args.lora_step:
        print(json.dumps(lora_step(args.lora_step, args.windows, args.window_steps, args.comment_rate, args.repeats)))
        return

    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        ap.error(f"--sections: unknown {sorted(unknown)}; choose among {list(SECTIONS)}")
    path = Path(args.out)
    out = json.loads(path.read_text()) if path.is_file() else {}
    out["machine"] = {"threads": args.threads, "cpus": os.cpu_count(), "torch": torch.__version__}
    for section in args.sections.split(","):
        out[section] = MEASURE[section](args)
        write_json(path, out)  # after every section: a late failure keeps what was measured
    for section in SECTIONS:
        if section in out:
            PRINT[section](out[section], out["machine"]["threads"])
    print(f"\nwrote {args.out} (timings on a shared machine vary by +-20% or more between runs)")


def measure_train_step(args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {"full": [], "lora": []}
    for _ in range(2):  # interleaved fresh processes; the faster of the two is kept per variant
        for variant in runs:
            runs[variant].append(_child(args, "--_train-variant", variant))
    return {v: min(r, key=lambda d: d["step_s"]) for v, r in runs.items()}


def measure_lora_step(args: argparse.Namespace) -> dict:
    res = {v: _child(argparse.Namespace(**{**vars(args), "repeats": args.lora_repeats}), "--_lora-step", v)
           for v in ("full", "prefix")}
    return {**res, "speedup": round(res["full"]["step_s"] / res["prefix"]["step_s"], 2),
            "cpu_speedup": round(res["full"]["step_cpu_s"] / res["prefix"]["step_cpu_s"], 2)}


def print_scoring(scoring: dict, threads: int) -> None:
    shipped, cl = scoring["as_shipped"], scoring["channels_last"]
    print(f"\nScoring, {shipped['steps']} steps at 1 fps, 224 px, 5 comments/step, {threads} threads, inference_mode")
    print(f"{'':24}{'as shipped':>12}{'channels_last':>15}{'ratio':>8}")
    for key in ("encode_fuse_s", "steps_per_s", "prepare_s"):
        print(f"{key:24}{shipped[key]:>12}{cl[key]:>15}{cl[key] / shipped[key]:>8.2f}")


def print_train_step(train: dict, threads: int) -> None:
    print(f"\nOne training step, batch {train['lora']['batch_steps']} steps (forward + backward + AdamW), {threads} threads")
    print(f"{'':24}{'full FT':>12}{'LoRA':>15}{'ratio':>8}")
    for key in ("encoder_trainable_params", "encoder_params", "trainable_params", "total_params", "step_s",
                "peak_rss_mb", "step_memory_mb"):
        f, l = train["full"][key], train["lora"][key]
        print(f"{key:24}{f:>12}{l:>15}{l / f:>8.3f}")


def print_lora_step(res: dict, threads: int) -> None:
    full, pre = res["full"], res["prefix"]
    print(f"\nOne LoRA training step, {full['windows']} windows x {full['window_steps']} steps (1 frame/step, 224 px), "
          f"default encoders + fusion, {threads} threads; {full['comments']} comments at {full['comment_rate']}/s from "
          f"{full['comment_source']}, {100 * full['distinct_share']:.0f}% distinct, {full['distinct_in_batch']} distinct "
          f"texts in {full['comment_slots']} look-back slots")
    print(f"{'':24}{'full path':>12}{'frozen prefix':>15}{'ratio':>8}")
    rows = [(k, full[k], pre[k]) for k in ("step_s", "step_cpu_s", "prepare_s", "inputs_kb_per_step", "inputs_mb",
                                            "peak_rss_mb", "step_memory_mb")]
    rows += [(k, full["breakdown"][k], pre["breakdown"][k]) for k in full["breakdown"]]
    for key, f, p in rows:
        print(f"{key:24}{f:>12}{p:>15}{p / f if f else float('nan'):>8.3f}")
    extra = pre["prepare_s"] - full["prepare_s"]
    print(f"step speed-up {res['speedup']:.2f}x wall, {res['cpu_speedup']:.2f}x CPU time (goal 3x); one-off extra "
          f"preparation for the prefix {extra:.1f} s = {extra / pre['step_s']:.1f} prefix steps")


SECTIONS = ("scoring", "train_step", "lora_step")
MEASURE = {"scoring": lambda args: throughput(args.steps, args.repeats), "train_step": measure_train_step,
           "lora_step": measure_lora_step}
PRINT = {"scoring": print_scoring, "train_step": print_train_step, "lora_step": print_lora_step}


if __name__ == "__main__":
    main()
