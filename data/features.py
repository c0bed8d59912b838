"""``mm-live data features``: per-step features of a folder of videos from our encoders, in the
layout the highlight feature route reads (``mm-live train highlight --dataset D --features DIR``).

For each ``<videos>/<name>.<ext>`` one file ``<out>/<name>.npz`` holding ``features`` [T, d] float32
(the Fusion-Q-Former's queries averaged per step: the same fused vector the clip route's temporal
head reads, :class:`~mm_live.steps.ClipSteps`), ``step_starts`` [T] seconds and ``step_seconds``.
:func:`mm_live.data.sources.pair_features` finds it by video id, :func:`~mm_live.data.sources.load_features`
reads its ``features`` key.

- Encoders: a trained run's (any run whose model holds a :class:`~mm_live.multimodal.MultimodalEncoder`;
  LoRA merged), or ``"default"``: the encoders of the default (or ``config``) config as built, with
  no checkpoint (pretrained backbones where the config names them; LoRA and fusion freshly initialised
  from ``train.seed``, so the same config gives the same features on every call).
- Step length: the dataset's unit with ``dataset`` (2 s for QVHighlights/TVSum, 50 frames at 30 fps for
  YouTube Highlights), else ``step_seconds``, else the config's ``media.step_seconds``; stored in each
  file (:func:`feature_step_seconds`). The feature route pairs step i with the 2 s clip i of
  QVHighlights/TVSum (and refuses another step), and puts YouTube Highlights' frame windows, at the
  video's own fps, on the steps they cover (:func:`~mm_live.data.public_manifest.labels_per_step`,
  as the clip route's manifest does).
- Resumable: a video whose ``.npz`` exists is skipped; each file appears atomically, so a stopped run
  leaves only complete files. ``features.json`` records the encoder and step; a folder made with
  another encoder or step is refused rather than mixed.
- Bounded memory: videos are decoded and encoded window by window (:func:`~mm_live.scoring.encode_clip`),
  ``batch`` steps at a time; only the [T, d] result of the current video is held.
- Comments: a ``<name>.comments.jsonl`` beside a video is used (public datasets have none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_live.data.public_manifest import STEP_SECONDS
from mm_live.data.sources import VIDEO_SUFFIXES
from mm_live.errors import ConfigError, DataError, MMLiveError
from mm_live.fileio import atomic_path, write_json

DEFAULT = "default"


@dataclass
class FeatureSummary:
    """What :func:`extract_features` did: files written, skipped (already there) and failed."""

    out: Path
    written: list[str]
    skipped: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    dim: int = 0
    step_seconds: float = 0.0

    def describe(self) -> str:
        text = (f"wrote {len(self.written)} feature files ({len(self.skipped)} already there) to {self.out}: "
                f"[steps, {self.dim}] per video, {self.step_seconds:g} s steps")
        if self.failed:
            shown = "; ".join(f"{k}: {v}" for k, v in list(self.failed.items())[:5])
            text += f"\n{len(self.failed)} videos failed (run again after fixing them): {shown}"
        return text


def feature_step_seconds(path: str | Path) -> float | None:
    """The step length (s) stored in a ``.npz`` this module wrote; None for other feature files
    (official releases: one row per annotated clip)."""
    if Path(path).suffix != ".npz":
        return None
    with np.load(path, allow_pickle=False) as data:
        return float(data["step_seconds"]) if "step_seconds" in data.files else None


def _encoder(checkpoint: str | Path, config: Any, device: str) -> tuple[Any, Any, str]:
    """(MultimodalEncoder in eval mode on its device, its config, a description for features.json)."""
    from mm_live import runs
    from mm_live.multimodal import MultimodalEncoder
    from mm_live.runtime import setup

    if str(checkpoint) == DEFAULT:
        from mm_live.training import seed_everything

        cfg = runs.resolve_config(config, "highlight")
        dev = setup(device, cfg.train.threads)
        seed_everything(cfg.train.seed)  # the random parts (fusion, LoRA) are the same on every call: resumable
        return MultimodalEncoder.from_config(cfg).eval().to(dev), cfg, f"{DEFAULT} (seed {cfg.train.seed})"
    if config is not None:
        raise ConfigError("--config applies to 'default' only: a run's own config rebuilds its encoders")
    run = runs.load_run(checkpoint, device=device)
    enc = next((m for m in run.model.modules() if isinstance(m, MultimodalEncoder)), None)
    if enc is None:
        raise ConfigError(f"run {checkpoint} has no video encoders (trained on precomputed features): "
                          "pass a clip-route run or 'default'")
    return enc.eval(), run.config, str(Path(checkpoint).resolve())


def extract_features(videos: str | Path, out: str | Path, *, checkpoint: str | Path = DEFAULT, config: Any = None,
                     dataset: str | None = None, step_seconds: float | None = None, batch: int = 32,
                     device: str = "auto", progress: bool = True) -> FeatureSummary:
    """Write ``out/<name>.npz`` per-step features for every video of the folder ``videos``."""
    import torch
    from tqdm.auto import tqdm

    from mm_live.scoring import ClipSource, encode_clip

    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise DataError(f"videos folder not found: {videos}")
    files = sorted(p for p in videos.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise DataError(f"{videos} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    if dataset is not None and dataset not in STEP_SECONDS:
        raise ConfigError(f"--dataset must be one of {sorted(STEP_SECONDS)}, got {dataset!r}")
    encoder, cfg, source = _encoder(checkpoint, config, device)
    step = step_seconds or (STEP_SECONDS[dataset] if dataset else cfg.media.step_seconds)
    cfg = cfg.replace(**{"media.step_seconds": float(step)})
    meta = {"encoder": source, "step_seconds": float(step), "feature": "fusion queries, mean per step"}
    sidecar, old = out / "features.json", {}
    if sidecar.is_file():
        import json

        old = json.loads(sidecar.read_text(encoding="utf-8"))
        if {k: old.get(k) for k in ("encoder", "step_seconds")} != {k: meta[k] for k in ("encoder", "step_seconds")}:
            raise ConfigError(f"{out} holds features of encoder {old.get('encoder')!r} at {old.get('step_seconds')} s "
                              f"steps, not {source!r} at {step} s: use another --out folder")
    write_json(sidecar, {**meta, "dim": old.get("dim")})  # before any file, so a stopped run is checked too
    dev = next(encoder.parameters()).device
    summary = FeatureSummary(out, [], [], dim=old.get("dim") or 0, step_seconds=float(step))

    def step_fn(inputs: Any) -> torch.Tensor:
        return encoder(inputs).queries.mean(1).float().cpu()  # [N, d]

    for video in tqdm(files, desc="features", unit="video", disable=not progress):
        target = out / f"{video.stem}.npz"
        if target.is_file():
            summary.skipped.append(video.stem)
            continue
        comments = video.with_name(video.stem + ".comments.jsonl")
        try:
            src = ClipSource.open(video, comments if comments.is_file() else None)
            enc = encode_clip(src, cfg, encoder, step_fn, encode_batch=batch, device=dev)
        except MMLiveError as exc:  # one broken video does not stop the folder
            summary.failed[video.name] = str(exc)
            continue
        feats = torch.cat(enc.outputs).numpy().astype(np.float32)
        with atomic_path(target) as tmp:
            np.savez(tmp, features=feats, step_starts=enc.step_starts.astype(np.float32),
                     step_seconds=np.float32(step))
        summary.written.append(video.stem)
        summary.dim = int(feats.shape[1])
    if summary.written:
        write_json(sidecar, {**meta, "dim": summary.dim})
    return summary
