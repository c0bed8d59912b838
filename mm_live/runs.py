"""Runs: train any task into a run directory, and load any run back from its files alone.

A run directory holds ``best/`` and ``last/`` checkpoints (:mod:`mm_live.checkpoint`) and
``metrics.jsonl``. Each checkpoint's ``config.json`` is the complete typed config, including
``task`` (name, route, modalities, feature dims), so :func:`load_run` rebuilds the model the way
whisper's ``load_model`` does — ``Task.build_model(Config(**saved))`` then the weights — with
nothing remembered elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mm_live import distributed
from mm_live.checkpoint import load_checkpoint, load_weights
from mm_live.config import Config, load_config
from mm_live.errors import CheckpointError
from mm_live.fileio import existing_dir
from mm_live.runtime import setup
from mm_live.tasks import Task, get_task
from mm_live.training import Trainer, TrainResult, seed_everything


@dataclass
class Run:
    """A loaded run: its model (eval mode, on ``device``), config, task and checkpoint metadata."""

    path: Path
    config: Config
    task: Task
    model: nn.Module
    meta: dict[str, Any]
    device: torch.device


def checkpoint_dir(path: str | Path) -> Path:
    """A run directory's ``best/`` (else ``last/``), or ``path`` itself when it is a checkpoint."""
    path = Path(path)
    for name in ("best", "last"):
        sub = existing_dir(path / name)
        if sub.is_dir():
            return sub
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a run directory written by 'mm-live train'")
    return path


def run_task(path: str | Path) -> str:
    """The task name a run or checkpoint was trained for, read from its files (no model is built)."""
    return load_checkpoint(checkpoint_dir(path), weights=False).meta.get("kind", "")


def load_run(path: str | Path, *, task: str | None = None, device: str | torch.device = "auto",
             for_inference: bool = True) -> Run:
    """Rebuild the model of any run from its checkpoint; ``task`` (optional) checks what it holds.

    ``for_inference`` puts the model in eval mode and applies the task's inference preparation
    (LoRA merged into the backbones): do not train the result further.
    """
    ckpt = load_checkpoint(checkpoint_dir(path), kind=task)
    t = get_task(ckpt.meta.get("kind") or ckpt.config.task.name)
    model = t.build_model(ckpt.config)
    load_weights(model, ckpt)
    dev = setup(device, ckpt.config.train.threads)
    if for_inference:
        model = t.prepare_inference(model.eval())
    return Run(ckpt.path, ckpt.config, t, model.to(dev), ckpt.meta, dev)


def resolve_config(config: Config | str | Path | None, task: str, overrides: dict[str, Any] | None = None) -> Config:
    """A config from an object, a file or the defaults, with ``task.name`` and dotted overrides applied.
    Fields neither the file nor the overrides set take the task's own defaults (``Task.train_defaults``)."""
    defaults = get_task(task).train_defaults
    if isinstance(config, Config):
        cfg = config
    else:
        cfg = load_config(config, defaults) if config else Config().replace(**defaults)
    changes = {"task.name": task, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return cfg.replace(**changes)


def train(task: str, data: Any, out: str | Path, *, config: Config | str | Path | None = None,
          overrides: dict[str, Any] | None = None, resume: bool = False, device: str | torch.device = "auto",
          progress: bool = True, max_steps: int | None = None, **options: Any) -> TrainResult:
    """Train ``task`` on ``data`` into the run directory ``out`` and return the result.

    Under ``torchrun`` every rank calls this: each trains on its shard of every global batch of
    ``train.batch_size`` examples and rank 0 writes the run directory.

    ``overrides`` are dotted config fields (``{"train.epochs": 3}``; None values are ignored);
    ``options`` go to the task (e.g. the highlight feature route's ``dataset`` and ``features``).
    """
    t = get_task(task)
    cfg = t.configure(resolve_config(config, task, overrides), data, **options)
    with distributed.session(device) as d:  # started by torchrun: one rank of several (docs/scaling.md)
        dev = setup(d.device, cfg.train.threads)
        seed_everything(cfg.train.seed)
        model = t.build_model(cfg)
        td = t.data(data, cfg, model, progress=progress and d.main, **options)
        if progress and d.main and td.summary:
            print(td.summary)
        trainer = Trainer(model, cfg, out, kind=t.name, train_data=td.train, evaluate=td.evaluate, metric=t.metric,
                          mode=t.mode, device=dev, progress=progress, max_steps=max_steps)
        return trainer.fit(resume=resume)
