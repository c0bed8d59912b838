"""Per-step features of synthetic streams, computed straight from the generator (no mp4 round trip).

Training and probing an embedding needs hundreds to tens of thousands of stream segments; writing,
decoding and encoding that many clips would take hours on a CPU. This module draws the same streams
as :mod:`mm_live.data.synthetic` (:func:`~mm_live.data.synthetic.plan_stream`: the same planted
events, palettes and audio for the same ``(seed, k)``, comments drawn the same way) and turns each
step into small features,
the way a feature-route dataset (KLive, QVHighlights) ships them:

* video ``[T, 68]``: two frames per step (at 1/4 and 3/4 of it) rendered at 32 x 16 pixels; the
  4 x 4-cell mean colour of the pair (48, the stream's palette and layout), the 4 x 4-cell mean
  absolute difference between them (16, motion: the fast highlight disc, the flash), and the log
  power of the step's audio in 4 frequency bands (4, the cheer over the tonal bed);
* text ``[T, 32]``: the comments posted inside the step as a hashed bag of messages, ``log1p`` counts.

Each item is ``(record, video, text, ctr labels)``, what :class:`~mm_live.streams.FeatureWindows`
takes; the record's ``extra`` carries the planted ``highlights`` and every ``events`` span so a probe
can ask what a segment contains (:func:`segment_truth`).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from mm_live.data.records import HighlightRecord
from mm_live.data.synthetic import SynthConfig, make_comments, plan_stream, render_audio, render_frames

WIDTH, HEIGHT, GRID = 32, 16, 4
AUDIO_RATE, AUDIO_BANDS = 8000, 4
TEXT_DIM = 32
VIDEO_DIM = GRID * GRID * 3 + GRID * GRID + AUDIO_BANDS
EVENT_KINDS = ("none", "highlight", "scene_cut", "noise_burst", "chatter_burst")

Item = tuple[HighlightRecord, np.ndarray, np.ndarray, np.ndarray]


def _cells(x: np.ndarray) -> np.ndarray:
    """[n, H, W, c] -> [n, GRID * GRID * c] cell means."""
    n, h, w, c = x.shape
    return x.reshape(n, GRID, h // GRID, GRID, w // GRID, c).mean((2, 4)).reshape(n, -1)


def stream_features(k: int, cfg: SynthConfig) -> Item:
    """Stream ``k`` of the generator ``cfg`` as per-step features (see the module docstring)."""
    plan = plan_stream(k, cfg)
    step = cfg.step_seconds
    t_steps = len(plan.ctr)
    times = (np.arange(t_steps)[:, None] + np.array([0.25, 0.75])) * step  # [T, 2]
    frames = render_frames(plan, times.ravel(), WIDTH, HEIGHT).astype(np.float32) / 255.0
    frames = frames.reshape(t_steps, 2, HEIGHT, WIDTH, 3)
    colour = _cells(frames.mean(1))
    motion = _cells(np.abs(frames[:, 1] - frames[:, 0]).mean(-1, keepdims=True))
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(0, k, 1)))
    audio = render_audio(plan, rng, AUDIO_RATE)
    per_step = int(round(step * AUDIO_RATE))
    audio = np.pad(audio, (0, max(0, t_steps * per_step - len(audio))))[: t_steps * per_step].reshape(t_steps, per_step)
    power = np.abs(np.fft.rfft(audio, axis=1)) ** 2
    bands = np.log(np.stack([b.mean(1) for b in np.array_split(power, AUDIO_BANDS, axis=1)], 1) + 1e-6) / 10.0
    video = np.concatenate([colour, motion * 10.0, bands], 1).astype(np.float32)
    text = np.zeros((t_steps, TEXT_DIM), np.float32)
    crng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(0, k, 2)))
    for c in make_comments(plan, crng, np.arange(100), cfg):
        t = min(int(c["t"] // step), t_steps - 1)
        text[t, zlib.crc32(c["text"].encode()) % TEXT_DIM] += 1.0
    text = np.log1p(text)
    split = "test" if cfg.test_every and (k + 1) % cfg.test_every == 0 else "train"
    rec = HighlightRecord(id=plan.stream_id, video_id=plan.stream_id, duration=plan.seconds, step_seconds=step,
                          labels=plan.ctr.astype(np.float32), streamer_id=None,
                          extra={"split": split, "highlights": [[e.start, e.end] for e in plan.highlights],
                                 "events": [[e.kind, e.start, e.end] for e in plan.events]})
    return rec, video, text, rec.labels


def synthetic_feature_items(streams: range | list[int], cfg: SynthConfig) -> list[Item]:
    """Features of the generator's streams ``streams`` (indices ``k``; each depends on ``(cfg.seed, k)`` only)."""
    return [stream_features(k, cfg) for k in streams]


def segment_truth(record: Any, first_step: int, n_steps: int) -> tuple[int, int]:
    """What steps ``[first_step, first_step + n_steps)`` of ``record`` contain: (highlight, kind).

    highlight: 1 when at least half of the span lies inside planted highlights; kind: index in
    :data:`EVENT_KINDS` of the planted event overlapping the span longest (0, "none", when none does).
    """
    a = first_step * record.step_seconds
    b = a + n_steps * record.step_seconds
    overlap = {kind: 0.0 for kind in EVENT_KINDS}
    for kind, s, e in record.extra["events"]:
        overlap[kind] += max(0.0, min(b, e) - max(a, s))
    kind = max(EVENT_KINDS[1:], key=lambda k: overlap[k])
    return int(overlap["highlight"] >= (b - a) / 2), EVENT_KINDS.index(kind) if overlap[kind] > 0 else 0


def segment_labels(items: list, spans: list[list[tuple[int, int]]]) -> dict[str, np.ndarray]:
    """Labels of every segment of ``items`` (``spans[i]``: (first step, steps) of item i's segments),
    in order: ``stream`` (item index), ``event`` and ``kind`` (:func:`segment_truth`) and ``both``
    (stream and event together)."""
    stream, event, kind = [], [], []
    for i, ((rec, *_), item_spans) in enumerate(zip(items, spans)):
        for first, n in item_spans:
            hl, kd = segment_truth(rec, first, n)
            stream.append(i), event.append(hl), kind.append(kd)
    stream, event = np.array(stream), np.array(event)
    return {"stream": stream, "event": event, "kind": np.array(kind), "both": stream * 2 + event}
