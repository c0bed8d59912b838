"""``mm-live eval --checkpoint RUN``: a highlight run scored with a public dataset's official metrics.

The run predicts one saliency score per annotated clip and the predictions go through the same
evaluator as any Moment-DETR-style prediction file (:func:`mm_live.data.evaluate.evaluate`):

- clip route (run trained on a manifest from ``mm-live data manifest``): every video of the manifest
  is scored once (the run's task ``score``; QVHighlights queries on one video
  share its scores: the highlight model does not read the query), and the step scores are mapped
  back onto the dataset's units where they differ (YouTube Highlights' windows);
- feature route (run trained with ``--dataset --features``): each video's feature file through the
  model in one pass; features written by ``mm-live data features`` carry their step length, so
  YouTube Highlights' windows get their scores the same way as on the clip route.

Annotated units without a video / feature file are left out; the evaluation then runs on the
annotation lines that were predicted (written to ``annotations_subset.jsonl``) and says so.
Outputs in ``out`` (default ``RUN/eval_<dataset>``): ``predictions.jsonl``, ``metrics.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mm_live import runs
from mm_live.data.evaluate import EvalResult, evaluate
from mm_live.data.features import feature_step_seconds
from mm_live.data.public_manifest import DATASETS, read_public, steps_to_units, unit_spans
from mm_live.data.records import HighlightRecord
from mm_live.errors import ConfigError, DataError
from mm_live.fileio import atomic_open, write_json


def _clip_predictions(run: runs.Run, manifest: Path, dataset: str, wanted: set[str], progress: bool) -> dict[str, dict]:
    from tqdm.auto import tqdm

    from mm_live.data.manifest import check_media, read_manifest

    model = run.model

    records = [r for r in read_manifest(manifest) if r.id in wanted]
    if records and any(r.extra.get("dataset") != dataset for r in records):
        raise DataError(f"{manifest} was not written by 'mm-live data manifest --dataset {dataset}': "
                        "make the manifest with that command")
    check_media(records)
    step = model.cfg.media.step_seconds
    for r in records:
        if abs(r.step_seconds - step) > 1e-6:
            raise ConfigError(f"the run scores {step} s steps but {manifest} has {r.step_seconds} s steps: "
                              "evaluate on the manifest the run was trained on")
    scored: dict[Path, np.ndarray] = {}
    for clip in tqdm(list(dict.fromkeys(r.clip for r in records)), desc="score videos", unit="video", disable=not progress):
        scored[clip] = run.task.score(clip, None, model=model).scores  # the run's task scores, via the core
    preds = {}
    for r in records:
        s = scored[r.clip]
        units = r.extra.get("units")
        if units is not None:
            s = steps_to_units(np.asarray(units, dtype=np.float64), s, step)
        preds[r.id] = {"qid": r.extra.get("qid", r.id), "vid": r.extra.get("vid", r.video_id),
                       "pred_saliency_scores": np.round(s, 6).tolist()}
    return preds


def _feature_predictions(model: Any, records: list[HighlightRecord], features: Path, progress: bool) -> dict[str, dict]:
    from tqdm.auto import tqdm

    from mm_live.data.sources import FEATURE_SUFFIXES, load_features
    from mm_live.ops import hash_id
    from mm_live.runtime import eval_mode

    if not features.is_dir():
        raise DataError(f"features folder not found: {features}")
    if model.cfg.task.feature_dims[1] > 0:
        raise ConfigError("the run was trained with text features (KLive); evaluate it with the KLive logs")
    dev = next(model.parameters()).device
    names = {p.name for p in features.iterdir()}
    cache: dict[str, np.ndarray] = {}
    steps: dict[str, float | None] = {}
    preds = {}
    with eval_mode(model), torch.inference_mode():
        for r in tqdm(records, desc="score videos", unit="video", disable=not progress):
            hit = next((r.video_id + s for s in FEATURE_SUFFIXES if r.video_id + s in names), None)
            if hit is None:
                continue
            if r.video_id not in cache:
                video = torch.from_numpy(load_features(features / hit))[None].to(dev)  # [1, T, d]
                steps[r.video_id] = feature_step_seconds(features / hit)
                t = video.shape[1]
                f = model.steps(video, torch.zeros(1, t, 1, device=dev), torch.zeros(1, t, dtype=torch.bool, device=dev))
                streamer = torch.tensor([hash_id(None, model.cfg.highlight.n_streamers)], device=dev)
                logits = model.forward_steps(f, torch.tensor([t], device=dev), streamer).logits
                cache[r.video_id] = torch.sigmoid(logits[0]).float().cpu().numpy()
            scores, units, step = cache[r.video_id], unit_spans(r), steps[r.video_id]
            if units is not None and step is not None:  # YouTube Highlights' windows from our 5/3 s steps
                scores = steps_to_units(units, scores, step)
            preds[r.id] = {"qid": r.extra.get("qid", r.id), "vid": r.video_id,
                           "pred_saliency_scores": np.round(scores, 6).tolist()}
    return preds


def _subset_annotations(dataset: str, annotations: Path, records: list[HighlightRecord], keep: set[str],
                        out: Path) -> Path:
    """The annotation lines of the predicted records, as a file the evaluator reads."""
    path = out / "annotations_subset.jsonl"
    if annotations.suffix == ".mat":  # TVSum's .mat: write its Lighthouse JSONL layout
        rows = [{"qid": r.id, "vid": r.video_id, "domain": r.domain, "duration": len(r.annotators),
                 "label": r.annotators.tolist()} for r in records if r.id in keep]
    else:
        lines = annotations.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(lines[r.extra["line"] - 1]) for r in records if r.id in keep]
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


def evaluate_run(checkpoint: str | Path, dataset: str, annotations: str | Path, *, manifest: str | Path | None = None,
                 features: str | Path | None = None, out: str | Path | None = None, device: str = "auto",
                 progress: bool = True) -> EvalResult:
    """Predict ``annotations``' units with the highlight run and evaluate them with ``dataset``'s
    official metrics. Clip-route runs need ``manifest``, feature-route runs ``features``."""
    if dataset not in DATASETS:
        raise ConfigError(f"--checkpoint evaluation covers {', '.join(DATASETS)}; for {dataset} pass --predictions")
    annotations = Path(annotations)
    run = runs.load_run(checkpoint, task="highlight", device=device)
    route = run.config.task.route
    records = [r for r in read_public(dataset, annotations) if r.labels is not None]
    if not records:
        raise DataError(f"{annotations} has no labelled lines (QVHighlights' test split is scored by its authors' server)")
    if route == "clips":
        if manifest is None:
            raise ConfigError("this run was trained on videos: pass --data MANIFEST (from 'mm-live data manifest')")
        preds = _clip_predictions(run, Path(manifest), dataset, {r.id for r in records}, progress)
    else:
        if features is None:
            raise ConfigError("this run was trained on features: pass --features DIR")
        preds = _feature_predictions(run.model, records, Path(features), progress)
    if not preds:
        raise DataError(f"none of the {len(records)} annotated units of {annotations} has a video/feature file to score")
    out = Path(out) if out is not None else run.path.parent / f"eval_{dataset}"
    out.mkdir(parents=True, exist_ok=True)
    pred_path = out / "predictions.jsonl"
    with atomic_open(pred_path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in preds.values())
    ann = annotations
    if len(preds) < len(records):
        ann = _subset_annotations(dataset, annotations, records, set(preds), out)
    result = evaluate(dataset, predictions=pred_path, annotations=ann)
    if ann != annotations:
        result.notes.append(f"evaluated on {len(preds)} of {len(records)} annotated units (no video/features for the "
                            f"rest); not comparable with published numbers")
    write_json(out / "metrics.json", result.to_dict())
    return result
