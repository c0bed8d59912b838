"""Embed a collection of clips with a trained run and export them to a FAISS index; search it.

``export_index`` asks the run's task for each clip's embedding (the whole clip, or one vector per
``segment_seconds`` segment so a user can search inside long streams), one clip at a time, and
stages each clip's vectors as a shard of a :class:`~mm_live.index.IndexBuilder`: memory is bounded
by one clip, a killed export leaves no index at the output path, and running the same command again
skips the clips already staged. The product-quantizer codebooks are fitted by FAISS on the run's
embeddings when the index is built (``quant.m`` sub-vectors of ``2**quant.nbits`` codewords).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mm_live.errors import DataError
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


def export_index(checkpoint: str | Path, items: Sequence[ClipItem], out: str | Path, *,
                 segment_seconds: float | None = None, ivf_lists: int | None = None, m: int | None = None,
                 nbits: int | None = None, refine: str = "none", device: str = "auto", progress: bool = True) -> Path:
    """Embed ``items`` with the run at ``checkpoint`` and write ``out`` (index.faiss + index.json)."""
    from tqdm.auto import tqdm

    if segment_seconds is not None and not segment_seconds > 0:
        raise DataError(f"--segment-seconds must be > 0, got {segment_seconds}")
    if not items:
        raise DataError("nothing to export: the collection lists no clips")
    run = load_run(checkpoint, device=device)
    q = run.config.quant
    spec = IndexSpec(d=run.config.fusion.d_emb, m=q.m if m is None else m, nbits=q.nbits if nbits is None else nbits,
                     ivf_lists=q.ivf_lists if ivf_lists is None else ivf_lists, refine=refine)
    builder = IndexBuilder(out, spec, config_hash=run.config.hash(), progress=progress)
    todo = [it for it in items if not builder.done(it.stream_id)]
    for it in tqdm(todo, desc="embed clips", unit="clip", disable=not progress):
        source = ClipSource.open(it.clip, it.comments)
        vectors, spans = run.task.embed_clip(run.model, source, segment_seconds=segment_seconds, streamer_id=it.streamer_id)
        builder.add(it.stream_id, vectors, [ItemRow(it.stream_id, a, b) for a, b in spans])
    return builder.finalize()


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
        run = load_run(checkpoint, device=device)
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
