"""Single-cue highlight scorers: the simple tricks a trained model has to beat.

Each gives one score per step of a clip, like the highlight model, from the same readers the model
uses (:class:`~mm_live.scoring.ClipSource`, :func:`~mm_live.media.iter_clip` with the config's
sampling, :func:`~mm_live.comments.lookback_bags`), so the evaluation compares like with like:

* ``comment_density`` — comments posted inside the step, ``(end − step_seconds, end]`` (what
  danmaku-density highlight cutters do);
* ``audio_rms`` — root mean square of the step's audio samples (loudness; 0 without audio);
* ``visual_change`` — mean absolute difference between consecutive sampled frames, averaged over
  the step's frames (each step's first frame is compared with the previous step's last; the clip's
  very first frame scores 0);
* ``random`` — uniform noise from ``seed`` (the floor every scorer must clear).

:func:`highlight_metrics` is the held-out evaluation of the highlight task (pooled AUC, mean
per-stream Kendall τ, mean per-stream top-5 mAP) for any per-step scores, model's or baseline's;
:func:`event_metrics` breaks it down per planted event type of the hard synthetic generator.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from mm_live.comments import lookback_bags
from mm_live.config import Config
from mm_live.errors import ConfigError
from mm_live.media import iter_clip
from mm_live.metrics import auc, kendall_tau, trapezoid_ap
from mm_live.scoring import ClipSource, EncodedClip, ScoreResult, finish_scores
from mm_live.streams import clip_kwargs

BASELINES = ("comment_density", "audio_rms", "visual_change", "random")


def baseline_scores(source: ClipSource, cfg: Config, names: Sequence[str] = BASELINES, *, seed: int = 0,
                    window_steps: int = 120) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One decoding pass over the clip -> ({name: scores [T] float64}, step_starts [T] seconds)."""
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise ConfigError(f"unknown baseline {bad[0]!r}; choose from {', '.join(BASELINES)}")
    step = cfg.media.step_seconds
    rms, change, starts = [], [], []
    prev: torch.Tensor | None = None  # last sampled frame of the previous window [3, H, W]
    need_frames = "visual_change" in names
    for part in iter_clip(source.path, window_steps=window_steps, **clip_kwargs(cfg)):
        starts.append(part.step_starts.numpy())
        rms.append(part.audio.double().pow(2).mean(dim=1).sqrt().numpy())  # [n]; silent rows are zeros
        if need_frames:
            n, f = part.frames.shape[:2]
            x = part.frames.reshape(n * f, *part.frames.shape[2:]).float()  # [n*F, 3, H, W]
            first = x[:1] if prev is None else prev[None]
            diff = (x - torch.cat([first, x[:-1]])).abs().mean(dim=(1, 2, 3))  # [n*F]
            change.append(diff.reshape(n, f).double().mean(dim=1).numpy())
            prev = x[-1]
    step_starts = np.concatenate(starts)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "comment_density":
            bags = lookback_bags(source.comments, step_starts, step, step)
            out[name] = np.array([len(b) for b in bags], dtype=np.float64)
        elif name == "audio_rms":
            out[name] = np.concatenate(rms)
        elif name == "visual_change":
            out[name] = np.concatenate(change)
        else:
            out[name] = np.random.default_rng(seed).random(len(step_starts))
    return out, step_starts


def score_baseline(name: str, clip: str | Path, cfg: Config, *, comments: str | Path | None = None,
                   out_dir: str | Path | None = None, top_k: int = 5, seed: int = 0) -> ScoreResult:
    """Score ``clip`` with baseline ``name`` -> the model's :class:`~mm_live.scoring.ScoreResult` (scores
    scaled to [0, 1] by the clip's maximum; the embedding is empty), files written as ``mm-live score``."""
    source = ClipSource.open(clip, comments)
    scores, starts = baseline_scores(source, cfg, (name,), seed=seed)
    s = scores[name]
    s = s / s.max() if s.max() > 0 else s
    return finish_scores(source, EncodedClip([], starts), s, np.zeros(0, np.float32), step_seconds=cfg.media.step_seconds,
                         top_k=top_k, out_dir=out_dir, extra={"baseline": name})


# ----------------------------------------------------------------------------- evaluation


def highlight_metrics(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], positives: Sequence[np.ndarray],
                      keep: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """Per stream: scores [T], ctr labels [T], positives [T] bool (optionally ``keep`` [T] bool: the
    steps that take part). AUC pooled over streams (positives vs the rest), Kendall τ vs the labels
    averaged over streams, top-5 mAP (UMT's AP of the 5 best steps) averaged over streams with a
    positive. The same computation as :func:`mm_live.pipelines.highlight.evaluate`."""
    if keep is not None:
        scores = [s[k] for s, k in zip(scores, keep)]
        labels = [y[k] for y, k in zip(labels, keep)]
        positives = [q[k] for q, k in zip(positives, keep)]
    taus = [t for t in (kendall_tau(p, y) for p, y in zip(scores, labels)) if not math.isnan(t)]
    aps = [float(trapezoid_ap(q[np.argsort(-p, kind="stable")[:5]].astype(float))) for p, q in zip(scores, positives) if q.any()]
    all_pos, all_s = np.concatenate(positives).astype(float), np.concatenate(scores)
    return {"auc": auc(all_pos, all_s) if 0 < all_pos.sum() < len(all_pos) else float("nan"),
            "kendall_tau": float(np.mean(taus)) if taus else float("nan"),
            "top5_map": float(np.mean(aps)) if aps else float("nan")}


