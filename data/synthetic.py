"""Synthetic live streams with planted highlights, for tests, demos and smoke training.

Every stream has highlight segments that show in all three modalities, plus distractors so no single
modality solves the task:

* **highlight** (3–6 s): a fast-moving bright disc and a pulsing brightness flash in the frames, a
  loud broadband "cheer" over the quiet tonal audio bed, and a burst of excited comments that starts
  ``lag`` seconds after the highlight starts (lag drawn from ``comment_lag``, default 1–5 s: viewers
  react late).
* **distractors**: ``scene_cut`` (the palette changes; ordinary audio, no comment burst),
  ``noise_burst`` (loud cheer-like audio only), ``chatter_burst`` (excited comments only).
* steady background chatter comments all along.

``difficulty="hard"`` (:meth:`SynthConfig.hard`, ``mm-live data synth --difficulty hard``; what the
ablation uses) removes the give-away: per 60 s, one event of each kind in :data:`HARD_TYPES` —
highlights seen + heard + commented (``av_chat``), heard off-screen + commented (``audio_chat``),
only commented (``chat_only``, an announcement the chat reacts to), and distractors with no CTR rise:
the same visual event nobody reacts to (``visual_only``), a roar over a dull scene (``audio_only``)
and a flood of unrelated promotion as dense as a reaction (``spam_burst``). Reactions lag their
event by 1–8 s; CTR ramps (1–2 s) and decays (τ 1.5–3 s) vary per event; comment text comes from
:mod:`mm_live.data.chat` (ordinary chat, hype reactions, spam; mostly distinct sentences).
``truth/<id>.json`` then also lists ``events``: type, modalities, ctr_rise, start/end, comment_burst.

Per-step labels ``ctr`` (step ``t`` covers ``[t·step, (t+1)·step)``, ``ceil(seconds / step)`` steps)
depend only on the planted highlights: a base rate, a linear 1 s ramp from each highlight's start to
its peak, a plateau to its end, an exponential decay (τ = 2 s) after it, plus N(0, 0.02) noise,
clipped to [0, 1].

Layout written by :func:`synthesize` (paths in the manifest are relative to it)::

    OUT/manifest.jsonl                 one stream per line: stream_id, live_id, clip, comments,
                                       streamer_id, step_seconds, labels {"ctr": [...]}, split,
                                       highlights [[start, end], ...], truth
    OUT/streams/<id>.mp4               H.264 (libx264, yuv420p) + AAC mono (mm_live.video_writer)
    OUT/streams/<id>.comments.jsonl    {"t", "user_id", "text"} per line, sorted by t
    OUT/truth/<id>.json                planted events: highlights (start, end, comment_burst
                                       {start, end, lag, n_comments}) and distractors (kind, start, end)
    OUT/kuailive/{user,streamer,room,click,comment,gift,like}.csv, title_embeddings.npy

The ``kuailive/`` folder follows the KuaiLive schema: ids are integers, side information is given as
range strings (``"24-30"``, ``"5000+"``) and registration dates as ``YYYY-MM-DD`` like the released
data; interaction timestamps and room start/end are unix **milliseconds**; ``watch_live_time`` is in
milliseconds; ``gift_price`` is an integer price. One synthetic stream is one room (``live_id``);
``streams_per_streamer`` consecutive streams share a streamer. Clicks, likes and gifts are drawn per
step at rates that rise with the step's ctr label, so they concentrate in highlights; ``comment.csv``
holds exactly the comments of the streams' comment files. ``title_embeddings.npy`` is float32
``[n_rooms, 128]``: row ``i`` belongs to the room on data line ``i`` of ``room.csv`` (rows are
unit-norm, clustered by the room's content category).

Determinism: each stream draws from its own ``numpy`` generator seeded by ``(seed, stream index)``,
so stream ``k`` is identical whatever the number of streams; the mp4 is encoded single-threaded with
fixed options and the ``bitexact`` flags, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from mm_live.data.chat import ChatText, distinct_share
from mm_live.errors import ConfigError
from mm_live.fileio import atomic_dir
from mm_live.video_writer import write_video

# Fixed origin of every KuaiLive timestamp: 2025-05-01 00:00:00 UTC, in milliseconds.
BASE_EPOCH_MS = 1_746_057_600_000
ROOM_SPACING_MS = 3_600_000  # room k starts k hours after the origin
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

EXCITED = (
    "wow!!", "what a play", "666", "6666666", "🔥🔥🔥", "OMG", "insane!!", "did you see that?!",
    "let's gooo", "😱😱", "clip it!", "no way", "GG", "amazing 👏", "WOW", "unreal",
)
CHATTER = (
    "hi everyone", "hello from Chengdu", "what game is this?", "good evening", "first time here",
    "nice stream", "how long have you been live?", "lol", "ok", "haha", "is the mic on?", "👋",
    "greetings", "any tips?", "what's the song?", "back again", "love the setup", "hmm",
)

_AGES = ("12-17", "18-23", "24-30", "31-40", "41-49", "50+")
_BRANDS = ("APPLE", "HUAWEI", "XIAOMI", "OPPO", "VIVO", "HONOR")
_PRICES = ("0-1000", "1000-2000", "2000-3000", "3000-5000", "5000+")
_COUNTS = ("0-10", "10-100", "100-1000", "1000-10000", "10000-100000")
_COUNTRIES = ("China", "China", "China", "Malaysia", "Singapore")
_TAGS = ("Relationship", "Game", "Talent", "Outdoor", "Sales")
_CATEGORIES = ("chat", "game", "music", "outdoor", "shopping")
_GIFT_PRICES = np.array([1, 2, 5, 10, 20, 52, 99, 188, 520])
_GIFT_P = np.array([0.30, 0.20, 0.15, 0.12, 0.08, 0.06, 0.05, 0.03, 0.01])

CSV_COLUMNS = {
    "user": ("user_id", "age", "gender", "country", "device_brand", "device_price", "reg_timestamp", "fans_num", "follow_num"),
    "streamer": ("streamer_id", "gender", "age", "country", "device_brand", "device_price", "live_operation_tag", "fans_user_num", "reg_timestamp"),
    "room": ("live_id", "streamer_id", "live_type", "live_content_category", "start_timestamp", "end_timestamp"),
    "click": ("user_id", "live_id", "streamer_id", "timestamp", "watch_live_time"),
    "comment": ("user_id", "live_id", "streamer_id", "timestamp"),
    "like": ("user_id", "live_id", "streamer_id", "timestamp"),
    "gift": ("user_id", "live_id", "streamer_id", "timestamp", "gift_price"),
}


# ----------------------------------------------------------------------------- config


@dataclass
class SynthConfig:
    """Knobs of the generator. Counts given "per 30 s" are drawn uniformly in [lo, hi] and scaled."""

    streams: int = 4
    seconds: float = 30.0
    seed: int = 0
    width: int = 320
    height: int = 180
    fps: int = 10
    sample_rate: int = 16000
    step_seconds: float = 1.0
    highlights_per_30s: tuple[int, int] = (2, 3)
    highlight_seconds: tuple[float, float] = (3.0, 6.0)
    comment_lag: tuple[float, float] = (1.0, 5.0)  # comment burst start minus highlight start
    burst_seconds: tuple[float, float] = (1.5, 3.0)  # length of a comment burst
    burst_rate: float = 6.0  # excited comments per second inside a burst
    chatter_rate: float = 0.8  # background comments per second
    scene_cuts_per_30s: tuple[int, int] = (1, 2)  # visual-only distractors
    noise_bursts_per_30s: tuple[int, int] = (1, 1)  # audio-only distractors
    chatter_bursts_per_30s: tuple[int, int] = (1, 2)  # comment-only distractors
    n_users: int = 200
    viewers_per_stream: int = 60
    streams_per_streamer: int = 2
    test_every: int = 4  # stream k goes to split "test" when (k + 1) % test_every == 0; 0: no test split
    embedding_dim: int = 128
    # "easy": every highlight shows in all three modalities (above). "hard": each event carries its cue
    # in a subset of modalities and distractors mimic one (see HARD_TYPES); comment text from data/chat.py.
    difficulty: str = "easy"
    chat_source: str | None = None  # hard only: data.chat.ChatText source (None: MM_LIVE_REAL_DATA, else compositional)

    @classmethod
    def hard(cls, **overrides: object) -> "SynthConfig":
        """The hard generator's settings (60 s streams, comment lag 1-8 s, busier chat), then ``overrides``."""
        base: dict = dict(difficulty="hard", seconds=60.0, comment_lag=(1.0, 8.0), burst_seconds=(2.0, 3.5),
                          burst_rate=5.0, chatter_rate=1.2)
        return cls(**{**base, **overrides})

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field and its allowed values."""
        _check("streams", "an integer >= 1", lambda: _int(self.streams) and self.streams >= 1)
        _check("seconds", "a number from 5 to 3600", lambda: 5.0 <= self.seconds <= 3600.0)
        _check("seed", "an integer >= 0", lambda: _int(self.seed) and self.seed >= 0)
        for name in ("width", "height"):
            v = getattr(self, name)
            _check(name, "an even integer from 32 to 4096", lambda: _int(v) and 32 <= v <= 4096 and v % 2 == 0)
        _check("fps", "an integer from 1 to 60", lambda: _int(self.fps) and 1 <= self.fps <= 60)
        _check("sample_rate", "one of " + ", ".join(map(str, _AAC_RATES)), lambda: self.sample_rate in _AAC_RATES)
        _check("step_seconds", f"a number from 0.1 to seconds ({self.seconds})", lambda: 0.1 <= self.step_seconds <= self.seconds)
        for name in ("highlights_per_30s", "scene_cuts_per_30s", "noise_bursts_per_30s", "chatter_bursts_per_30s"):
            lo, hi = getattr(self, name)
            _check(name, "a pair of integers 0 <= lo <= hi <= 20", lambda: _int(lo) and _int(hi) and 0 <= lo <= hi <= 20)
        for name, lo_min, hi_max in (("highlight_seconds", 1.0, 60.0), ("comment_lag", 0.0, 30.0), ("burst_seconds", 0.5, 30.0)):
            lo, hi = getattr(self, name)
            _check(name, f"a pair {lo_min:g} <= lo <= hi <= {hi_max:g}", lambda: lo_min <= lo <= hi <= hi_max)
        _check("highlight_seconds", f"a pair whose lo is at most seconds - 1 ({self.seconds - 1:g})",
               lambda: self.highlight_seconds[0] <= self.seconds - 1.0)
        _check("comment_lag", f"a pair whose lo is at most seconds - 2 ({self.seconds - 2:g})",
               lambda: self.comment_lag[0] <= self.seconds - 2.0)
        _check("burst_rate", "a number in (0, 100]", lambda: 0.0 < self.burst_rate <= 100.0)
        _check("chatter_rate", "a number from 0 to 100", lambda: 0.0 <= self.chatter_rate <= 100.0)
        for name in ("n_users", "viewers_per_stream", "streams_per_streamer", "embedding_dim"):
            v = getattr(self, name)
            _check(name, "an integer >= 1", lambda: _int(v) and v >= 1)
        _check("test_every", "an integer >= 0", lambda: _int(self.test_every) and self.test_every >= 0)
        _check("difficulty", "'easy' or 'hard'", lambda: self.difficulty in ("easy", "hard"))
        _check("seconds", "at least 20 for difficulty 'hard' (events and their lagging reactions need room)",
               lambda: self.difficulty == "easy" or self.seconds >= 20.0)


def _int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check(name: str, allowed: str, ok: Callable[[], bool]) -> None:
    try:
        good = bool(ok())
    except (TypeError, ValueError):  # e.g. a string where a number belongs
        good = False
    if not good:
        raise ConfigError(f"synthetic data: {name} must be {allowed}")


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class EventType:
    """What a hard-generator event shows: the modalities carrying its cue, whether the CTR rises, and
    the kind of comment burst (``hype`` reaction or unrelated ``spam``; None: no burst)."""

    modalities: tuple[str, ...]
    rises: bool
    burst: str | None


# Hard generator: three highlights, each with its cue in a subset of modalities, and three distractors
# that mimic one modality with no CTR rise. "visual" = the bright bouncing disc + brightness flash,
# "audio" = the loud broadband roar, "comments" = a burst of chat lines (data/chat.py kinds).
HARD_TYPES: dict[str, EventType] = {
    "av_chat": EventType(("visual", "audio", "comments"), True, "hype"),  # seen, heard, chat reacts
    "audio_chat": EventType(("audio", "comments"), True, "hype"),  # heard off-screen, chat reacts
    "chat_only": EventType(("comments",), True, "hype"),  # an announcement the chat reacts to
    "visual_only": EventType(("visual",), False, None),  # the same visual event, nobody reacts
    "audio_only": EventType(("audio",), False, None),  # a roar over a dull scene
    "spam_burst": EventType(("comments",), False, "spam"),  # a flood of unrelated promotion
}
RISING = frozenset({"highlight"} | {k for k, v in HARD_TYPES.items() if v.rises})
_VISUAL = {"easy": ("highlight",), "hard": tuple(k for k, v in HARD_TYPES.items() if "visual" in v.modalities)}
_LOUD = {"easy": ("highlight", "noise_burst"), "hard": tuple(k for k, v in HARD_TYPES.items() if "audio" in v.modalities)}


@dataclass
class Event:
    kind: str  # easy: "highlight", "scene_cut", "noise_burst", "chatter_burst"; hard: a HARD_TYPES key
    start: float
    end: float
    burst: tuple[float, float] | None = None  # comment burst window (highlight, chatter_burst)
    n_comments: int = 0

    @property
    def lag(self) -> float:
        return self.burst[0] - self.start if self.burst else 0.0


@dataclass
class StreamPlan:
    """Everything planted in one stream, drawn from its own generator."""

    index: int
    stream_id: str
    live_id: int
    streamer_id: int
    seconds: float
    events: list[Event]
    ctr: np.ndarray  # [T] float64 in [0, 1]
    base_ctr: float
    palettes: np.ndarray  # [2, 2, 3]: (normal, scene-cut) x (colour 0, colour 1) x RGB in [0, 1]
    phase: np.ndarray  # [4] phases of the moving objects
    difficulty: str = "easy"

    @property
    def highlights(self) -> list[Event]:
        """The events the CTR rises over (easy: "highlight"; hard: the HARD_TYPES that rise)."""
        return [e for e in self.events if e.kind in RISING]

    def active(self, kind: str | tuple[str, ...], t: np.ndarray) -> np.ndarray:
        """[len(t)] bool: inside an event of ``kind`` (or any of several kinds) at times ``t`` (seconds)."""
        kinds = (kind,) if isinstance(kind, str) else kind
        on = np.zeros(t.shape, dtype=bool)
        for e in self.events:
            if e.kind in kinds:
                on |= (t >= e.start) & (t < e.end)
        return on


def _rng(seed: int, *key: int) -> np.random.Generator:
    # spawn_key derivation: stream k's generator depends on (seed, k) only, not on the stream count.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _count(rng: np.random.Generator, lohi: tuple[int, int], seconds: float) -> int:
    return int(round(rng.integers(lohi[0], lohi[1] + 1) * seconds / 30.0))


class _Timeline:
    """Reserved intervals per channel (visual, audio, comments); events never overlap within one."""

    def __init__(self, margin: float = 1.0):
        self.margin = margin
        self.busy: dict[str, list[tuple[float, float]]] = {"visual": [], "audio": [], "comments": []}

    def free(self, spans: dict[str, tuple[float, float]]) -> bool:
        m = self.margin
        return all(not (a < e + m and s < b + m) for ch, (a, b) in spans.items() for s, e in self.busy[ch])

    def reserve(self, spans: dict[str, tuple[float, float]]) -> None:
        for ch, span in spans.items():
            self.busy[ch].append(span)


def _place_events(rng: np.random.Generator, cfg: SynthConfig) -> list[Event]:
    T = float(cfg.seconds)
    tl, events = _Timeline(), []
    n_hl = max(1, _count(rng, cfg.highlights_per_30s, T))
    for _ in range(n_hl):
        for _attempt in range(200):
            dur = rng.uniform(cfg.highlight_seconds[0], min(cfg.highlight_seconds[1], T - 1.0))
            s = rng.uniform(0.5, T - dur - 0.5)
            t0 = s + rng.uniform(*cfg.comment_lag)
            b = min(rng.uniform(*cfg.burst_seconds), T - 0.25 - t0)
            if b < min(1.0, cfg.burst_seconds[0]):
                continue
            # The comment channel is reserved from the highlight start to the burst end, so no other
            # burst falls between a highlight and its (lagging) reaction.
            spans = {"visual": (s, s + dur), "audio": (s, s + dur), "comments": (s, t0 + b)}
            if tl.free(spans):
                tl.reserve(spans)
                events.append(Event("highlight", s, s + dur, burst=(t0, t0 + b)))
                break
    if not events:
        raise ConfigError(
            f"synthetic data: no highlight fits in {T:g} s with comment_lag {cfg.comment_lag} and "
            f"burst_seconds {cfg.burst_seconds}; use longer seconds or shorter lags"
        )
    distractors = (
        ("scene_cut", "visual", cfg.scene_cuts_per_30s, (1.5, 3.5)),
        ("noise_burst", "audio", cfg.noise_bursts_per_30s, (1.0, 2.5)),
        ("chatter_burst", "comments", cfg.chatter_bursts_per_30s, cfg.burst_seconds),
    )
    for kind, channel, lohi, (dlo, dhi) in distractors:
        for _ in range(_count(rng, lohi, T)):
            for _attempt in range(200):
                dur = min(rng.uniform(dlo, dhi), T - 1.0)
                s = rng.uniform(0.5, T - dur - 0.25)
                if tl.free({channel: (s, s + dur)}):
                    tl.reserve({channel: (s, s + dur)})
                    events.append(Event(kind, s, s + dur, burst=(s, s + dur) if kind == "chatter_burst" else None))
                    break
    events.sort(key=lambda e: (e.start, e.kind))
    return events


def _place_events_hard(rng: np.random.Generator, cfg: SynthConfig, k: int) -> list[Event]:
    """Hard generator: per 60 s one event of each HARD_TYPES kind (at least one highlight and one
    distractor; the kinds rotate with the stream index ``k`` when fewer fit). Events never overlap in
    time, and each one's span reaches to the end of its comment burst, so no other event falls between
    a highlight and its (lagging) reaction."""
    T = float(cfg.seconds)
    n_each = max(1, int(round(3 * T / 60.0)))
    rising = [name for name, v in HARD_TYPES.items() if v.rises]
    others = [name for name, v in HARD_TYPES.items() if not v.rises]
    kinds = [rising[(k + i) % len(rising)] for i in range(n_each)] + [others[(k + i) % len(others)] for i in range(n_each)]
    tl, events = _Timeline(), []
    for kind in kinds:  # highlights first: they need the most room
        typ = HARD_TYPES[kind]
        for _attempt in range(200):
            burst = None
            if typ.burst == "spam":  # a spam flood is as long and as dense as a reaction burst
                dur = rng.uniform(*cfg.burst_seconds)
                s = rng.uniform(0.5, T - dur - 0.5)
                burst = (s, s + dur)
            else:
                dur = rng.uniform(cfg.highlight_seconds[0], min(cfg.highlight_seconds[1], T / 4))
                s = rng.uniform(0.5, T - dur - 0.5)
                if typ.burst == "hype":
                    t0 = s + rng.uniform(*cfg.comment_lag)
                    burst = (t0, t0 + rng.uniform(*cfg.burst_seconds))
                    if burst[1] > T - 0.25:
                        continue
            end = max(s + dur, burst[1] if burst else 0.0)
            spans = {ch: (s, end) for ch in ("visual", "audio", "comments")}
            if tl.free(spans):
                tl.reserve(spans)
                events.append(Event(kind, s, s + dur, burst=burst))
                break
    if not any(e.kind in RISING for e in events):
        raise ConfigError(f"synthetic data: no hard highlight fits in {T:g} s with comment_lag {cfg.comment_lag}; "
                          "use longer seconds or shorter lags")
    events.sort(key=lambda e: (e.start, e.kind))
    return events


def n_steps(seconds: float, step_seconds: float) -> int:
    """Number of labelled steps: ``ceil(seconds / step_seconds)`` (the last one may be partial)."""
    return int(math.ceil(seconds / step_seconds - 1e-9))


def _ctr_labels(rng: np.random.Generator, events: list[Event], cfg: SynthConfig) -> tuple[np.ndarray, float]:
    """[T] ctr per step from the planted highlights only (see the module docstring). Hard generator:
    the ramp (1-2 s) and the decay's τ (1.5-3 s) are drawn per event, so borders vary."""
    centres = (np.arange(n_steps(cfg.seconds, cfg.step_seconds)) + 0.5) * cfg.step_seconds
    base = rng.uniform(0.03, 0.10)
    bump = np.zeros_like(centres)
    for e in events:
        if e.kind not in RISING:
            continue
        peak = rng.uniform(0.45, 0.85)
        ramp_s, tau = (rng.uniform(1.0, 2.0), rng.uniform(1.5, 3.0)) if cfg.difficulty == "hard" else (1.0, 2.0)
        ramp = np.clip((centres - e.start) / ramp_s, 0.0, 1.0)
        decay = np.where(centres > e.end, np.exp(-(centres - e.end) / tau), 1.0)
        bump = np.maximum(bump, peak * ramp * decay * (centres >= e.start))
    ctr = np.clip(base + bump + rng.normal(0.0, 0.02, size=centres.shape), 0.0, 1.0)
    return ctr, float(base)


