"""Scoring outputs: highlight windows and the files ``mm-live score`` writes.

``scores.json`` (``step_seconds``, ``scores``, ``highlights`` best first, ``embedding``),
``scores.csv``, ``highlights.png`` (the curve, the top-k windows shaded, thumbnails at their peaks)
and a Moment-DETR-style ``predictions.jsonl`` (``{"qid","vid","pred_saliency_scores"}``) that the
standard highlight evaluators (and ``mm-live eval``) read. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mm_live.fileio import atomic_open, atomic_path, write_json


@dataclass
class Window:
    start: float  # seconds
    end: float  # seconds
    score: float  # peak score inside the window

    def to_dict(self) -> dict[str, float]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 6)}


def highlight_windows(scores: Sequence[float], step_seconds: float, top_k: int = 5, quantile: float = 0.75,
                      max_gap: int = 1, offset: float = 0.0) -> list[Window]:
    """Top-k highlight windows, best first.

    Steps scoring at or above the ``quantile`` of the stream's scores form runs; runs separated by
    at most ``max_gap`` low steps are merged; each run is ranked by its peak score.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return []
    high = s >= np.quantile(s, quantile)
    runs: list[list[int]] = []
    for i in np.flatnonzero(high):
        if runs and i - runs[-1][1] <= max_gap + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    windows = [Window(float(offset + a * step_seconds), float(offset + (b + 1) * step_seconds), float(s[a : b + 1].max()))
               for a, b in runs]
    windows.sort(key=lambda w: -w.score)
    return windows[:top_k]


def write_score_outputs(
    out_dir: str | Path,
    *,
    clip_name: str,
    step_seconds: float,
    step_starts: Sequence[float],
    scores: Sequence[float],
    windows: Sequence[Window],
    embedding: Sequence[float],
    thumbnails: Sequence[tuple[float, np.ndarray]] = (),
    extra: dict | None = None,
) -> dict[str, Path]:
    """Write the four scoring outputs into ``out_dir``; return their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = [float(x) for x in scores]
    paths = {name: out / name for name in ("scores.json", "scores.csv", "highlights.png", "predictions.jsonl")}
    write_json(paths["scores.json"], {
        "clip": clip_name,
        "step_seconds": step_seconds,
        "step_starts": [round(float(t), 3) for t in step_starts],
        "scores": scores,
        "highlights": [w.to_dict() for w in windows],
        "embedding": [float(x) for x in embedding],
        **(extra or {}),
    })
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["step", "start", "end", "score"])
    for i, (t, sc) in enumerate(zip(step_starts, scores)):
        writer.writerow([i, f"{t:.3f}", f"{t + step_seconds:.3f}", f"{sc:.6f}"])
    with atomic_open(paths["scores.csv"], "w", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())
    vid = Path(clip_name).stem
    import json

    with atomic_open(paths["predictions.jsonl"], "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"qid": vid, "vid": vid, "pred_saliency_scores": scores}) + "\n")
    plot_scores(paths["highlights.png"], step_starts, step_seconds, scores, windows, thumbnails, title=clip_name)
    return paths


def plot_scores(path: str | Path, step_starts: Sequence[float], step_seconds: float, scores: Sequence[float],
                windows: Sequence[Window], thumbnails: Sequence[tuple[float, np.ndarray]] = (), title: str = "",
                labels: Sequence[float] | None = None) -> None:
    """PNG of the score curve with the windows shaded and thumbnails above their peaks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(step_starts, dtype=float) + step_seconds / 2
    fig = plt.figure(figsize=(10, 4.2 if thumbnails else 3.2), dpi=110)
    ax = fig.add_axes([0.07, 0.14, 0.9, 0.52 if thumbnails else 0.74])
    ax.plot(t, scores, color="#1f5fa8", lw=1.6, label="predicted score")
    if labels is not None:
        ax.plot(t, labels, color="#999999", lw=1.0, ls="--", label="label")
    for rank, w in enumerate(windows, 1):
        ax.axvspan(w.start, w.end, color="#f2a33a", alpha=0.3, lw=0)
        ax.text((w.start + w.end) / 2, ax.get_ylim()[1], f"#{rank}", ha="center", va="top", fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("highlight score")
    ax.set_xlim(t.min() - step_seconds / 2 if len(t) else 0, t.max() + step_seconds / 2 if len(t) else 1)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10, loc="left", y=1.0 if not thumbnails else 1.55)
    n = len(thumbnails)
    for k, (when, img) in enumerate(thumbnails):
        w = 0.9 / max(n, 1)
        tax = fig.add_axes([0.07 + k * w + 0.005, 0.7, w - 0.01, 0.26])
        tax.imshow(img)
        tax.set_title(f"{when:.0f} s", fontsize=7)
        tax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
