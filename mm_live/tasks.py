"""The contract between the core and a pipeline, and the registry that finds pipelines by name.

A pipeline (one file in ``pipelines/``) declares a :class:`Task`: how to build its model from a
:class:`~mm_live.config.Config` alone, how to turn the user's data into training batches and an
evaluation function, and which metric picks the best checkpoint. Everything else — config overrides,
seeding, devices, the training loop, checkpoints, resume, loading a run back — is the core's
(:mod:`mm_live.runs`, :mod:`mm_live.training`), written once for every task.

Pipelines register themselves when imported; :func:`get_task` imports ``mm_live.pipelines.<name>``
on first use (discovery by naming convention), so the core never imports a pipeline statically.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from torch import nn

from mm_live.config import Config
from mm_live.errors import ConfigError


@dataclass
class TaskData:
    """What :meth:`Task.data` returns: the training batches and the held-out evaluation."""

    train: Any  # a mm_live.training.BatchSource
    evaluate: Callable[[nn.Module], dict[str, float]] | None
    summary: str = ""  # one line for the user: streams/windows/steps used


class LiveStepper(Protocol):
    """What ``mm-live watch`` (:func:`mm_live.live.watch`) drives, step batch by step batch: a run's
    model scoring a stream that grows. Made by :meth:`Task.live_stepper`."""

    cfg: Config  # the run's config (media sampling, comment look-back)
    lag: int  # a step's score is final this many steps after the step came in
    next_in: int  # steps pushed so far
    next_out: int  # steps whose scores were returned

    def prepare(self, clip: Any, bags: list) -> Any:
        """Decoded steps (a :class:`~mm_live.media.Clip`) and their comment bags -> model inputs on its device."""

    def encode(self, inputs: Any) -> Any:
        """Prepared inputs of N new steps -> what :meth:`push` takes (the encoders' work)."""

    def push(self, features: Any) -> list[tuple[int, float]]:
        """Encoded new steps -> ``(step, logit)`` of the steps now final, in order (score = sigmoid)."""

    def finish(self) -> list[tuple[int, float]]:
        """End of stream: the logits of the steps still held back."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Task:
    """Base class of a pipeline's task. Subclasses set ``name``, ``metric`` and ``mode``."""

    name: str = ""
    metric: str = "loss"  # the held-out metric that picks ``best/``
    mode: str = "min"  # "max" when a larger metric is better
    # Dotted config defaults of this task, applied under a config file's own values and the CLI's
    # overrides (e.g. {"train.batch_size": 2}); empty: the dataclass defaults.
    train_defaults: dict[str, Any] = {}

    def configure(self, cfg: Config, data: Any, **options: Any) -> Config:
        """Fill the data-dependent parts of ``cfg.task`` (route, feature dims, ...) before the model is built."""
        return cfg

    def build_model(self, cfg: Config) -> nn.Module:
        """The task's model, from the config alone (a run rebuilds it this way)."""
        raise NotImplementedError

    def data(self, data: Any, cfg: Config, model: nn.Module, *, progress: bool = True, **options: Any) -> TaskData:
        """Training batches and evaluation for ``data`` (a manifest, a dataset directory, ...)."""
        raise NotImplementedError

    def prepare_inference(self, model: nn.Module) -> nn.Module:
        """Make a loaded model ready for scoring. Default: LoRA adapters merged into the backbones
        (scoring then runs the plain backbones; do not train the result further), and frame encoders
        marked final, so that inference may run their backbone on ONNX Runtime with or without LoRA."""
        from mm_live.encoders.frame import FrameEncoder
        from mm_live.lora import merge_lora

        merge_lora(model)
        for m in model.modules():
            if isinstance(m, FrameEncoder):
                m.inference_ready = True
        return model

    def embed_clip(self, model: nn.Module, source: Any, *, segment_seconds: float | None = None,
                   streamer_id: str | None = None) -> tuple[Any, list[tuple[float, float]]]:
        """Embeddings of a clip (a :class:`~mm_live.scoring.ClipSource`): the whole clip, or one per
        ``segment_seconds`` segment -> (vectors [n, d_emb] float32 numpy, [(start, end)] seconds)."""
        raise ConfigError(f"'{self.name}' runs give no clip embeddings to index")

    def score(self, clip: Any, checkpoint: Any, **options: Any) -> Any:
        """Score a clip with a run of this task (``mm-live score``): a :class:`~mm_live.scoring.ScoreResult`.

        ``options``: comments, out_dir, top_k, streamer_id, user_id, skip_bad_lines, device.
        """
        raise ConfigError(f"'{self.name}' runs cannot score clips")

    def live_stepper(self, checkpoint: Any, *, streamer_id: str | None = None, device: str = "auto",
                     model: nn.Module | None = None) -> LiveStepper:
        """The :class:`LiveStepper` ``mm-live watch`` feeds, for the run ``checkpoint`` (or an already
        loaded ``model`` of this task). Tasks that cannot score a stream live refuse before loading anything."""
        raise ConfigError(f"'{self.name}' runs cannot score a live stream ('mm-live watch' takes a highlight run); "
                          "score the recording instead: mm-live score CLIP --checkpoint RUN")


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Make ``task`` findable by :func:`get_task` (called by a pipeline module at import)."""
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task called ``name``, importing ``mm_live.pipelines.<name>`` on first use."""
    if name not in _REGISTRY:
        try:
            importlib.import_module(f"mm_live.pipelines.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mm_live.pipelines.{name}":
                raise
        if name not in _REGISTRY:
            raise ConfigError(f"task.name={name!r}: no pipeline of that name is installed; known: {sorted(_REGISTRY) or 'none'}")
    return _REGISTRY[name]
