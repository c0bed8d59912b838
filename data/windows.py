"""Training and held-out windows for any task, from an own-logs manifest or a dataset's features.

Clip route: the manifest's streams (``"split": "test"`` held out, else every 4th) as lazily decoded
:class:`~mm_live.streams.ClipWindows`. Feature route: per-step precomputed features of a public dataset.

KLive logs carry their own ``image``/``text`` features per step; QVHighlights, TVSum and YouTube
Highlights annotations are paired with a folder of per-video ``.npz``/``.npy`` features
(:func:`mm_live.data.sources.pair_features`). Features written by ``mm-live data features`` carry
their step length; the labels go onto those steps as on the clip route
(:func:`mm_live.data.public_manifest.labels_per_step`: YouTube Highlights' frame windows at the
video's fps onto 5/3 s steps). Other feature files are one row per annotated unit. Labels go onto
[0, 1] by the same fixed conversion as the clip route (:func:`mm_live.data.public_manifest.scaled_labels`:
QVHighlights' 0-4 saliency / 4, TVSum's 1-5 scores (x - 1) / 4), so both routes train on the same
targets; labels of any other source still outside [0, 1] are min-max scaled per video.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mm_live.errors import ConfigError, DataError

DATASETS = ("klive", "qvhighlights", "tvsum", "youtube_highlights")

# (record, video [T, d_v], text [T, d_t] or None, labels [T] in [0, 1])
Item = tuple[Any, np.ndarray, "np.ndarray | None", np.ndarray]


def _records(dataset: str, annotations: Path, features: Path | None) -> tuple[list[Any], list[Any] | None]:
    from mm_live.data import klive, qvhighlights, sources, tvsum, youtube_highlights

    readers = {"klive": klive.read_klive_log, "qvhighlights": qvhighlights.read_qvhighlights,
               "tvsum": tvsum.read_tvsum, "youtube_highlights": youtube_highlights.read_youtube_highlights}
    if dataset not in readers:
        raise ConfigError(f"--dataset must be one of {list(DATASETS)} for the features route, got {dataset!r}")
    if dataset == "klive" and annotations.is_dir():  # the KLive release: train/ and test/ folders
        return klive.read_klive(annotations, "train"), klive.read_klive(annotations, "test")
    records = readers[dataset](annotations)
    if dataset != "klive":
        if features is None:
            raise ConfigError(f"--features DIR is needed for {dataset}: a folder of per-video .npz/.npy features")
        records = sources.pair_features(records, features)
    return records, None


def _items(records: list[Any], dataset: str) -> list[Item]:
    from mm_live.data.features import feature_step_seconds
    from mm_live.data.public_manifest import labels_per_step, scaled_labels
    from mm_live.data.sources import load_features

    out = []
    for rec in records:
        if rec.labels is None:
            continue
        labels = np.asarray(scaled_labels(dataset, rec), dtype=np.float32)
        if "image" in rec.features:
            video, text = rec.features["image"], rec.features.get("text")
        elif rec.feature_path is not None:
            video, text = load_features(rec.feature_path), None
            step = feature_step_seconds(rec.feature_path)
            if step is not None:  # our features' own steps: YouTube Highlights' frame windows mapped onto them
                labels = np.asarray(labels_per_step(rec, labels, step, len(video)), dtype=np.float32)
                rec = dataclasses.replace(rec, step_seconds=step)
        else:
            raise DataError(f"record {rec.id} has no features: pair a feature folder (--features DIR) or use KLive logs")
        n = min(len(video), len(labels))
        labels = labels[:n]
        lo, hi = float(labels.min()), float(labels.max())
        if lo < 0 or hi > 1:
            labels = (labels - lo) / max(hi - lo, 1e-9)
        out.append((rec, np.asarray(video[:n], np.float32), None if text is None else np.asarray(text[:n], np.float32), labels))
    if not out:
        raise DataError("no labelled records with features: check the annotations and the feature folder")
    return out


def feature_items(dataset: str, annotations: str | Path, features: str | Path | None) -> tuple[list[Item], list[Item]]:
    """(train, held-out) items of a dataset's annotations with their features; without a split of
    its own, every 4th video is held out."""
    records, held_out = _records(dataset, Path(annotations), None if features is None else Path(features))
    items = _items(records, dataset)
    if held_out is not None:
        return items, _items(held_out, dataset)
    train = [it for i, it in enumerate(items) if i % 4] or items[::4]
    return train, items[::4]


def window_datasets(data: Any, cfg: Any, encoder: Any, *, dataset: str | None = None, features: Any = None,
                    progress: bool = True) -> tuple[Any, Any]:
    """(train, held-out) window datasets of ``cfg.highlight.window_steps`` steps: clip route when
    ``dataset`` is None (``data`` is a manifest, ``encoder`` prepares the steps), else feature route."""
    from mm_live.streams import ClipWindows, FeatureWindows, split_records

    w = cfg.highlight.window_steps
    if dataset is None:
        from mm_live.data.manifest import check_media, read_manifest

        records = read_manifest(data)
        check_media(records)
        train, test = split_records(records)
        return (ClipWindows(train, cfg, encoder, window_steps=w, progress=progress),
                ClipWindows(test, cfg, encoder, window_steps=w))
    train_items, test_items = feature_items(dataset, data, features)
    return FeatureWindows(train_items, window_steps=w), FeatureWindows(test_items, window_steps=w)


def feature_dims(items: list[Item]) -> list[int]:
    """[video_dim, text_dim] (0 when the dataset has no text features)."""
    _, video, text, _ = items[0]
    return [int(video.shape[1]), 0 if text is None else int(text.shape[1])]


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".flv", ".ts", ".webm", ".avi")


def clip_collection(path: str | Path) -> list[Any]:
    """Clips to embed: an own-logs manifest (its streams) or a folder of videos (each with an
    optional ``<name>.comments.jsonl`` beside it) -> :class:`~mm_live.export.ClipItem` list."""
    from mm_live.export import ClipItem

    path = Path(path)
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        if not videos:
            raise DataError(f"{path} holds no video files ({', '.join(VIDEO_SUFFIXES)}): pass a folder of clips or a manifest")
        items = []
        for v in videos:
            comments = v.with_name(v.stem + ".comments.jsonl")
            items.append(ClipItem(v.stem, v, comments if comments.is_file() else None))
        return items
    from mm_live.data.manifest import check_media, read_manifest

    records = read_manifest(path)
    check_media(records)
    return [ClipItem(r.id, Path(r.clip), r.comments, r.streamer_id) for r in records]