def plan_stream(k: int, cfg: SynthConfig) -> StreamPlan:
    """Draw the planted events, labels and look of stream ``k`` (depends on ``cfg.seed`` and ``k`` only)."""
    rng = _rng(cfg.seed, 0, k)
    hard = cfg.difficulty == "hard"
    events = _place_events_hard(rng, cfg, k) if hard else _place_events(rng, cfg)
    for e in events:
        if e.burst is not None:
            e.n_comments = 3 + int(rng.poisson(cfg.burst_rate * (e.burst[1] - e.burst[0])))
    ctr, base = _ctr_labels(rng, events, cfg)
    normal = rng.uniform(0.15, 0.55, size=(2, 3))
    while True:  # scene-cut palette: other hues at the same mean brightness, clearly another scene
        cut = rng.uniform(0.15, 0.55, size=(2, 3))
        cut = np.clip(cut - cut.mean(axis=1, keepdims=True) + normal.mean(axis=1, keepdims=True), 0.05, 0.65)
        if np.abs(cut.mean(axis=0) - normal.mean(axis=0)).max() > 0.15:
            break
    return StreamPlan(
        index=k, stream_id=f"s{k:04d}", live_id=700_000 + k, streamer_id=50_000 + k // cfg.streams_per_streamer,
        seconds=float(cfg.seconds), events=events, ctr=ctr, base_ctr=base,
        palettes=np.stack([normal, cut]), phase=rng.uniform(0, 2 * np.pi, size=4), difficulty=cfg.difficulty,
    )


