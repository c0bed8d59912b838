"""The one small interface every modality encoder follows, and the LoRA target table.

An encoder wraps a *backbone* (the pretrained or random network that LoRA adapts) and turns
prepared inputs into a sequence of tokens ``[B, N, d_enc]`` with a validity mask ``[B, N]``.
Preparation that is not module work (normalisation, resampling, log-mel, tokenisation) is done by
the encoder's ``preprocess``/``tokenize`` method, outside ``forward``.

Frozen parts are computed once, outside the training step: a fully frozen encoder's tokens
(:meth:`Encoder.frozen_tokens`) and, for a backbone made of stages, the frozen stages below the
first LoRA-adapted one (:meth:`Encoder.frozen_prefix`, then :meth:`Encoder.forward_from_prefix`
runs the adapted top). Both always run in eval mode without autograd.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

# LoRA target modules per backbone family (peft matches a listed name as a suffix of a module's
# dotted name). transformers 5.x renamed ViT/AST attention to q_proj/v_proj like CLIP, SigLIP,
# Whisper and wav2vec2; BERT-style text models (MiniLM) still use query/value.
LORA_TARGETS: dict[str, list[str]] = {
    # Expand/project 1x1 convs of the last six MBConv blocks (DESIGN.md: r=8 trains 2.4% of 4.8M).
    "efficientnet-lite": [f"_blocks.{i}.{c}" for i in range(10, 16) for c in ("_expand_conv", "_project_conv")],
    "tiny-conv": ["conv2", "conv3"],
    "hf-q_proj": ["q_proj", "v_proj"],  # ViT, CLIP, SigLIP, AST, Whisper, wav2vec2 (transformers 5.x)
    "hf-query": ["query", "value"],  # BERT, MiniLM, RoBERTa
    "hf-t5": ["q", "v"],
}


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars and warnings (one line per backbone load otherwise)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def hf_family(model: nn.Module) -> str | None:
    """The :data:`LORA_TARGETS` family of a Hugging Face model, read from its attention layer names."""
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for family in ("hf-q_proj", "hf-query", "hf-t5"):
        if set(LORA_TARGETS[family]) <= leaves:
            return family
    return None


@dataclass
class Tokens:
    """Tokens of one modality for a batch of steps.

    tokens:  [B, N, d_enc] float
    mask:    [B, N] bool, True where a token exists (False: padding / missing modality)
    offsets: [B, N] long, step offset of each token inside the look-back window (0 = this step)
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def full(cls, tokens: torch.Tensor) -> "Tokens":
        """All tokens present, all at offset 0."""
        b, n = tokens.shape[:2]
        return cls(tokens, torch.ones(b, n, dtype=torch.bool, device=tokens.device),
                   torch.zeros(b, n, dtype=torch.long, device=tokens.device))

    def to(self, device: torch.device | str) -> "Tokens":
        return Tokens(self.tokens.to(device), self.mask.to(device), self.offsets.to(device))


def is_lora_layer(module: nn.Module) -> bool:
    """True for a layer peft has wrapped with a LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def first_adapted(stages: Sequence[Sequence[nn.Module]]) -> int:
    """Index of the first stage holding a peft LoRA layer or a trainable parameter; ``len(stages)`` if none.

    Read from the modules themselves (where peft put its layers, what requires grad), not from a
    table, so user-chosen ``target_modules`` move the split with them.
    """
    for i, modules in enumerate(stages):
        for m in (sub for top in modules for sub in top.modules()):
            if is_lora_layer(m) or any(p.requires_grad for p in m.parameters(recurse=False)):
                return i
    return len(stages)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode inside the block; every submodule's own mode is restored afterwards
    (``module.train(was)`` would not restore a mix such as BatchNorm held in eval inside a training model)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def digest(spec: dict[str, Any], tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Short sha256 of a JSON-able ``spec`` and named tensors (their bytes), for cache keys."""
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


