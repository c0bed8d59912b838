"""Small tensor helpers shared by the pipelines (pooling, step scattering, id hashing)."""

from __future__ import annotations

import hashlib

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` where ``mask`` is True (zeros where the mask is empty).

    x [..., N, ...] with ``mask`` broadcastable to ``x`` without its trailing feature dims, e.g.
    tokens [B, N, d] and mask [B, N] -> [B, d]; values [B, T] and mask [B, T] -> [B].
    """
    m = mask
    while m.dim() < x.dim():
        m = m.unsqueeze(-1)
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim)  # NaN-safe padding
    return total / m.to(x.dtype).sum(dim).clamp_min(1.0)


def scatter_steps(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """flat [N, ...] and index [S, T] into it (-1 = padding) -> [S, T, ...] (zeros at padding)."""
    out = flat.new_zeros(*index.shape, *flat.shape[1:])
    valid = index >= 0
    out[valid] = flat[index[valid]]
    return out


def hash_id(value: str | int | None, buckets: int) -> int:
    """Stable bucket in ``[1, buckets)`` of an id (0 for None): hashed embedding tables need no vocabulary."""
    if value is None:
        return 0
    h = int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=8).digest(), "little")
    return 1 + h % max(buckets - 1, 1)
