"""MultimodalEncoder: frame, audio and comment encoders (+LoRA) feeding the Fusion-Q-Former.

``prepare(clip, bags)`` does the non-module work for a batch of steps (normalisation, resampling and
log-mel, tokenisation) and computes, once, what the frozen parts of the encoders produce (eval mode,
no autograd, a bounded number of steps at a time): the tokens of a fully frozen encoder and the
frozen prefix of a LoRA-adapted one (EfficientNet's stem and blocks 0-9 below the adapters of
blocks 10-15). ``forward(inputs)`` then runs only what trains, plus the fusion, on tensors batched
over steps, and is usable under ``torch.inference_mode()``. With a disk cache (``encoders.cache_dir``)
both kinds of precomputed outputs are stored and reused across runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mm_live.config import Config, LoraSettings
from mm_live.encoders.audio import AudioEncoder, step_level
from mm_live.encoders.base import Encoder, Tokens
from mm_live.encoders.comment import CommentBatch, CommentEncoder
from mm_live.encoders.frame import FrameEncoder
from mm_live.encoders.onnx_runtime import attach as attach_frame_runtime
from mm_live.errors import CommentsError
from mm_live.fusion import FusionOutput, FusionQFormer
from mm_live.lora import apply_lora
from mm_live.token_cache import TokenCache, content_hash

MODALITIES = ("frame", "audio", "comment")
# Salts every disk-cache entry: files written before frozen outputs were computed in eval mode
# (dropout baked in) must never be read back.
CACHE_VERSION = "eval-v2"


def _map(x: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` applied to every tensor of a nest of dataclasses, dicts and tensors (None stays None)."""
    if x is None or isinstance(x, torch.Tensor):
        return None if x is None else fn(x)
    if isinstance(x, dict):
        return {k: _map(v, fn) for k, v in x.items()}
    return type(x)(**{f.name: _map(getattr(x, f.name), fn) for f in dataclasses.fields(x)})


def _cat(xs: Sequence[Any], pad: bool = False) -> Any:
    """Concatenate same-structured nests along dim 0; ``pad``: zero-pad the other dims to the largest."""
    x0 = xs[0]
    if x0 is None or any(x is None for x in xs):
        if any(x is not None for x in xs):
            raise ValueError("cannot concatenate inputs prepared differently (a field is missing in some)")
        return None
    if isinstance(x0, torch.Tensor):
        if pad:
            size = [max(x.shape[d] for x in xs) for d in range(x0.dim())]
            xs = [F.pad(x, [w for d in reversed(range(1, x.dim())) for w in (0, size[d] - x.shape[d])]) for x in xs]
        return torch.cat(list(xs))
    if isinstance(x0, dict):
        if any(x.keys() != x0.keys() for x in xs):
            raise ValueError(f"cannot concatenate inputs prepared differently: keys {[sorted(x) for x in xs]}")
        return {k: _cat([x[k] for x in xs], pad) for k in x0}
    return type(x0)(**{f.name: _cat([getattr(x, f.name) for x in xs], pad) for f in dataclasses.fields(x0)})


