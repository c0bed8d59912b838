"""Peak memory of highlight training as the dataset grows: lazy windows vs everything prepared up front.

Data: synthetic streams of ``--seconds`` (default 600 s = 10 min, 320x180, 10 fps, with audio and
comments). The 100-stream manifest lists the 10 synthesised files ten times under distinct stream
ids (synthesising 1,000 minutes of video would take longer than the measurement; training reads
each listed stream as its own stream, so what is decoded and cached is the same as with distinct
files). One stream is held out for evaluation in every manifest, so evaluation costs the same.

Each run is a fresh subprocess training ``--steps`` optimizer steps with the default encoders
(EfficientNet-Lite0 + MiniLM with LoRA, mel transformer) and reports its peak RSS (VmHWM):

* lazy: ``ClipWindows`` (decoded and prepared on first use, LRU bounded by ``train.cache_mb``);
* eager (baseline, 10 streams only): every window prepared before training, as the pipeline did
  before the core split.

    python scripts/bench_train_memory.py [--seconds 600] [--steps 4] [--out bench/train_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def make_manifests(work: Path, seconds: float) -> dict[int, Path]:
    from mm_live.data.synthetic import SynthConfig, synthesize

    synth = work / "synth"
    if not (synth / "manifest.jsonl").is_file():
        synthesize(synth, SynthConfig(streams=10, seconds=seconds, seed=0, test_every=0))
    lines = [json.loads(x) for x in (synth / "manifest.jsonl").read_text().splitlines()]
    out = {}
    for n in (10, 100):
        rows = []
        for k in range(n):
            row = dict(lines[k % len(lines)], stream_id=f"x{k:04d}", split="test" if k == 0 else "train")
            row["clip"], row["comments"] = str(synth / row["clip"]), str(synth / row["comments"])
            rows.append(json.dumps(row))
        out[n] = work / f"manifest-{n}.jsonl"
        out[n].write_text("\n".join(rows) + "\n")
    return out


def child(manifest: str, out: str, steps: int, eager: bool) -> None:
    """Train in this process and print one JSON line with its peak RSS."""
    import torch

    from mm_live.config import Config
    from mm_live.pipelines import highlight
    from mm_live.streams import ClipWindows

    torch.set_num_threads(2)
    cfg = Config.from_dict({"train": {"batch_size": 4, "epochs": 1, "eval_every": 10_000, "warmup_steps": 1}})
    if eager:  # the old behaviour: prepare every window before the first step
        real_init = ClipWindows.__init__

        def eager_init(self, *a, **k):
            real_init(self, *a, **k)
            self.cache.max_bytes = 1 << 62
            for i in range(len(self)):
                self[i]

        ClipWindows.__init__ = eager_init
    t0 = time.perf_counter()
    highlight.train(manifest, out, config=cfg, progress=False, max_steps=steps)
    hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM"))
    print(json.dumps({"peak_rss_mb": hwm / 1024, "seconds": time.perf_counter() - t0}))


def run(manifest: Path, steps: int, eager: bool, work: Path) -> dict:
    out = tempfile.mkdtemp(dir=work, prefix="run-")
    cmd = [sys.executable, __file__, "--child", str(manifest), out, str(steps)] + (["--eager"] if eager else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if res.returncode:
        raise SystemExit(f"child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--workdir", type=Path, help="keep synthetic data here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "train_memory.json")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.eager)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mm-live-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    manifests = make_manifests(work, args.seconds)
    rows = []
    for label, n, eager in (("lazy", 10, False), ("lazy", 100, False), ("eager (baseline)", 10, True)):
        r = run(manifests[n], args.steps, eager, work)
        rows.append({"loader": label, "streams": n, "stream_minutes": n * args.seconds / 60, **r})
        print(f"{label:18s} {n:4d} streams  peak RSS {r['peak_rss_mb']:8.0f} MB  ({r['seconds']:.0f} s)", flush=True)
    lazy10 = rows[0]["peak_rss_mb"]
    print(f"\n{'loader':18s} {'streams':>7s} {'minutes':>8s} {'peak RSS MB':>12s} {'vs lazy 10':>11s} {'seconds':>8s}")
    for r in rows:
        print(f"{r['loader']:18s} {r['streams']:7d} {r['stream_minutes']:8.0f} {r['peak_rss_mb']:12.0f} "
              f"{r['peak_rss_mb'] / lazy10:10.2f}x {r['seconds']:8.0f}")
    from mm_live.fileio import write_json

    write_json(args.out, {"benchmark": "peak RSS of highlight training vs dataset size",
                          "command": "python scripts/bench_train_memory.py " + " ".join(sys.argv[1:]),
                          "config": "default encoders + LoRA, batch 4, windows of 64 steps, threads 2",
                          "steps": args.steps, "seconds_per_stream": args.seconds,
                          "note": "the 100-stream manifest lists 10 synthesised files 10 times under distinct ids",
                          "target": "lazy 100 streams within 2x of lazy 10 streams", "rows": rows})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
