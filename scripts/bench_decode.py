"""Benchmark: sampling one frame per second from a 720p H.264 clip.

Generates (once, cached in --workdir) a 60 s 1280x720 25 fps H.264 clip with a key frame every 2 s and
AAC audio, drawn from a moving test pattern so the encoder does real work. Then times, median of
--repeats runs each:

  baseline  PyAV decodes every frame and keeps the one showing at each step's middle
  ours@224  mm_live.media.load_clip (decord, seek-based get_batch), frames 224x224, plus audio
  ours@native  the same at native 1280x720
  keyframes load_clip(keyframes_only=True) at 224 (PyAV, key frames only)

Prints seconds, x real time and the ratio to the baseline, and writes bench/decode.json atomically.

    python scripts/bench_decode.py [--workdir /tmp/mm-live-bench] [--seconds 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import av
import numpy as np
import torch

from mm_live.fileio import write_json
from mm_live.media import load_clip
from mm_live.video_writer import write_video

REPO = Path(__file__).resolve().parents[1]


def make_clip(path: Path, seconds: float, fps: int = 25, size=(1280, 720), gop_seconds: float = 2.0) -> None:
    """A moving colour pattern with a bouncing square, H.264 (a key frame exactly every ``gop_seconds``)
    + stereo 48 kHz AAC, like a real stream's track."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)

    def frames():
        for i in range(int(seconds * fps)):
            t = i / fps
            img = np.empty((h, w, 3), np.uint8)
            img[..., 0] = (128 + 127 * np.sin(xx / 40 + 3 * t)).astype(np.uint8)
            img[..., 1] = (128 + 127 * np.sin(yy / 30 - 2 * t)).astype(np.uint8)
            img[..., 2] = ((xx + yy + 200 * t) % 256).astype(np.uint8)
            x0, y0 = int((w - 160) * abs(np.sin(0.7 * t))), int((h - 160) * abs(np.sin(1.1 * t)))
            img[y0 : y0 + 160, x0 : x0 + 160] = 255
            img[rng.integers(0, h, 200), rng.integers(0, w, 200)] = 0  # sparkle: some residual per frame
            yield img

    sr = 48000
    tt = np.arange(int(seconds * sr)) / sr
    tone = (0.3 * np.sin(2 * np.pi * (220 + 110 * np.sin(tt)) * tt)).astype(np.float32)
    gop = int(gop_seconds * fps)
    write_video(path, frames(), fps=fps, audio=np.stack([tone, tone]), sample_rate=sr, gop=gop, fixed_gop=True,
                threads=0, bitexact=False)


def pyav_every_frame(path: Path, step: float = 1.0) -> int:
    """Baseline: decode every frame, keep (as RGB) the one showing at each step's middle."""
    kept, nxt = 0, 0.5 * step
    last = None
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            while frame.time > nxt + 1e-9 and last is not None:
                last.to_ndarray(format="rgb24")
                kept, nxt = kept + 1, nxt + step
            last = frame
    return kept


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/mm-live-bench"))
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "decode.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    clip = args.workdir / f"pattern_{int(args.seconds)}s_720p25_gop2.mp4"
    if not clip.exists():
        print(f"generating {clip} ...", flush=True)
        make_clip(clip, args.seconds)

    cases = {
        "pyav_every_frame (baseline)": lambda: pyav_every_frame(clip),
        "load_clip decord 224": lambda: load_clip(clip, frame_size=224),
        "load_clip decord native": lambda: load_clip(clip, frame_size=None),
        "load_clip keyframes_only 224": lambda: load_clip(clip, frame_size=224, keyframes_only=True),
    }
    results = {name: median_seconds(fn, args.repeats) for name, fn in cases.items()}
    base = results["pyav_every_frame (baseline)"]
    rows = [
        {"case": name, "seconds": round(s, 3), "x_realtime": round(args.seconds / s, 1), "vs_baseline": round(base / s, 2)}
        for name, s in results.items()
    ]
    print(f"\n1 frame/s from a {args.seconds:g} s 1280x720 25 fps H.264 clip (GOP 2 s), median of {args.repeats}")
    print(f"{'case':32s} {'seconds':>8s} {'x real time':>12s} {'speed-up vs baseline':>21s}")
    for r in rows:
        print(f"{r['case']:32s} {r['seconds']:8.3f} {r['x_realtime']:12.1f} {r['vs_baseline']:20.2f}x")
    print("(load_clip rows include decoding the audio track to 16 kHz mono; the baseline decodes no audio)")
    write_json(args.out, {
        "benchmark": "decode 1 frame per second",
        "clip": {"seconds": args.seconds, "width": 1280, "height": 720, "fps": 25, "gop_seconds": 2, "codec": "h264+aac"},
        "repeats": args.repeats, "statistic": "median", "torch_threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "av": av.__version__},
        "baseline": "pyav_every_frame (baseline)",
        "results": rows,
    })
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
