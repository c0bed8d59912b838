"""How fast does ``mm-live score`` run, and where does the time go?

Scores 60 s and 600 s 1280x720 25 fps H.264 clips (key frame every second, as live encoders
commonly emit; AAC audio; 3 comments per second; the 600 s clip loops the 60 s one by remuxing) at 1 step per second with the default encoders
(EfficientNet-Lite0 + all-MiniLM-L6-v2 with LoRA, log-mel transformer, default Fusion-Q-Former),
in two decoding modes: exact-time sampling (decord seeks) and key-frame-only decoding (PyAV).

For each run: ×real time, the breakdown (decode, prepare, model, write), and the
ratio of the total to decode-only + model-only time measured separately in the same run (1.0 =
the pipeline adds nothing on top of its two irreducible parts). Cost per second of stream for 600 s
vs 60 s shows whether cost is linear in length. Weights are untrained (speed does not depend on
them). Writes ``bench/score.json``.

    python scripts/bench_score.py [--lengths 60 600] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see scripts/bench_dtw.py: idle OpenMP threads spin otherwise
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mm_live.checkpoint import save_checkpoint  # noqa: E402
from mm_live.config import Config  # noqa: E402
from mm_live.fileio import write_json  # noqa: E402
from mm_live.media import iter_clip  # noqa: E402
from mm_live.pipelines.highlight import KIND, StepFeatures, build_model, score_clip  # noqa: E402
from mm_live.comments import read_comments  # noqa: E402
from mm_live.streams import comment_bags  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _make_clip():
    spec = importlib.util.spec_from_file_location("bench_decode", REPO / "scripts" / "bench_decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_clip


def loop_clip(src: Path, dst: Path, times: int) -> None:
    """``src`` repeated ``times`` times, remuxed without re-encoding (a 600 s clip in seconds, not
    the many minutes encoding it would take); timestamps are shifted by the clip span per loop."""
    import av

    from mm_live.fileio import atomic_path

    with av.open(str(src)) as probe_in:
        first, last = {}, {}
        for packet in probe_in.demux():
            if packet.dts is not None:
                i = packet.stream.index
                first[i] = min(first.get(i, packet.dts), packet.dts)
                last[i] = max(last.get(i, packet.dts), packet.dts + (packet.duration or 0))
        spans = {i: last[i] - first[i] for i in first}  # AAC priming makes the first dts negative
    with atomic_path(dst) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            with av.open(str(src)) as first:
                outs = {s.index: out.add_stream_from_template(s) for s in first.streams if s.type in ("video", "audio")}
            for k in range(times):
                with av.open(str(src)) as inp:
                    for packet in inp.demux():
                        if packet.dts is None or packet.stream.index not in outs:
                            continue
                        shift = k * spans[packet.stream.index]
                        packet.pts += shift
                        packet.dts += shift
                        packet.stream = outs[packet.stream.index]
                        out.mux(packet)


def write_comments(path: Path, seconds: float, per_second: float = 3.0, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = ["wow", "nice play", "666", "lol", "what a shot", "hello from Paris", "gg", "this is insane", "haha", "🔥🔥"]
    times = np.sort(rng.uniform(0, seconds, int(seconds * per_second)))
    with open(path, "w", encoding="utf-8") as fh:
        for i, t in enumerate(times):
            fh.write(json.dumps({"t": round(float(t), 3), "user_id": int(rng.integers(1000)), "text": words[i % len(words)]}) + "\n")


def checkpoint(work: Path, keyframes: bool) -> Path:
    cfg = Config().replace(**{"media.keyframes_only": keyframes})
    torch.manual_seed(0)
    model = build_model(cfg)
    run = work / f"run-{'key' if keyframes else 'exact'}"
    save_checkpoint(run / "best", config=cfg, model=model, kind=KIND)
    return run


def decode_only(clip: Path, cfg: Config) -> float:
    m = cfg.media
    t0 = time.perf_counter()
    for _ in iter_clip(clip, window_steps=300, step_seconds=m.step_seconds, frames_per_step=m.frames_per_step,
                       frame_size=m.frame_size, sample_rate=m.sample_rate, keyframes_only=m.keyframes_only):
        pass
    return time.perf_counter() - t0


def model_only(clip: Path, comments: Path, model) -> float:
    """Prepare + encode + fuse + temporal on pre-decoded windows (decoding excluded from the timing);
    the same step batches and head call as ``score_clip``."""
    m = model.cfg.media
    parts = list(iter_clip(clip, window_steps=300, step_seconds=m.step_seconds, frames_per_step=m.frames_per_step,
                           frame_size=m.frame_size, sample_rate=m.sample_rate, keyframes_only=m.keyframes_only))
    log = read_comments(comments).comments
    enc = model.steps.encoder
    t0 = time.perf_counter()
    with torch.inference_mode():
        feats = []
        for p in parts:
            inputs = enc.prepare(p, comment_bags(log, p, model.cfg))
            for a in range(0, len(inputs), 32):  # the same step batches as score_clip
                chunk = inputs[a : a + 32]
                feats.append(model.steps(chunk, torch.arange(len(chunk))[None]))
        f = StepFeatures.cat(feats)
        n = f.fused.shape[1]
        model.forward_steps(f, torch.tensor([n]), torch.tensor([0]))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=float, nargs="+", default=[60.0, 600.0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mm-live-bench")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "score.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    make_clip = _make_clip()
    rows = []
    runs = {mode: checkpoint(work, mode == "keyframes") for mode in ("exact", "keyframes")}
    from mm_live.pipelines.highlight import load_model

    models = {mode: load_model(run) for mode, run in runs.items()}
    clips = {}
    base = work / "pattern_60s_720p25_gop1.mp4"
    if not base.is_file():
        print(f"writing {base.name} ...", flush=True)
        make_clip(base, 60.0, gop_seconds=1.0)
    for seconds in args.lengths:
        clip = work / f"pattern_{int(seconds)}s_720p25_gop1.mp4"
        if not clip.is_file():
            if seconds % 60:
                raise SystemExit("--lengths must be multiples of 60 s (clips are loops of a 60 s clip)")
            loop_clip(base, clip, int(seconds // 60))
        comments = work / f"comments_{int(seconds)}s.jsonl"
        write_comments(comments, seconds)
        clips[seconds] = (clip, comments)
    for mode, run in runs.items():  # warm-up (first-call allocations, lazy imports), not timed
        score_clip(*clips[min(clips)][:1], run, comments=clips[min(clips)][1], model=models[mode], out_dir=work / "warmup")
    for seconds, (clip, comments) in clips.items():
        for mode, run in runs.items():
            model = models[mode]
            t0 = time.perf_counter()
            res = score_clip(clip, run, comments=comments, model=model, out_dir=work / f"out-{mode}-{int(seconds)}")
            total = time.perf_counter() - t0
            dec = decode_only(clip, model.cfg)
            mod = model_only(clip, comments, model)
            row = {"clip_seconds": seconds, "mode": mode, "steps": len(res.scores), "total_s": round(total, 3),
                   "x_realtime": round(seconds / total, 2),
                   "breakdown_s": {k: round(v, 3) for k, v in res.timings.items()},
                   "decode_only_s": round(dec, 3), "model_only_s": round(mod, 3),
                   "total_over_decode_plus_model": round(total / (dec + mod), 3),
                   "seconds_per_stream_second": round(total / seconds, 5)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    hdr = f"{'clip':>6s} {'mode':>9s} {'total s':>8s} {'x RT':>6s} {'decode':>7s} {'prep':>6s} {'model':>7s} {'write':>6s} {'dec-only':>8s} {'model-only':>10s} {'tot/(d+m)':>9s}"
    print(hdr)
    for r in rows:
        b = r["breakdown_s"]
        print(f"{r['clip_seconds']:>5.0f}s {r['mode']:>9s} {r['total_s']:>8.2f} {r['x_realtime']:>6.1f} {b['decode']:>7.2f} {b['prepare']:>6.2f} "
              f"{b['model']:>7.2f} {b.get('write', 0.0):>6.2f} {r['decode_only_s']:>8.2f} "
              f"{r['model_only_s']:>10.2f} {r['total_over_decode_plus_model']:>9.2f}")
    lin = {}
    if len(args.lengths) > 1:
        print("\ncost per stream-second, longest vs shortest clip (1.0 = linear):")
        for mode in runs:
            per = {r["clip_seconds"]: r["seconds_per_stream_second"] for r in rows if r["mode"] == mode}
            ratio = per[max(per)] / per[min(per)]
            lin[mode] = round(ratio, 3)
            print(f"  {mode:9s} {ratio:.2f}")
    write_json(args.out, {"benchmark": "mm-live score, default encoders, 1 step/s, 224 px",
                          "command": "python scripts/bench_score.py " + " ".join(sys.argv[1:]),
                          "threads": args.threads, "clips": "1280x720 25 fps H.264, key frame every 1 s, AAC, 3 comments/s",
                          "target": ">= 20x real time, cost linear in length", "rows": rows, "linearity": lin})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
