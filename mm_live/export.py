"""Embed a collection of clips with a trained run and export them to a FAISS index; search it.

``export_index`` asks the run's task for each clip's embedding (the whole clip, or one vector per
``segment_seconds`` segment so a user can search inside long streams), one clip at a time, and
stages each clip's vectors as a shard of a :class:`~mm_live.index.IndexBuilder`: memory is bounded
by one clip, a killed export leaves no index at the output path, and running the same command again
skips the clips already staged. Under ``torchrun`` each rank embeds every ``world``-th clip and rank 0
merges them into the same index one process would write. The product-quantizer codebooks are fitted by FAISS on the run's
embeddings when the index is built (``quant.m`` sub-vectors of ``2**quant.nbits`` codewords).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mm_live import distributed
from mm_live.errors import ConfigError, DataError
from mm_live.fileio import atomic_open, write_json
from mm_live.index import IndexBuilder, IndexSpec, ItemRow, SearchResult, open_index, search
from mm_live.runs import load_run
from mm_live.scoring import ClipSource


@dataclass
class ClipItem:
    """One clip of a collection to index: its id, file, optional comments and streamer."""

    stream_id: str
    clip: Path
    comments: Path | None = None
    streamer_id: str | None = None


def _clip_run(run, checkpoint):
    """The run, if it embeds clips; a run trained on precomputed features (or EM3 title vectors) cannot."""
    if run.config.task.route != "clips":
        raise ConfigError(f"checkpoint {checkpoint} was trained on precomputed features and cannot embed clips; "
                          "export and search with a clip-route run (trained on a manifest of clips)")
    return run


def export_index(checkpoint: str | Path, items: Sequence[ClipItem], out: str | Path, *,
                 segment_seconds: float | None = None, ivf_lists: int | None = None, m: int | None = None,
                 nbits: int | None = None, refine: str = "none", device: str = "auto", progress: bool = True) -> Path:
    """Embed ``items`` with the run at ``checkpoint`` and write ``out`` (index.faiss + index.json)."""
    from tqdm.auto import tqdm

    if segment_seconds is not None and not segment_seconds > 0:
        raise DataError(f"--segment-seconds must be > 0, got {segment_seconds}")
    if not items:
        raise DataError("nothing to export: the collection lists no clips")
    with distributed.session(device) as d:
        run = _clip_run(load_run(checkpoint, device=d.device), checkpoint)
        q = run.config.quant
        spec = IndexSpec(d=run.config.fusion.d_emb, m=q.m if m is None else m, nbits=q.nbits if nbits is None else nbits,
                         ivf_lists=q.ivf_lists if ivf_lists is None else ivf_lists, refine=refine)
        spec.validate()  # a bad PQ shape fails on every rank before any clip is embedded

        def embed(it: ClipItem) -> tuple[np.ndarray, list[tuple[float, float]]]:
            source = ClipSource.open(it.clip, it.comments)
            return run.task.embed_clip(run.model, source, segment_seconds=segment_seconds, streamer_id=it.streamer_id)

        if d.world > 1 or _stage(Path(out)).is_dir():  # (also: finish what a killed torchrun export embedded)
            return _export_sharded(embed, items, Path(out), spec, run.config.hash(), segment_seconds, d, progress)
        builder = IndexBuilder(out, spec, config_hash=run.config.hash(), progress=progress)
        todo = [it for it in items if not builder.done(it.stream_id)]
        for it in tqdm(todo, desc="embed clips", unit="clip", disable=not progress):
            vectors, spans = embed(it)
            builder.add(it.stream_id, vectors, [ItemRow(it.stream_id, a, b) for a, b in spans])
        return builder.finalize()


def _export_sharded(embed: Callable[[ClipItem], tuple[np.ndarray, list[tuple[float, float]]]], items: Sequence[ClipItem],
                    out: Path, spec: IndexSpec, config_hash: str, segment_seconds: float | None, d: distributed.Dist,
                    progress: bool) -> Path:
    """Rank ``r`` embeds items ``r, r + world, ...`` into one ``.npz`` per clip (atomic, kept across
    kills) in the hidden ``.<out>.embeddings``; then rank 0 stages them in the collection's order
    into an :class:`IndexBuilder` and writes the index, so it is the index one process writes."""
    from tqdm.auto import tqdm

    stage = _stage(out)
    stamp = {"config_hash": config_hash, "segment_seconds": segment_seconds}
    if d.main:  # embeddings left by another model or segmentation are discarded
        if (stage / "build.json").is_file() and json.loads((stage / "build.json").read_text(encoding="utf-8")) != stamp:
            shutil.rmtree(stage)
        stage.mkdir(parents=True, exist_ok=True)
        write_json(stage / "build.json", stamp)
    distributed.barrier()
    mine = [it for it in list(items)[d.rank :: d.world] if not _clip_file(stage, it).is_file()]
    for it in tqdm(mine, desc=f"embed clips (rank {d.rank})", unit="clip", disable=not progress, position=d.rank):
        vectors, spans = embed(it)
        with atomic_open(_clip_file(stage, it), "wb") as fh:
            np.savez(fh, vectors=np.asarray(vectors, np.float32), spans=np.asarray(spans, np.float64).reshape(-1, 2))
    distributed.barrier()
    if d.main:
        builder = IndexBuilder(out, spec, config_hash=config_hash, progress=progress)
        for it in items:
            if not builder.done(it.stream_id):
                with np.load(_clip_file(stage, it), allow_pickle=False) as z:
                    builder.add(it.stream_id, z["vectors"], [ItemRow(it.stream_id, a, b) for a, b in z["spans"].tolist()])
        builder.finalize()
        shutil.rmtree(stage, ignore_errors=True)
    distributed.barrier()  # every rank returns once the index exists
    return out


def _stage(out: Path) -> Path:
    return out.parent / f".{out.name}.embeddings"


def _clip_file(stage: Path, it: ClipItem) -> Path:
    return stage / f"{hashlib.sha1(it.stream_id.encode('utf-8')).hexdigest()}.npz"


def search_index(index_dir: str | Path, *, k: int = 10, checkpoint: str | Path | None = None,
                 clip: str | Path | None = None, comments: str | Path | None = None, item_id: int | None = None,
                 vector: str | Path | None = None, nprobe: int | None = None, device: str = "auto") -> SearchResult:
    """Top-``k`` items for one query: a clip (embedded with ``checkpoint``, which must be the run that
    built the index), an indexed item's id, or a vector saved as ``.npy``."""
    if sum(x is not None for x in (clip, item_id, vector)) != 1:
        raise DataError("give exactly one query: --clip CLIP, --id ID or --vector FILE.npy")
    if clip is not None:
        if checkpoint is None:
            raise DataError("--clip needs --checkpoint RUN: the run that built the index embeds the query clip")
        source = ClipSource.open(clip, comments)
        run = _clip_run(load_run(checkpoint, device=device), checkpoint)
        index = open_index(index_dir, expect_config_hash=run.config.hash())
        query, _ = run.task.embed_clip(run.model, source)
    else:
        index = open_index(index_dir)
        query = index.vector(item_id) if item_id is not None else _load_vector(Path(vector))
    return search(index, query, k, nprobe=nprobe)


def _load_vector(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"query vector file {path} not found: save one with numpy.save(path, vector)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a .npy array ({str(exc).splitlines()[0]}): save one with numpy.save") from None
