"""FAISS index export and search: product-quantized embeddings on disk, with a JSON sidecar.

An index directory holds exactly two files, written together or not at all (``atomic_dir``):

* ``index.faiss`` -- a faiss index wrapped in ``IndexIDMap`` (64-bit item ids). Not ``IndexIDMap2``:
  its id -> position hash map costs 44 bytes per vector of RAM (measured at 1M), more than a
  16-32-byte code; the sidecar's id table already gives the position for reconstructing by id;
* ``index.json``  -- the sidecar: format version, the model config hash, dims, metric, PQ shape,
  normalisation, the search defaults, and the table id -> (stream id, start, end).

Index kinds (:class:`IndexSpec`):

* ``ivf_lists = 0`` -> ``IndexPQ``. When the model's learned codebooks are given they are copied
  into ``pq.centroids`` unchanged, so faiss's codes equal :meth:`ProductQuantizer.encode`'s codes.
  Otherwise faiss fits the codebooks on the exported vectors (post hoc).
* ``ivf_lists > 0`` -> ``IndexIVFPQ``: a coarse k-means quantizer with ``ivf_lists`` cells, and a PQ
  over the *residual* (vector minus its cell centroid). Residuals are not the vectors the model's
  codebooks were learned on, so faiss trains this PQ itself; the learned codebooks are not used
  (the sidecar records ``"codebooks": "faiss"``).
* ``refine`` re-ranks a shortlist of ``k_factor * k`` candidates with a more precise code:
  ``sq4``/``sq6``/``sq8`` (faiss ``IndexRefine`` over a per-dimension scalar quantizer),
  ``flat`` (``IndexRefineFlat``, the full float vectors), or ``pqR`` (``IndexIVFPQR``: a second
  PQ of ``R`` bytes over what the first PQ left; IVF only, and faiss implements it for L2 only, so
  it needs normalised vectors, where L2 order = cosine order; scores are converted back).

Vectors and queries are L2-normalised by default and searched by inner product, i.e. cosine.

Large exports go through :class:`IndexBuilder`: batches are staged as shards in a hidden
directory next to the output, a killed export leaves nothing at the output path, and a rerun
skips the shards already staged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mm_live.errors import ConfigError, DataError
from mm_live.fileio import atomic_dir, atomic_open, atomic_path, write_json

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
SIDECAR_FILE = "index.json"
_SQ_BITS = {"sq4": 4, "sq6": 6, "sq8": 8}
_ADD_CHUNK = 65536  # vectors per faiss add call (bounded temporary memory, steady progress bar)


# ----------------------------------------------------------------------------- what to build


def check_pq_shape(d: int, m: int, nbits: int) -> None:
    """Raise :class:`ConfigError` unless ``m`` divides ``d`` and ``1 <= nbits <= 16``."""
    if m < 1 or d % m:
        divisors = [k for k in range(1, d + 1) if d % k == 0]
        raise ConfigError(f"quant.m={m} must divide the embedding size d={d}: choose m among {divisors}")
    if not 1 <= nbits <= 16:
        raise ConfigError(f"quant.nbits={nbits} is outside 1..16: use 8 (one byte per sub-vector) unless you need otherwise")


@dataclass
class IndexSpec:
    """Shape and kind of the exported index, plus the search defaults stored in the sidecar."""

    d: int
    m: int = 8  # PQ sub-vectors (bytes per vector at nbits=8)
    nbits: int = 8
    ivf_lists: int = 0  # > 0: IndexIVFPQ with this many coarse cells
    refine: str = "none"  # none | sq4 | sq6 | sq8 | flat | pq<R> (residual PQ of R bytes, IVF only)
    normalize: bool = True  # L2-normalise vectors and queries: inner product = cosine
    nprobe: int = 16  # IVF cells visited per query (default for search)
    k_factor: int = 16  # refine: candidates re-ranked per result (default for search)
    train_size: int = 100_000  # vectors sampled to train the coarse quantizer / PQ / SQ
    seed: int = 0

    @classmethod
    def from_config(cls, quant, d: int, **overrides: Any) -> "IndexSpec":
        """From the project's ``QuantConfig`` (m, nbits, ivf_lists) and the embedding size."""
        return cls(d=d, m=quant.m, nbits=quant.nbits, ivf_lists=quant.ivf_lists, **overrides)

    def validate(self) -> None:
        check_pq_shape(self.d, self.m, self.nbits)
        if self.ivf_lists < 0 or self.nprobe < 1 or self.k_factor < 1 or self.train_size < 1:
            raise ConfigError(
                f"index settings must be positive (ivf_lists={self.ivf_lists} >= 0, nprobe={self.nprobe}, "
                f"k_factor={self.k_factor}, train_size={self.train_size}): fix the export options")
        r = self.residual_refine_bytes
        if self.refine not in ("none", "flat", *_SQ_BITS) and r is None:
            raise ConfigError(f"refine={self.refine!r} is not one of none, sq4, sq6, sq8, flat, pq<bytes> (e.g. pq64)")
        if r is not None:
            if not self.ivf_lists:
                raise ConfigError(f"refine={self.refine} (residual PQ) needs an IVF index: set ivf_lists > 0 or refine=sq8")
            if not self.normalize:
                raise ConfigError(f"refine={self.refine} searches by L2 (faiss has no inner-product IVFPQR): keep normalize on")
            check_pq_shape(self.d, r, 8)

    @property
    def residual_refine_bytes(self) -> int | None:
        match = re.fullmatch(r"pq(\d+)", self.refine)
        return int(match.group(1)) if match else None

    @property
    def kind(self) -> str:
        return "ivfpq" if self.ivf_lists else "pq"


