"""``mm-live data manifest``: the own-logs manifest (:mod:`mm_live.data.manifest`) for the raw
videos of a public highlight dataset, so the clip route trains on them end to end.

One manifest line per annotated unit (a QVHighlights query, a TVSum or YouTube Highlights video)
whose video is in the folder::

    {"stream_id": "2579", "clip": "videos/NUsG9BgSes0_210.0_360.0.mp4", "comments": null,
     "streamer_id": null, "step_seconds": 2.0, "labels": {"ctr": [0.0, 0.25, ...]},
     "dataset": "qvhighlights", "qid": 2579, "vid": "NUsG9BgSes0_210.0_360.0",
     "dataset_split": "val", "split": "test"}

- **Steps** are the dataset's own unit: QVHighlights' and TVSum's 2 s clips (one label per clip, as
  annotated). YouTube Highlights labels 100-frame windows every 50 frames, so its step is 50 frames
  at the dataset's usual 30 fps (5/3 s); each step takes the mean label of the windows covering its
  middle, and the windows' spans in seconds are kept in ``units`` so predictions map back onto them
  for the official evaluation (:func:`steps_to_units`).
- **Labels** are the saliency annotations on [0, 1]: QVHighlights' mean 0-4 score / 4, TVSum's mean
  1-5 score (x - 1) / 4, YouTube Highlights' 0/1.
- **Splits**: each file's split is read from its name (``_train_``, ``_val_``, ``_test_``) and kept
  in ``dataset_split``. When a train file is among the inputs, the other files' lines get
  ``"split": "test"`` (the lines training holds out); with one file, training holds out every 4th
  line itself. Files without labels (QVHighlights' test split) add no lines.
- Videos are ``<videos>/<vid><suffix>`` (:data:`mm_live.data.sources.VIDEO_SUFFIXES`); missing ones are
  reported in one line and skipped, or refused with ``strict``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mm_live.data.records import HighlightRecord
from mm_live.data.sources import VIDEO_SUFFIXES, missing_error
from mm_live.errors import ConfigError, DataError
from mm_live.fileio import atomic_open

DATASETS = ("qvhighlights", "tvsum", "youtube_highlights")
YOUTUBE_FPS, YOUTUBE_HOP = 30.0, 50  # the dataset's windows start every 50 frames; most videos are ~30 fps
STEP_SECONDS = {"qvhighlights": 2.0, "tvsum": 2.0, "youtube_highlights": YOUTUBE_HOP / YOUTUBE_FPS}


def read_public(dataset: str, path: str | Path) -> list[HighlightRecord]:
    """The records of one annotation file of ``dataset`` (the project's reader for it)."""
    from mm_live.data import qvhighlights, tvsum, youtube_highlights

    readers = {"qvhighlights": qvhighlights.read_qvhighlights, "tvsum": tvsum.read_tvsum,
               "youtube_highlights": youtube_highlights.read_youtube_highlights}
    if dataset not in readers:
        raise ConfigError(f"--dataset must be one of {list(DATASETS)}, got {dataset!r}")
    return readers[dataset](path)


def split_of(path: str | Path) -> str | None:
    """``train``/``val``/``test`` when the file name says so (``highlight_val_release.jsonl``), else None."""
    hit = re.search(r"(?:^|[_.-])(train|val|test)(?:[_.-]|$)", Path(path).name)
    return hit.group(1) if hit else None


def unit_spans(rec: HighlightRecord) -> np.ndarray | None:
    """[N, 2] seconds covered by each annotated unit when units are not the steps (YouTube Highlights'
    overlapping frame windows), else None."""
    clip, fps = rec.extra.get("clip"), rec.extra.get("fps")
    if not clip or not fps:
        return None
    return np.asarray(clip, dtype=np.float64) / float(fps)


def _cover(units: np.ndarray, step: float, n_steps: int) -> np.ndarray:
    """[N units, T steps] bool: the step's middle lies in the unit; a unit covering no middle takes
    its nearest step, a step no unit covers its nearest unit (so nothing is left unmapped)."""
    mid = (np.arange(n_steps) + 0.5) * step
    cover = (units[:, :1] <= mid[None]) & (mid[None] < units[:, 1:])
    centre = units.mean(1)
    for i in np.flatnonzero(~cover.any(1)):
        cover[i, np.argmin(np.abs(mid - centre[i]))] = True
    for t in np.flatnonzero(~cover.any(0)):
        cover[np.argmin(np.abs(centre - mid[t])), t] = True
    return cover


def units_to_steps(units: np.ndarray, values: np.ndarray, step: float, n_steps: int) -> np.ndarray:
    """Per-step values [T]: the mean of ``values`` [N] over the units covering each step."""
    cover = _cover(units, step, n_steps).astype(np.float64)
    return (cover * values[:, None]).sum(0) / cover.sum(0)


def labels_per_step(rec: HighlightRecord, labels: np.ndarray, step: float, n_steps: int) -> np.ndarray:
    """A record's per-unit ``labels`` [N] as labels of ``step``-second steps: where its units are not
    steps (YouTube Highlights' frame windows, :func:`unit_spans`), ``n_steps`` values by
    :func:`units_to_steps`; else the units are the steps, and must be ``step`` seconds long."""
    units = unit_spans(rec)
    if units is not None:
        return units_to_steps(units, np.asarray(labels, dtype=np.float64), step, n_steps)
    if abs(rec.step_seconds - step) > 1e-3:
        raise DataError(f"{rec.video_id}: its labels are per {rec.step_seconds:g} s clip, the steps {step:g} s long "
                        "(and no clip spans with fps map one onto the other); use the dataset's step "
                        "('mm-live data features --dataset D')")
    return labels


def steps_to_units(units: np.ndarray, scores: np.ndarray, step: float) -> np.ndarray:
    """Per-unit scores [N]: the mean of the step ``scores`` [T] whose middles fall in each unit."""
    cover = _cover(units, step, len(scores)).astype(np.float64)
    return (cover * scores[None]).sum(1) / cover.sum(1)


def scaled_labels(dataset: str, rec: HighlightRecord) -> np.ndarray:
    """The record's labels on [0, 1] (see the module docstring)."""
    y = np.asarray(rec.labels, dtype=np.float64)
    if dataset == "qvhighlights":
        return y / 4.0
    if dataset == "tvsum":
        return (y - 1.0) / 4.0
    return y


def find_videos(folder: Path, vids: Sequence[str]) -> tuple[dict[str, Path], list[str]]:
    """({vid: video path} found in ``folder``, [missing vids]) for the unique ``vids``, in order."""
    if not folder.is_dir():
        raise DataError(f"videos folder not found: {folder}; pass --videos DIR holding <vid>.mp4 files")
    names = {p.name for p in folder.iterdir()}
    found, missing = {}, []
    for vid in dict.fromkeys(vids):
        hit = next((vid + s for s in VIDEO_SUFFIXES if vid + s in names), None)
        if hit is None:
            missing.append(vid)
        else:
            found[vid] = folder / hit
    return found, missing


@dataclass
class ManifestSummary:
    """What :func:`write_public_manifest` wrote: lines, videos used and missing, per split counts."""

    out: Path
    dataset: str
    lines: int
    videos: int
    missing: list[str]
    total_videos: int
    splits: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0

    def describe(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        text = f"wrote {self.lines} lines ({self.videos} videos; {splits}) of {self.dataset} to {self.out}"
        if self.unlabelled:
            text += f"; {self.unlabelled} unlabelled queries skipped"
        if self.missing:
            text += "\n" + str(missing_error(f"videos of {self.total_videos}", self.missing,
                                             "skipped (add them to the folder, or --strict to refuse)"))
        return text


def write_public_manifest(dataset: str, annotations: str | Path | Sequence[str | Path], videos: str | Path,
                          out: str | Path, *, strict: bool = False) -> ManifestSummary:
    """Write the own-logs manifest of ``dataset``'s annotation file(s) for the videos in ``videos``."""
    files = [Path(annotations)] if isinstance(annotations, (str, Path)) else [Path(a) for a in annotations]
    out, videos = Path(out), Path(videos)
    step = STEP_SECONDS.get(dataset)
    if step is None:
        raise ConfigError(f"--dataset must be one of {list(DATASETS)}, got {dataset!r}")
    per_file = [(split_of(f), read_public(dataset, f)) for f in files]
    has_train = any(s == "train" for s, _ in per_file)
    all_vids = [r.video_id for _, recs in per_file for r in recs if r.labels is not None]
    found, missing = find_videos(videos, all_vids)
    if missing and strict:
        raise missing_error(f"videos of {len(found) + len(missing)}", missing,
                            f"expected {videos}/<vid>{{{','.join(VIDEO_SUFFIXES)}}} (drop --strict to skip them)")
    lines, splits, unlabelled, seen = [], {}, 0, set()
    for split, recs in per_file:
        for rec in recs:
            if rec.labels is None:
                unlabelled += 1
                continue
            if rec.video_id not in found:
                continue
            if rec.id in seen:
                raise DataError(f"{rec.id!r} appears in two annotation files; pass each split once")
            seen.add(rec.id)
            line = {"stream_id": rec.id, "clip": os.path.relpath(found[rec.video_id], out.parent), "comments": None,
                    "streamer_id": None, "step_seconds": step, "dataset": dataset,
                    "qid": rec.extra.get("qid", rec.id), "vid": rec.video_id}
            labels = labels_per_step(rec, scaled_labels(dataset, rec), step, max(1, int(rec.duration / step + 1e-6)))
            units = unit_spans(rec)
            if units is not None:
                line["units"] = np.round(units, 4).tolist()
            line["labels"] = {"ctr": np.round(labels, 6).tolist()}
            if rec.domain is not None:
                line["domain"] = rec.domain
            if split is not None:
                line["dataset_split"] = split
                if has_train and split != "train":
                    line["split"] = "test"
            splits[split or "all"] = splits.get(split or "all", 0) + 1
            lines.append(line)
    if not lines:
        raise DataError(f"no annotated video of {', '.join(map(str, files))} is in {videos}: "
                        "expected <vid>.mp4 files named as the annotations' vid")
    with atomic_open(out, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    return ManifestSummary(out, dataset, len(lines), len({ln["vid"] for ln in lines}), missing,
                           len(found) + len(missing), splits, unlabelled)
