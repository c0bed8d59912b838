"""Causal temporal transformer over per-step embeddings (ContentCTR / KuaiHL's temporal module).

A live stream has no future frames: the output at step t depends only on steps ``t-W+1 .. t`` of
its input (W = ``lookback``, ``None`` for the whole past) in every layer. Positions are encoded
with ALiBi-style per-head linear distance biases inside the causal mask rather than absolute
position embeddings, so a stream scored window by window (:meth:`CausalTemporalTransformer.stream`)
gives exactly the scores of one pass over the whole stream.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head slopes of the ALiBi paper (geometric, 2^(-8/n) ... for n a power of two)."""
    def pow2(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(pow2(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = pow2(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(pow2(closest) + extra)


def causal_bias(t: int, n_heads: int, lookback: int | None, device=None) -> torch.Tensor:
    """Float attention mask ``[n_heads, T, T]``: ``-slope·(i-j)`` for ``i-W < j <= i``, ``-inf`` elsewhere."""
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    dist = (i - j).float()
    allowed = j <= i
    if lookback is not None:
        allowed &= (i - j) < lookback
    bias = -alibi_slopes(n_heads).to(device)[:, None, None] * dist
    return bias.masked_fill(~allowed, float("-inf"))


class CausalTemporalTransformer(nn.Module):
    """Pre-LN transformer encoder with a causal, look-back-limited ALiBi mask."""

    def __init__(self, d_in: int, d_model: int, n_layers: int, n_heads: int, lookback: int | None, dropout: float = 0.0):
        super().__init__()
        self.n_heads, self.lookback, self.n_layers = n_heads, lookback, n_layers
        self.proj = nn.Linear(d_in, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, batch_first=True, norm_first=True, activation="gelu")
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, T, d_in]`` (right-padded; causality keeps padding out of valid steps) → ``[B, T, d_model]``."""
        b, t, _ = x.shape
        mask = causal_bias(t, self.n_heads, self.lookback, x.device).to(x.dtype)
        mask = mask.repeat(b, 1, 1)  # [B*H, T, T] as nn.MultiheadAttention expects
        return self.norm(self.layers(self.proj(x), mask=mask))

    @property
    def receptive_field(self) -> int | None:
        """Steps of past input that can reach one output (None: unbounded)."""
        return None if self.lookback is None else self.n_layers * (self.lookback - 1) + 1

    def stream(self, x: torch.Tensor, window: int = 256) -> torch.Tensor:
        """Same as ``forward`` on one long stream ``[T, d_in]`` → ``[T, d_model]``, in windows of
        ``window`` new steps each carrying just enough past context (bounded memory)."""
        rf = self.receptive_field
        if rf is None or x.shape[0] <= window:
            return self.forward(x[None])[0]
        outs = []
        for a in range(0, x.shape[0], window):
            b = min(a + window, x.shape[0])
            c = max(0, a - (rf - 1))
            outs.append(self.forward(x[None, c:b])[0, a - c :])
        return torch.cat(outs)
