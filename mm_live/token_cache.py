"""Frozen-output cache: what frozen encoder parts compute, on disk.

Two kinds of entries, both computed in eval mode without autograd: the tokens of a fully frozen
encoder (LoRA off) and the frozen prefix of a LoRA-adapted encoder (the stages below its first
adapted layer). Repeated epochs, runs and long behaviour histories (EM3) then pass only through the
trainable parts. A file is ``<root>/<key>/<content hash>.safetensors`` holding named tensors. The
key is the encoder's signature (:meth:`Encoder.signature` for tokens, :meth:`Encoder.prefix_signature`
for a prefix: construction arguments, weights, and for a prefix the split point), so a config,
weight or split change lands in another directory (invalidation); the content hash covers the exact
inputs (so also the sampling parameters that produced them). Writes are atomic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

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
    """Named tensors of frozen encoder outputs under ``root``, by (key, content hash)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str, content: str) -> Path:
        return self.root / key / f"{content}.safetensors"

    def load(self, key: str, content: str) -> dict[str, torch.Tensor] | None:
        """The cached tensors, or None on a miss (a missing or unreadable file)."""
        path = self.path(key, content)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))
        except (SafetensorError, OSError):
            return None  # a damaged file is recomputed and overwritten

    def save(self, key: str, content: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        with atomic_path(self.path(key, content)) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)

    def get_or_compute(self, key: str, content: str, compute: Callable[[], dict[str, torch.Tensor]],
                       metadata: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
        """Tensors for ``content`` from disk, or from ``compute()`` (run without autograd) and stored."""
        cached = self.load(key, content)
        if cached is not None:
            return cached
        with torch.no_grad():
            tensors = compute()
        self.save(key, content, tensors, metadata)
        return tensors
