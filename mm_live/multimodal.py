"""MultimodalEncoder: frame, audio and comment encoders (+LoRA) feeding the Fusion-Q-Former.

``prepare(clip, bags)`` does the non-module work for a batch of steps (normalisation, resampling and
log-mel, tokenisation, frozen-token cache look-ups); ``forward(inputs)`` runs the encoders and the
fusion on tensors, batched over steps, and is usable under ``torch.inference_mode()``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from mm_live.config import Config, LoraSettings
from mm_live.encoders.audio import AudioEncoder
from mm_live.encoders.base import Encoder, Tokens
from mm_live.encoders.comment import CommentBatch, CommentEncoder
from mm_live.encoders.frame import FrameEncoder
from mm_live.errors import CommentsError
from mm_live.fusion import FusionOutput, FusionQFormer
from mm_live.lora import apply_lora
from mm_live.token_cache import TokenCache, content_hash

MODALITIES = ("frame", "audio", "comment")


@dataclass
class MultimodalInputs:
    """Prepared inputs of B steps.

    frames:    [B, F, 3, H, W] float, normalised for the frame encoder
    audio:     audio encoder features, each [B, ...] (``{"mel": [B, n_mels, frames]}`` for the mel transformer)
    has_audio: [B] bool; False masks the step's audio tokens
    comments:  CommentBatch [B, K, L]
    streamer:  optional [B, streamer_dim] streamer embedding u
    cached:    tokens of frozen encoders read from the cache, by modality name (skip the backbone)
    """

    frames: torch.Tensor
    audio: dict[str, torch.Tensor]
    has_audio: torch.Tensor
    comments: CommentBatch
    streamer: torch.Tensor | None = None
    cached: dict[str, Tokens] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.has_audio.shape[0])

    def __getitem__(self, index: slice) -> "MultimodalInputs":
        """Steps ``index`` (a slice) of the batch."""
        return MultimodalInputs(
            self.frames[index], {k: v[index] for k, v in self.audio.items()}, self.has_audio[index],
            self.comments[index], None if self.streamer is None else self.streamer[index],
            {k: Tokens(t.tokens[index], t.mask[index], t.offsets[index]) for k, t in self.cached.items()})

    def to(self, device: torch.device | str) -> "MultimodalInputs":
        return MultimodalInputs(
            self.frames.to(device), {k: v.to(device) for k, v in self.audio.items()}, self.has_audio.to(device),
            self.comments.to(device), None if self.streamer is None else self.streamer.to(device),
            {k: t.to(device) for k, t in self.cached.items()})


def _lora_kwargs(settings: LoraSettings) -> dict[str, Any]:
    return {"enabled": settings.enabled, "r": settings.r, "alpha": settings.alpha, "dropout": settings.dropout,
            "target_modules": settings.target_modules}


def _texts_and_offsets(bag: Sequence[Any], step_end: float, step_seconds: float) -> tuple[list[str], list[int]]:
    """A bag of texts or Comment-like objects (``.t``, ``.text``) -> texts and step offsets (0 = this step)."""
    texts, offsets = [], []
    for c in bag:
        if isinstance(c, str):
            texts.append(c)
            offsets.append(0)
        else:
            texts.append(c.text)
            offsets.append(max(0, math.floor((step_end - float(c.t)) / step_seconds)))
    return texts, offsets


class MultimodalEncoder(nn.Module):
    """Encoders + Fusion-Q-Former: one fused output per step."""

    def __init__(self, frame: FrameEncoder, audio: AudioEncoder, comment: CommentEncoder, fusion: FusionQFormer,
                 *, cache: TokenCache | None = None):
        super().__init__()
        self.frame, self.audio, self.comment, self.fusion = frame, audio, comment, fusion
        self.cache = cache

    @classmethod
    def from_config(cls, cfg: Config) -> "MultimodalEncoder":
        """Build encoders (with LoRA per ``encoders.*.lora``), the fusion and the cache from ``cfg``."""
        e = cfg.encoders
        frame = apply_lora(FrameEncoder(e.frame.backbone, tiny_dim=e.frame.tiny_dim, channels_last=e.frame.channels_last),
                           **_lora_kwargs(e.frame.lora), where="encoders.frame.lora")
        audio = apply_lora(AudioEncoder(e.audio.backbone, sample_rate=cfg.media.sample_rate, n_mels=e.audio.n_mels,
                                        patch_frames=e.audio.patch_frames, d_model=e.audio.d_model,
                                        n_layers=e.audio.n_layers, n_heads=e.audio.n_heads),
                           **_lora_kwargs(e.audio.lora), where="encoders.audio.lora")
        comment = apply_lora(CommentEncoder(e.comment.backbone, max_tokens=e.comment.max_tokens,
                                            max_comments_per_step=e.comment.max_comments_per_step,
                                            tiny_dim=e.comment.tiny_dim),
                             **_lora_kwargs(e.comment.lora), where="encoders.comment.lora")
        fusion = FusionQFormer([frame.dim, audio.dim, comment.dim], **dataclasses.asdict(cfg.fusion))
        return cls(frame, audio, comment, fusion, cache=TokenCache(e.cache_dir) if e.cache_dir else None)

    def encoders(self) -> dict[str, Encoder]:
        return {"frame": self.frame, "audio": self.audio, "comment": self.comment}

    # -- non-module work -------------------------------------------------------------------
    def prepare(self, clip: Any, bags: Sequence[Sequence[Any]], streamer: torch.Tensor | None = None) -> MultimodalInputs:
        """A ``mm_live.media.Clip`` (T steps) and T comment bags -> :class:`MultimodalInputs` of B = T steps.

        ``bags[t]`` holds texts or ``Comment`` objects (their ``t`` gives the step offset inside the
        look-back window). With a cache, the tokens of frozen encoders come from (or go to) disk.
        """
        n = int(clip.frames.shape[0])
        if len(bags) != n:
            raise CommentsError(f"got {len(bags)} comment bags for a clip of {n} steps: pass one bag per step "
                                "(mm_live.comments.lookback_bags)")
        ends = clip.step_starts.double() + clip.step_seconds
        pairs = [_texts_and_offsets(bag, float(end), clip.step_seconds) for bag, end in zip(bags, ends)]
        inputs = MultimodalInputs(
            frames=self.frame.preprocess(clip.frames),
            audio=self.audio.preprocess(clip.audio, clip.sample_rate),
            has_audio=clip.has_audio.bool(),
            comments=self.comment.tokenize([t for t, _ in pairs], [o for _, o in pairs]),
            streamer=streamer,
        )
        if self.cache is not None:
            inputs.cached = self.cached_tokens(inputs)
        return inputs

    def cached_tokens(self, inputs: MultimodalInputs) -> dict[str, Tokens]:
        """Tokens of every frozen encoder, from the cache or computed once and stored."""
        assert self.cache is not None
        out = {}
        for name, enc in self.encoders().items():
            if not enc.frozen:
                continue
            x = self._encoder_input(name, inputs)
            parts = [x[k] for k in sorted(x)] if isinstance(x, dict) else (
                [x.input_ids, x.attention_mask, x.mask, x.offsets] if isinstance(x, CommentBatch) else [x])
            out[name] = self.cache.get_or_compute(enc, content_hash(name, *parts), lambda e=enc, x=x: e(x))
        return out

    @staticmethod
    def _encoder_input(name: str, inputs: MultimodalInputs) -> Any:
        return {"frame": inputs.frames, "audio": inputs.audio, "comment": inputs.comments}[name]

    # -- module work -----------------------------------------------------------------------
    def tokens(self, inputs: MultimodalInputs) -> list[Tokens]:
        """Modality tokens [frame, audio, comment], each [B, N_m, d_m]; audio masked where ``has_audio`` is False."""
        out = []
        for name, enc in self.encoders().items():
            tok = inputs.cached.get(name)
            if tok is None:
                tok = enc(self._encoder_input(name, inputs))
            if name == "audio":
                tok = Tokens(tok.tokens, tok.mask & inputs.has_audio.to(tok.mask.device).unsqueeze(1), tok.offsets)
            out.append(tok)
        return out

    def forward(self, inputs: MultimodalInputs) -> FusionOutput:
        """inputs of B steps -> FusionOutput(queries [B, n_q, d], embedding [B, d_emb])."""
        return self.fusion(self.tokens(inputs), inputs.streamer)

    @torch.inference_mode()
    def embed(self, inputs: MultimodalInputs, batch_size: int = 64) -> FusionOutput:
        """Scoring: ``forward`` in eval mode under inference_mode, ``batch_size`` steps at a time."""
        was_training = self.training
        self.eval()
        try:
            outs = [self(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
        finally:
            self.train(was_training)
        return FusionOutput(torch.cat([o.queries for o in outs]), torch.cat([o.embedding for o in outs]))
