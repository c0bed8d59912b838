"""Several processes, one run: ``torch.distributed`` as ``torchrun`` starts it.

``torchrun --nproc_per_node=N -m mm_live train ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment. :func:`session`
reads them, joins the process group (gloo on the CPU, nccl on CUDA, one GPU per local rank) and
leaves it at the end; without those variables it is a one-process run and nothing is initialised.

The trainer (:mod:`mm_live.training`) wraps the model in ``DistributedDataParallel`` (gradients are
averaged by its bucketed all-reduce during ``backward``) and shards every global batch across the
ranks; the helpers here are the few collectives the core needs besides that: a barrier, a mean of
logged values, and broadcasting rank 0's evaluation. Nothing here is called inside a model's
``forward``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from mm_live.errors import ConfigError
from mm_live.runtime import resolve_device

# Ranks wait for each other at barriers while one of them embeds its shard or builds the index;
# torchrun ends every rank when one fails, so a long timeout only matters for a live peer.
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank in ``[0, world)``, rank on its machine, its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """True on rank 0, the one process that writes checkpoints, logs and progress bars."""
        return self.rank == 0


def launched() -> bool:
    """True when this process was started by ``torchrun`` (or another launcher) for a run of several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Rank 0 (also before and after the process group exists: read from torchrun's environment)."""
    return rank() == 0


def current(device: str | torch.device = "auto") -> Dist:
    """This process's :class:`Dist` (rank 0 of 1 when no process group is initialised)."""
    if not dist.is_initialized():
        return Dist(device=resolve_device(device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
    return Dist(dist.get_rank(), dist.get_world_size(), local, dev)


@contextlib.contextmanager
def session(device: str | torch.device = "auto") -> Iterator[Dist]:
    """Join the process group torchrun set up (if any) for the block, then leave it.

    Nested sessions (a script that trains several runs in one process group) reuse the group and
    only the outermost one destroys it.
    """
    if not launched() or dist.is_initialized():
        yield current(device)
        return
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {var} is not set: start several processes "
                              "with 'torchrun --nproc_per_node=N -m mm_live ...' (see docs/scaling.md)")
    dev = resolve_device(device)
    if dev.type == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} CUDA devices: "
                              "start at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=TIMEOUT)
    try:
        yield current(device)
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op in a one-process run)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def mean(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each logged value; a key some ranks lack counts 0 there (as a
    micro-batch that logs no such part adds nothing to a one-process run's accumulated log)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    out: dict[str, float] = {}
    for part in _all_gather_json(values):
        for k, v in part.items():
            out[k] = out.get(k, 0.0) + v
    return {k: out[k] / dist.get_world_size() for k in sorted(out)}


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _all_gather_json(obj: Any) -> list[Any]:
    """Every rank's ``obj``, as JSON bytes (``all_gather_object`` would unpickle what peers send)."""
    data = torch.tensor(list(json.dumps(obj).encode("utf-8")), dtype=torch.uint8, device=_device())
    sizes = [torch.zeros(1, dtype=torch.long, device=_device()) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.long, device=_device()))
    width = int(max(sizes))
    bufs = [torch.zeros(width, dtype=torch.uint8, device=_device()) for _ in sizes]
    dist.all_gather(bufs, torch.nn.functional.pad(data, (0, width - len(data))))
    return [json.loads(bytes(b[: int(n)].cpu().tolist()).decode("utf-8")) for b, n in zip(bufs, sizes)]


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` (JSON-serialisable: metrics, flags) on every rank.

    Sent as JSON bytes rather than with ``broadcast_object_list``, which pickles: nothing a peer
    sends is unpickled."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    dev = _device()
    data = json.dumps(obj).encode("utf-8") if dist.get_rank() == 0 else b""
    size = torch.tensor([len(data)], dtype=torch.long, device=dev)
    dist.broadcast(size, src=0)
    buf = torch.zeros(int(size), dtype=torch.uint8, device=dev)
    if dist.get_rank() == 0:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buf, src=0)
    return json.loads(bytes(buf.cpu().tolist()).decode("utf-8"))
