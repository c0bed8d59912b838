"""TVSum (Song et al., CVPR 2015): 50 YouTube videos in 10 categories, 20 annotators each.

Two layouts, same labels:

- the original ``ydata-tvsum50.mat`` (https://github.com/yalesong/tvsum, ``matlab/``; MATLAB 7.3 =
  HDF5, read with h5py): per video ``video, title, category, length`` (seconds), ``nframes``,
  ``user_anno`` (20 annotators × frames, 1-5) and ``gt_score``;
- the JSONL used by UMT / QD-DETR / Lighthouse (https://github.com/line/lighthouse,
  ``data/tvsum/tvsum_{train,val}_release.jsonl``): ``qid = vid``, ``query`` (title), ``domain``
  (category code), ``duration`` (which is the NUMBER OF CLIPS, not seconds) and ``label`` [clips × 20].

Annotators scored 2-second shots; the mat repeats each shot's score over its frames. Shot ``c``
covers ``[2c, 2c + 2)`` seconds, so the mat's clip labels are the per-frame scores sampled at each
shot's centre frame ``int((c + 0.5)·2·fps)`` with ``fps = nframes / length``, for the
``floor(length / 2)`` complete shots. This reproduces the JSONL labels exactly on all 50 videos;
the JSONL has one clip fewer for one video (``kLxoNp-UchI``: 64 vs 65).

Licence: TVSum dataset terms (annotations for research; videos CC BY 3.0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mm_live.data.records import HighlightRecord, bad, get, numeric_array
from mm_live.errors import DataError
from mm_live.jsonl import check_file, iter_jsonl

CLIP_SECONDS = 2.0
N_ANNOTATORS = 20

# Category codes of TVSum and their names (TVSum paper, Table 1).
TVSUM_DOMAINS: dict[str, str] = {
    "VT": "changing Vehicle Tire",
    "VU": "getting Vehicle Unstuck",
    "GA": "Grooming an Animal",
    "MS": "Making Sandwich",
    "PK": "ParKour",
    "PR": "PaRade",
    "FM": "Flash Mob gathering",
    "BK": "BeeKeeping",
    "BT": "attempting Bike Tricks",
    "DS": "Dog Show",
}


def read_tvsum_jsonl(path: str | Path) -> list[HighlightRecord]:
    """Read the Lighthouse/UMT TVSum JSONL: one record per video (id = ``qid``, usually the vid).

    labels: [T] mean of the 20 annotators' 1-5 scores; annotators: [T, 20]; domain: category code.
    """
    path = Path(path)
    records = []
    for line, obj in iter_jsonl(path, "TVSum annotation"):
        vid = str(get(obj, "vid", path, line))
        anno = numeric_array(get(obj, "label", path, line), path, line, "label", ndim=2)
        if anno.shape[1] != N_ANNOTATORS:
            raise bad(path, line, "label", f"must hold {N_ANNOTATORS} annotator scores per clip, got {anno.shape[1]}")
        domain = get(obj, "domain", path, line)
        if domain not in TVSUM_DOMAINS:
            raise bad(path, line, "domain", f"must be one of {sorted(TVSUM_DOMAINS)}, got {domain!r}")
        records.append(HighlightRecord(
            id=str(obj.get("qid", vid)), video_id=vid, duration=len(anno) * CLIP_SECONDS,
            step_seconds=CLIP_SECONDS, labels=anno.mean(1).astype(np.float32),
            annotators=anno.astype(np.float32), query=obj.get("query"), domain=domain,
            extra={"line": line},
        ))
    return records


def _mat_string(f, ref) -> str:
    """A MATLAB char array (uint16 code units holding UTF-8 bytes) as text, CSV quotes removed."""
    codes = np.asarray(f[ref][()]).ravel()
    raw = bytes(int(c) for c in codes) if codes.max(initial=0) < 256 else None
    text = raw.decode("utf-8", errors="replace") if raw is not None else "".join(chr(int(c)) for c in codes)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text


def _mat_scalar(f, ref) -> float:
    return float(np.asarray(f[ref][()]).ravel()[0])


def read_tvsum_mat(path: str | Path) -> list[HighlightRecord]:
    """Read the original ``ydata-tvsum50.mat`` (HDF5) into 2 s clip records (see module docstring).

    labels: [T] mean of the 20 annotators; annotators: [T, 20]; T = ``floor(length / 2)``.
    ``extra["user_anno"]`` keeps the per-frame [nframes, 20] matrix and ``extra["gt_score"]`` the
    per-frame mean score.
    """
    import h5py  # imported here: only TVSum's .mat needs it

    path = check_file(path, "TVSum .mat")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a MATLAB 7.3 (HDF5) file ({exc}); use ydata-tvsum50.mat from yalesong/tvsum") from None
    try:
        with f:
            return _mat_records(f, path)
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:  # h5py on a damaged or foreign file
        raise DataError(f"{path}: cannot read tvsum50 from this file ({type(exc).__name__}: {str(exc)[:100]}); "
                        "use an intact ydata-tvsum50.mat from yalesong/tvsum") from None


def _mat_records(f, path: Path) -> list[HighlightRecord]:
    """The records of an open ``ydata-tvsum50.mat`` (h5py File)."""
    records = []
    if "tvsum50" not in f:
        raise DataError(f"{path}: no 'tvsum50' struct; use ydata-tvsum50.mat from yalesong/tvsum")
    t = f["tvsum50"]
    for key in ("video", "title", "category", "length", "nframes", "user_anno"):
        if key not in t:
            raise bad(path, None, f"tvsum50.{key}", "is missing")
    for i in range(t["video"].shape[0]):
        vid = _mat_string(f, t["video"][i, 0])
        length = _mat_scalar(f, t["length"][i, 0])
        nframes = int(_mat_scalar(f, t["nframes"][i, 0]))
        user_anno = np.asarray(f[t["user_anno"][i, 0]][()], dtype=np.float64).T  # [nframes, 20]
        if user_anno.shape != (nframes, N_ANNOTATORS):
            raise bad(path, None, f"tvsum50.user_anno[{i}]", f"has shape {user_anno.shape}, expected ({nframes}, {N_ANNOTATORS})")
        if not (length > 0 and nframes > 0):
            raise bad(path, None, f"tvsum50.length[{i}]", f"and nframes must be > 0, got {length:g} s, {nframes} frames")
        fps = nframes / length
        n_clips = int(length // CLIP_SECONDS)
        centre = np.minimum(((np.arange(n_clips) + 0.5) * CLIP_SECONDS * fps).astype(np.int64), nframes - 1)
        anno = user_anno[centre]
        extra = {"user_anno": user_anno, "nframes": nframes, "fps": fps}
        if "gt_score" in t:
            extra["gt_score"] = np.asarray(f[t["gt_score"][i, 0]][()], dtype=np.float64).ravel()
        records.append(HighlightRecord(
            id=vid, video_id=vid, duration=length, step_seconds=CLIP_SECONDS,
            labels=anno.mean(1).astype(np.float32), annotators=anno.astype(np.float32),
            query=_mat_string(f, t["title"][i, 0]), domain=_mat_string(f, t["category"][i, 0]),
            extra=extra,
        ))
    return records


def read_tvsum(path: str | Path) -> list[HighlightRecord]:
    """Read TVSum from either layout, chosen by suffix (``.mat`` or ``.jsonl``)."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        return read_tvsum_mat(path)
    return read_tvsum_jsonl(path)
