"""EM3 training step cost against history length: prepared history vs the full encoders on it.

One EM3 training step (forward, backward, AdamW) of ``--batch`` target rooms whose user has a
history of L distinct rooms (L = ``--sizes``), default encoders (EfficientNet-Lite0 + LoRA, mel
transformer, MiniLM + LoRA, Fusion-Q-Former), one step (1 s) per room:

  prepared   history and targets prepared once by ``MultimodalEncoder.prepare``: the frozen
             EfficientNet stem and blocks 0-9 ran there; the step runs only what trains
  full       ``encoders.frozen_prefix`` off: the step runs the whole frame backbone on every room
  prepared_nograd  as prepared, history rooms without autograd (``em3.history_grad`` off)

Reported per variant and L: step time (best of ``--repeats`` after a warm-up), as wall clock and
as process CPU time (all threads; steadier than wall clock on the shared machine, and what the
ratios use) and the step's memory: the rise of the peak RSS over the RSS before the step (VmHWM reset just before
the step through ``/proc/self/clear_refs``; memory the allocator kept from the warm-up step is
reused, so this is what the step adds) and the absolute peak RSS, each in a fresh subprocess. The one-off cost of
preparing the rooms is reported too. Inputs: random frames and audio, 2 short comments per room
(``bench_encoders.synthetic_clip``; timing does not depend on the content).

    python scripts/bench_em3.py [--sizes 50 200 1000] [--frame-size 112] [--out bench/em3.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench_encoders import _status_mb, synthetic_clip  # noqa: E402  (scripts/ is on sys.path when run)
from mm_live.config import Config  # noqa: E402
from mm_live.fileio import write_json  # noqa: E402

VARIANTS = ("prepared", "full", "prepared_nograd")


def step_cost(variant: str, length: int, batch: int, frame_size: int, repeats: int) -> dict:
    """In a fresh subprocess: prepare B + L rooms, then a warm-up and ``repeats`` timed steps."""
    from mm_live.pipelines.em3 import EM3Batch, build_model

    torch.manual_seed(0)
    cfg = Config().replace(**{
        "media.frame_size": frame_size, "encoders.frozen_prefix": variant != "full",
        "encoders.comment.max_comments_per_step": 2, "encoders.comment.max_tokens": 16,
        "em3.segment_steps": 1, "em3.history_len": length, "em3.n_items": 4096,
        "em3.history_grad": variant != "prepared_nograd", "task.name": "em3"})
    model = build_model(cfg).train()
    n = batch + length
    clip, bags = synthetic_clip(n, size=frame_size)
    bags = [b[:2] for b in bags]
    t0 = time.perf_counter()
    with torch.no_grad():
        inputs = model.content.encoder.prepare(clip, bags)
    prepare_s = time.perf_counter() - t0
    hist = torch.arange(batch, n).expand(batch, -1).contiguous()
    b = EM3Batch(labels=(torch.arange(batch) % 2).float(), users=torch.zeros(batch, dtype=torch.long),
                 target=torch.arange(batch), target_id=torch.arange(1, batch + 1), history=hist, history_id=hist + 1,
                 n_grad=batch, inputs=inputs)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times, cpu, peaks, absolute = [], [], [], []
    for _ in range(1 + repeats):  # the first step (warm-up, optimizer state) is not timed
        rss = _status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
            fh.write("5")
        t, c = time.perf_counter(), time.process_time()
        model.training_step(b).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        peaks.append(_status_mb("VmHWM") - rss)
        absolute.append(_status_mb("VmHWM"))
    return {"variant": variant, "history": length, "batch": batch, "rooms": n, "step_s": round(min(times[1:]), 3),
            "step_cpu_s": round(min(cpu[1:]), 3),
            "step_peak_mb": round(min(peaks[1:]), 1),
            "peak_rss_mb": round(min(absolute[1:]), 1), "prepare_s": round(prepare_s, 2),
            "inputs_mb": round(sum(t.numel() * t.element_size() for t in _tensors(inputs)) / 2**20, 1)}


def _tensors(x):
    import dataclasses

    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif dataclasses.is_dataclass(x):
        for f in dataclasses.fields(x):
            yield from _tensors(getattr(x, f.name))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frame-size", type=int, default=112)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)  # one thread: CPU time then counts work, not spinning
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--out", type=Path, default=Path("bench/em3.json"))
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args._child:
        print(json.dumps(step_cost(args._child[0], int(args._child[1]), args.batch, args.frame_size, args.repeats)))
        return 0
    rows, load = [], [os.getloadavg()[0]]
    for length in args.sizes:
        for variant in args.variants:
            res = subprocess.run([sys.executable, __file__, "--_child", variant, str(length), "--batch", str(args.batch),
                                  "--frame-size", str(args.frame_size), "--repeats", str(args.repeats),
                                  "--threads", str(args.threads)], check=True, capture_output=True, text=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            load.append(os.getloadavg()[0])
            print(rows[-1], flush=True)
    by = {(r["variant"], r["history"]): r for r in rows}
    print(f"\n{'history':>7s} {'variant':>16s} {'wall s':>8s} {'CPU s':>8s} {'x full':>7s} {'rise MB':>8s} {'x full':>7s} {'peak RSS':>8s} {'prepare s':>9s}")
    for r in rows:
        full = by.get(("full", r["history"]))
        ratio = (lambda k: f"{r[k] / full[k]:.2f}" if full and full[k] > 0 else "n/a")
        print(f"{r['history']:7d} {r['variant']:>16s} {r['step_s']:8.2f} {r['step_cpu_s']:8.2f} {ratio('step_cpu_s'):>7s} {r['step_peak_mb']:8.1f} "
              f"{ratio('step_peak_mb'):>7s} {r['peak_rss_mb']:8.0f} {r['prepare_s']:9.2f}")
    write_json(args.out, {
        "what": "EM3 training step (fwd+bwd+AdamW) vs history length: prepared (frozen prefix computed once) vs full encoders",
        "command": f"python scripts/bench_em3.py --sizes {' '.join(map(str, args.sizes))} --batch {args.batch} "
                   f"--frame-size {args.frame_size} --repeats {args.repeats} --threads {args.threads}",
        "setup": {"encoders": "EfficientNet-Lite0+LoRA, mel-transformer, MiniLM+LoRA (2 comments/room, 16 tokens)",
                  "frame_size": args.frame_size, "steps_per_room": 1, "batch_targets": args.batch, "threads": args.threads},
        "rows": rows,
        "machine": {"cpus": os.cpu_count(), "loadavg_1min": [round(x, 1) for x in load],
                    "note": "2 cores shared with other engineers' runs: wall-clock times carry that load"},
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
