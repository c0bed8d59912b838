"""Per-step features for heads that read a stream step by step (highlight CTR today; any sequence head).

Two routes give the same :class:`StepFeatures`: :class:`ClipSteps` runs the multimodal encoder
(LoRA-adapted backbones + Fusion-Q-Former) on prepared steps, restricted to the modalities the run
may see; :class:`FeatureSteps` projects precomputed per-step features (public datasets' features).
Besides the fused vector, each step carries its pooled comment tokens and what the soft-DTW
alignment and the comment re-alignment compare them with: the pooled frame tokens, or (``scene``)
the pooled frame and audio tokens side by side, so a reaction to something heard off-screen has a
step to match.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from mm_live.config import MODALITIES
from mm_live.multimodal import MultimodalEncoder, MultimodalInputs
from mm_live.ops import masked_mean, scatter_steps
from mm_live.reaction import ReactionReader


@dataclass
class StepFeatures:
    """Per-step inputs of the temporal head for S streams of (padded) length T: fused [S, T, d_f]
    (Q-Former output or projected features), text [S, T, d_t] (comments posted inside the step,
    pooled), has_text [S, T] bool, video [S, T, d_v] (what comments are aligned to: frame tokens pooled,
    with ``scene`` the pooled audio tokens concatenated after them), reaction [S, T, 3] (the reaction
    reader's loss statistics, :mod:`mm_live.reaction`; zeros where there is no reader), level [S, T]
    (the step's audio loudness, ``MultimodalInputs.level``; zeros where the run sees no audio)."""

    fused: torch.Tensor
    text: torch.Tensor
    has_text: torch.Tensor
    video: torch.Tensor
    reaction: torch.Tensor | None = None
    level: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.reaction is None:
            self.reaction = self.fused.new_zeros(*self.fused.shape[:2], 3)
        if self.level is None:
            self.level = self.fused.new_zeros(*self.fused.shape[:2])

    @staticmethod
    def cat(parts: Sequence["StepFeatures"]) -> "StepFeatures":
        """Concatenate along steps (dim 1)."""
        return StepFeatures(*(torch.cat([getattr(p, f.name) for p in parts], 1) for f in dataclasses.fields(StepFeatures)))


class ClipSteps(nn.Module):
    """Clip route: the multimodal encoder on the N steps of a batch, restricted to ``modalities``
    (the others are masked out everywhere: the frames-only ablation is ``("frame",)``). ``scene``:
    the alignment side of a step is its pooled frame tokens followed by its pooled audio tokens
    (``highlight.align_to: scene``) instead of the frame tokens alone. ``reaction_reader``: add the
    reaction count of :class:`~mm_live.reaction.ReactionReader` to each step's pooled comments (only
    when comments are among the modalities)."""

    def __init__(self, encoder: MultimodalEncoder, modalities: Sequence[str] = MODALITIES, scene: bool = False,
                 reaction_reader: bool = False):
        super().__init__()
        self.encoder, self.modalities, self.scene = encoder, tuple(modalities), scene
        self.fused_dim, self.text_dim = encoder.fusion.queries.embedding_dim, encoder.comment.dim
        self.video_dim = encoder.frame.dim + (encoder.audio.dim if scene else 0)
        self.reader = ReactionReader(self.text_dim) if reaction_reader and "comment" in self.modalities else None

    def forward(self, inputs: MultimodalInputs, index: torch.Tensor) -> StepFeatures:
        """inputs of N steps, index [S, T] into them (-1 = padding) -> :class:`StepFeatures`."""
        return self.from_tokens(self.encoder.tokens(inputs), inputs.streamer, index, inputs.level)

    def from_tokens(self, toks: list, streamer: torch.Tensor | None, index: torch.Tensor,
                    level: torch.Tensor | None = None) -> StepFeatures:
        """Modality tokens [frame, audio, comment] of N steps (and their loudness ``level`` [N], kept
        only when the run sees audio) -> :class:`StepFeatures` (fusion + pooling)."""
        toks = [t if name in self.modalities else dataclasses.replace(t, mask=torch.zeros_like(t.mask))
                for name, t in zip(MODALITIES, toks)]
        fused = self.encoder.fusion(toks, streamer).queries.mean(1)  # [N, d]
        frame, audio, comment = toks
        own = comment.mask & (comment.offsets == 0)  # comments posted inside the step itself
        text, video = masked_mean(comment.tokens, own), masked_mean(frame.tokens, frame.mask)
        if self.scene:  # a masked-out modality pools to zeros
            video = torch.cat([video, masked_mean(audio.tokens, audio.mask)], -1)
        reaction = None
        if self.reader is not None:
            feature, stats = self.reader(comment.tokens, own)
            text, reaction = text + feature, scatter_steps(stats, index)
        if level is not None and "audio" in self.modalities:
            level = scatter_steps(level.to(fused.dtype), index)
        else:
            level = None
        return StepFeatures(scatter_steps(fused, index), scatter_steps(text, index),
                            scatter_steps(own.any(1), index) & (index >= 0), scatter_steps(video, index), reaction,
                            level)


class FeatureSteps(nn.Module):
    """Feature route: precomputed per-step video (and optional text) features -> :class:`StepFeatures`."""

    reader = None  # no per-comment tokens on this route, so no reaction reader

    def __init__(self, video_dim: int, text_dim: int, d: int):
        super().__init__()
        self.video_dim, self.text_dim, self.fused_dim = video_dim, max(text_dim, 1), d
        self.video = nn.Sequential(nn.LayerNorm(video_dim), nn.Linear(video_dim, d))
        self.text = nn.Sequential(nn.LayerNorm(self.text_dim), nn.Linear(self.text_dim, d)) if text_dim else None
        self.mix = nn.Sequential(nn.GELU(), nn.Linear(d, d))

    def forward(self, video: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> StepFeatures:
        """video [S, T, d_v], text [S, T, d_t], has_text [S, T] -> :class:`StepFeatures`."""
        fused = self.video(video)
        if self.text is not None:
            fused = fused + self.text(text) * has_text.unsqueeze(-1).to(fused.dtype)
        return StepFeatures(self.mix(fused), text, has_text, video)