# ----------------------------------------------------------------------------- media


def render_frames(plan: StreamPlan, t: np.ndarray, width: int, height: int) -> np.ndarray:
    """RGB frames at times ``t`` [n] (seconds) -> uint8 [n, height, width, 3].

    The background is separable (a vertical ramp plus a drifting horizontal wave), so it is built
    with one broadcast add over all frames; the box and the disc are painted into their bounding
    boxes only.
    """
    n = len(t)
    ph = [float(p) for p in plan.phase]
    # float64 on purpose: a 1-ulp difference in a float32 sin (SIMD code paths can differ between
    # runs) flips pixels sitting on a rounding boundary and breaks byte-identical output; in float64
    # that window is ~1e-14 wide and is not hit in practice.
    tt = t.astype(np.float64)[:, None]  # [n, 1]
    yy = np.arange(height, dtype=np.float64) / height  # [H]
    xx = np.arange(width, dtype=np.float64) / width  # [W]
    # Background: c0 + (c1 - c0) * g with g = 0.5 y + 0.25 + 0.25 sin(2π(x + 0.05 t)); the
    # scene-cut palette inside scene cuts.
    pal = plan.palettes[plan.active("scene_cut", t).astype(int)].astype(np.float64)  # [n, 2, 3]
    c0, d = pal[:, 0], pal[:, 1] - pal[:, 0]  # [n, 3]
    wave = 0.25 + 0.25 * np.sin(2 * np.pi * (xx[None, :] + 0.05 * tt))  # [n, W]
    rows = c0[:, None, :] + d[:, None, :] * (0.5 * yy)[None, :, None]  # [n, H, 3]
    cols = d[:, None, :] * wave[..., None]  # [n, W, 3]
    # Broadcasting [n,H,1,3] + [n,1,W,3] runs numpy's inner loop over 3 channels: tiling the rows
    # over a flat [n, H, W*3] and adding the columns is twice as fast.
    img = np.tile(rows, (1, 1, width))
    img += cols.reshape(n, 1, width * 3)
    img = img.reshape(n, height, width, 3)
    # The "streamer": a dark box swaying slowly (ordinary motion, always on).
    y0, y1 = int(0.43 * height), int(0.93 * height)
    bx = 0.3 + 0.03 * np.sin(2 * np.pi * 0.2 * t + ph[0])  # [n]
    for i in range(n):
        img[i, y0:y1, int((bx[i] - 0.12) * width) : int((bx[i] + 0.12) * width)] = (0.35, 0.25, 0.2)
    # Highlight: a bright disc bouncing fast across the frame + a pulsing brightness flash.
    hl = plan.active(_VISUAL[plan.difficulty], t)  # [n]
    cx = (0.5 + 0.4 * np.sin(2 * np.pi * 1.3 * t + ph[1])) * width
    cy = (0.5 + 0.35 * np.sin(2 * np.pi * 0.9 * t + ph[2])) * height
    gain = 1.0 + 0.35 + 0.25 * np.sin(2 * np.pi * 2.0 * t + ph[3])  # [n]
    r = 0.15 * height
    for i in np.flatnonzero(hl):
        ys, xs = slice(max(0, int(cy[i] - r)), int(cy[i] + r) + 1), slice(max(0, int(cx[i] - r)), int(cx[i] + r) + 1)
        py, px = np.arange(height)[ys, None], np.arange(width)[None, xs]
        disc = (px - cx[i]) ** 2 + (py - cy[i]) ** 2 < r * r
        img[i, ys, xs][disc] = (1.0, 0.95, 0.6)
        img[i] *= gain[i]
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    img += 0.5
    return img.astype(np.uint8)


