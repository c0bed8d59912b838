"""Product quantization with codebooks trained with the model (SEMINAR), and lookup-table attention.

A vector of ``d`` numbers is cut into ``m`` sub-vectors of ``d / m`` numbers; sub-vector ``j`` is
replaced by the index of its nearest codeword (squared L2) in codebook ``j`` of ``K = 2**nbits``
codewords. A vector is then stored as ``m`` small integers (``m`` bytes at ``nbits = 8``).

Two ways to get the codebooks, both here:

* **learned** — :class:`ProductQuantizer` is an ``nn.Module`` whose ``forward`` quantizes a batch
  of embeddings with a straight-through estimator and returns a VQ-VAE loss (codebook term plus
  ``commitment`` times the commitment term). Added to a task loss it trains the codebooks and lets
  the embedding adapt to them. Initialise with :meth:`ProductQuantizer.fit` (k-means) first.
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

    def __init__(self, d: int, m: int = 8, nbits: int = 8, commitment: float = 0.25):
        super().__init__()
        check_pq_shape(d, m, nbits)
        self.d, self.m, self.nbits, self.k, self.dsub = d, m, nbits, 1 << nbits, d // m
        self.commitment = commitment
        self.codebooks = nn.Parameter(torch.zeros(m, self.k, self.dsub))
        # Saved with the weights, so a loaded checkpoint knows whether its codebooks were ever fitted.
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_config(cls, cfg, d: int) -> "ProductQuantizer":
        """Build from the project's ``QuantConfig`` (m, nbits, commitment) for embeddings of size ``d``."""
        return cls(d, cfg.m, cfg.nbits, cfg.commitment)

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
        forward and passes the gradient straight through to ``x``.
        """
        self._check_fitted()
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.d)
        codes = self.assign(flat.detach())
        q = self.lookup(codes)
        loss = F.mse_loss(q, flat.detach()) + self.commitment * F.mse_loss(flat, q.detach())
        quantized = flat + (q - flat).detach()
        return PQOutput(quantized.reshape(*lead, self.d), codes.reshape(*lead, self.m), loss)

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

    ``score[b, l] = sum_j tables[b, j, codes[l, j]]``: m table reads per item. The shared-history
    case is one ``embedding_bag`` (gather + sum in one kernel, no [B, L, m] temporary).
    """
    b, m, k = tables.shape
    offsets = torch.arange(m, device=codes.device, dtype=torch.int64) * k
    flat = tables.reshape(b, m * k)
    if codes.ndim == 2:
        idx = codes.long() + offsets  # [L, m] rows of the flattened tables
        return F.embedding_bag(idx, flat.t().contiguous(), mode="sum").t()
    if codes.ndim == 3 and codes.shape[0] == b:
        L = codes.shape[1]
        idx = (codes.long() + offsets).reshape(b, L * m)
        return flat.gather(1, idx).reshape(b, L, m).sum(-1)
    raise ValueError(f"codes must be [L, {m}] or [{b}, L, {m}], got {tuple(codes.shape)}")


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
    2. every history item is scored by ``table_scores`` (m reads per item);
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
        approx = table_scores(lookup_tables(queries, pq.codebooks), codes)  # [B, L]
        short = approx.topk(min(self.shortlist, L), dim=-1).indices  # [B, S]
        if history is not None:
            cand = history[short] if history.ndim == 2 else torch.gather(
                history, 1, short.unsqueeze(-1).expand(-1, -1, history.shape[-1]))
        else:
            cand_codes = codes[short] if codes.ndim == 2 else torch.gather(
                codes, 1, short.unsqueeze(-1).expand(-1, -1, codes.shape[-1]))
            cand = pq.lookup(cand_codes.reshape(-1, pq.m)).reshape(b, short.shape[1], pq.d)
        exact = torch.einsum("bd,bsd->bs", queries, cand) * queries.shape[-1] ** -0.5  # [B, S]
        top = exact.topk(min(self.top_k, L), dim=-1)
        chosen = torch.gather(cand, 1, top.indices.unsqueeze(-1).expand(-1, -1, cand.shape[-1]))  # [B, k, d]
        weights = torch.softmax(top.values, -1)
        context = torch.einsum("bk,bkd->bd", weights, chosen)
        return ApproxAttentionOutput(context, weights, torch.gather(short, 1, top.indices), top.values)
