"""Checkpoints: a directory with ``config.json``, ``model.safetensors`` and ``trainer_state.pt``.

Written atomically (temp dir + rename, :func:`mm_live.fileio.atomic_dir`) and loaded without
pickle: weights through safetensors, trainer state through ``torch.load(weights_only=True)``.
The config is the typed :class:`~mm_live.config.Config` the model was built from, so a checkpoint
rebuilds its own model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mm_live.config import Config
from mm_live.errors import CheckpointError
from mm_live.fileio import atomic_dir

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATE = "trainer_state.pt"
META = "meta.json"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    path: Path
    config: Config
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]  # kind (e.g. "highlight"), step, metrics, format version
    trainer_state: dict[str, Any] | None  # optimizer/scheduler/RNG state for resume


def save_checkpoint(
    path: str | Path,
    *,
    config: Config,
    model: torch.nn.Module,
    kind: str,
    meta: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint directory at ``path`` (replacing an older one atomically)."""
    path = Path(path)
    # safetensors refuses tensors that share storage; clone to contiguous, independent tensors.
    weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_dir(path) as tmp:
        (tmp / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        save_file(weights, str(tmp / WEIGHTS))
        info = {"format_version": FORMAT_VERSION, "kind": kind, "config_hash": config.hash(), **(meta or {})}
        (tmp / META).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / STATE)
    return path


# Switches added after checkpoints were already written, with the value that rebuilds the model an
# older checkpoint holds (a missing field would otherwise take today's default).
ADDED_OFF = {("highlight", "reaction_reader"): False}


def _backfill(raw: Any) -> Any:
    """A saved config dict with every :data:`ADDED_OFF` switch it predates set to its old value."""
    if isinstance(raw, dict):
        for (section, key), old in ADDED_OFF.items():
            if isinstance(raw.get(section), dict) and key not in raw[section]:
                raw[section][key] = old
    return raw


def load_checkpoint(path: str | Path, *, kind: str | None = None, with_state: bool = False,
                    weights: bool = True) -> Checkpoint:
    """Read a checkpoint directory; ``kind`` checks it was made for the expected model;
    ``weights=False`` reads only the config and metadata."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a run directory written by 'mm-live train' (or its best/ or last/ folder)")
    missing = [name for name in (CONFIG, WEIGHTS, META) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete (missing {', '.join(missing)}): point to a directory written by 'mm-live train'")
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        config = Config.from_dict(_backfill(json.loads((path / CONFIG).read_text(encoding="utf-8"))))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} has a corrupt config/meta file ({exc}): re-train or restore it") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} has a config this version cannot read: {exc}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}/{META} is corrupt (a JSON {type(meta).__name__}, not an object): "
                              "re-train or restore it")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {meta.get('format_version')}, this mm-live reads {FORMAT_VERSION}; "
                              "re-train it with this version")
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"checkpoint {path} holds a '{meta.get('kind')}' model, not a '{kind}' model: pass a {kind} checkpoint")
    if not weights:
        return Checkpoint(path=path, config=config, state_dict={}, meta=meta, trainer_state=None)
    try:
        state_dict = load_file(str(path / WEIGHTS))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path}/{WEIGHTS} is corrupt ({str(exc).splitlines()[0]}): re-train or restore it") from None
    trainer_state = None
    if with_state:
        if not (path / STATE).is_file():
            raise CheckpointError(f"checkpoint {path} has no {STATE}: it cannot resume training (use it with 'score' instead)")
        trainer_state = _load_state(path / STATE)
    return Checkpoint(path=path, config=config, state_dict=state_dict, meta=meta, trainer_state=trainer_state)


def _load_state(path: Path) -> dict[str, Any]:
    """The trainer state, loaded with ``weights_only=True``: torch's restricted unpickler builds only
    tensors and plain containers, so a crafted file cannot run code; it is refused instead."""
    import pickle
    import re
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files: one line only
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        called = re.search(r"GLOBAL ([\w.]+)", str(exc))
        detail = f"it would call {called.group(1)}" if called else "not only tensors"
        raise CheckpointError(f"{path} holds Python objects that safe loading refuses ({detail}); it was not written "
                              "by mm-live: drop --resume to start again, or restore the file") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is corrupt ({str(exc).splitlines()[0][:120]}); it cannot resume: drop --resume "
                              "to start again, or restore the file") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a trainer state (got {type(state).__name__}); drop --resume to start again")
    return state


def load_weights(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    """Load ``ckpt`` weights into ``model`` strictly, turning a mismatch into a one-line error."""
    try:
        result = model.load_state_dict(ckpt.state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit this model: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[0]})")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit this model: {'; '.join(parts)} weights")
