"""Benchmark the default encoders + Fusion-Q-Former on this CPU.

1. Scoring throughput: steps/s of encode+fuse for 1-fps steps at 224 px (EfficientNet-Lite0,
   mel transformer, MiniLM with the 5 s look-back bags of a 3 comments/s chat), ``torch.inference_mode``,
   all steps of a 60 s clip in one batch; ``channels_last`` side by side with contiguous (NCHW)
   frames. Measured with ``encoders.frozen_prefix`` off, so the frame encoder runs whole inside
   encode+fuse.
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
   arrive at ``--comment-rate`` per second and each step sees a 5 s look-back.

4. ONNX Runtime for the frame backbone (section ``onnx``): EfficientNet-Lite0 (LoRA merged) through
   ``mm_live.encoders.onnx_runtime.OnnxBackbone`` -- what scoring runs by default -- against torch
   with channels_last, a batch of ``--onnx-batch`` 224 px frames, runs interleaved, best of
   ``--repeats``; the one-off export time (into an empty cache) and the max abs deviation of the
   feature maps.

Comment texts everywhere come from ``mm_live.data.chat.ChatText`` (QVHighlights queries under
``MM_LIVE_REAL_DATA`` when present, else template sentences, mixed with chat memes: 75% chat, 20% hype,
5% spam lines); the share of distinct texts is printed and recorded.

    python scripts/bench_encoders.py [--steps 60] [--train-batch 8] [--windows 8] [--window-steps 64]
                                     [--sections scoring,train_step,lora_step] [--out bench/encoders.json]
"""

from __future__ import annotations

import argparse
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
from mm_live.data.chat import ChatText, distinct_share  # noqa: E402
from mm_live.fileio import write_json  # noqa: E402
from mm_live.multimodal import MODALITIES, MultimodalEncoder, MultimodalInputs  # noqa: E402
from mm_live.streams import nbytes  # noqa: E402

KIND_MIX = {"chat": 0.75, "hype": 0.20, "spam": 0.05}  # as scripts/bench_score.py


def comment_texts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """``n`` chat lines (kinds drawn by KIND_MIX) and a description of their source."""
    rng = random.Random(seed)
    chat = ChatText(seed)
    kinds = rng.choices(list(KIND_MIX), weights=list(KIND_MIX.values()), k=n)
    return [chat.line(k) for k in kinds], chat.describe()


def synthetic_clip(steps: int, size: int = 224, rate: int = 16000, comment_rate: float = 3.0,
                   lookback: float = 5.0) -> tuple[SimpleNamespace, list[list[str]], dict]:
    """A clip as mm_live.media.Clip holds it (random content: timing does not depend on it), the look-back
    bags of a chat at ``comment_rate`` per second, and the chat's stats."""
    g = torch.Generator().manual_seed(0)
    clip = SimpleNamespace(
        frames=torch.randint(0, 256, (steps, 1, 3, size, size), dtype=torch.uint8, generator=g),
        audio=0.1 * torch.randn(steps, rate, generator=g), has_audio=torch.ones(steps, dtype=torch.bool),
        step_starts=torch.arange(steps, dtype=torch.float64), step_seconds=1.0, sample_rate=rate)
    n = round(comment_rate * (steps + lookback))
    texts, source = comment_texts(n)
    rng = random.Random(1)
    times = sorted(rng.uniform(-lookback, steps) for _ in range(n))
    bags = [[x for t, x in zip(times, texts) if s + 1 - lookback < t <= s + 1] for s in range(steps)]
    return clip, bags, {"comments": n, "comment_rate": comment_rate, "distinct_share": round(distinct_share(texts), 3),
                        "comment_source": source}


def throughput(steps: int, repeats: int) -> dict[str, dict]:
    """Scoring time with NCHW and channels_last frames (the shipped default), runs interleaved, best of ``repeats``."""
    clip, bags, chat = synthetic_clip(steps)
    print(f"scoring chat: {chat['comments']} comments, {100 * chat['distinct_share']:.0f}% distinct ({chat['comment_source']})", flush=True)
    runs = {}
    for name, cl in (("nchw", False), ("channels_last", True)):
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
                     "encode_fuse_s": round(best, 3), "steps_per_s": round(steps / best, 2), **chat,
                     "load_avg": [round(x, 2) for x in os.getloadavg()]}
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
    clip, bags, chat = synthetic_clip(batch)
    inputs = model.prepare(clip, bags)
    rss_before = _status_mb("VmRSS")
    load = [round(x, 2) for x in os.getloadavg()]
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
            "step_memory_mb": round(peak - rss_before, 1), **chat, "load_avg": load}


