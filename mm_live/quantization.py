"""Product quantization with codebooks trained with the model (SEMINAR), and lookup-table attention.

A vector of ``d`` numbers is cut into ``m`` sub-vectors of ``d / m`` numbers; sub-vector ``j`` is
replaced by the index of its nearest codeword (squared L2) in codebook ``j`` of ``K = 2**nbits``
codewords. A vector is then stored as ``m`` small integers (``m`` bytes at ``nbits = 8``).

Two ways to get the codebooks, both here:

* **learned** — :class:`ProductQuantizer` is an ``nn.Module`` whose ``forward`` quantizes a batch
  of embeddings with a straight-through estimator and returns a VQ-VAE loss (codebook term plus
  ``commitment`` times the commitment term). Added to a task loss it trains the codebooks and lets
  the embedding adapt to them. Initialise with :meth:`ProductQuantizer.fit` (k-means) first, and
  call :meth:`ProductQuantizer.restart_unused` every few hundred steps so no codeword is stranded;
  :meth:`ProductQuantizer.train_forward` does all three inside a model's training step (the
  highlight pipeline's ``quant.learn``), and :func:`learned_codebooks` hands them to the index.
* **post-hoc** — :meth:`ProductQuantizer.fit` on a run's embeddings after training: faiss's PQ
  k-means per sub-space.

Approximate attention (SEMINAR): for a query ``q`` the table ``T[j, k] = <q_j, C_j[k]>`` (``m x K``)
is computed once; a coded item's score is ``sum_j T[j, code_j]`` -- exactly ``<q, decode(code)>`` in
``O(m)`` per item instead of ``O(d)``. :class:`ApproxTargetAttention` shortlists a long history by
those scores and runs exact attention over the best few (torch, differentiable); :class:`CodedHistory`
does the same for serving over a history prepared once as a faiss 4-bit fast-scan index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mm_live.errors import ConfigError, DataError
from mm_live.index import check_pq_shape  # torch-free, so index search does not load torch

_ENCODE_CHUNK = 16384  # rows per distance block in encode: bounds memory to chunk * m * K floats


def code_dtype(nbits: int) -> torch.dtype:
    """Smallest unsigned dtype that holds a code of ``nbits`` bits (uint8 up to 8, else uint16)."""
    return torch.uint8 if nbits <= 8 else torch.uint16


@dataclass
class PQOutput:
    """quantized [..., d]: decoded codes in the forward pass, identity gradient to the input
    (straight-through); codes [..., m] int64; loss: scalar codebook + commitment loss."""

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor


class ProductQuantizer(nn.Module):
    """``m`` sub-codebooks of ``2**nbits`` codewords over ``d``-dimensional vectors.

    ``codebooks`` is a parameter of shape ``[m, K, d / m]`` -- the same layout as faiss's
    ``ProductQuantizer.centroids`` -- so export to faiss is a reshape (see :mod:`mm_live.index`).
    """

    def __init__(self, d: int, m: int = 8, nbits: int = 8, commitment: float = 0.25, ema: float = 0.0):
        super().__init__()
        check_pq_shape(d, m, nbits)
        if not 0.0 <= ema < 1.0:
            raise ConfigError(f"quant.ema={ema} must be in [0, 1): 0 trains codebooks by gradient, 0.99 is usual for EMA")
        self.d, self.m, self.nbits, self.k, self.dsub = d, m, nbits, 1 << nbits, d // m
        self.commitment, self.ema = commitment, ema
        self.codebooks = nn.Parameter(torch.zeros(m, self.k, self.dsub))
        # Saved with the weights, so a loaded checkpoint knows whether its codebooks were ever fitted.
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        # How often each codeword was chosen in training forwards since the last restart_unused().
        self.register_buffer("usage", torch.zeros(m, self.k), persistent=False)
        # train_forward: optimizer steps taken with fitted codebooks (saved: restarts keep their cadence
        # on resume), and the embeddings collected for the k-means start (not saved: refilled on resume).
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        if ema > 0:  # running codeword counts and sums of the vectors assigned to them (VQ-VAE's EMA k-means)
            self.register_buffer("ema_count", torch.ones(m, self.k))
            self.register_buffer("ema_sum", torch.zeros(m, self.k, self.dsub))
        self._start: list[torch.Tensor] = []

    @classmethod
    def from_config(cls, cfg, d: int) -> "ProductQuantizer":
        """Build from the project's ``QuantConfig`` (m, nbits, commitment, ema) for embeddings of size ``d``."""
        return cls(d, cfg.m, cfg.nbits, cfg.commitment, cfg.ema)

    # -- fitting ------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, vectors, *, niter: int = 25, seed: int = 0, max_points_per_centroid: int = 256) -> "ProductQuantizer":
        """k-means codebooks from ``vectors`` [n, d] (numpy or torch) with faiss; returns ``self``.

        Used both to initialise codebooks before training with the model and to fit them post hoc
        on a finished run's embeddings. faiss subsamples to ``max_points_per_centroid * K`` rows.
        """
        import faiss

        x = _as_float32_matrix(vectors, self.d, "training vectors")
        if len(x) < self.k:
            fit_bits = max(1, int(math.log2(max(len(x), 1))))
            raise DataError(
                f"{len(x)} training vectors for {self.k} codewords per sub-codebook (quant.nbits={self.nbits}): "
                f"give at least {self.k} vectors or lower quant.nbits to {fit_bits}")
        pq = faiss.ProductQuantizer(self.d, self.m, self.nbits)
        pq.cp.niter = niter
        pq.cp.seed = seed
        pq.cp.max_points_per_centroid = max_points_per_centroid
        pq.train(x)
        centroids = faiss.vector_to_array(pq.centroids).reshape(self.m, self.k, self.dsub)
        self.codebooks.copy_(torch.from_numpy(centroids))
        self.fitted.fill_(True)
        if self.ema > 0:
            self.ema_count.fill_(1.0)
            self.ema_sum.copy_(self.codebooks)
        return self

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError("ProductQuantizer has no codebooks yet: call fit(embeddings) (k-means) first")

    # -- the model's pass ---------------------------------------------------------------------
    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, d] -> codes [n, m] int64: nearest codeword per sub-vector by squared L2.

        ``||x_j - c||^2 = ||x_j||^2 - 2 <x_j, c> + ||c||^2``; the first term is the same for every
        codeword, so it is dropped (the argmin is unchanged).
        """
        xs = x.reshape(x.shape[0], self.m, self.dsub)
        c = self.codebooks
        dist = (c * c).sum(-1).unsqueeze(0) - 2 * torch.einsum("nmd,mkd->nmk", xs, c)
        return dist.argmin(-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [n, m] (any integer dtype) -> vectors [n, d] from the codebooks (differentiable in them)."""
        idx = codes.long()
        return self.codebooks[torch.arange(self.m, device=idx.device), idx].reshape(idx.shape[0], self.d)

    def forward(self, x: torch.Tensor) -> PQOutput:
        """x [..., d] -> PQOutput(quantized [..., d], codes [..., m], loss []).

        loss = ||sg(x) - q||^2 (moves codewords to the data) + commitment * ||x - sg(q)||^2 (keeps
        the embedding near its codewords), each a mean over elements; ``quantized`` carries ``q``
        forward and passes the gradient straight through to ``x``. With ``ema > 0`` the codewords
        are instead moved in training mode by exponential moving averages of the vectors assigned
        to them (:meth:`_ema_update`), and the loss is the commitment term alone.
        """
        self._check_fitted()
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.d)
        codes = self.assign(flat.detach())
        if self.training:  # running statistics, like BatchNorm's: which codewords are alive
            self.usage.scatter_add_(1, codes.t(), torch.ones_like(codes.t(), dtype=self.usage.dtype))
            if self.ema > 0:
                self._ema_update(flat.detach(), codes)
        q = self.lookup(codes)
        loss = self.commitment * F.mse_loss(flat, q.detach())
        if self.ema == 0:
            loss = loss + F.mse_loss(q, flat.detach())
        quantized = flat + (q - flat).detach()
        return PQOutput(quantized.reshape(*lead, self.d), codes.reshape(*lead, self.m), loss)

    def train_forward(self, x: torch.Tensor, *, restart_every: int = 100, start_vectors: int | None = None) -> PQOutput | None:
        """One training step's use of the quantizer, for a model that learns its codebooks: x [n, d].

        Until ``start_vectors`` (default ``4 * K``) embeddings have been seen it only collects them
        (detached) and returns None; then it fits the codebooks by k-means on them and from there on
        returns :meth:`forward`'s output, re-seeding unused codewords from ``x`` every
        ``restart_every`` calls.
        """
        if not bool(self.fitted):
            self._start.append(x.detach().float().cpu().reshape(-1, self.d))
            if sum(len(v) for v in self._start) < (start_vectors or 4 * self.k):
                return None
            self.fit(torch.cat(self._start), niter=10)
            self._start.clear()
        out = self(x)
        self.steps += 1
        if int(self.steps) % restart_every == 0:
            self.restart_unused(x)
        return out

    @torch.no_grad()
    def _ema_update(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        """x [n, d], codes [n, m]: ``N_k <- γ N_k + (1-γ) n_k``, ``S_k <- γ S_k + (1-γ) Σ x``, codeword
        ``S_k / N_k`` (counts Laplace-smoothed so an unchosen codeword never divides by zero). Gradient
        steps move a codeword by at most the learning rate per step, so early in training, while the
        embedding still moves fast, they trail it; the running means follow it within ~1/(1-γ) steps."""
        xs = x.reshape(-1, self.m, self.dsub).to(self.ema_sum.dtype)
        count = torch.zeros_like(self.ema_count).scatter_add_(1, codes.t(), torch.ones_like(codes.t(), dtype=xs.dtype))
        sums = torch.zeros_like(self.ema_sum)
        for j in range(self.m):
            sums[j].index_add_(0, codes[:, j], xs[:, j])
        g = self.ema
        self.ema_count.mul_(g).add_(count, alpha=1 - g)
        self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
        total = self.ema_count.sum(1, keepdim=True)
        smoothed = (self.ema_count + 1e-5) / (total + self.k * 1e-5) * total
        self.codebooks.copy_(self.ema_sum / smoothed.unsqueeze(-1))

    @torch.no_grad()
    def restart_unused(self, x: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Re-seed codewords no training forward chose since the last call with random sub-vectors
        of ``x`` [n, d] (a recent batch of embeddings); reset the counts; return how many moved.

        Gradient steps only move chosen codewords, so codewords stranded when the embedding drifts
        stay unused for good (a quarter of them in bench_retrieval's joint training); calling this
        every few hundred steps keeps the whole codebook in use.
        """
        self._check_fitted()
        dead = self.usage == 0  # [m, K]
        sub = x.detach().reshape(-1, self.m, self.dsub).to(self.codebooks.dtype)
        for j in torch.nonzero(dead.any(1)).flatten().tolist():
            idx = torch.randint(sub.shape[0], (int(dead[j].sum()),), generator=generator, device=sub.device)
            self.codebooks[j, dead[j]] = sub[idx, j]
            if self.ema > 0:  # the running means restart from the new codeword with an average count
                self.ema_count[j, dead[j]] = self.ema_count[j, ~dead[j]].mean() if (~dead[j]).any() else 1.0
                self.ema_sum[j, dead[j]] = self.codebooks[j, dead[j]] * self.ema_count[j, dead[j]].unsqueeze(-1)
        self.usage.zero_()
        return int(dead.sum())

    # -- storage --------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x) -> torch.Tensor:
        """x [n, d] (numpy or torch) -> codes [n, m], uint8 when nbits <= 8 else uint16; in blocks."""
        self._check_fitted()
        x = torch.as_tensor(_as_float32_matrix(x, self.d, "vectors to encode")).to(self.codebooks.device)
        out = torch.empty(x.shape[0], self.m, dtype=code_dtype(self.nbits), device=x.device)
        for i in range(0, x.shape[0], _ENCODE_CHUNK):
            out[i:i + _ENCODE_CHUNK] = self.assign(x[i:i + _ENCODE_CHUNK]).to(out.dtype)
        return out

    @torch.no_grad()
    def decode(self, codes) -> torch.Tensor:
        """codes [n, m] (numpy or torch, any integer dtype) -> vectors [n, d] float32."""
        self._check_fitted()
        codes = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
        if codes.ndim != 2 or codes.shape[1] != self.m:
            raise DataError(f"codes have shape {tuple(codes.shape)}, expected [n, {self.m}]: pass one row of m codes per vector")
        return self.lookup(codes.to(self.codebooks.device))

    def codebooks_numpy(self) -> np.ndarray:
        """The codebooks as float32 [m, K, d / m] (faiss's ``pq.centroids`` layout)."""
        self._check_fitted()
        return self.codebooks.detach().cpu().numpy().astype(np.float32, copy=True)


def learned_codebooks(model: nn.Module) -> np.ndarray | None:
    """The codebooks [m, K, d / m] a model learned with its embedding (a fitted ``model.quantizer``),
    or None when it has none (the index then fits its own, post hoc)."""
    pq = getattr(model, "quantizer", None)
    return pq.codebooks_numpy() if isinstance(pq, ProductQuantizer) and bool(pq.fitted) else None


def _as_float32_matrix(x, d: int, what: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != d:
        raise DataError(f"{what} have shape {arr.shape}, expected [n, {d}]: pass one row per embedding of size {d}")
    if not np.isfinite(arr).all():
        raise DataError(f"{what} contain NaN or inf: check the embeddings that produced them")
    return np.ascontiguousarray(arr, dtype=np.float32)


# ----------------------------------------------------------------------------- lookup-table attention


def lookup_tables(queries: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """queries [B, d], codebooks [m, K, d/m] -> tables [B, m, K] with ``T[b, j, k] = <q_bj, C_j[k]>``."""
    m, _, dsub = codebooks.shape
    return torch.einsum("bmd,mkd->bmk", queries.reshape(queries.shape[0], m, dsub), codebooks)


def table_scores(tables: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """tables [B, m, K]; codes [L, m] (one history shared by the B queries) or [B, L, m] -> scores [B, L].

    ``score[b, l] = sum_j tables[b, j, codes[l, j]]``: m table reads per item (one gather over the
    flattened tables, then a sum over j). Differentiable in ``tables``.
    """
    b, m, k = tables.shape
    if codes.ndim == 2:
        codes = codes.unsqueeze(0).expand(b, -1, -1)
    if codes.ndim != 3 or codes.shape[0] != b or codes.shape[2] != m:
        raise ValueError(f"codes must be [L, {m}] or [{b}, L, {m}], got {tuple(codes.shape)}")
    L = codes.shape[1]
    idx = codes.long() + torch.arange(m, device=codes.device) * k  # row of the flattened [m * K] table
    return tables.reshape(b, m * k).gather(1, idx.reshape(b, L * m)).reshape(b, L, m).sum(-1)


def top_by_tables(queries: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor, n: int) -> torch.Tensor:
    """Positions [B, n] of the ``n`` history items with the highest table scores, best first.

    queries [B, d]; codebooks [m, K, d/m]; codes [L, m] or [B, L, m]; n <= L. For a shared history
    with one-byte codes this is faiss's PQ scanner (an ``IndexPQ`` over the codes): it computes the
    same lookup-table sums as :func:`table_scores`, about 10x faster than a torch gather on CPU
    (bench_approx_attention). Otherwise :func:`table_scores` + ``topk``.
    """
    if codes.ndim == 2 and codebooks.shape[1] == 256:
        import faiss

        from mm_live.index import faiss_pq_index

        index = faiss_pq_index(codebooks.detach().float().cpu().numpy())
        faiss.copy_array_to_vector(codes.to(torch.uint8).cpu().numpy().ravel(), index.codes)
        index.ntotal = codes.shape[0]
        _, ids = index.search(queries.detach().float().cpu().numpy(), n)
        return torch.from_numpy(ids).to(codes.device)
    return table_scores(lookup_tables(queries, codebooks), codes).topk(n, dim=-1).indices


@dataclass
class ApproxAttentionOutput:
    """context [B, d]: attention-weighted sum of the chosen items; weights [B, top_k] (softmax);
    indices [B, top_k] int64: history positions of the chosen items, best first; scores [B, top_k]:
    their exact scaled scores."""

    context: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor
    scores: torch.Tensor


def exact_target_attention(queries: torch.Tensor, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Full target attention: queries [B, d], history [L, d] or [B, L, d] -> (context [B, d], scores [B, L]).

    ``scores = <q, h> / sqrt(d)``; ``context = softmax(scores) @ history``. The baseline for
    :class:`ApproxTargetAttention`.
    """
    scale = queries.shape[-1] ** -0.5
    if history.ndim == 2:
        scores = queries @ history.t() * scale
        return torch.softmax(scores, -1) @ history, scores
    scores = torch.einsum("bd,bld->bl", queries, history) * scale
    return torch.einsum("bl,bld->bd", torch.softmax(scores, -1), history), scores


class ApproxTargetAttention(nn.Module):
    """Target attention over a long coded history: table scores -> shortlist -> exact top-k attention.

    1. ``T = lookup_tables(q, C)`` once per query ([B, m, K]);
    2. every history item is scored from the tables (m reads per item; :func:`top_by_tables`);
    3. the ``shortlist`` best are re-scored exactly, against the raw history vectors when given
       (``history``), else against their decoded codes;
    4. softmax attention over the ``top_k`` best of the shortlist.

    With ``top_k = shortlist = L`` and decoded vectors it equals :func:`exact_target_attention` on
    the decoded history. The quantizer is passed in (it is owned by the model); nothing is learned here.
    """

    def __init__(self, quantizer: ProductQuantizer, top_k: int = 100, shortlist: int | None = None):
        super().__init__()
        if top_k < 1 or (shortlist is not None and shortlist < top_k):
            raise ConfigError(f"approximate attention needs 1 <= top_k <= shortlist, got top_k={top_k}, shortlist={shortlist}")
        self.quantizer = quantizer
        self.top_k = top_k
        self.shortlist = shortlist or top_k

    def forward(self, queries: torch.Tensor, codes: torch.Tensor, history: torch.Tensor | None = None) -> ApproxAttentionOutput:
        """queries [B, d]; codes [L, m] (history shared by the B queries) or [B, L, m]; history: optional
        raw vectors [L, d] / [B, L, d] aligned with ``codes`` -> ApproxAttentionOutput (top_k = min(top_k, L))."""
        pq = self.quantizer
        b, L = queries.shape[0], codes.shape[-2]
        k = min(self.top_k, L)
        scale = queries.shape[-1] ** -0.5
        short = top_by_tables(queries, pq.codebooks, codes, min(self.shortlist, L))  # [B, S], best first
        if history is None:
            # Table scores are exact for the decoded items, so the shortlist's head is the top-k.
            idx = short[:, :k]
            chosen = pq.lookup(_rows(codes, idx).reshape(-1, pq.m)).reshape(b, k, pq.d)
            scores = torch.einsum("bd,bkd->bk", queries, chosen) * scale  # differentiable in q and codebooks
        else:
            cand = _rows(history, short)  # [B, S, d] raw vectors of the shortlist
            top = (torch.einsum("bd,bsd->bs", queries, cand) * scale).topk(k, dim=-1)
            idx, scores = torch.gather(short, 1, top.indices), top.values
            chosen = torch.gather(cand, 1, top.indices.unsqueeze(-1).expand(-1, -1, cand.shape[-1]))
        weights = torch.softmax(scores, -1)
        return ApproxAttentionOutput(torch.einsum("bk,bkd->bd", weights, chosen), weights, idx, scores)


def _rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table [L, c] (shared) or [B, L, c]; idx [B, n] -> [B, n, c]."""
    if table.ndim == 2:
        return table[idx]
    return torch.gather(table, 1, idx.unsqueeze(-1).expand(-1, -1, table.shape[-1]))


# ----------------------------------------------------------------------------- serving: a prepared history


def default_shortlist(length: int, top_k: int) -> int:
    """Shortlist size for :class:`CodedHistory` re-scoring, by history length: ``max(6 * top_k, L / 25)``
    capped at ``L``. 16-byte codes cannot order near-tied items, and more near-ties crowd the head as
    ``L`` grows, so the exact top-k sits deeper in the code ranking of a longer history. On
    bench_approx_attention's clustered histories this keeps 0.89-1.0 of the exact top-100 at 1k-100k."""
    return min(length, max(6 * top_k, length // 25))


@dataclass
class CodedAttention:
    """numpy output of :meth:`CodedHistory.attend`: context [B, d] float32; weights [B, k] softmax;
    indices [B, k] int64 history positions, best first; scores [B, k] exact scaled scores."""

    context: np.ndarray
    weights: np.ndarray
    indices: np.ndarray
    scores: np.ndarray


class CodedHistory:
    """One user's history prepared once and reused across requests: lookup-table attention for serving.

    Built from 4-bit codebooks [m, 16, d/m] and codes [L, m]: the codes are packed once into a faiss
    ``IndexPQFastScan`` (SIMD 4-bit table lookups over blocks of ``bbs`` items, ``m / 2`` bytes per
    item: 16 at m = 32), so a request pays no index build or code copy. A request (numpy in, numpy out):

    1. :meth:`shortlist` -- faiss fast-scan ranks all L items by table sums (faiss rounds the tables
       to 8 bits for the SIMD scan, so this ranking is approximate) and keeps the best ``n``;
    2. the shortlist is scored exactly, ``<q, v> / sqrt(d)``, against :meth:`vectors` -- the raw rows
       when ``raw`` [L, d] was given (e.g. fetched from a feature store), else the decoded codes;
       for B > 1 the union of the B shortlists is scored with one matrix product;
    3. softmax attention over the ``top_k`` best (:meth:`attend`).

    faiss does the 4-bit scan with in-register shuffles that torch/numpy cannot express, which is why
    the scan is faiss and not :func:`table_scores`. Without ``raw``, a row-major copy of the packed
    codes (another ``m / 2`` bytes per item) is kept to decode the shortlist. The differentiable path
    for training stays :class:`ApproxTargetAttention`.
    """

    def __init__(self, codebooks, codes, raw: np.ndarray | None = None, *, bbs: int = 32):
        import faiss

        from mm_live.index import faiss_pq_index

        cb = np.ascontiguousarray(codebooks.detach().cpu().numpy() if isinstance(codebooks, torch.Tensor) else codebooks,
                                  dtype=np.float32)
        if cb.ndim != 3 or cb.shape[1] != 16 or cb.shape[0] % 2:
            raise ConfigError(f"CodedHistory needs 4-bit codebooks [m (even), 16, d/m], got {cb.shape}: "
                              "fit the quantizer with quant.nbits=4 and an even quant.m")
        self.m, _, self.dsub = cb.shape
        self.d = self.m * self.dsub
        self.codebooks = cb
        c = np.asarray(codes.cpu().numpy() if isinstance(codes, torch.Tensor) else codes)
        if c.ndim != 2 or c.shape[1] != self.m or len(c) == 0:
            raise DataError(f"history codes have shape {c.shape}, expected [L >= 1, {self.m}]: encode the history with the same quantizer")
        if raw is not None:
            raw = _as_float32_matrix(raw, self.d, "raw history vectors")
            if len(raw) != len(c):
                raise DataError(f"raw history has {len(raw)} rows for {len(c)} codes: pass one raw vector per coded item")
        self.raw = raw
        self.length = len(c)
        # An IndexPQ with our codebooks holding the codes, converted once into fast-scan blocks.
        self._flat = faiss_pq_index(cb)
        packed = faiss.pack_bitstrings(np.ascontiguousarray(c, dtype=np.int32), 4)  # [L, m / 2]
        faiss.copy_array_to_vector(packed.ravel(), self._flat.codes)
        self._flat.ntotal = self.length
        self.index = faiss.IndexPQFastScan(self._flat, bbs)
        self._flat.reset()  # the fast-scan index holds its own copy
        self.packed = packed if raw is None else None

    @classmethod
    def from_quantizer(cls, pq: ProductQuantizer, history, *, keep_raw: bool = False) -> "CodedHistory":
        """Encode ``history`` [L, d] with ``pq`` (nbits = 4) and prepare it; ``keep_raw`` keeps the raw
        vectors for exact re-scoring of the shortlist."""
        raw = _as_float32_matrix(history, pq.d, "history") if keep_raw else None
        return cls(pq.codebooks_numpy(), pq.encode(history), raw)

    def __len__(self) -> int:
        return self.length

    @property
    def resident_bytes_per_item(self) -> int:
        """Code bytes per item kept in memory: the fast-scan blocks, plus the row-major copy when there
        is no raw history (raw rows are fetched per request, not counted)."""
        return self.index.code_size * (2 if self.packed is not None else 1)

    def shortlist(self, queries: np.ndarray, n: int) -> np.ndarray:
        """queries [B, d] float32 -> positions [B, n] int64 of the best ``n`` by fast-scan table sums, best first."""
        _, ids = self.index.search(queries, min(n, self.length))
        return ids

    def codes(self, ids: np.ndarray) -> np.ndarray:
        """ids [n] -> codes [n, m] int32 (needs the row-major copy: no raw history)."""
        import faiss

        return faiss.unpack_bitstrings(self.packed[ids], self.m, 4)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """ids [n] -> [n, d] float32: raw rows when kept, else decoded codes."""
        if self.raw is not None:  # torch's gather uses every thread; numpy's fancy indexing one
            return self.raw[ids] if len(ids) < 4096 else torch.from_numpy(self.raw)[torch.from_numpy(ids)].numpy()
        return self._flat.pq.decode(self.packed[ids])

    def table_scores(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact table sums ``sum_j <q_j, C_j[code_j]>`` = ``<q, decode(code)>``: queries [B, d], ids [n] -> [B, n]."""
        tables = np.einsum("bmd,mkd->bmk", queries.reshape(len(queries), self.m, self.dsub), self.codebooks)
        cols = self.codes(ids) + np.arange(self.m) * 16  # [n, m] into the flattened [m * 16] table
        return tables.reshape(len(queries), -1)[:, cols].sum(-1)

    def attend(self, queries, top_k: int = 100, shortlist: int | None = None) -> CodedAttention:
        """queries [B, d] (numpy or torch) -> CodedAttention (k = min(top_k, L)); see the class docstring."""
        q = queries.detach().cpu().numpy() if isinstance(queries, torch.Tensor) else queries
        q = np.ascontiguousarray(q, dtype=np.float32)
        k = min(top_k, self.length)
        short = self.shortlist(q, max(k, shortlist or default_shortlist(self.length, k)))  # [B, S]
        if len(q) == 1:
            union, pos = short[0], None
        else:  # score each item once even when several shortlists hold it
            seen = np.zeros(self.length, dtype=bool)
            seen[short.ravel()] = True
            union = np.flatnonzero(seen)
            where = np.empty(self.length, dtype=np.int64)
            where[union] = np.arange(len(union))
            pos = where[short]  # [B, S] into union
        v = self.vectors(union)  # [U, d]
        full = _product(q * np.float32(self.d ** -0.5), v.T)  # [B, U]
        scores = full if pos is None else np.take_along_axis(full, pos, 1)  # [B, S]
        pos = np.arange(full.shape[1])[None] if pos is None else pos
        if k < scores.shape[1]:  # the k best of each shortlist, then sorted
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            pos, scores = np.take_along_axis(pos, part, 1), np.take_along_axis(scores, part, 1)
        order = np.argsort(-scores, axis=1)
        chosen, scores = np.take_along_axis(pos, order, 1), np.take_along_axis(scores, order, 1)  # [B, k] into union
        w = np.exp(scores - scores[:, :1])
        w /= w.sum(1, keepdims=True)
        context = _product(w[:, None, :], v[chosen])[:, 0]  # [B, d]
        return CodedAttention(context, w, union[chosen], scores)


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for the serving path. One query's products are small enough for numpy (no thread
    hand-off: 110 vs 150 us per 10k-item request); batches go through torch on zero-copy views, since
    numpy's own BLAS thread pool fights torch's and faiss's for the cores (4x slower at B = 32)."""
    if a.shape[-2] == 1 and a.shape[0] == 1:
        return a @ b
    return (_view(a) @ _view(b)).numpy()


def _view(x: np.ndarray) -> torch.Tensor:
    """A torch view of a C-contiguous array or of the transpose of one (no copy)."""
    if x.ndim == 2 and not x.flags.c_contiguous and x.T.flags.c_contiguous:
        return torch.from_numpy(x.T).t()
    return torch.from_numpy(np.ascontiguousarray(x))
