"""The one small interface every modality encoder follows, and the LoRA target table.

An encoder wraps a *backbone* (the pretrained or random network that LoRA adapts) and turns
prepared inputs into a sequence of tokens ``[B, N, d_enc]`` with a validity mask ``[B, N]``.
Preparation that is not module work (normalisation, resampling, log-mel, tokenisation) is done by
the encoder's ``preprocess``/``tokenize`` method, outside ``forward``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

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


class Encoder(nn.Module):
    """Base class: a ``backbone`` submodule, its output width ``dim`` and its LoRA target family.

    Subclasses set ``self.backbone``, ``self.dim``, ``self.family`` and ``self.spec`` (the plain
    keyword arguments they were built from, used in cache keys) and implement ``forward``.
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

    def signature(self) -> str:
        """Hash of the construction arguments and the current weights (frozen-token cache key).

        Computed once per instance: a frozen encoder's weights do not change.
        """
        if self._signature is None:
            h = hashlib.sha256(json.dumps({"class": type(self).__name__, **self.spec}, sort_keys=True, default=str).encode())
            for name, t in sorted(self.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._signature = h.hexdigest()[:32]
        return self._signature

    def encode(self, *args: Any, **kwargs: Any) -> Tokens:
        """Alias of ``self(...)``: prepared inputs -> :class:`Tokens` ``[B, N, dim]``."""
        return self(*args, **kwargs)


def freeze_batchnorm(module: nn.Module) -> None:
    """Keep BatchNorm layers in eval mode: a frozen backbone's running statistics must not move."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