def render_audio(plan: StreamPlan, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Mono float32 [n_samples] in [-1, 1]: quiet tonal bed, loud noise "cheers" in highlights and noise bursts."""
    n = int(round(plan.seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    bed = 0.04 * np.sin(2 * np.pi * 220.0 * t) + 0.025 * np.sin(2 * np.pi * 277.2 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t))
    noise = rng.standard_normal(n)
    loud = np.zeros(n)
    for e in plan.events:
        if e.kind in _LOUD[plan.difficulty]:
            gate = np.clip((t - e.start) / 0.05, 0, 1) * np.clip((e.end - t) / 0.05, 0, 1)  # 50 ms fades
            loud = np.maximum(loud, gate * (0.7 + 0.3 * np.abs(np.sin(2 * np.pi * 3.0 * t + e.start))))
    audio = bed + noise * (0.004 + 0.3 * loud)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_clip(path: Path, plan: StreamPlan, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """Encode the stream's frames (H.264, yuv420p, a key frame at least every 2 s) and audio (AAC mono,
    32 kb/s) into ``path``; frames are rendered one second at a time."""
    n_frames = int(round(cfg.seconds * cfg.fps))
    audio = render_audio(plan, rng, cfg.sample_rate)
    seconds = (np.arange(a, min(a + cfg.fps, n_frames)) for a in range(0, n_frames, cfg.fps))
    frames = (rgb for idx in seconds for rgb in render_frames(plan, idx / cfg.fps, cfg.width, cfg.height))
    write_video(path, frames, fps=cfg.fps, audio=audio, sample_rate=cfg.sample_rate, gop=2 * cfg.fps,
                audio_bit_rate=32_000, bitexact=True, threads=1)


# ----------------------------------------------------------------------------- comments


def make_comments(plan: StreamPlan, rng: np.random.Generator, viewers: np.ndarray, cfg: SynthConfig) -> list[dict]:
    """Background chatter (Poisson, ``chatter_rate``/s) plus excited bursts; sorted by t."""
    rows: list[tuple[float, int, str]] = []
    n_bg = int(rng.poisson(cfg.chatter_rate * plan.seconds))
    for t in rng.uniform(0.0, plan.seconds, size=n_bg):
        rows.append((float(t), int(rng.choice(viewers)), CHATTER[rng.integers(len(CHATTER))]))
    for e in plan.events:
        if e.burst is None:
            continue
        a, b = e.burst
        # First reaction exactly at the burst start, the rest spread over the burst window.
        times = np.concatenate([[a], rng.uniform(a, b, size=e.n_comments - 1)])
        for t in times:
            rows.append((float(t), int(rng.choice(viewers)), EXCITED[rng.integers(len(EXCITED))]))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [{"t": round(t, 3), "user_id": u, "text": s} for t, u, s in rows]


def make_comments_hard(plan: StreamPlan, rng: np.random.Generator, viewers: np.ndarray, cfg: SynthConfig,
                       chat: ChatText) -> list[dict]:
    """Hard generator: ordinary chat all along (Poisson, ``chatter_rate``/s) plus each event's burst of
    ``hype`` or ``spam`` lines (:class:`~mm_live.data.chat.ChatText`); sorted by t."""
    n_bg = int(rng.poisson(cfg.chatter_rate * plan.seconds))
    times = [rng.uniform(0.0, plan.seconds, size=n_bg)]
    kinds = ["chat"] * n_bg
    for e in plan.events:
        if e.burst is not None:
            a, b = e.burst
            times.append(np.concatenate([[a], rng.uniform(a, b, size=e.n_comments - 1)]))
            kinds += [HARD_TYPES[e.kind].burst] * e.n_comments
    t_all = np.concatenate(times)
    users = rng.choice(viewers, size=len(t_all))
    rows = [(float(t), int(u), chat.line(kind)) for t, u, kind in zip(t_all, users, kinds)]
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [{"t": round(t, 3), "user_id": u, "text": s} for t, u, s in rows]


# ----------------------------------------------------------------------------- KuaiLive tables


def _date(rng: np.random.Generator, lo_year: int, hi_year: int) -> str:
    return f"{rng.integers(lo_year, hi_year + 1)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"


def user_rows(cfg: SynthConfig) -> list[tuple]:
    rng = _rng(cfg.seed, 1)
    return [
        (10_000 + i, rng.choice(_AGES), rng.choice(("M", "F")), rng.choice(_COUNTRIES), rng.choice(_BRANDS),
         rng.choice(_PRICES), _date(rng, 2014, 2024), rng.choice(_COUNTS[:4]), rng.choice(_COUNTS[:4]))
        for i in range(cfg.n_users)
    ]


def streamer_row(streamer_id: int, cfg: SynthConfig) -> tuple:
    rng = _rng(cfg.seed, 2, streamer_id)
    return (streamer_id, rng.choice(("M", "F")), rng.choice(_AGES[1:]), rng.choice(_COUNTRIES), rng.choice(_BRANDS),
            rng.choice(_PRICES), rng.choice(_TAGS), rng.choice(_COUNTS), _date(rng, 2014, 2024))


def interactions(plan: StreamPlan, rng: np.random.Generator, viewers: np.ndarray, cfg: SynthConfig) -> dict[str, list[tuple]]:
    """Clicks, likes, gifts for one room: per-step Poisson counts whose rates rise with the ctr label."""
    start_ms = BASE_EPOCH_MS + plan.index * ROOM_SPACING_MS
    excite = np.clip((plan.ctr - plan.base_ctr) / 0.85, 0.0, 1.0)  # [T] ~0 at baseline, ~1 at a peak
    step_ms = cfg.step_seconds * 1000.0
    dur_ms = plan.seconds * 1000.0
    out: dict[str, list[tuple]] = {"click": [], "like": [], "gift": []}
    rates = {"click": 1.0 + 6.0 * excite, "like": 0.5 + 4.0 * excite, "gift": 0.03 + 0.8 * excite}
    for kind, rate in rates.items():
        counts = rng.poisson(rate * cfg.step_seconds)
        for t, c in enumerate(counts):
            for _ in range(int(c)):
                ms = int(min(dur_ms - 1, (t + rng.uniform()) * step_ms))
                row = (int(rng.choice(viewers)), plan.live_id, plan.streamer_id, start_ms + ms)
                if kind == "click":
                    row += (1000 + int(rng.exponential(30_000.0 * (1.0 + excite[t]))),)
                elif kind == "gift":
                    row += (int(rng.choice(_GIFT_PRICES, p=_GIFT_P)),)
                out[kind].append(row)
        out[kind].sort(key=lambda r: (r[3], r[0]))
    return out


def write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    """Write ``rows`` under ``header`` as CSV, comma separated with LF line ends (the KuaiLive tables)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


