"""``mm-live demo`` (``make demo``): the README's main job.

Today it is the foundation's journey: synthesise live streams, decode every one of them with
:func:`mm_live.media.load_clip`, read their comments into per-step look-back bags, and print what
was read next to the planted truth — then do the same for the real clip in ``MM_LIVE_REAL_DATA``
when it is there. The highlight issue turns it into train → score → export.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mm_live.comments import lookback_bags, read_comments
from mm_live.config import MediaConfig
from mm_live.data.synthetic import SynthConfig, synthesize
from mm_live.media import load_clip


def _real_clip() -> Path | None:
    root = os.environ.get("MM_LIVE_REAL_DATA")
    if not root:
        return None
    path = Path(root) / "clips" / "bigbuckbunny.mp4"
    return path if path.is_file() else None


def run_demo(out_dir: str | Path = "demo_out", seed: int = 0, streams: int = 2, seconds: float = 20.0) -> list[dict]:
    """Synthesise ``streams`` streams into ``out_dir/synth``, decode them, print a summary; return its rows."""
    out_dir = Path(out_dir)
    media = MediaConfig()
    t0 = time.perf_counter()
    summary = synthesize(out_dir / "synth", SynthConfig(streams=streams, seconds=seconds, seed=seed))
    print(summary.describe())
    print(f"synthesised in {time.perf_counter() - t0:.1f} s\n")

    rows = []
    manifest = summary.manifest
    for line in manifest.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        clip_path = manifest.parent / rec["clip"]
        t1 = time.perf_counter()
        clip = load_clip(clip_path, step_seconds=rec["step_seconds"], frames_per_step=media.frames_per_step,
                         frame_size=media.frame_size, sample_rate=media.sample_rate)
        log = read_comments(manifest.parent / rec["comments"])
        bags = lookback_bags(log.comments, clip.step_starts, clip.step_seconds, media.comment_lookback)
        ctr = rec["labels"]["ctr"]
        inside = [any(s <= i * clip.step_seconds < e for s, e in rec.get("highlights", [])) for i in range(len(ctr))]
        in_hl = [c for c, m in zip(ctr, inside) if m]
        out_hl = [c for c, m in zip(ctr, inside) if not m]
        rows.append({
            "stream": rec["stream_id"],
            "steps": clip.num_steps,
            "frames": "x".join(map(str, clip.frames.shape)),
            "audio steps": f"{int(clip.has_audio.sum())}/{clip.num_steps}",
            "comments": len(log.comments),
            "max bag": max((len(b) for b in bags), default=0),
            "ctr in/out hl": f"{sum(in_hl) / max(len(in_hl), 1):.2f}/{sum(out_hl) / max(len(out_hl), 1):.2f}",
            "decode s": f"{time.perf_counter() - t1:.2f}",
        })
    real = _real_clip()
    if real is not None:
        t1 = time.perf_counter()
        clip = load_clip(real, step_seconds=media.step_seconds, frame_size=media.frame_size, sample_rate=media.sample_rate)
        rows.append({"stream": real.name, "steps": clip.num_steps, "frames": "x".join(map(str, clip.frames.shape)),
                     "audio steps": f"{int(clip.has_audio.sum())}/{clip.num_steps}", "comments": 0, "max bag": 0,
                     "ctr in/out hl": "-", "decode s": f"{time.perf_counter() - t1:.2f}"})
    _print_table(rows)
    print(f"\noutputs: {out_dir.resolve()}")
    return rows


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(width[c]) for c in cols))
