"""Bounded comment look-ahead: step t reads the comments posted in steps ``t .. t + L``.

A chat reacts 1 to ``L`` seconds after what it reacts to (``L = media.max_comment_lag``), and for an
event that shows in nothing but the chat (an announcement), no frame or sound says where to put the
reaction back: similarity re-alignment has nothing to match. This box instead lets the score of step
``t`` attend to the per-step comment features of the next ``L + 1`` steps, with a learned embedding per
offset (so it learns the lag distribution) and a learned "nothing" slot (a window with no comment
attends there). Its output is added to the step's features before the causal temporal model, and the
CTR loss trains it. The delay this costs is the one re-alignment already imposes: a score is final
``L`` steps late (:mod:`mm_live.live_head` reproduces it step by step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CommentLookahead(nn.Module):
    """Single-head cross-attention from a step to the comment features of its next ``horizon + 1`` steps."""

    def __init__(self, d_query: int, d_text: int, d: int, horizon: int, dropout: float = 0.0):
        super().__init__()
        self.horizon, self.d = horizon, d
        self.drop_text = nn.Dropout(dropout)  # regularises the comment path (12 training streams overfit it)
        self.q, self.k, self.v = nn.Linear(d_query, d), nn.Linear(d_text, d), nn.Linear(d_text, d)
        self.offset = nn.Parameter(torch.randn(horizon + 1, d) * 0.02)  # added to keys: where in the lag
        self.null_k, self.null_v = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))
        self.out = nn.Linear(d, d_query)
        nn.init.zeros_(self.out.weight)  # starts as the model without look-ahead
        nn.init.zeros_(self.out.bias)

    def windows(self, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text [S, T, d_text], mask [S, T] -> the look-ahead windows [S, T, L+1, d_text], [S, T, L+1]
        (steps past the end are masked)."""
        L = self.horizon
        text = F.pad(text, (0, 0, 0, L)).unfold(1, L + 1, 1).transpose(-1, -2)  # [S, T, L+1, d_text]
        mask = F.pad(mask, (0, L), value=False).unfold(1, L + 1, 1)  # [S, T, L+1]
        return text, mask

    def forward(self, query: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """query [S, T, d_query] (step features), text [S, T, d_text] per-step comment features,
        mask [S, T] bool (the step has comments) -> [S, T, d_query] to add to the step features."""
        tw, mw = self.windows(text, mask)
        return self.attend(query, tw, mw)

    def attend(self, query: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """query [..., d_query], text windows [..., L+1, d_text], mask [..., L+1] -> [..., d_query]."""
        x = self.drop_text(text)
        k = self.k(x) + self.offset  # [..., L+1, d]
        v = self.v(x)
        q = self.q(query).unsqueeze(-2)  # [..., 1, d]
        null_k = self.null_k.expand(*k.shape[:-2], 1, self.d)
        null_v = self.null_v.expand(*v.shape[:-2], 1, self.d)
        k, v = torch.cat([null_k, k], -2), torch.cat([null_v, v], -2)  # [..., L+2, d]
        ok = torch.cat([torch.ones_like(mask[..., :1]), mask], -1)
        logits = (q @ k.transpose(-1, -2)).squeeze(-2) / math.sqrt(self.d)  # [..., L+2]
        attn = logits.masked_fill(~ok, float("-inf")).softmax(-1)
        return self.out((attn.unsqueeze(-2) @ v).squeeze(-2))
