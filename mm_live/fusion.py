"""Fusion-Q-Former (EM3; MMBee's MFQ): learnable queries cross-attend to the modality tokens.

Modality tokens = per-modality projection of the encoder tokens + a modality-type embedding + a
temporal embedding of the token's step offset inside the look-back window. Queries, optionally made
streamer-aware (``Q' = Q + W u``, MFQ/KuaiHL; the additive form is our reading), pass through
``n_layers`` pre-LN blocks: self-attention over the queries, cross-attention to the modality tokens
every ``cross_attention_every`` layers (layers 0, k, 2k, ...), FFN. The pooled embedding is the mean of
the output queries, projected to ``d_emb`` and L2-normalised.

Missing tokens (no audio, an empty comment bag) are removed by key-padding masks. One learned
"null" memory token that is always present is appended so a row whose modality tokens are all
masked still has a key to attend to (softmax over nothing would give NaN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mm_live.encoders.base import Tokens


@dataclass
class FusionOutput:
    """queries: [B, n_queries, d]; embedding: [B, d_emb], L2-normalised."""

    queries: torch.Tensor
    embedding: torch.Tensor


class FusionBlock(nn.Module):
    """Pre-LN block: query self-attention, optional cross-attention to memory, FFN."""

    def __init__(self, d: int, n_heads: int, ffn_mult: int, dropout: float, cross: bool):
        super().__init__()
        self.ln_self = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.ln_cross = nn.LayerNorm(d) if cross else None
        self.cross_attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True) if cross else None
        self.ln_ffn = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * d, d))

    def forward(self, q: torch.Tensor, memory: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """q [B, n_q, d], memory [B, M, d], pad [B, M] bool (True = ignore) -> [B, n_q, d]."""
        h = self.ln_self(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        if self.cross_attn is not None:
            h = self.ln_cross(q)
            q = q + self.cross_attn(h, memory, memory, key_padding_mask=pad, need_weights=False)[0]
        return q + self.ffn(self.ln_ffn(q))


class FusionQFormer(nn.Module):
    """Learnable-query fusion of modality tokens into ``n_queries`` vectors and one embedding."""

    def __init__(self, modality_dims: Sequence[int], *, d: int = 256, n_queries: int = 16, n_layers: int = 2,
                 n_heads: int = 4, cross_attention_every: int = 1, ffn_mult: int = 4, dropout: float = 0.0,
                 d_emb: int = 128, streamer_dim: int = 0, max_offsets: int = 16):
        super().__init__()
        self.max_offsets = max_offsets
        self.proj = nn.ModuleList(nn.Linear(m, d) for m in modality_dims)
        self.modality = nn.Embedding(len(modality_dims), d)
        self.offset = nn.Embedding(max_offsets, d)
        self.null = nn.Embedding(1, d)  # always-present memory token (no NaN when all tokens are masked)
        self.ln_memory = nn.LayerNorm(d)
        self.queries = nn.Embedding(n_queries, d)  # a submodule, not a bare Parameter (see DESIGN.md on peft)
        self.streamer = nn.Linear(streamer_dim, d, bias=False) if streamer_dim else None
        self.blocks = nn.ModuleList(
            FusionBlock(d, n_heads, ffn_mult, dropout, cross=i % cross_attention_every == 0) for i in range(n_layers))
        self.ln_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, d_emb)
        nn.init.normal_(self.queries.weight, std=0.02)
        nn.init.normal_(self.modality.weight, std=0.02)
        nn.init.normal_(self.offset.weight, std=0.02)
        nn.init.normal_(self.null.weight, std=0.02)

    def memory(self, modalities: Sequence[Tokens]) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality tokens -> memory [B, 1 + sum N_m, d] and key padding mask [B, 1 + sum N_m] (True = ignore)."""
        b = modalities[0].tokens.shape[0]
        parts, present = [self.null.weight.expand(b, 1, -1)], [torch.ones(b, 1, dtype=torch.bool, device=self.null.weight.device)]
        for i, (m, proj) in enumerate(zip(modalities, self.proj)):
            offsets = m.offsets.clamp(0, self.max_offsets - 1)
            parts.append(proj(m.tokens) + self.modality.weight[i] + self.offset(offsets))
            present.append(m.mask)
        return self.ln_memory(torch.cat(parts, dim=1)), ~torch.cat(present, dim=1)

    def forward(self, modalities: Sequence[Tokens], streamer: torch.Tensor | None = None) -> FusionOutput:
        """modalities: one :class:`Tokens` per modality, in ``modality_dims`` order, each [B, N_m, d_m];
        streamer: optional [B, streamer_dim] -> FusionOutput(queries [B, n_q, d], embedding [B, d_emb])."""
        if len(modalities) != len(self.proj):
            raise ValueError(f"expected {len(self.proj)} modalities, got {len(modalities)}")
        memory, pad = self.memory(modalities)
        q = self.queries.weight.expand(memory.shape[0], -1, -1)
        if self.streamer is not None and streamer is not None:
            q = q + self.streamer(streamer).unsqueeze(1)
        for block in self.blocks:
            q = block(q, memory, pad)
        q = self.ln_out(q)
        return FusionOutput(q, F.normalize(self.head(q.mean(dim=1)), dim=-1))