# ----------------------------------------------------------------------------- driver


@dataclass
class SynthSummary:
    """What :func:`synthesize` wrote."""

    out_dir: Path
    manifest: Path
    streams: list[str]
    seconds: float
    n_highlights: int = 0
    n_distractors: int = 0
    n_comments: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # KuaiLive rows per table
    difficulty: str = "easy"
    chat_text: str | None = None  # hard: where the comment sentences came from
    distinct_share: list[float] = field(default_factory=list)  # hard: per stream, distinct comment texts / comments

    def describe(self) -> str:
        c = self.counts
        lines = [
            f"wrote {len(self.streams)} synthetic streams ({self.difficulty}) of {self.seconds:g} s to {self.out_dir}",
            f"  manifest: {self.manifest}",
            f"  planted: {self.n_highlights} highlights, {self.n_distractors} distractors, {self.n_comments} comments",
            f"  kuailive/: {c.get('user', 0)} users, {c.get('streamer', 0)} streamers, {c.get('room', 0)} rooms, "
            f"{c.get('click', 0)} clicks, {c.get('comment', 0)} comments, {c.get('like', 0)} likes, {c.get('gift', 0)} gifts",
        ]
        if self.distinct_share:
            lines.append(f"  comment text: {self.chat_text}; distinct per stream {np.mean(self.distinct_share):.0%} "
                         f"(min {min(self.distinct_share):.0%})")
        return "\n".join(lines)