class Encoder(nn.Module):
    """Base class: a ``backbone`` submodule, its output width ``dim`` and its LoRA target family.

    Subclasses set ``self.backbone``, ``self.dim``, ``self.family`` and ``self.spec`` (the plain
    keyword arguments they were built from, used in cache keys) and implement ``forward``.

    A frozen backbone (every non-LoRA parameter frozen) stays deterministic in training mode: its own
    dropout, stochastic depth and BatchNorm statistics are off (the backbone is held in eval mode),
    while the LoRA adapters' dropout follows the training mode. The backbone is a fixed feature
    extractor, so training, held-out evaluation, the token cache and the frozen prefix all see the
    same features from it; the adapters are what trains and what dropout regularises. (peft's own
    recipe leaves the base model's dropout on during LoRA fine-tuning; this is our choice.)

    Encoders whose backbone is a chain of stages (``backbone_stages``) can split at the first
    adapted stage: ``forward(x) == forward_from_prefix(frozen_prefix(x))``.
    """

    backbone: nn.Module
    dim: int
    family: str | None  # key of LORA_TARGETS ("unknown": pretrained, no default); None: random, trained fully
    spec: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self._signature: str | None = None
        # Weights loaded from a checkpoint change the signature.
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_signature", None))

    @property
    def default_lora_targets(self) -> list[str]:
        return list(LORA_TARGETS.get(self.family, [])) if self.family else []

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        return sum(p.numel() for p in self.trainable_parameters()), total

    @property
    def frozen(self) -> bool:
        """True when nothing in the encoder trains: its tokens may be cached."""
        return not any(p.requires_grad for p in self.parameters())

    @property
    def backbone_frozen(self) -> bool:
        """True when every backbone parameter outside the LoRA adapters is frozen."""
        return not any(p.requires_grad for n, p in self.backbone.named_parameters() if "lora_" not in n)

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode)
        if mode and self.backbone_frozen:  # see the class docstring: a frozen backbone is deterministic
            self.backbone.eval()
            for m in self.backbone.modules():
                if is_lora_layer(m):
                    m.lora_dropout.train()
        return self

    def signature(self) -> str:
        """Hash of the construction arguments and the current weights (frozen-token cache key).

        Computed once per instance: a frozen encoder's weights do not change.
        """
        if self._signature is None:
            self._signature = digest({"class": type(self).__name__, **self.spec}, sorted(self.state_dict().items()))
        return self._signature

    def encode(self, *args: Any, **kwargs: Any) -> Tokens:
        """Alias of ``self(...)``: prepared inputs -> :class:`Tokens` ``[B, N, dim]``."""
        return self(*args, **kwargs)

    @torch.no_grad()
    def frozen_tokens(self, *args: Any) -> Tokens:
        """``self(*args)`` in eval mode without autograd, whatever the current mode (restored after):
        what is computed once and reused (token cache) must not carry training-time randomness."""
        with evaluating(self):
            return self(*args)

    # -- frozen prefix ---------------------------------------------------------------------
    def backbone_stages(self) -> list[list[nn.Module]]:
        """The backbone as a chain of stages (the modules of each), for a split at the first adapted
        stage; [] when the backbone is not split (the default)."""
        return []

    def prefix_stages(self) -> int:
        """How many leading stages are frozen and run by :meth:`frozen_prefix` (0: no usable prefix)."""
        stages = self.backbone_stages()
        return first_adapted(stages) if stages else 0

    def prefix_signature(self) -> str:
        """Cache key of the frozen prefix: construction arguments, the split point and the weights of
        the prefix stages only (LoRA weights above it do not change it)."""
        k = self.prefix_stages()
        stages = self.backbone_stages()[:k]
        tensors = [(f"{i}.{j}.{n}", t) for i, mods in enumerate(stages) for j, m in enumerate(mods)
                   for n, t in sorted(m.state_dict().items())]
        return digest({"class": type(self).__name__, "prefix_stages": k, **self.spec}, tensors)

    def frozen_prefix(self, x: Any) -> torch.Tensor:
        """Inputs -> output of the frozen stages, computed in eval mode without autograd."""
        raise NotImplementedError(f"{type(self).__name__} has no frozen prefix (prefix_stages() is 0)")

    def forward_from_prefix(self, h: torch.Tensor) -> Tokens:
        """Output of :meth:`frozen_prefix` -> Tokens, running only the stages above the prefix."""
        raise NotImplementedError(f"{type(self).__name__} has no frozen prefix (prefix_stages() is 0)")


def freeze_batchnorm(module: nn.Module) -> None:
    """Keep BatchNorm layers in eval mode: a frozen backbone's running statistics must not move."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
