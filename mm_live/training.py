"""The trainer shared by every pipeline.

Config-driven (:class:`~mm_live.config.TrainConfig`): AdamW (weight decay on weight matrices only,
nanoGPT's grouping), linear warm-up then cosine decay, gradient clipping and accumulation, bf16
autocast on CUDA only, evaluation every ``eval_every`` optimizer
steps, ``best/`` and ``last/`` checkpoints (atomic, safetensors, no pickle on load), a
``metrics.jsonl`` log and a tqdm bar. Resume is exact: the same seed plus ``resume=True`` ends
with the same weights as an uninterrupted run, because

* batches come from a :class:`BatchSource` whose order depends only on ``(seed, epoch)``, so the
  batches already consumed in the interrupted epoch are regenerated and skipped,
* every micro-batch is seeded from ``(seed, step, its place in the step)`` alone, and
* the optimizer and scheduler (and the RNGs) are restored from ``last/``.

Under ``torchrun`` (:mod:`mm_live.distributed`) the model runs inside DistributedDataParallel,
each rank takes its contiguous slice of every global batch (:class:`IndexBatches`), rank 0
evaluates and writes, and the result equals one process accumulating the same micro-batches
(docs/scaling.md).

A pipeline model only has to implement ``training_step(batch) -> StepOutput``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from mm_live import distributed
from mm_live.checkpoint import load_checkpoint, load_weights, save_checkpoint
from mm_live.config import Config
from mm_live.errors import CheckpointError, ConfigError
from mm_live.fileio import existing_dir
from mm_live.runtime import autocast

_COUNT = "__micro_batches__"  # key of the micro-batch count among the logged parts while they are summed

# Config fields that change how a run computes, not what it computes: they may differ on --resume.
RUNTIME_FIELDS = ("train.threads", "train.num_workers", "train.cache_mb", "encoders.cache_dir", "em3.cache_mb", "em3.data")


@dataclass
class StepOutput:
    """What a model's ``training_step`` returns: the loss to minimise and its logged parts."""

    loss: torch.Tensor  # scalar
    parts: dict[str, float] = field(default_factory=dict)


class TrainableModel(Protocol):
    def training_step(self, batch: Any) -> StepOutput: ...