@dataclass
class MultimodalInputs:
    """Prepared inputs of B steps (every tensor has the steps as its first dim).

    frames:    [B, F, 3, H, W] float, normalised for the frame encoder; None when the frame
               encoder's tokens or frozen prefix were precomputed (``cached`` / ``prefix``)
    audio:     audio encoder features, each [B, ...] (``{"mel": [B, n_mels, frames]}`` for the mel
               transformer); {} when the audio tokens are in ``cached``
    has_audio: [B] bool; False masks the step's audio tokens
    comments:  CommentBatch [B, K, L]
    streamer:  optional [B, streamer_dim] streamer embedding u
    cached:    tokens of fully frozen encoders, by modality name (the backbone is skipped)
    prefix:    output of a LoRA-adapted encoder's frozen prefix, by modality name (frame:
               [B, F, C, h, w]); only the adapted stages run on it
    level:     optional [B] float loudness of each step's raw audio (:func:`step_level`), 0 where
               ``has_audio`` is False (read by ``highlight.level_skip``)
    """

    frames: torch.Tensor | None
    audio: dict[str, torch.Tensor]
    has_audio: torch.Tensor
    comments: CommentBatch
    streamer: torch.Tensor | None = None
    cached: dict[str, Tokens] = field(default_factory=dict)
    prefix: dict[str, torch.Tensor] = field(default_factory=dict)
    level: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.has_audio.shape[0])

    def __getitem__(self, index: slice) -> "MultimodalInputs":
        """Steps ``index`` (a slice) of the batch (views, no copy)."""
        return _map(self, lambda t: t[index])

    def take(self, index: torch.Tensor) -> "MultimodalInputs":
        """Steps ``index`` ([N] long, any order, repeats allowed) of the batch, copied."""
        return _map(self, lambda t: t.index_select(0, index.to(t.device)))

    def to(self, device: torch.device | str) -> "MultimodalInputs":
        return _map(self, lambda t: t.to(device))

    @classmethod
    def cat(cls, parts: Sequence["MultimodalInputs"]) -> "MultimodalInputs":
        """Concatenate prepared inputs along steps. Comment slots and token lengths, and the token
        counts of cached tokens, are zero-padded to the largest (zeros are masked); every other field
        must have the same shape in all parts (the same model and media settings prepared them)."""
        if not parts:
            raise ValueError("MultimodalInputs.cat needs at least one part")
        return cls(**{f.name: _cat([getattr(p, f.name) for p in parts], pad=f.name in ("comments", "cached"))
                      for f in dataclasses.fields(cls)})


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
    """Encoders + Fusion-Q-Former: one fused output per step.

    frozen_prefix: ``prepare`` precomputes the frozen parts (see the module docstring); off, every
    encoder runs in ``forward`` (frozen tokens are still read from ``cache`` when there is one).
    precompute_steps: steps per chunk when precomputing (bounds the memory of the float frames and
    activations that are never held all at once).
    frame_runtime / onnx_cache_dir: ``encoders.frame.runtime`` and ``encoders.cache_dir`` (see
    :mod:`mm_live.encoders.onnx_runtime`; applied by ``prepare`` once the model is ready for inference).
    """

    def __init__(self, frame: FrameEncoder, audio: AudioEncoder, comment: CommentEncoder, fusion: FusionQFormer,
                 *, cache: TokenCache | None = None, frozen_prefix: bool = True, precompute_steps: int = 64,
                 frame_runtime: str = "torch", onnx_cache_dir: str | None = None):
        super().__init__()
        self.frame, self.audio, self.comment, self.fusion = frame, audio, comment, fusion
        self.cache, self.frozen_prefix, self.precompute_steps = cache, frozen_prefix, precompute_steps
        self.frame_runtime, self.onnx_cache_dir = frame_runtime, onnx_cache_dir

    @classmethod
    def from_config(cls, cfg: Config) -> "MultimodalEncoder":
        """Build encoders (with LoRA per ``encoders.*.lora``), the fusion and the cache from ``cfg``."""
        e = cfg.encoders
        frame = apply_lora(FrameEncoder(e.frame.backbone, tiny_dim=e.frame.tiny_dim, channels_last=e.frame.channels_last),
                           **_lora_kwargs(e.frame.lora), where="encoders.frame.lora")
        audio = apply_lora(AudioEncoder(e.audio.backbone, sample_rate=cfg.media.sample_rate, n_mels=e.audio.n_mels,
                                        patch_frames=e.audio.patch_frames, d_model=e.audio.d_model,
                                        n_layers=e.audio.n_layers, n_heads=e.audio.n_heads, level_token=e.audio.level_token),
                           **_lora_kwargs(e.audio.lora), where="encoders.audio.lora")
        comment = apply_lora(CommentEncoder(e.comment.backbone, max_tokens=e.comment.max_tokens,
                                            max_comments_per_step=e.comment.max_comments_per_step,
                                            tiny_dim=e.comment.tiny_dim),
                             **_lora_kwargs(e.comment.lora), where="encoders.comment.lora")
        fusion = FusionQFormer([frame.dim, audio.dim, comment.dim], **dataclasses.asdict(cfg.fusion))
        return cls(frame, audio, comment, fusion, cache=TokenCache(e.cache_dir) if e.cache_dir else None,
                   frozen_prefix=e.frozen_prefix, frame_runtime=e.frame.runtime, onnx_cache_dir=e.cache_dir)

    def encoders(self) -> dict[str, Encoder]:
        return {"frame": self.frame, "audio": self.audio, "comment": self.comment}

    # -- non-module work -------------------------------------------------------------------
    def prepare(self, clip: Any, bags: Sequence[Sequence[Any]], streamer: torch.Tensor | None = None) -> MultimodalInputs:
        """A ``mm_live.media.Clip`` (T steps) and T comment bags -> :class:`MultimodalInputs` of B = T steps.

        ``bags[t]`` holds texts or ``Comment`` objects (their ``t`` gives the step offset inside the
        look-back window). Frozen outputs are computed here in eval mode whatever the model's mode:
        with ``frozen_prefix``, the tokens of frozen encoders (``cached``) and the frozen prefix of
        adapted ones (``prefix``; the float frames are then not kept); with a cache, from or to disk.
        """
        n = int(clip.frames.shape[0])
        if len(bags) != n:
            raise CommentsError(f"got {len(bags)} comment bags for a clip of {n} steps: pass one bag per step "
                                "(mm_live.comments.lookback_bags)")
        if not self.training:  # inference preparation: an inference-ready (LoRA-merged) frame backbone may run on ONNX
            attach_frame_runtime(self.frame, self.frame_runtime, tuple(clip.frames.shape[-2:]), self.onnx_cache_dir)
        ends = clip.step_starts.double() + clip.step_seconds
        pairs = [_texts_and_offsets(bag, float(end), clip.step_seconds) for bag, end in zip(bags, ends)]
        inputs = MultimodalInputs(
            frames=None,
            audio=self.audio.preprocess(clip.audio, clip.sample_rate),
            has_audio=clip.has_audio.bool(),
            comments=self.comment.tokenize([t for t, _ in pairs], [o for _, o in pairs]),
            streamer=streamer,
            level=torch.where(clip.has_audio.bool(), step_level(clip.audio)[:, 0], 0.0),
        )
        for name, enc in self.encoders().items():
            if enc.frozen and (self.frozen_prefix or self.cache is not None):
                inputs.cached[name] = self._precompute(name, enc, clip, inputs, prefix=False)
            elif self.frozen_prefix and enc.prefix_stages() > 0:
                inputs.prefix[name] = self._precompute(name, enc, clip, inputs, prefix=True)
        if "frame" not in inputs.cached and "frame" not in inputs.prefix:
            inputs.frames = self.frame.preprocess(clip.frames)
        if "audio" in inputs.cached:
            inputs.audio = {}
        return inputs

    def _precompute(self, name: str, enc: Encoder, clip: Any, inputs: MultimodalInputs, *, prefix: bool) -> Any:
        """Frozen tokens (``prefix`` False: Tokens) or frozen-prefix output (a tensor) of encoder ``name``
        for all steps, ``precompute_steps`` at a time, from the disk cache when there is one."""
        fn = enc.frozen_prefix if prefix else enc.frozen_tokens
        n, step = len(inputs), self.precompute_steps

        def chunk(a: int) -> Any:  # the encoder's input for steps a .. a+step-1
            if name == "frame":  # preprocessed per chunk: the float frames of all steps are never held
                return self.frame.preprocess(clip.frames[a : a + step])
            return self._encoder_input(name, inputs[a : a + step])

        def compute() -> Any:
            return _cat([fn(chunk(a)) for a in range(0, max(n, 1), step)])

        if self.cache is None:
            return compute()
        source = [clip.frames, self.frame.mean, self.frame.std] if name == "frame" else \
            _leaves(self._encoder_input(name, inputs))
        what = "prefix" if prefix else "tokens"
        content = content_hash(CACHE_VERSION, name, what, *source)
        key = enc.prefix_signature() if prefix else enc.signature()
        meta = {"encoder": type(enc).__name__, "what": what, **{k: str(v) for k, v in enc.spec.items()}}
        if prefix:
            return self.cache.get_or_compute(key, content, lambda: {"prefix": compute()}, meta)["prefix"].to(self.frame.mean.device)
        stored = self.cache.get_or_compute(key, content, lambda: _fields(compute()), meta)
        return Tokens(**{k: v.to(self.frame.mean.device) for k, v in stored.items()})

    @staticmethod
    def _encoder_input(name: str, inputs: MultimodalInputs) -> Any:
        x = {"frame": inputs.frames, "audio": inputs.audio, "comment": inputs.comments}[name]
        if x is None:
            raise ValueError(f"these inputs hold no {name} input for the {name} encoder (prepared with its frozen "
                             "part precomputed by a model split differently); prepare them with this model")
        return x

    # -- module work -----------------------------------------------------------------------
    def tokens(self, inputs: MultimodalInputs) -> list[Tokens]:
        """Modality tokens [frame, audio, comment], each [B, N_m, d_m]; audio masked where ``has_audio`` is False.

        Precomputed parts are used as they are: cached tokens skip their encoder, a frozen prefix
        runs only the encoder's adapted stages.
        """
        return [self.modality_tokens(name, inputs) for name in MODALITIES]

    def modality_tokens(self, name: str, inputs: MultimodalInputs) -> Tokens:
        """Tokens of one modality ("frame", "audio" or "comment") for the B steps of ``inputs``."""
        enc = self.encoders()[name]
        if name in inputs.cached:
            tok = inputs.cached[name]
        elif name in inputs.prefix:
            tok = enc.forward_from_prefix(inputs.prefix[name])
        else:
            tok = enc(self._encoder_input(name, inputs))
        if name == "audio":
            tok = Tokens(tok.tokens, tok.mask & inputs.has_audio.to(tok.mask.device).unsqueeze(1), tok.offsets)
        return tok

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


def _fields(x: Any) -> dict[str, torch.Tensor]:
    """A dataclass of tensors as a dict (``dataclasses.asdict`` would deep-copy the tensors)."""
    return {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}


def _leaves(x: Any) -> list[torch.Tensor]:
    """Every tensor of a nest of dataclasses, dicts (in key order) and tensors (None has none)."""
    if x is None or isinstance(x, torch.Tensor):
        return [] if x is None else [x]
    items = sorted(x.items()) if isinstance(x, dict) else _fields(x).items()
    return [t for _, v in items for t in _leaves(v)]
