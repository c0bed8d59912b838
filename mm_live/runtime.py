"""Where and how a run computes: device, precision and thread count, chosen once per process.

Model code never picks a device or a precision (litgpt's rule); the entry points (``train``,
``score``, the CLI) call :func:`setup` once and pass the device down.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from mm_live.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` -> a torch.device."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is visible on this machine; use --device cpu or auto")
        return torch.device(name)
    raise ConfigError(f"--device must be one of {list(DEVICES)} (or cuda:N), got {device!r}")


def setup(device: str | torch.device | None = "auto", threads: int = 0) -> torch.device:
    """Resolve the device and set torch's intra-op thread count (``threads`` 0 keeps torch's default)."""
    if threads and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return resolve_device(device)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); a no-op on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``module`` in eval mode for the block, then restore its previous mode."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)
