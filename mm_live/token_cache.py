"""Frozen-token cache: the output tokens of a frozen encoder (LoRA off), on disk.

Repeated epochs and long behaviour histories (EM3) then pass only through the trainable parts.
A file is ``<root>/<encoder signature>/<content hash>.safetensors`` holding ``tokens``, ``mask`` and
``offsets``. The encoder signature hashes the encoder's construction arguments and weights, so a
config or weight change lands in another directory (invalidation); the content hash covers the
exact prepared inputs (so also the sampling parameters that produced them). Writes are atomic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mm_live.encoders.base import Encoder, Tokens
from mm_live.fileio import atomic_path


def content_hash(*parts: torch.Tensor | str) -> str:
    """sha256 over tensors (dtype, shape, bytes) and strings, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


class TokenCache:
    """Cached :class:`Tokens` of frozen encoders under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, encoder: Encoder, content: str) -> Path:
        return self.root / encoder.signature() / f"{content}.safetensors"

    def load(self, encoder: Encoder, content: str) -> Tokens | None:
        """Cached tokens, or None on a miss (a missing or unreadable file)."""
        path = self.path(encoder, content)
        if not path.is_file():
            return None
        try:
            t = load_file(str(path))
            return Tokens(t["tokens"], t["mask"], t["offsets"])
        except (SafetensorError, KeyError, OSError):
            return None  # a damaged file is recomputed and overwritten

    def save(self, encoder: Encoder, content: str, tokens: Tokens) -> None:
        data = {"tokens": tokens.tokens, "mask": tokens.mask, "offsets": tokens.offsets}
        with atomic_path(self.path(encoder, content)) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in data.items()}, str(tmp),
                      metadata={"encoder": type(encoder).__name__, **{k: str(v) for k, v in encoder.spec.items()}})

    def get_or_compute(self, encoder: Encoder, content: str, compute: Callable[[], Tokens]) -> Tokens:
        """Tokens for ``content`` from disk, or from ``compute()`` (run without autograd) and stored."""
        cached = self.load(encoder, content)
        if cached is not None:
            return cached
        with torch.no_grad():
            tokens = compute()
        self.save(encoder, content, tokens)
        return tokens