def _truth(plan: StreamPlan, cfg: SynthConfig) -> dict:
    def r(x: float) -> float:
        return round(float(x), 3)

    highlights = [
        {"start": r(e.start), "end": r(e.end),
         "comment_burst": {"start": r(e.burst[0]), "end": r(e.burst[1]), "lag": r(e.lag), "n_comments": e.n_comments}}
        for e in plan.highlights
    ]
    distractors = [
        {"kind": e.kind, "start": r(e.start), "end": r(e.end), **({"n_comments": e.n_comments} if e.burst else {})}
        for e in plan.events if e.kind not in RISING
    ]
    out = {"stream_id": plan.stream_id, "live_id": plan.live_id, "streamer_id": plan.streamer_id,
           "seconds": plan.seconds, "fps": cfg.fps, "sample_rate": cfg.sample_rate, "step_seconds": cfg.step_seconds,
           "highlights": highlights, "distractors": distractors}
    if plan.difficulty == "hard":
        out["difficulty"] = "hard"
        out["events"] = [
            {"type": e.kind, "modalities": list(HARD_TYPES[e.kind].modalities), "ctr_rise": HARD_TYPES[e.kind].rises,
             "start": r(e.start), "end": r(e.end),
             "comment_burst": None if e.burst is None else {
                 "start": r(e.burst[0]), "end": r(e.burst[1]), "lag": r(e.lag), "n_comments": e.n_comments,
                 "text": HARD_TYPES[e.kind].burst}}
            for e in plan.events
        ]
    return out


