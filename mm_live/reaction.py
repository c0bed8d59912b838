"""Reaction reader: is this one comment a reaction to something that just happened?

A step's comments reach the highlight head pooled by their mean, and a mean cannot tell one
excited line among ordinary chat from a burst of them: in a quiet step a single ordinary sentence
*is* the mean, so whatever the comment path reads into it lands on the step's score. This box reads
every comment on its own (a linear probe on its embedding, shared by all comments) and hands the
step two numbers, the sum of its comments' reaction probabilities (how many reacted) and how many
comments there are, projected into the comment space and added to the step's pooled comments.

It is trained by distant supervision from the CTR labels alone (:func:`mm_live.losses.reaction_loss`):
a comment's target is the highest label among the ``max_comment_lag`` steps up to the one it was
posted in, since a chat reacts at most that late. No per-comment annotation is needed. The count the
CTR head reads is detached: only that loss trains the probe, so the CTR head cannot turn it back into
a second free-form comment reader.

The per-step sufficient statistics of that loss travel with the step features
(:attr:`mm_live.steps.StepFeatures.reaction`): with logits ``l_k`` and a step target ``y``,
``sum_k BCE(l_k, y) = sum_k softplus(l_k) - y * sum_k l_k``, so ``(sum softplus(l), sum l, n)`` per step
is all the loss needs and concatenates, slices and streams like every other per-step feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ReactionReader(nn.Module):
    """Per-comment reaction logits -> the step's reaction count as a comment feature + loss statistics."""

    def __init__(self, dim: int):
        super().__init__()
        self.probe = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))
        self.proj = nn.Linear(2, dim)  # (log1p reacting, log1p comments) -> comment space

    def forward(self, tokens: torch.Tensor, own: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [N, K, dim] comment embeddings, own [N, K] bool (the comment was posted in this step)
        -> (feature [N, dim] to add to the step's pooled comments, zero for a step without comments;
        stats [N, 3] = (sum softplus(l), sum l, n) over the step's comments, for the loss)."""
        # only the step's own comments: a bag also holds up to lookback steps of older ones
        logits = tokens.new_zeros(own.shape).index_put((own,), self.probe(tokens[own]).squeeze(-1))  # [N, K]
        m = own.to(logits.dtype)
        n = m.sum(1)
        reacting = (torch.sigmoid(logits.detach()) * m).sum(1)
        feature = self.proj(torch.stack([torch.log1p(reacting), torch.log1p(n)], -1)) * own.any(1, keepdim=True)
        stats = torch.stack([(F.softplus(logits) * m).sum(1), (logits * m).sum(1), n], -1)
        return feature, stats