# -- 3. LoRA step of the highlight training shape: full path vs frozen prefix -----------------

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
    return inputs, {"prepare_s": round(prepare_s, 2), "comments": used, "comment_rate": rate, "distinct_share": round(distinct_share(texts), 3),
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
    ap.add_argument("--onnx-batch", type=int, default=32, help="frames per call in the onnx section")
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
    shipped, cl = scoring["nchw"], scoring["channels_last"]
    chat = (f"{shipped['comment_rate']:g} comments/s, {100 * shipped['distinct_share']:.0f}% distinct"
            if "comment_rate" in shipped else "5 comments/step")
    print(f"\nScoring, {shipped['steps']} steps at 1 fps, 224 px, {chat}, {threads} threads, inference_mode, "
          f"load {shipped.get('load_avg', ['?'])[0]}")
    print(f"{'':24}{'NCHW':>12}{'channels_last':>15}{'ratio':>8}")
    for key in ("encode_fuse_s", "steps_per_s", "prepare_s"):
        print(f"{key:24}{shipped[key]:>12}{cl[key]:>15}{cl[key] / shipped[key]:>8.2f}")


def print_train_step(train: dict, threads: int) -> None:
    lo = train["lora"]
    chat = (f"; {lo['comments']} comments at {lo['comment_rate']:g}/s, {100 * lo['distinct_share']:.0f}% distinct, load {lo['load_avg'][0]}"
            if "comment_rate" in lo else "")
    print(f"\nOne training step, batch {lo['batch_steps']} steps (forward + backward + AdamW), {threads} threads{chat}")
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


def onnx_frame(batch: int, repeats: int) -> dict:
    """EfficientNet-Lite0 features: torch (channels_last) vs ONNX Runtime, interleaved, best of ``repeats``."""
    import tempfile

    import onnxruntime as ort

    from mm_live.encoders.frame import FrameEncoder
    from mm_live.encoders.onnx_runtime import OnnxBackbone
    from mm_live.lora import apply_lora, merge_lora

    frame = apply_lora(FrameEncoder("efficientnet-lite0"), dropout=0.0).eval()
    merge_lora(frame)
    net = frame.backbone
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_net = OnnxBackbone.load(net, (224, 224), tmp)
    export_s = onnx_net.load_s  # export + the probe check against torch, into an empty cache
    xcl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = net(xcl)
    dev = float((onnx_net.run(x) - ref).abs().max())
    times: dict[str, list[float]] = {"torch_channels_last": [], "onnxruntime": []}
    for _ in range(repeats):
        with torch.inference_mode():
            t0 = time.perf_counter()
            net(xcl)
            times["torch_channels_last"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        onnx_net.run(x)
        times["onnxruntime"].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    return {"batch": batch, "frame_size": 224, "onnxruntime": ort.__version__, "export_s": round(export_s, 2),
            "max_abs_deviation": float(f"{dev:.3g}"), "feature_scale_max_abs": round(float(ref.abs().max()), 2),
            "runs_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
            **{f"{k}_s": round(v, 3) for k, v in best.items()},
            "frames_per_s": {k: round(batch / v, 1) for k, v in best.items()},
            "speedup": round(best["torch_channels_last"] / best["onnxruntime"], 2),
            "load_avg": [round(v, 2) for v in os.getloadavg()]}


def print_onnx(res: dict, threads: int) -> None:
    print(f"\nFrame backbone, {res['batch']} frames at 224 px, {threads} threads, load {res['load_avg'][0]}")
    print(f"{'':24}{'torch (CL)':>12}{'ONNX Runtime':>15}{'ratio':>8}")
    print(f"{'seconds':24}{res['torch_channels_last_s']:>12}{res['onnxruntime_s']:>15}{res['speedup']:>8.2f}")
    print(f"max abs deviation {res['max_abs_deviation']} (features up to {res['feature_scale_max_abs']}); "
          f"one-off export {res['export_s']} s; onnxruntime {res['onnxruntime']}")


SECTIONS = ("scoring", "train_step", "lora_step", "onnx")
MEASURE = {"scoring": lambda args: throughput(args.steps, args.repeats), "train_step": measure_train_step,
           "lora_step": measure_lora_step, "onnx": lambda args: onnx_frame(args.onnx_batch, args.repeats)}
PRINT = {"scoring": print_scoring, "train_step": print_train_step, "lora_step": print_lora_step, "onnx": print_onnx}


if __name__ == "__main__":
    main()
