"""Streams as training data: windows of consecutive steps, decoded and prepared when first asked for.

Every task that learns from clips (highlight CTR, gifting's live-segment content, EM3's rooms) reads
its streams through :class:`ClipWindows`: a map-style ``torch.utils.data.Dataset`` over
``(stream, window)`` pairs. Nothing is decoded up front: a window is decoded (only its own span of
the file), its comments are bagged and the encoders' non-trainable work is done
(:meth:`~mm_live.multimodal.MultimodalEncoder.prepare`) the first time it is used, and the prepared
window is kept in a least-recently-used cache bounded in bytes (``train.cache_mb``), so memory does
not grow with the number of streams. The cache holds prepared inputs rather than raw frames because
preparing includes running the frozen layers of the backbones, which is the expensive part to redo
every epoch; those outputs are smaller than the float frames they replace.

Records are duck-typed (``id``, ``clip``, ``comments``, ``labels``, ``streamer_id``, ``step_seconds``,
``extra``): the core does not import the dataset readers that make them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mm_live.comments import Comment, lookback_bags, read_comments
from mm_live.config import Config
from mm_live.errors import DataError
from mm_live.media import Clip, load_clip, probe


@dataclass
class StreamWindow:
    """Steps ``[start_step, start_step + T)`` of one stream, ready for a task's collate function.

    labels [T] float32 (the task's per-step target), positives [T] bool (steps inside a highlight,
    for ranking metrics); clip route: ``inputs`` (prepared steps); feature route: ``video`` [T, d_v]
    and optionally ``text`` [T, d_t].
    """

    stream_id: str
    start_step: int
    labels: np.ndarray
    positives: np.ndarray
    streamer_id: str | None = None
    inputs: Any = None  # MultimodalInputs
    video: np.ndarray | None = None
    text: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def highlight_steps(labels: np.ndarray, windows: Sequence[Sequence[float]] | None, step_seconds: float) -> np.ndarray:
    """Steps inside the record's highlight windows when it has them (synthetic streams, own logs
    that carry them), else the top 20% of its labels."""
    t = len(labels)
    if windows:
        mid = (np.arange(t) + 0.5) * step_seconds
        return np.any([(mid >= a) & (mid < b) for a, b in windows], axis=0)
    return labels >= np.quantile(labels, 0.8)


def comment_bags(comments: Sequence[Comment], clip: Clip, cfg: Config) -> list[list[Comment]]:
    """Look-back comment bags of the clip's steps, as the config says."""
    return lookback_bags(comments, clip.step_starts.numpy(), clip.step_seconds, cfg.media.comment_lookback,
                         cfg.encoders.comment.max_comments_per_step)


def clip_kwargs(cfg: Config) -> dict[str, Any]:
    """The sampling arguments of :func:`~mm_live.media.load_clip` / ``iter_clip`` from the config."""
    m = cfg.media
    return {"step_seconds": m.step_seconds, "frames_per_step": m.frames_per_step, "frame_size": m.frame_size,
            "sample_rate": m.sample_rate, "keyframes_only": m.keyframes_only}


def nbytes(obj: Any) -> int:
    """Bytes held by the tensors/arrays inside ``obj`` (dataclasses, dicts, lists are walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(nbytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 0


class LRU:
    """A least-recently-used map bounded by the bytes of its values (:func:`nbytes`)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes, self.items = max_bytes, 0, OrderedDict()

    def get(self, key: Any) -> Any:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key][0]
        return None

    def put(self, key: Any, value: Any) -> None:
        size = nbytes(value)
        if size > self.max_bytes:
            return
        if key in self.items:
            self.bytes -= self.items.pop(key)[1]
        self.items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self.bytes -= self.items.popitem(last=False)[1][1]