@dataclass
class ItemRow:
    """What an index id points at: a stream and a time span inside it (seconds)."""

    stream_id: str
    start: float
    end: float


@dataclass
class Hit:
    id: int
    score: float  # cosine when the index is normalised, else inner product
    stream_id: str
    start: float
    end: float


@dataclass
class SearchResult:
    """ids [n, k] int64 (-1 where fewer than k items exist); scores [n, k] float32;
    hits: per query, the found items best first, with their sidecar rows."""

    ids: np.ndarray
    scores: np.ndarray
    hits: list[list[Hit]]


# ----------------------------------------------------------------------------- building


def faiss_pq_index(codebooks: np.ndarray, metric: str = "inner_product"):
    """A trained, empty ``faiss.IndexPQ`` whose codebooks are ``codebooks`` [m, K, d/m] exactly."""
    import faiss

    m, k, dsub = codebooks.shape
    nbits = k.bit_length() - 1
    if k != 1 << nbits:
        raise ConfigError(f"codebooks have {k} codewords per sub-space; PQ needs a power of two")
    index = faiss.IndexPQ(m * dsub, m, nbits, _faiss_metric(metric))
    # faiss stores centroids as one flat array laid out [m][K][dsub], the same as ours.
    faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, dtype=np.float32).ravel(), index.pq.centroids)
    index.is_trained = True
    return index


def _faiss_metric(metric: str):
    import faiss

    return {"inner_product": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}[metric]


def _normalized(x: np.ndarray) -> np.ndarray:
    import faiss

    x = np.array(x, dtype=np.float32, copy=True, order="C")
    faiss.normalize_L2(x)
    return x


