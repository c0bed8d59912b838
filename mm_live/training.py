"""The trainer shared by every pipeline.

Config-driven (:class:`~mm_live.config.TrainConfig`): AdamW (weight decay on weight matrices only,
nanoGPT's grouping), linear warm-up then cosine decay, gradient clipping and accumulation, bf16
autocast on CUDA only, evaluation every ``eval_every`` optimizer
steps, ``best/`` and ``last/`` checkpoints (atomic, safetensors, no pickle on load), a
``metrics.jsonl`` log and a tqdm bar. Resume is exact: the same seed plus ``resume=True`` ends
with the same weights as an uninterrupted run, because

* batches come from a :class:`BatchSource` whose order depends only on ``(seed, epoch)``, so the
  batches already consumed in the interrupted epoch are regenerated and skipped, and
* the optimizer, scheduler and every RNG (torch, numpy, python) are restored from ``last/``.

A pipeline model only has to implement ``training_step(batch) -> StepOutput``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from mm_live.checkpoint import load_checkpoint, load_weights, save_checkpoint
from mm_live.config import Config
from mm_live.errors import CheckpointError
from mm_live.runtime import autocast

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


class ShuffledBatches:
    """A :class:`BatchSource` over a sequence of examples: shuffle by ``(seed, epoch)``, chunk, collate."""

    def __init__(self, examples: Sequence[Any], batch_size: int, collate: Callable[[list[Any]], Any], shuffle: bool = True):
        self.examples, self.batch_size, self.collate, self.shuffle = examples, batch_size, collate, shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def epoch(self, epoch: int, seed: int, skip: int = 0) -> Iterator[Any]:
        order = np.arange(len(self.examples))
        if self.shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(len(self.examples))
        for start in range(skip * self.batch_size, len(order), self.batch_size):
            yield self.collate([self.examples[i] for i in order[start : start + self.batch_size]])


class LoaderBatches:
    """A :class:`BatchSource` over a map-style ``torch.utils.data.Dataset`` through a DataLoader.

    The order of an epoch is a permutation drawn from ``(seed, epoch)`` alone, so resume regenerates
    it; ``skip`` batches already consumed are not loaded at all. ``num_workers`` processes decode
    and prepare examples in parallel (each keeps its own cache inside the dataset).
    """

    def __init__(self, dataset: Any, batch_size: int, collate: Callable[[list[Any]], Any], *, num_workers: int = 0,
                 shuffle: bool = True):
        self.dataset, self.batch_size, self.collate = dataset, batch_size, collate
        self.num_workers, self.shuffle = num_workers, shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def epoch(self, epoch: int, seed: int, skip: int = 0) -> Iterator[Any]:
        from torch.utils.data import DataLoader

        n = len(self.dataset)
        order = np.random.default_rng([seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)][skip:]
        if not batches:
            return iter(())
        return iter(DataLoader(self.dataset, batch_sampler=batches, collate_fn=self.collate,
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
        self.device, self.progress = torch.device(device), progress
        tc = config.train
        self.steps_per_epoch = math.ceil(len(train_data) / tc.grad_accum)
        self.total_steps = self.steps_per_epoch * tc.epochs if max_steps is None else max_steps
        if not any(p.requires_grad for p in model.parameters()):
            raise CheckpointError("the model has no trainable parameters: enable LoRA or unfreeze a part")
        self.optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, warmup=tc.warmup_steps, total=self.total_steps)
        )
        self.use_amp = tc.amp and self.device.type == "cuda"

    # ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train to the end (or until optimizer step ``stop_after``, saving ``last/`` there, as an
        interrupted run would); ``resume=True`` continues from ``out_dir/last``."""
        tc = self.config.train
        self.model.to(self.device)
        step, epoch, micro_done, best, best_step = 0, 0, 0, None, None
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
            self._truncate_log(step)
        else:
            seed_everything(tc.seed)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "metrics.jsonl").unlink(missing_ok=True)
        last_eval: dict[str, float] = {}
        bar = _progress(total=self.total_steps, initial=step, enabled=self.progress)
        t0 = time.perf_counter()
        self.model.train()
        while step < self.total_steps and epoch < tc.epochs:
            batches = self._epoch_batches(epoch, micro_done)  # exact resume: skip what was consumed
            micro = micro_done
            accum_parts: dict[str, float] = {}
            for batch in batches:
                with autocast(self.device, self.use_amp):
                    out = self.model.training_step(to_device(batch, self.device))
                (out.loss / tc.grad_accum).backward()
                for k, v in {"loss": float(out.loss.detach()), **out.parts}.items():
                    accum_parts[k] = accum_parts.get(k, 0.0) + v / tc.grad_accum
                micro += 1
                last_in_epoch = micro == len(self.train_data)
                if micro % tc.grad_accum and not last_in_epoch:
                    continue
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)) if tc.grad_clip > 0 else 0.0
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
                    if value is not None and (best is None or (value >= best if self.mode == "max" else value <= best)):
                        best, best_step = value, step
                        save_checkpoint(self.out_dir / "best", config=self.config, model=self.model, kind=self.kind,
                                        meta={"step": step, "metrics": last_eval})
                    state = {"step": step, "epoch": epoch if not last_in_epoch else epoch + 1,
                             "micro_done": micro if not last_in_epoch else 0, "best": best, "best_step": best_step,
                             "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                             "rng": _rng_state()}
                    save_checkpoint(self.out_dir / "last", config=self.config, model=self.model, kind=self.kind,
                                    meta={"step": step, "metrics": last_eval}, trainer_state=state)
                if done or interrupted:
                    break
            else:
                epoch += 1
                micro_done = 0
                continue
            break
        bar.close()
        return TrainResult(self.out_dir, step, best, best_step, last_eval)

    # ------------------------------------------------------------------------------------
    def _resume_checkpoint(self):
        """``out_dir/last`` with its trainer state, refused unless it was made by this very setup."""
        last = self.out_dir / "last"
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
        if self.evaluate is None:
            return {}
        # Evaluation must not disturb the training RNG streams (exact resume relies on them).
        rng = _rng_state()
        self.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in self.evaluate(self.model).items()}
        self.model.train()
        _set_rng_state(rng)
        self._log({"step": step, "eval": metrics})
        return metrics

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
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


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