class ClipWindows(torch.utils.data.Dataset):
    """``(stream, window)`` pairs of clip-route records, decoded and prepared lazily.

    ``encoder`` is the run's :class:`~mm_live.multimodal.MultimodalEncoder` (its ``prepare`` does the
    non-trainable work). Each stream has ``min(decodable steps, labels)`` steps, cut into windows of
    ``window_steps``. ``streams[i]`` lists the window indices of stream ``i`` in time order.
    """

    def __init__(self, records: Sequence[Any], cfg: Config, encoder: Any, *, window_steps: int,
                 cache_mb: int | None = None, progress: bool = False):
        self.records, self.cfg, self.encoder = list(records), cfg, encoder
        self.window_steps = window_steps
        self.cache = LRU((cfg.train.cache_mb if cache_mb is None else cache_mb) << 20)
        self._logs: OrderedDict[int, list[Comment]] = OrderedDict()  # parsed comment files, a few streams
        self.index: list[tuple[int, int, int]] = []  # (record, first step, steps)
        self.streams: list[list[int]] = []
        self.start_times: list[float] = []
        step = cfg.media.step_seconds
        from tqdm.auto import tqdm

        for r, rec in enumerate(tqdm(self.records, desc="index streams", unit="stream", disable=not progress)):
            if abs(rec.step_seconds - step) > 1e-9:
                raise DataError(f"stream {rec.id} has step_seconds={rec.step_seconds} but media.step_seconds={step}; "
                                "set media.step_seconds in the config to match")
            info = probe(rec.clip)
            n = min(int(math.floor(info.duration / step + 1e-6)), len(rec.labels))
            if n < 1:
                raise DataError(f"stream {rec.id}: {rec.clip} is shorter than one step ({step} s); drop it from the manifest")
            self.start_times.append(info.start_time)
            self.streams.append([])
            for a in range(0, n, window_steps):
                self.streams[-1].append(len(self.index))
                self.index.append((r, a, min(window_steps, n - a)))

    def __len__(self) -> int:
        return len(self.index)

    def steps(self, stream: int) -> int:
        """Number of steps of stream ``stream``."""
        return sum(self.index[i][2] for i in self.streams[stream])

    def _comments(self, r: int) -> list[Comment]:
        rec = self.records[r]
        if rec.comments is None:
            return []
        if r not in self._logs:
            self._logs[r] = read_comments(rec.comments).comments
            while len(self._logs) > 8:
                self._logs.popitem(last=False)
        self._logs.move_to_end(r)
        return self._logs[r]

    def __getitem__(self, i: int) -> StreamWindow:
        cached = self.cache.get(i)
        if cached is not None:
            return cached
        r, a, n = self.index[i]
        rec, step = self.records[r], self.cfg.media.step_seconds
        t0 = self.start_times[r] + a * step
        clip = load_clip(Path(rec.clip), start=t0, end=t0 + n * step, **clip_kwargs(self.cfg))
        n = min(n, clip.num_steps)
        labels = np.asarray(rec.labels, dtype=np.float32)
        pos = highlight_steps(labels, rec.extra.get("highlights"), rec.step_seconds)
        with torch.no_grad():
            inputs = self.encoder.prepare(clip, comment_bags(self._comments(r), clip, self.cfg))
        window = StreamWindow(rec.id, a, labels[a : a + n], pos[a : a + n], rec.streamer_id, inputs=inputs[:n])
        self.cache.put(i, window)
        return window


class FeatureWindows(torch.utils.data.Dataset):
    """Windows of per-step precomputed features (kept in memory: a few floats per step)."""

    def __init__(self, items: Sequence[tuple[Any, np.ndarray, np.ndarray | None, np.ndarray]], *, window_steps: int):
        """``items``: (record, video [T, d_v], text [T, d_t] or None, labels [T] in [0, 1])."""
        self.windows: list[StreamWindow] = []
        self.streams: list[list[int]] = []
        for rec, video, text, labels in items:
            pos = highlight_steps(labels, rec.extra.get("highlights"), rec.step_seconds)
            self.streams.append([])
            for a in range(0, len(labels), window_steps):
                b = min(a + window_steps, len(labels))
                self.streams[-1].append(len(self.windows))
                self.windows.append(StreamWindow(rec.id, a, labels[a:b], pos[a:b], rec.streamer_id,
                                                 video=np.asarray(video[a:b], np.float32),
                                                 text=None if text is None else np.asarray(text[a:b], np.float32)))
        if not self.windows:
            raise DataError("no labelled records with features: check the annotations and the feature folder")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> StreamWindow:
        return self.windows[i]


def pad_labels(windows: Sequence[StreamWindow]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """labels [S, T] (-1 = padding), lengths [S] and the valid-step mask [S, T] of a batch of windows."""
    lengths = torch.tensor([len(w) for w in windows])
    valid = torch.arange(int(lengths.max()))[None] < lengths[:, None]
    labels = torch.full(valid.shape, -1.0)
    labels[valid] = torch.from_numpy(np.concatenate([w.labels for w in windows]))
    return labels, lengths, valid


def split_records(records: Sequence[Any], every: int = 4) -> tuple[list[Any], list[Any]]:
    """(train, held-out) records: by their ``split`` ("test" held out) when any is marked, else every
    ``every``-th stream (sorted by id) is held out."""
    marked = [r for r in records if r.extra.get("split") == "test"]
    if marked:
        return [r for r in records if r.extra.get("split") != "test"], marked
    held = {r.id for r in sorted(records, key=lambda r: r.id)[::every]}
    train = [r for r in records if r.id not in held] or list(records)
    return train, [r for r in records if r.id in held]