def _check_out_dir(out_dir: Path) -> None:
    # atomic_dir replaces the whole directory: never swap away a folder we did not write.
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "manifest.jsonl").is_file())):
        raise ConfigError(f"synthetic data: --out {out_dir} exists and is not a synthetic dataset; give a new or empty directory")


def synthesize(out_dir: str | Path, cfg: SynthConfig) -> SynthSummary:
    """Write ``cfg.streams`` synthetic streams (mp4, comments, truth, labels, KuaiLive tables) to ``out_dir``.

    The tree is built in a temporary sibling directory and swapped in at the end; an existing
    ``out_dir`` is replaced only when it is empty or a previous synthetic dataset.
    """
    cfg.validate()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    summary = SynthSummary(out_dir=out_dir, manifest=out_dir / "manifest.jsonl", streams=[], seconds=float(cfg.seconds),
                           difficulty=cfg.difficulty)
    users = user_rows(cfg)
    user_ids = np.array([u[0] for u in users])
    tables: dict[str, list[tuple]] = {name: [] for name in CSV_COLUMNS}
    tables["user"] = users
    cat_rng = _rng(cfg.seed, 3)
    centroids = cat_rng.standard_normal((len(_CATEGORIES), cfg.embedding_dim))
    embeddings = []
    with atomic_dir(out_dir) as tmp:
        for sub in ("streams", "truth", "kuailive"):
            (tmp / sub).mkdir()
        manifest_lines = []
        for k in tqdm(range(cfg.streams), desc="synth streams", unit="stream"):
            plan = plan_stream(k, cfg)
            media_rng, comment_rng, inter_rng = (_rng(cfg.seed, 0, k, j) for j in (1, 2, 3))
            viewers = np.sort(comment_rng.choice(user_ids, size=min(cfg.viewers_per_stream, len(user_ids)), replace=False))
            sid = plan.stream_id
            write_clip(tmp / "streams" / f"{sid}.mp4", plan, cfg, media_rng)
            if cfg.difficulty == "hard":
                chat = ChatText(int(comment_rng.integers(2**62)), source=cfg.chat_source)
                comments = make_comments_hard(plan, comment_rng, viewers, cfg, chat)
                summary.chat_text = chat.source_text()
                summary.distinct_share.append(distinct_share([c["text"] for c in comments]))
            else:
                comments = make_comments(plan, comment_rng, viewers, cfg)
            with open(tmp / "streams" / f"{sid}.comments.jsonl", "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(c, ensure_ascii=False) + "\n" for c in comments)
            (tmp / "truth" / f"{sid}.json").write_text(json.dumps(_truth(plan, cfg), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            split = "test" if cfg.test_every and (k + 1) % cfg.test_every == 0 else "train"
            manifest_lines.append(json.dumps({
                "stream_id": sid, "live_id": plan.live_id, "clip": f"streams/{sid}.mp4",
                "comments": f"streams/{sid}.comments.jsonl", "streamer_id": plan.streamer_id,
                "step_seconds": cfg.step_seconds, "labels": {"ctr": [round(float(v), 4) for v in plan.ctr]},
                "split": split, "highlights": [[round(e.start, 3), round(e.end, 3)] for e in plan.highlights],
                "truth": f"truth/{sid}.json",
            }, ensure_ascii=False))
            # KuaiLive side: the room, its interactions, its title embedding.
            start_ms = BASE_EPOCH_MS + k * ROOM_SPACING_MS
            cat = int(inter_rng.integers(len(_CATEGORIES)))
            tables["room"].append((plan.live_id, plan.streamer_id, int(inter_rng.integers(1, 4)), _CATEGORIES[cat],
                                   start_ms, start_ms + int(round(plan.seconds * 1000))))
            emb = centroids[cat] + 0.5 * inter_rng.standard_normal(cfg.embedding_dim)
            embeddings.append(emb / np.linalg.norm(emb))
            tables["comment"] += [(c["user_id"], plan.live_id, plan.streamer_id, start_ms + int(round(c["t"] * 1000))) for c in comments]
            for kind, rows in interactions(plan, inter_rng, viewers, cfg).items():
                tables[kind] += rows
            summary.streams.append(sid)
            summary.n_highlights += len(plan.highlights)
            summary.n_distractors += len(plan.events) - len(plan.highlights)
            summary.n_comments += len(comments)
        streamer_ids = sorted({r[1] for r in tables["room"]})
        tables["streamer"] = [streamer_row(s, cfg) for s in streamer_ids]
        for name, header in CSV_COLUMNS.items():
            write_csv(tmp / "kuailive" / f"{name}.csv", header, tables[name])
            summary.counts[name] = len(tables[name])
        np.save(tmp / "kuailive" / "title_embeddings.npy", np.asarray(embeddings, dtype=np.float32))
        (tmp / "manifest.jsonl").write_text("\n".join(manifest_lines) + "\n", encoding="utf-8")
    return summary
