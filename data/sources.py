"""Pair records with their media: a folder of raw videos (end-to-end route) or of precomputed
per-video features (features route), named by video id.

Official feature releases name files by video id: Moment-DETR/QVHighlights
``{slowfast,clip}_features/{vid}.npz`` (key ``features``), Lighthouse ``{vid}.npz``/``{vid}.npy``, UMT's
TVSum I3D ``{vid}_rgb.npy`` (+ ``{vid}_opt.npy``). Every missing file is reported in ONE error
(first names + count), never discovered one by one during training.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from mm_live.data.records import HighlightRecord
from mm_live.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".flv")
FEATURE_SUFFIXES = (".npz", ".npy", "_rgb.npy")
SHOW_MISSING = 10


def missing_error(what: str, names: list[str], fix: str) -> DataError:
    """One DataError naming the first :data:`SHOW_MISSING` missing items and the total count."""
    shown = ", ".join(names[:SHOW_MISSING])
    more = f" and {len(names) - SHOW_MISSING} more" if len(names) > SHOW_MISSING else ""
    return DataError(f"{len(names)} {what} missing: {shown}{more}; {fix}")


def _pair(records: list[HighlightRecord], folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{what} folder not found: {folder}; check the path (a folder of <video_id>{{{','.join(suffixes)}}} files)")
    names = {p.name for p in folder.iterdir()}
    found: dict[str, Path] = {}
    missing: list[str] = []
    for vid in dict.fromkeys(r.video_id for r in records):  # unique, in order
        hit = next((vid + s for s in suffixes if vid + s in names), None)
        if hit is None:
            missing.append(vid)
        else:
            found[vid] = folder / hit
    if missing:
        raise missing_error(f"{what} of {len(found) + len(missing)}", missing,
                            f"expected {folder}/<video_id>{{{','.join(suffixes)}}}")
    return found


def pair_videos(records: list[HighlightRecord], video_dir: str | Path,
                suffixes: tuple[str, ...] = VIDEO_SUFFIXES) -> list[HighlightRecord]:
    """Copies of ``records`` with ``clip`` set to ``video_dir/<video_id><suffix>``; one error lists all missing."""
    paths = _pair(records, Path(video_dir), suffixes, "videos")
    return [dataclasses.replace(r, clip=paths[r.video_id]) for r in records]


def pair_features(records: list[HighlightRecord], feature_dir: str | Path,
                  suffixes: tuple[str, ...] = FEATURE_SUFFIXES) -> list[HighlightRecord]:
    """Copies of ``records`` with ``feature_path`` set to ``feature_dir/<video_id><suffix>``; one error lists all missing."""
    paths = _pair(records, Path(feature_dir), suffixes, "feature files")
    return [dataclasses.replace(r, feature_path=paths[r.video_id]) for r in records]


def read_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """The array in a ``.npy`` file, or in a ``.npz`` (``key`` if given, else ``features``
    (Moment-DETR/Lighthouse), else the only array). Pickled (object) arrays are refused; a missing,
    truncated or corrupt file raises one DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: array file not found; check the path")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); re-create the .npy/.npz file")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            return data
        with data:
            keys = list(data.keys())
            name = key or ("features" if "features" in keys else (keys[0] if len(keys) == 1 else None))
            if name is None or name not in keys:
                raise DataError(f"{path}: no array {key or 'features'!r} (arrays: {', '.join(keys)}); pass key=")
            return data[name]  # a .npz member is read (and its CRC checked) here
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the array ({type(exc).__name__}: {str(exc)[:120]}); "
                        "re-create the .npy/.npz file") from None


def array_shape(path: str | Path) -> tuple[int, ...]:
    """Shape of the array in a ``.npy`` file without reading its data (memory-mapped: a title matrix
    of the full KuaiLive release is GBs); a missing, empty, corrupt or pickled file raises one DataError."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        read_array(path)  # raises the missing / empty-file error
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the array ({type(exc).__name__}: {str(exc)[:120]}); "
                        "re-create the .npy file") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: expected a .npy array, found a {type(arr).__name__}; save it with numpy.save")
    return tuple(arr.shape)


def load_features(path: str | Path, key: str | None = None) -> np.ndarray:
    """Per-clip features [T, d] (float32) from a ``.npy`` or ``.npz`` file (see :func:`read_array`)."""
    arr = read_array(path, key)
    if arr.ndim != 2:
        raise DataError(f"{path}: features must be [T, d], got shape {arr.shape}; save one row per step")
    check_finite(arr, path, "features")
    return arr.astype(np.float32, copy=False)


def check_finite(arr: np.ndarray, path: str | Path, what: str) -> None:
    """Refuse a numeric matrix with NaN/inf (or, once cast to float32, overflowing) values: training on
    it gives NaN losses with no word about why. Checked in row chunks (title matrices are GBs)."""
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: {what} must be numbers, got dtype {arr.dtype}; re-create the file")
    if arr.dtype.kind != "f":
        return  # integers and booleans are finite and fit float32's range
    limit = np.finfo(np.float32).max
    for start in range(0, len(arr), 1 << 16):
        bad = ~(np.abs(arr[start : start + (1 << 16)]) <= limit)
        if bad.any():
            row = start + int(np.argwhere(bad)[0][0])
            raise DataError(f"{path}: {what} hold NaN, infinite or out-of-float32-range values (first in row {row}); "
                            "re-create the file")
