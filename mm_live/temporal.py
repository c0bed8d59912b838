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
import torch.nn.functional as F
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


class TemporalBlock(nn.Module):
    """Pre-LN self-attention with an additive float bias, then an FFN.

    Written out instead of ``nn.TransformerEncoderLayer`` because that layer's inference fast path
    converts a float attention mask to a boolean one (every non-zero entry masked; pytorch issues
    #107084, #118628): with ALiBi biases each step then attended only to itself in eval mode.
    """

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [B, T, d], bias [n_heads, T, T] (added to the attention logits; -inf masks) -> [B, T, d]."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None], dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ffn(self.ln2(x)))


class CausalTemporalTransformer(nn.Module):
    """Pre-LN transformer with a causal, look-back-limited ALiBi mask."""

    def __init__(self, d_in: int, d_model: int, n_layers: int, n_heads: int, lookback: int | None, dropout: float = 0.0):
        super().__init__()
        self.n_heads, self.lookback, self.n_layers = n_heads, lookback, n_layers
        self.proj = nn.Linear(d_in, d_model)
        self.layers = nn.ModuleList(TemporalBlock(d_model, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, T, d_in]`` (right-padded; causality keeps padding out of valid steps) → ``[B, T, d_model]``."""
        bias = causal_bias(x.shape[1], self.n_heads, self.lookback, x.device).to(x.dtype)
        h = self.proj(x)
        for layer in self.layers:
            h = layer(h, bias)
        return self.norm(h)

    @property
    def receptive_field(self) -> int | None:
        """Steps of past input that can reach one output (None: unbounded)."""
        return None if self.lookback is None else self.n_layers * (self.lookback - 1) + 1

    def stream(self, x: torch.Tensor, window: int = 256, context: int | None = None) -> torch.Tensor:
        """One long stream ``[T, d_in]`` → ``[T, d_model]`` in chunks of ``window`` new steps (bounded memory).

        Each chunk carries ``context`` past steps (default and at most: the receptive field, which
        gives exactly ``forward``'s result). A smaller ``context`` caps how much past any output
        sees — with an unbounded look-back this is what keeps a long stream from building a T×T
        mask, and it keeps scoring within the context a model was trained on.
        """
        rf = self.receptive_field
        full = None if rf is None else rf - 1
        ctx = self.stream_context(context)
        t = x.shape[0]
        if ctx is None or (t <= window and (t - 1 <= ctx or (full is not None and full <= ctx))):
            return self.forward(x[None])[0]
        outs = []
        for a in range(0, x.shape[0], window):
            b = min(a + window, x.shape[0])
            c = self.stream_start(a, window, context)
            outs.append(self.forward(x[None, c:b])[0, a - c :])
        return torch.cat(outs)

    def stream_context(self, context: int | None) -> int | None:
        """The past steps a :meth:`stream` chunk carries: ``context`` capped at the receptive field."""
        rf = self.receptive_field
        full = None if rf is None else rf - 1
        return full if context is None else (context if full is None else min(context, full))

    def stream_start(self, t: int, window: int, context: int | None) -> int:
        """First input step :meth:`stream` lets output step ``t`` see (its chunk's start minus the
        context). Causality makes ``forward(x[stream_start(t):t + 1])[-1]`` equal ``stream(x)[t]``,
        which is how a live stream is scored one step at a time (:mod:`mm_live.live_head`)."""
        ctx = self.stream_context(context)
        return 0 if ctx is None else max(0, (t // window) * window - ctx)