def event_masks(events: Sequence[Mapping], n_steps: int, step_seconds: float) -> dict[str, np.ndarray]:
    """truth.json ``events`` -> {type: [T] bool}: steps whose midpoint lies in one of that type's
    events (the rule :func:`mm_live.streams.highlight_steps` uses for positives)."""
    mid = (np.arange(n_steps) + 0.5) * step_seconds
    out: dict[str, np.ndarray] = {}
    for e in events:
        m = (mid >= e["start"]) & (mid < e["end"])
        out[e["type"]] = out.get(e["type"], np.zeros(n_steps, bool)) | m
    return out


def event_metrics(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], positives: Sequence[np.ndarray],
                  masks: Sequence[Mapping[str, np.ndarray]], rising: Sequence[str], others: Sequence[str],
                  tail_steps: int = 0, split_negatives: Sequence[str] = (), lead_steps: int = 0) -> dict[str, dict[str, float]]:
    """Per event type. A highlight type X: :func:`highlight_metrics` with X's steps as positives and the
    other highlight types' steps left out (X against background and distractors). A distractor type D:
    ``auc`` of all highlight steps against D's steps only (1.0 = D never outranks a highlight). A
    highlight type also gets ``auc_first_step`` and ``auc_later_steps``: its events' first steps, and
    their other steps, each against the same negatives.

    ``tail_steps`` > 0 also leaves out, for the highlight types, the ``tail_steps`` steps after every
    highlight step that are not highlight steps themselves: where the CTR label decays after an
    event, so a score that follows the label there is not counted as ranking background high.

    ``split_negatives`` (distractor types) also splits each highlight type's negatives: ``auc_vs_<D>``
    against the steps of distractor D only, ``auc_vs_background`` against the negatives in none of
    them — whether a scorer loses to plain background or to the look-alikes.

    ``lead_steps`` > 0 adds ``auc_vs_lead`` to each highlight type: against those of its negatives that
    are in no event and lie within ``lead_steps`` steps before the first step of a highlight (any
    highlight type), where its reaction burst is already ahead — whether a scorer that reads the
    comments ahead (the comment look-ahead) rises before the highlight does."""
    out: dict[str, dict[str, float]] = {}
    n = [len(s) for s in scores]
    tails = [_after(q, tail_steps) & ~q for q in positives]
    for x in rising:
        mx = [m.get(x, np.zeros(k, bool)) for m, k in zip(masks, n)]
        keep = [~(q & ~a) & ~t for q, a, t in zip(positives, mx, tails)]
        out[x] = highlight_metrics(scores, labels, mx, keep)
        # the same negatives against each event's first step, then against its other steps: is a
        # scorer late (weak at the onset) or weak throughout?
        first = [_first_steps(a) for a in mx]
        neg = np.concatenate([s[k & ~a] for s, k, a in zip(scores, keep, mx)])
        for key, sel in (("auc_first_step", first), ("auc_later_steps", [a & ~f for a, f in zip(mx, first)])):
            pos = np.concatenate([s[q] for s, q in zip(scores, sel)])
            out[x][key] = _auc(pos, neg)
        pos = np.concatenate([s[a] for s, a in zip(scores, mx)])
        lookalike = [np.zeros(k, bool) for k in n]
        for d in split_negatives:
            md = [m.get(d, np.zeros(k, bool)) for m, k in zip(masks, n)]
            lookalike = [la | b for la, b in zip(lookalike, md)]
            out[x][f"auc_vs_{d}"] = _auc(pos, np.concatenate([s[k & ~a & b] for s, k, a, b in zip(scores, keep, mx, md)]))
        if split_negatives:
            out[x]["auc_vs_background"] = _auc(pos, np.concatenate([s[k & ~a & ~la] for s, k, a, la in
                                                                    zip(scores, keep, mx, lookalike)]))
        if lead_steps:
            lead = [_before(_onsets({t: m[t] for t in rising if t in m}, k), lead_steps) & ~_any(m, k) for m, k in zip(masks, n)]
            out[x]["auc_vs_lead"] = _auc(pos, np.concatenate([s[k & ~a & b] for s, k, a, b in zip(scores, keep, mx, lead)]))
    for d in others:
        md = [m.get(d, np.zeros(k, bool)) for m, k in zip(masks, n)]
        pos = np.concatenate([s[q] for s, q in zip(scores, positives)])
        neg = np.concatenate([s[a] for s, a in zip(scores, md)])
        out[d] = {"auc": _auc(pos, neg)}
    return out


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC of positive scores ``pos`` against negative scores ``neg`` (NaN when either is empty)."""
    return auc(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]) if len(pos) and len(neg) else float("nan")


def _any(masks: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """{type: [T] bool} -> [T] bool: the steps of any event."""
    out = np.zeros(n, bool)
    for m in masks.values():
        out |= m[:n]
    return out


def _first_steps(mask: np.ndarray) -> np.ndarray:
    """[T] bool -> True on the first step of each run of True steps."""
    return mask & ~np.r_[False, mask[:-1]]


def _onsets(masks: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """{type: [T] bool} -> [T] bool: the first step of each event (of each run of one type's steps)."""
    out = np.zeros(n, bool)
    for m in masks.values():
        out |= _first_steps(m[:n])
    return out


def _before(mask: np.ndarray, k: int) -> np.ndarray:
    """[T] bool -> True on the ``k`` steps before each True step."""
    return _after(mask[::-1], k)[::-1]


def _after(mask: np.ndarray, k: int) -> np.ndarray:
    """[T] bool -> True on the ``k`` steps after each True step (and on nothing with k = 0)."""
    out = np.zeros_like(mask)
    for i in range(1, k + 1):
        out[i:] |= mask[:-i]
    return out