def new_index(spec: IndexSpec, train: np.ndarray, codebooks: np.ndarray | None = None):
    """A trained, empty index (``IndexIDMap``-wrapped) for ``spec``, trained on ``train`` [n, d].

    ``train`` must already be normalised when ``spec.normalize``. ``codebooks`` (the model's,
    [m, K, d/m]) are used as they are for ``IndexPQ`` and ignored for IVF (see module doc).
    """
    import faiss

    spec.validate()
    d, k = spec.d, 1 << spec.nbits
    r = spec.residual_refine_bytes
    metric = faiss.METRIC_L2 if r is not None else faiss.METRIC_INNER_PRODUCT
    n = len(train)
    if spec.ivf_lists:
        if n < max(spec.ivf_lists, k):
            raise DataError(
                f"{n} vectors cannot train ivf_lists={spec.ivf_lists} cells and {k} codewords: "
                f"export at least {max(spec.ivf_lists, k)} items or lower --ivf-lists (0 = plain IndexPQ)")
        coarse = faiss.IndexFlatIP(d) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(d)
        if r is not None:
            base = faiss.IndexIVFPQR(coarse, d, spec.ivf_lists, spec.m, spec.nbits, r, 8)
        else:
            base = faiss.IndexIVFPQ(coarse, d, spec.ivf_lists, spec.m, spec.nbits, metric)
        base.cp.seed = spec.seed
        base.pq.cp.seed = spec.seed
        base.train(train)
    elif codebooks is not None:
        if codebooks.shape != (spec.m, k, d // spec.m):
            raise ConfigError(
                f"codebooks have shape {codebooks.shape}, the index wants {(spec.m, k, d // spec.m)}: "
                "export with the quant.m/quant.nbits the model was trained with")
        base = faiss_pq_index(codebooks)
    else:
        if n < k:
            raise DataError(f"{n} vectors cannot train {k} codewords (nbits={spec.nbits}): export at least {k} items or lower nbits")
        base = faiss.IndexPQ(d, spec.m, spec.nbits, metric)
        base.pq.cp.seed = spec.seed
        base.train(train)
    index = base
    if spec.refine == "flat":
        index = faiss.IndexRefineFlat(base)
    elif spec.refine in _SQ_BITS:
        qtype = getattr(faiss.ScalarQuantizer, f"QT_{_SQ_BITS[spec.refine]}bit")
        sq = faiss.IndexScalarQuantizer(d, qtype, metric)
        sq.train(train)  # per-dimension ranges; trained apart so the base's codebooks are not refitted
        index = faiss.IndexRefine(base, sq)
    return faiss.IndexIDMap(index)


def add_vectors(index, vectors: np.ndarray, ids: np.ndarray, *, progress=None) -> None:
    """Add ``vectors`` [n, d] (already normalised if the spec says so) with int64 ``ids`` [n] in chunks."""
    for i in range(0, len(vectors), _ADD_CHUNK):
        chunk = np.ascontiguousarray(vectors[i:i + _ADD_CHUNK], dtype=np.float32)
        index.add_with_ids(chunk, np.ascontiguousarray(ids[i:i + _ADD_CHUNK], dtype=np.int64))
        if progress is not None:
            progress.update(len(chunk))


def _training_sample(n: int, spec: IndexSpec) -> np.ndarray:
    """Sorted row positions of the training sample (all rows when n <= train_size)."""
    if n <= spec.train_size:
        return np.arange(n)
    return np.sort(np.random.default_rng(spec.seed).choice(n, spec.train_size, replace=False))


def build_faiss_index(vectors: np.ndarray, spec: IndexSpec, *, codebooks: np.ndarray | None = None,
                      ids: np.ndarray | None = None, progress: bool = False):
    """Train and fill an index from in-memory ``vectors`` [n, d]; ``ids`` default to 0..n-1."""
    from tqdm.auto import tqdm

    x = _check_vectors(vectors, spec.d, "vectors")
    if spec.normalize:
        x = _normalized(x)
    ids = _check_ids(np.arange(len(x)) if ids is None else ids, len(x))
    index = new_index(spec, x[_training_sample(len(x), spec)], codebooks)
    with tqdm(total=len(x), desc="index add", unit="vec", disable=not progress) as bar:
        add_vectors(index, x, ids, progress=bar)
    return index


def _check_vectors(vectors, d: int, what: str) -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[1] != d:
        raise DataError(f"{what} have shape {x.shape}, the index holds {d}-dim vectors: pass [n, {d}] embeddings")
    if not np.isfinite(x).all():
        raise DataError(f"{what} contain NaN or inf: check the embeddings that produced them")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_ids(ids, n: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != n:
        raise DataError(f"{len(ids)} ids for {n} vectors: give one id per vector")
    if len(np.unique(ids)) != n or (ids < 0).any():
        raise DataError("item ids must be unique and non-negative: pass distinct ids or let the index number the items")
    return ids


# ----------------------------------------------------------------------------- sidecar and files


def make_sidecar(spec: IndexSpec, *, config_hash: str, ids: np.ndarray, rows: Sequence[ItemRow],
                 used_model_codebooks: bool) -> dict[str, Any]:
    import faiss

    if len(rows) != len(ids):
        raise DataError(f"{len(rows)} item rows for {len(ids)} vectors: give one (stream, start, end) row per vector")
    return {
        "format_version": FORMAT_VERSION,
        "config_hash": config_hash,
        "kind": spec.kind,
        "d": spec.d,
        "metric": "inner_product",
        "faiss_metric": "l2" if spec.residual_refine_bytes is not None else "inner_product",
        "normalized": spec.normalize,
        "m": spec.m,
        "nbits": spec.nbits,
        "ivf_lists": spec.ivf_lists,
        "refine": spec.refine,
        "codebooks": "model" if used_model_codebooks and not spec.ivf_lists else "faiss",
        "nprobe": spec.nprobe,
        "k_factor": spec.k_factor,
        "faiss_version": faiss.__version__,
        "count": int(len(ids)),
        "items": {
            "id": [int(i) for i in ids],
            "stream_id": [str(r.stream_id) for r in rows],
            "start": [float(r.start) for r in rows],
            "end": [float(r.end) for r in rows],
        },
    }


def write_index_dir(out_dir: str | Path, index, sidecar: dict[str, Any]) -> Path:
    """Write ``index.faiss`` + ``index.json`` into ``out_dir`` atomically (both or neither)."""
    import faiss

    if index.ntotal != sidecar["count"]:
        raise DataError(f"index holds {index.ntotal} vectors but the sidecar lists {sidecar['count']}: rebuild the export")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        write_json(tmp / SIDECAR_FILE, sidecar, indent=None)
    return out_dir


def export_index(out_dir: str | Path, vectors: np.ndarray, rows: Sequence[ItemRow], spec: IndexSpec, *,
                 config_hash: str, codebooks: np.ndarray | None = None, ids: np.ndarray | None = None,
                 progress: bool = False) -> Path:
    """In-memory export: build the index from ``vectors`` [n, d] and write ``out_dir`` atomically."""
    ids = _check_ids(np.arange(len(vectors)) if ids is None else ids, len(vectors))
    sidecar = make_sidecar(spec, config_hash=config_hash, ids=ids, rows=rows, used_model_codebooks=codebooks is not None)
    index = build_faiss_index(vectors, spec, codebooks=codebooks, ids=ids, progress=progress)
    return write_index_dir(out_dir, index, sidecar)


# ----------------------------------------------------------------------------- reading and search


_REQUIRED = ("config_hash", "kind", "d", "metric", "faiss_metric", "normalized", "m", "nbits", "ivf_lists",
             "refine", "nprobe", "k_factor", "count", "items")


class OpenIndex:
    """A loaded index directory: the faiss index, its sidecar, and id -> row lookups."""

    def __init__(self, path: Path, index, meta: dict[str, Any]):
        self.path, self.index, self.meta = path, index, meta
        items = meta.pop("items")  # kept as compact arrays below, not as a million Python objects
        self._ids = np.asarray(items["id"], dtype=np.int64)
        self._order = np.argsort(self._ids, kind="stable")
        number: dict[str, int] = {}  # stream id -> small int: one string per stream, not per segment
        self._stream_of = np.fromiter((number.setdefault(sid, len(number)) for sid in items["stream_id"]),
                                      dtype=np.int32, count=len(self._ids))
        # Fresh copies: keeping the parsed strings would pin the parser's memory arenas (tens of MB per 1M rows).
        self._streams = [sid.encode().decode() for sid in number]
        self._start = np.asarray(items["start"], dtype=np.float64)
        self._end = np.asarray(items["end"], dtype=np.float64)
        self._direct_map_ready = False

    @property
    def d(self) -> int:
        return int(self.meta["d"])

    def __len__(self) -> int:
        return int(self.meta["count"])

    def _position(self, item_id: int) -> int:
        """Row of ``item_id`` in the table, which is also its position inside the faiss index."""
        j = int(np.searchsorted(self._ids, item_id, sorter=self._order))
        if j >= len(self._ids) or self._ids[self._order[j]] != item_id:
            raise DataError(f"id {item_id} is not in the index at {self.path}: pick an id listed in its index.json")
        return int(self._order[j])

    def row(self, item_id: int) -> ItemRow:
        pos = self._position(int(item_id))
        return ItemRow(self._streams[self._stream_of[pos]], float(self._start[pos]), float(self._end[pos]))

    def vector(self, item_id: int) -> np.ndarray:
        """The stored (decoded) vector of ``item_id`` [d], for searching by an indexed item."""
        import faiss

        pos = self._position(int(item_id))
        inner = faiss.downcast_index(self.index.index)
        if not self._direct_map_ready:
            # IVF lists do not record where an item sits; build that map once, on first use. A refine
            # index reconstructs from its own flat/SQ storage and needs no map.
            ivf = faiss.try_extract_index_ivf(inner)
            if ivf is not None and not isinstance(inner, faiss.IndexRefine):
                ivf.make_direct_map()
            self._direct_map_ready = True
        return inner.reconstruct(pos)


def open_index(path: str | Path, expect_config_hash: str | None = None) -> OpenIndex:
    """Load an index directory; one clear :class:`DataError` for each way it can be unusable."""
    import faiss

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"index directory {path} not found: run mm-live export-index --out {path} first")
    side = path / SIDECAR_FILE
    if not side.is_file():
        raise DataError(f"{side} is missing: the export did not finish; re-run mm-live export-index --out {path}")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{side} is not valid JSON (truncated or edited): re-export the index") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise DataError(f"{side} has format version {found}, this mm-live reads {FORMAT_VERSION}: re-export the index")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise DataError(f"{side} lacks {', '.join(missing)}: re-export the index")
    if expect_config_hash is not None and meta["config_hash"] != expect_config_hash:
        raise DataError(
            f"index {path} was exported from model config {meta['config_hash']}, but this model's config is "
            f"{expect_config_hash}: re-export the index with this checkpoint, or search with the run that built it")
    items = meta["items"]
    if any(len(items.get(c, ())) != meta["count"] for c in ("id", "stream_id", "start", "end")):
        raise DataError(f"{side} lists a table whose length differs from count={meta['count']}: re-export the index")
    ifile = path / INDEX_FILE
    if not ifile.is_file():
        raise DataError(f"{ifile} is missing: re-run mm-live export-index --out {path}")
    try:
        index = faiss.read_index(str(ifile))
    except RuntimeError:
        raise DataError(f"{ifile} is corrupt or truncated (faiss cannot read it): re-run mm-live export-index --out {path}") from None
    if index.d != meta["d"]:
        raise DataError(f"{ifile} holds {index.d}-dim vectors but {side} says d={meta['d']}: the two files come from different exports; re-export")
    if index.ntotal != meta["count"]:
        raise DataError(f"{ifile} holds {index.ntotal} vectors but {side} says count={meta['count']}: re-export the index")
    return OpenIndex(path, index, meta)


def search(index: OpenIndex, queries, k: int = 10, *, nprobe: int | None = None, k_factor: int | None = None) -> SearchResult:
    """Top-``k`` items for each query in ``queries`` [n, d] (or one [d] vector).

    ``nprobe`` / ``k_factor`` override the sidecar's defaults (IVF cells visited; refine shortlist
    factor). Scores are cosine similarities when the index is normalised.
    """
    import faiss

    meta = index.meta
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None]
    if q.ndim != 2 or q.shape[1] != index.d:
        raise DataError(f"query vectors have shape {q.shape}, the index at {index.path} holds {index.d}-dim vectors: "
                        "embed the query with the model that built the index")
    if k < 1:
        raise ConfigError(f"k={k}: ask for at least one result")
    q = _normalized(q) if meta["normalized"] else np.ascontiguousarray(q)
    set_search_params(index.index, nprobe or meta["nprobe"], k_factor or meta["k_factor"])
    scores, ids = index.index.search(q, k)
    if meta["faiss_metric"] == "l2":
        scores = np.where(ids >= 0, 1.0 - scores / 2.0, scores).astype(np.float32)  # unit vectors: |a-b|^2 = 2 - 2<a,b>
    hits = [[Hit(int(i), float(s), *dataclasses.astuple(index.row(i))) for i, s in zip(row_ids, row_scores) if i >= 0]
            for row_ids, row_scores in zip(ids, scores)]
    return SearchResult(ids, scores, hits)