class BatchSource(Protocol):
    """Batches of one epoch, in an order that depends only on ``(seed, epoch)``."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, seed: int, skip: int = 0) -> Iterator[Any]: ...


@dataclass
class Shard:
    """One rank's part of a global batch. ``weight`` 0 marks a rank that got no example of the
    epoch's last, short batch: it runs the batch's first examples with its loss scaled by 0, so it
    still joins the gradient all-reduce and adds nothing (as a single process adds no micro-batch)."""

    batch: Any
    weight: float = 1.0


class IndexBatches:
    """A :class:`BatchSource` that plans an epoch as lists of example indices, then loads them.

    Subclasses give :meth:`plan` (the global batches of an epoch, from ``(seed, epoch)`` alone) and
    :meth:`load` (collate each list); ``fixed_size`` says every batch but the last has
    ``batch_size`` examples. :meth:`sharded` gives rank ``r`` of ``world`` the ``r``-th contiguous
    ``batch_size / world`` slice of every global batch (an equal split for batches of varying size).

    Why not ``torch.utils.data.DistributedSampler``: it deals a permutation out to the ranks with a
    stride and pads it, so a global batch is split differently from any one-process run. Contiguous
    slices make a ``world``-rank run compute exactly what one process does with ``batch_size / world``
    and ``grad_accum * world`` — the same micro-batches, accumulated — whatever the loss couples
    inside a batch (in-batch negatives, batch norm).
    """

    batch_size: int
    shuffle: bool = True
    fixed_size: bool = True
    rank, world = 0, 1

    def size(self) -> int:
        """Number of examples."""
        raise NotImplementedError

    def __len__(self) -> int:
        return math.ceil(self.size() / self.batch_size)

    def plan(self, epoch: int, seed: int) -> list[np.ndarray]:
        n = self.size()
        order = np.random.default_rng([seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]

    def load(self, batches: list[np.ndarray]) -> Iterator[Any]:
        raise NotImplementedError

    def sharded(self, rank: int, world: int) -> "IndexBatches":
        """This source as rank ``rank`` of ``world`` sees it (yields :class:`Shard` s)."""
        if self.fixed_size and self.batch_size % world:
            raise ConfigError(f"train.batch_size={self.batch_size} does not split over {world} processes: "
                              f"make it a multiple of {world} (each process takes batch_size / {world})")
        shard = copy.copy(self)
        shard.rank, shard.world = rank, world
        return shard

    def epoch(self, epoch: int, seed: int, skip: int = 0) -> Iterator[Any]:
        batches = self.plan(epoch, seed)[skip:]
        if self.world == 1:
            return self.load(batches)
        parts, weights = [], []
        for idx in batches:
            size = self.batch_size // self.world if self.fixed_size else math.ceil(len(idx) / self.world)
            part = idx[self.rank * size : (self.rank + 1) * size]
            parts.append(part if len(part) else idx[:size])
            weights.append(1.0 if len(part) else 0.0)
        return (Shard(b, w) for b, w in zip(self.load(parts), weights))


class ShuffledBatches(IndexBatches):
    """A :class:`BatchSource` over a sequence of examples: shuffle by ``(seed, epoch)``, chunk, collate."""

    def __init__(self, examples: Sequence[Any], batch_size: int, collate: Callable[[list[Any]], Any], shuffle: bool = True):
        self.examples, self.batch_size, self.collate, self.shuffle = examples, batch_size, collate, shuffle

    def size(self) -> int:
        return len(self.examples)

    def load(self, batches: list[np.ndarray]) -> Iterator[Any]:
        return (self.collate([self.examples[i] for i in idx]) for idx in batches)


class LoaderBatches(IndexBatches):
    """A :class:`BatchSource` over a map-style ``torch.utils.data.Dataset`` through a DataLoader.

    The order of an epoch is a permutation drawn from ``(seed, epoch)`` alone, so resume regenerates
    it; ``skip`` batches already consumed are not loaded at all, nor are other ranks' shards.
    ``num_workers`` processes decode and prepare examples in parallel (each keeps its own cache
    inside the dataset).
    """

    def __init__(self, dataset: Any, batch_size: int, collate: Callable[[list[Any]], Any], *, num_workers: int = 0,
                 shuffle: bool = True):
        self.dataset, self.batch_size, self.collate = dataset, batch_size, collate
        self.num_workers, self.shuffle = num_workers, shuffle

    def size(self) -> int:
        return len(self.dataset)

    def load(self, batches: list[np.ndarray]) -> Iterator[Any]:
        from torch.utils.data import DataLoader

        if not batches:
            return iter(())
        return iter(DataLoader(self.dataset, batch_sampler=[b.tolist() for b in batches], collate_fn=self.collate,
                               num_workers=self.num_workers, persistent_workers=False))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices/kernels; none on biases, norms and embeddings (nanoGPT)."""
    no_decay_modules = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    skip = {id(p) for m in model.modules() if isinstance(m, no_decay_modules) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and id(p) not in skip else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    best_metric: float | None
    best_step: int | None
    last_eval: dict[str, float]


def warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(tc: Any, total: int) -> int:
    """Warm-up length of a run of ``total`` optimizer steps: ``train.warmup_steps`` when set, else
    ``train.warmup_fraction`` of the run (a fixed count is most of a short run and nothing of a long one)."""
    return tc.warmup_steps if tc.warmup_steps is not None else round(tc.warmup_fraction * total)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # weights_only loading accepts tensors and builtins, not numpy arrays.
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


class Trainer:
    """Train ``model`` on ``train_data``; evaluate with ``evaluate`` (higher ``metric`` is better
    when ``mode="max"``); write checkpoints and logs to ``out_dir``."""

    def __init__(
        self,
        model: nn.Module,
        config: Config,
        out_dir: str | Path,
        *,
        kind: str,
        train_data: BatchSource,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        metric: str = "loss",
        mode: str = "min",
        device: str | torch.device = "cpu",
        progress: bool = True,
        max_steps: int | None = None,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.model, self.config, self.out_dir, self.kind = model, config, Path(out_dir), kind
        self.train_data, self.evaluate, self.metric, self.mode = train_data, evaluate, metric, mode
        self.device = torch.device(device)
        d = distributed.current(self.device)
        self.rank, self.world, self.main = d.rank, d.world, d.main
        self.progress = progress and self.main  # one bar and one log: rank 0's
        if self.world > 1:
            if not hasattr(train_data, "sharded"):
                raise ConfigError(f"the '{kind}' batches cannot be split across processes: train it in one process "
                                  "(without torchrun)")
            self.train_data = train_data = train_data.sharded(self.rank, self.world)
        tc = config.train
        self.steps_per_epoch = math.ceil(len(train_data) / tc.grad_accum)
        self.total_steps = self.steps_per_epoch * tc.epochs if max_steps is None else max_steps
        if not any(p.requires_grad for p in model.parameters()):
            raise CheckpointError("the model has no trainable parameters: enable LoRA or unfreeze a part")
        self.optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr)
        warmup = warmup_steps(tc, self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, warmup=warmup, total=self.total_steps)
        )
        self.use_amp = tc.amp and self.device.type == "cuda"

    def _wrap(self) -> Callable[[Any], tuple[torch.Tensor, dict[str, float]]]:
        """The training-step function: the model's own, or through DistributedDataParallel, whose
        hooks average the gradients across ranks during ``backward``."""
        if self.world == 1:
            return _Steps(self.model)
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: a config may leave trainable parts out of the loss (e.g. an
        # embedding head with its loss weight at 0); broadcast_buffers off: the only buffers a step
        # changes are batch-norm statistics, and rank 0's are the ones saved.
        return DistributedDataParallel(_Steps(self.model), device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                       find_unused_parameters=True, broadcast_buffers=False)

    # ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train to the end (or until optimizer step ``stop_after``, saving ``last/`` there, as an
        interrupted run would); ``resume=True`` continues from ``out_dir/last``."""
        tc = self.config.train
        self.model.to(self.device)
        step, epoch, micro_done, best, best_step = 0, 0, 0, None, None
        created = False  # a run directory this call made is removed again if it fails before a checkpoint
        if resume:
            ckpt = self._resume_checkpoint()
            load_weights(self.model, ckpt)
            self.model.to(self.device)
            st = ckpt.trainer_state
            self.optimizer.load_state_dict(st["optimizer"])
            self.scheduler.load_state_dict(st["scheduler"])
            step, epoch, micro_done = st["step"], st["epoch"], st["micro_done"]
            best, best_step = st["best"], st["best_step"]
            _set_rng_state(st["rng"])
            if self.main:
                self._truncate_log(step)
                for tmp in [*self.out_dir.glob(".best.*.tmp"), *self.out_dir.glob(".last.*.tmp")]:
                    shutil.rmtree(tmp, ignore_errors=True)  # a checkpoint write cut by the kill
                if best_step == step and not (self.out_dir / "best").exists():
                    self._save("best", meta=ckpt.meta)  # killed between last/ and best/ of this step
        else:
            seed_everything(tc.seed)
            if self.main:
                created = not self.out_dir.exists()
                self.out_dir.mkdir(parents=True, exist_ok=True)
                (self.out_dir / "metrics.jsonl").unlink(missing_ok=True)
        run_step = self._wrap()
        last_eval: dict[str, float] = {}
        bar = _progress(total=self.total_steps, initial=step, enabled=self.progress)
        try:  # the bar is closed before an error line is printed
            t0 = time.perf_counter()
            self.model.train()
            while step < self.total_steps and epoch < tc.epochs:
                batches = self._epoch_batches(epoch, micro_done)  # exact resume: skip what was consumed
                micro = micro_done
                accum_parts: dict[str, float] = {}
                for batch in batches:
                    batch, weight = (batch.batch, batch.weight) if isinstance(batch, Shard) else (batch, 1.0)
                    # The randomness of a micro-batch (dropout, ...) is a function of its place in the
                    # run alone, so rank r of a world-W run draws what micro-batch a*W + r of a
                    # one-process run accumulating W*grad_accum draws (and resume needs no RNG state).
                    seed_everything(micro_seed(tc.seed, step, (micro % tc.grad_accum) * self.world + self.rank))
                    micro += 1
                    last_in_epoch = micro == len(self.train_data)
                    sync = not (micro % tc.grad_accum and not last_in_epoch)
                    no_sync = run_step.no_sync() if self.world > 1 and not sync else contextlib.nullcontext()
                    with no_sync:
                        with autocast(self.device, self.use_amp):
                            loss, parts = run_step(to_device(batch, self.device))
                        (loss * (weight / tc.grad_accum)).backward()
                    for k, v in {"loss": float(loss.detach()), **parts}.items():
                        accum_parts[k] = accum_parts.get(k, 0.0) + weight * v
                    accum_parts[_COUNT] = accum_parts.get(_COUNT, 0.0) + weight
                    if not sync:
                        continue
                    # logged: the mean over the micro-batches of the step, on every rank (a short last
                    # step and a rank's empty slice do not dilute it)
                    accum_parts = distributed.mean(accum_parts)
                    count = accum_parts.pop(_COUNT)
                    accum_parts = {k: v / count for k, v in accum_parts.items()}
                    grad_norm = (float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip))
                                 if tc.grad_clip > 0 else 0.0)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    step += 1
                    self._log({"step": step, "epoch": epoch, "lr": self.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                               **{f"train/{k}": v for k, v in accum_parts.items()}, "time": time.perf_counter() - t0})
                    bar.update(1)
                    bar.set_postfix(loss=f"{accum_parts.get('loss', 0.0):.4f}")
                    accum_parts = {}
                    done = step >= self.total_steps or (last_in_epoch and epoch == tc.epochs - 1)
                    interrupted = stop_after is not None and step >= stop_after
                    if step % tc.eval_every == 0 or done or interrupted:
                        last_eval = self._evaluate(step)
                        value = last_eval.get(self.metric)
                        # ties go to the later (longer-trained) checkpoint
                        improved = value is not None and (best is None or (value >= best if self.mode == "max" else value <= best))
                        if improved:
                            best, best_step = value, step
                        state = {"step": step, "epoch": epoch if not last_in_epoch else epoch + 1,
                                 "micro_done": micro if not last_in_epoch else 0, "best": best, "best_step": best_step,
                                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                                 "rng": _rng_state()}
                        # last/ first: a run killed while best/ is written can still resume (and
                        # rewrites best/ from last/, the same weights; see the resume branch above)
                        self._save("last", meta={"step": step, "metrics": last_eval}, trainer_state=state)
                        if improved:
                            self._save("best", meta={"step": step, "metrics": last_eval})
                    if done or interrupted:
                        break
                else:
                    epoch += 1
                    micro_done = 0
                    continue
                break
        except BaseException:
            # A bad input found mid-run (a clip corrupted in the middle, ...) or Ctrl-C before the
            # first checkpoint leaves nothing half-made behind; a run with a checkpoint is kept for --resume.
            if created and not (self.out_dir / "last").exists() and not (self.out_dir / "best").exists():
                shutil.rmtree(self.out_dir, ignore_errors=True)
            raise
        finally:
            bar.close()
        distributed.barrier()  # every rank returns once rank 0's checkpoints are written
        return TrainResult(self.out_dir, step, best, best_step, last_eval)

    # ------------------------------------------------------------------------------------
    def _resume_checkpoint(self):
        """``out_dir/last`` with its trainer state, refused unless it was made by this very setup."""
        last = existing_dir(self.out_dir / "last")
        if not last.is_dir():
            raise CheckpointError(f"cannot resume: {last} does not exist (no run was started in {self.out_dir}); "
                                  "drop --resume to start a new run")
        ckpt = load_checkpoint(last, kind=self.kind, with_state=True)
        differ = [f for f in ckpt.config.diff(self.config) if f not in RUNTIME_FIELDS]
        if differ:
            shown = ", ".join(differ[:4]) + (f" (+{len(differ) - 4} more)" if len(differ) > 4 else "")
            raise CheckpointError(f"cannot resume {self.out_dir}: it was trained with other settings ({shown}); "
                                  "use the same config and data, or a new --out")
        return ckpt

    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[Any]:
        try:
            return self.train_data.epoch(epoch, self.config.train.seed, skip=skip)
        except TypeError:  # a BatchSource without ``skip``: consume and drop the first batches
            batches = self.train_data.epoch(epoch, self.config.train.seed)
            for _ in range(skip):
                next(batches, None)
            return batches

    def _evaluate(self, step: int) -> dict[str, float]:
        """Rank 0 evaluates the held-out data and every rank gets its metrics, so all ranks take
        the same best-checkpoint decisions."""
        if self.evaluate is None:
            return {}
        metrics = None
        if self.main:
            # Evaluation must not disturb the training RNG streams (exact resume relies on them).
            rng = _rng_state()
            self.model.eval()
            with torch.no_grad():
                metrics = {k: float(v) for k, v in self.evaluate(self.model).items()}
            self.model.train()
            _set_rng_state(rng)
            self._log({"step": step, "eval": metrics})
        return distributed.broadcast(metrics)

    def _save(self, name: str, **parts: Any) -> None:
        """Rank 0 writes ``out_dir/name`` atomically; a failed write (disk full, ...) leaves the
        previous checkpoint in place and stops the run with a one-line error."""
        if not self.main:
            return
        try:
            save_checkpoint(self.out_dir / name, config=self.config, model=self.model, kind=self.kind, **parts)
        except OSError as exc:
            raise CheckpointError(f"could not write checkpoint {self.out_dir / name} ({exc.strerror or exc}); the previous "
                                  "one is intact: free space or fix permissions, then rerun with --resume") from None

    def _truncate_log(self, step: int) -> None:
        """Drop log rows written after the checkpoint we resume from (they are about to be redone)."""
        from mm_live.fileio import atomic_open
        from mm_live.jsonl import iter_jsonl

        path = self.out_dir / "metrics.jsonl"
        if path.is_file():
            skipped: list = []  # a damaged line (e.g. cut by a crash mid-write) is dropped, not fatal
            rows = [obj for _, obj in iter_jsonl(path, "training log", error=CheckpointError, skipped=skipped)
                    if isinstance(obj.get("step"), int) and obj["step"] <= step]
            with atomic_open(path, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)

    def _log(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        path = self.out_dir / "metrics.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise CheckpointError(f"could not append to the training log {path} ({exc.strerror or exc}): free space or "
                                  "fix permissions, then rerun with --resume") from None


class _Steps(nn.Module):
    """``model.training_step`` as a module's forward: DistributedDataParallel only hooks ``forward``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """batch -> (scalar loss, its logged parts)."""
        out = self.model.training_step(batch)
        return out.loss, out.parts


def micro_seed(seed: int, step: int, index: int) -> int:
    """The RNG seed of micro-batch ``index`` of optimizer step ``step`` (a 63-bit hash of the three)."""
    return int(np.random.SeedSequence([seed, step, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor moved to ``device``: tensors, dicts, lists/tuples, dataclasses
    (field by field) and objects with their own ``to``."""
    import dataclasses

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(to_device(v, device) for v in batch)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: to_device(getattr(batch, f.name), device)
                                            for f in dataclasses.fields(batch) if f.init})
    return batch


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)
