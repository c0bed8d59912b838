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
those scores and runs exact attention over the best few.
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