def set_search_params(index, nprobe: int, k_factor: int) -> None:
    """Set ``nprobe`` on the IVF part and ``k_factor`` on the refine part of a (wrapped) faiss index."""
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexRefine):
        inner.k_factor = float(k_factor)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)  # the extractor returns the IndexIVF base; IVFPQR's k_factor is below it
        ivf.nprobe = nprobe
        if isinstance(ivf, faiss.IndexIVFPQR):
            ivf.k_factor = float(k_factor)


# ----------------------------------------------------------------------------- resumable export


class IndexBuilder:
    """Export in batches that survives being killed: stage shards, then one atomic write.

    Each :meth:`add` writes its vectors (``.npy``) and rows (``.jsonl``) into the hidden staging
    directory ``.<out_dir name>.partial`` next to ``out_dir`` -- each file atomically -- and then
    appends the shard's key to ``shards.jsonl`` (the commit point: one line, flushed to disk; a line
    torn by a kill is dropped on the next start, so that shard is simply redone). :meth:`done` tells the caller which
    keys a previous, interrupted run already staged. :meth:`finalize` trains on a sample, adds every
    shard (memory-mapped, one at a time), writes ``out_dir`` atomically and removes the staging.

    Staging left by a different export (another spec, model config or codebooks) is discarded on
    construction: its vectors came from another model.
    """

    def __init__(self, out_dir: str | Path, spec: IndexSpec, *, config_hash: str,
                 codebooks: np.ndarray | None = None, progress: bool = True):
        spec.validate()
        self.out_dir = Path(out_dir)
        self.spec, self.config_hash, self.progress = spec, config_hash, progress
        self.codebooks = None if codebooks is None else np.ascontiguousarray(codebooks, dtype=np.float32)
        self.staging = self.out_dir.parent / f".{self.out_dir.name}.partial"
        fingerprint = {
            "spec": dataclasses.asdict(spec),
            "config_hash": config_hash,
            "codebooks_sha256": None if self.codebooks is None else hashlib.sha256(self.codebooks.tobytes()).hexdigest(),
        }
        build_file = self.staging / "build.json"
        if build_file.is_file():
            try:
                same = json.loads(build_file.read_text(encoding="utf-8")) == fingerprint
            except json.JSONDecodeError:
                same = False
            if not same:
                shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        if not build_file.is_file():
            write_json(build_file, fingerprint)
        self._manifest = self.staging / "shards.jsonl"
        self._shards = self._read_manifest()
        self._keys = {s["key"] for s in self._shards}

    def _read_manifest(self) -> list[dict[str, Any]]:
        """Committed shards in order; a torn last line (no newline: killed mid-append) is cut off."""
        if not self._manifest.is_file():
            return []
        blob = self._manifest.read_bytes()
        complete = blob[: blob.rfind(b"\n") + 1]
        if len(complete) != len(blob):
            with open(self._manifest, "r+b") as fh:
                fh.truncate(len(complete))
        return [json.loads(line) for line in complete.decode("utf-8").splitlines()]

    def done(self, shard_key: str) -> bool:
        """True when a shard with this key is already staged (skip computing it again)."""
        return str(shard_key) in self._keys

    @property
    def count(self) -> int:
        return sum(s["count"] for s in self._shards)

    def add(self, shard_key: str, vectors, rows: Sequence[ItemRow], ids=None) -> None:
        """Stage one batch: ``vectors`` [n, d], one :class:`ItemRow` per vector, optional int64 ``ids``.

        Items without explicit ids get their position in the whole export (0, 1, ...). Adding a
        key that is already staged does nothing.
        """
        key = str(shard_key)
        if key in self._keys:
            return
        x = _check_vectors(vectors, self.spec.d, "vectors")
        if len(rows) != len(x):
            raise DataError(f"shard {key}: {len(rows)} item rows for {len(x)} vectors: give one row per vector")
        if ids is not None:
            ids = _check_ids(ids, len(x))
        stem = f"shard-{len(self._shards):06d}"
        with atomic_path(self.staging / f"{stem}.npy") as tmp:
            np.save(tmp, x)
        with atomic_open(self.staging / f"{stem}.jsonl", "w", encoding="utf-8") as fh:
            for i, r in enumerate(rows):
                rec = {"stream_id": str(r.stream_id), "start": float(r.start), "end": float(r.end)}
                if ids is not None:
                    rec["id"] = int(ids[i])
                fh.write(json.dumps(rec) + "\n")
        entry = {"key": key, "stem": stem, "count": len(x)}
        with open(self._manifest, "a", encoding="utf-8") as fh:  # the commit point of this shard
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._shards.append(entry)
        self._keys.add(key)

    def finalize(self) -> Path:
        """Train, add all staged shards, write ``out_dir`` atomically, remove the staging; returns out_dir."""
        from tqdm.auto import tqdm

        if not self._shards:
            raise DataError(f"nothing to export into {self.out_dir}: no embeddings were added")
        arrays = [np.load(self.staging / f"{s['stem']}.npy", mmap_mode="r") for s in self._shards]
        rows: list[ItemRow] = []
        ids: list[int] = []
        for s in self._shards:
            with open(self.staging / f"{s['stem']}.jsonl", encoding="utf-8") as fh:
                for line in fh:
                    rec = json.loads(line)
                    ids.append(rec.get("id", len(ids)))
                    rows.append(ItemRow(rec["stream_id"], rec["start"], rec["end"]))
        id_arr = _check_ids(ids, len(ids))
        sample = self._gather(arrays, _training_sample(len(ids), self.spec))
        index = new_index(self.spec, sample, self.codebooks)
        del sample
        start = 0
        with tqdm(total=len(ids), desc="index add", unit="vec", disable=not self.progress) as bar:
            for arr in arrays:
                x = _normalized(arr) if self.spec.normalize else np.asarray(arr, dtype=np.float32)
                add_vectors(index, x, id_arr[start:start + len(x)], progress=bar)
                start += len(x)
        sidecar = make_sidecar(self.spec, config_hash=self.config_hash, ids=id_arr, rows=rows,
                               used_model_codebooks=self.codebooks is not None)
        write_index_dir(self.out_dir, index, sidecar)
        shutil.rmtree(self.staging, ignore_errors=True)
        return self.out_dir

    def _gather(self, arrays: list[np.ndarray], positions: np.ndarray) -> np.ndarray:
        """Rows at global ``positions`` (sorted) across the shard arrays, normalised if the spec says so."""
        bounds = np.cumsum([0] + [len(a) for a in arrays])
        parts = []
        for a, lo, hi in zip(arrays, bounds[:-1], bounds[1:]):
            sel = positions[(positions >= lo) & (positions < hi)] - lo
            if len(sel):
                parts.append(np.asarray(a[sel], dtype=np.float32))
        x = np.concatenate(parts)
        return _normalized(x) if self.spec.normalize else x
