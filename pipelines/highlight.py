"""Highlight CTR (ContentCTR / KuaiHL): a click-through score for every step of a live stream.

Per step the Fusion-Q-Former (over LoRA-adapted frame, audio and comment encoders) gives a fused
vector; a causal temporal transformer (:mod:`mm_live.temporal`) turns the sequence, plus the
streamer's embedding, into one score per step. Nothing after step t reaches the score of t, except
through the optional comment re-alignment described below.

Two routes feed the same head:

* **clips** (end to end): an own-logs manifest of mp4 + comments; encoders with LoRA train through
  the ranking losses;
* **features**: precomputed per-step features (KLive logs, or QVHighlights/TVSum feature folders);
  everything after the encoders trains.

Losses (:mod:`mm_live.losses`): ``L = L_point + α·L_BAP + β·L_diff + 0.01·L_align`` where
``L_align`` is KuaiHL's soft-DTW contrastive alignment of per-step text and frame embeddings.

Comment re-alignment (ContentCTR's DTW module, our placement): comments describe what already
happened, so the per-step text embedding of step i is moved, by hard DTW in the causal band
``j ∈ [i − w, i]`` (``w = media.max_comment_lag``), to the video step j it refers to; we use the
open-end (online) DTW assignment, so step i's choice never depends on later steps. The moved
text stream enters the temporal transformer next to the Q-Former output (DESIGN.md places the
re-alignment before fusion; we apply it to the text stream that bypasses the Q-Former, which keeps
the Q-Former's look-back bags intact). With re-alignment on, the score of step t can depend on
comments up to ``t + w`` (they are moved back onto t) and on nothing later (tested): for strictly
live scoring, turn ``highlight.realign`` off or emit each score ``w`` steps late.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mm_live.alignment import alignment_loss, realign_comments
from mm_live.checkpoint import load_checkpoint, load_weights
from mm_live.comments import Comment, lookback_bags, read_comments
from mm_live.config import Config, load_config
from mm_live.encoders.comment import CommentBatch
from mm_live.errors import ConfigError, DataError, MediaError
from mm_live.lora import merge_lora
from mm_live.losses import highlight_loss
from mm_live.media import Clip, load_clip, probe
from mm_live.metrics import auc, kendall_tau, trapezoid_ap
from mm_live.multimodal import MultimodalEncoder, MultimodalInputs
from mm_live.report import highlight_windows, write_score_outputs
from mm_live.temporal import CausalTemporalTransformer
from mm_live.training import ShuffledBatches, StepOutput, Trainer, TrainResult

KIND = "highlight"
D_ALIGN = 64  # width of the text/frame spaces the soft-DTW alignment compares
MODALITIES = ("frame", "audio", "comment")


# ============================================================================ step features


@dataclass
class StepFeatures:
    """Per-step inputs of the temporal head for S streams of (padded) length T.

    fused:    [S, T, d_f]  Q-Former output (mean of the queries) or projected precomputed features
    text:     [S, T, d_t]  comments posted inside the step, pooled (zeros where none)
    has_text: [S, T] bool
    video:    [S, T, d_v]  frame tokens of the step, pooled
    """

    fused: torch.Tensor
    text: torch.Tensor
    has_text: torch.Tensor
    video: torch.Tensor


def _masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """tokens [N, K, d], mask [N, K] -> [N, d] (zeros where the mask is empty)."""
    w = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


def _scatter(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """flat [N, ...] and index [S, T] (-1 = padding) -> [S, T, ...] (zeros at padding)."""
    out = flat.new_zeros(*index.shape, *flat.shape[1:])
    valid = index >= 0
    out[valid] = flat[index[valid]]
    return out


class ClipSteps(nn.Module):
    """Clip route: a :class:`MultimodalEncoder` run on all steps of a batch at once.

    ``modalities`` lists the modalities the model may see (the others are masked out everywhere:
    the frames-only ablation is ``("frame",)``).
    """

    def __init__(self, encoder: MultimodalEncoder, modalities: Sequence[str] = MODALITIES):
        super().__init__()
        unknown = set(modalities) - set(MODALITIES)
        if unknown or "frame" not in modalities:
            raise ConfigError(f"modalities must include 'frame' and be among {list(MODALITIES)}, got {list(modalities)}")
        self.encoder, self.modalities = encoder, tuple(modalities)
        self.fused_dim = encoder.fusion.d if hasattr(encoder.fusion, "d") else encoder.fusion.queries.embedding_dim
        self.text_dim, self.video_dim = encoder.comment.dim, encoder.frame.dim

    def forward(self, inputs: MultimodalInputs, index: torch.Tensor) -> StepFeatures:
        """inputs of N steps, index [S, T] into them -> :class:`StepFeatures`."""
        return self.from_tokens(self.encoder.tokens(inputs), inputs.streamer, index)

    def from_tokens(self, toks: list, streamer: torch.Tensor | None, index: torch.Tensor) -> StepFeatures:
        """Modality tokens [frame, audio, comment] of N steps -> :class:`StepFeatures` (fusion + pooling)."""
        toks = [t if name in self.modalities else dataclasses.replace(t, mask=torch.zeros_like(t.mask))
                for name, t in zip(MODALITIES, toks)]
        fused = self.encoder.fusion(toks, streamer).queries.mean(1)  # [N, d]
        frame, _, comment = toks
        own = comment.mask & (comment.offsets == 0)  # comments posted inside the step itself
        text = _masked_mean(comment.tokens, own)
        video = _masked_mean(frame.tokens, frame.mask)
        return StepFeatures(_scatter(fused, index), _scatter(text, index), _scatter(own.any(1), index) & (index >= 0),
                            _scatter(video, index))


class FeatureSteps(nn.Module):
    """Feature route: precomputed per-step video (and optional text) features -> :class:`StepFeatures`."""

    def __init__(self, video_dim: int, text_dim: int, d: int):
        super().__init__()
        self.video_dim, self.text_dim, self.fused_dim = video_dim, max(text_dim, 1), d
        self.video = nn.Sequential(nn.LayerNorm(video_dim), nn.Linear(video_dim, d))
        self.text = nn.Sequential(nn.LayerNorm(self.text_dim), nn.Linear(self.text_dim, d)) if text_dim else None
        self.mix = nn.Sequential(nn.GELU(), nn.Linear(d, d))

    def forward(self, video: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> StepFeatures:
        """video [S, T, d_v], text [S, T, d_t], has_text [S, T] -> :class:`StepFeatures`."""
        fused = self.video(video)
        if self.text is not None:
            fused = fused + self.text(text) * has_text.unsqueeze(-1).to(fused.dtype)
        return StepFeatures(self.mix(fused), text, has_text, video)


# ============================================================================ the model


@dataclass
class HighlightOutput:
    """logits [S, T] (score = sigmoid); text/video [S, T, D_ALIGN] alignment embeddings;
    embedding [S, d_emb] pooled, L2-normalised clip embedding."""

    logits: torch.Tensor
    text: torch.Tensor
    video: torch.Tensor
    embedding: torch.Tensor


@dataclass
class HighlightBatch:
    """S streams. Clip route: ``inputs`` holds their N steps and ``index [S, T]`` points into them;
    feature route: ``video/text/has_text [S, T, ...]``. labels [S, T] (-1 = padding), lengths [S],
    streamer [S] hashed streamer ids."""

    labels: torch.Tensor
    lengths: torch.Tensor
    streamer: torch.Tensor
    index: torch.Tensor | None = None
    inputs: MultimodalInputs | None = None
    video: torch.Tensor | None = None
    text: torch.Tensor | None = None
    has_text: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "HighlightBatch":
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return HighlightBatch(move(self.labels), move(self.lengths), move(self.streamer), move(self.index),
                              move(self.inputs), move(self.video), move(self.text), move(self.has_text))


class HighlightModel(nn.Module):
    """Step features + streamer embedding -> causal temporal transformer -> one score per step."""

    def __init__(self, cfg: Config, steps: ClipSteps | FeatureSteps, *, use_alignment: bool = True):
        super().__init__()
        h = cfg.highlight
        self.cfg, self.steps, self.use_alignment = cfg, steps, use_alignment
        d = steps.fused_dim
        self.text_proj = nn.Linear(steps.text_dim, D_ALIGN)
        self.video_proj = nn.Linear(steps.video_dim, D_ALIGN)
        self.streamer = nn.Embedding(h.n_streamers, d)
        nn.init.normal_(self.streamer.weight, std=0.02)
        self.temporal = CausalTemporalTransformer(d + D_ALIGN + 1, h.d_model, h.n_layers, h.n_heads, h.lookback_steps,
                                                  dropout=cfg.fusion.dropout)
        self.head = nn.Linear(h.d_model, 1)
        self.embed_head = nn.Linear(h.d_model, cfg.fusion.d_emb)

    def step_features(self, batch: HighlightBatch) -> StepFeatures:
        if batch.inputs is not None:
            return self.steps(batch.inputs, batch.index)
        return self.steps(batch.video, batch.text, batch.has_text)

    def forward(self, batch: HighlightBatch) -> HighlightOutput:
        """batch of S streams (T steps) -> :class:`HighlightOutput` (logits [S, T])."""
        return self.forward_steps(self.step_features(batch), batch.lengths, batch.streamer)

    def forward_steps(self, f: StepFeatures, lengths: torch.Tensor, streamer: torch.Tensor) -> HighlightOutput:
        """Ready step features [S, T, ...], lengths [S], hashed streamer ids [S] -> :class:`HighlightOutput`."""
        z, v = self.text_proj(f.text), self.video_proj(f.video)  # [S, T, D_ALIGN]
        if self.use_alignment and self.cfg.highlight.realign:
            z_in, m = torch.zeros_like(z), torch.zeros_like(f.has_text)
            for s, n in enumerate(lengths.tolist()):
                z_in[s, :n], m[s, :n] = realign_comments(z[s, :n], v[s, :n], self.cfg.media.max_comment_lag,
                                                          f.has_text[s, :n], online=True)
        else:
            z_in, m = z * f.has_text.unsqueeze(-1).to(z.dtype), f.has_text
        x = torch.cat([f.fused + self.streamer(streamer).unsqueeze(1), z_in, m.unsqueeze(-1).to(z.dtype)], -1)
        if x.shape[0] == 1 and not self.training:
            hidden = self.temporal.stream(x[0])[None]  # long streams: bounded attention memory, same result
        else:
            hidden = self.temporal(x)  # [S, T, d_model]
        logits = self.head(hidden).squeeze(-1)
        valid = (torch.arange(logits.shape[1], device=logits.device)[None] < lengths[:, None]).unsqueeze(-1)
        pooled = (hidden * valid).sum(1) / valid.sum(1).clamp_min(1)
        return HighlightOutput(logits, z, v, F.normalize(self.embed_head(pooled), dim=-1))

    def training_step(self, batch: HighlightBatch) -> StepOutput:
        out = self(batch)
        h = self.cfg.highlight
        align = None
        if self.use_alignment and h.align_weight > 0:
            align = alignment_loss(out.text, out.video, batch.lengths.cpu(), h.n_negatives, h.dtw_gamma)
        loss = highlight_loss(out.logits, batch.labels, alpha=h.alpha_bap, beta=h.beta_diff, pointwise=h.pointwise,
                              align_loss=align, align_weight=h.align_weight)
        return StepOutput(loss.total, {k: v for k, v in loss.as_dict().items() if k != "total"})


def hash_streamer(streamer_id: str | None, buckets: int) -> int:
    """Stable bucket of a streamer id (0 for unknown); the embedding table is hashed, not indexed."""
    if streamer_id is None:
        return 0
    return int.from_bytes(hashlib.blake2b(str(streamer_id).encode(), digest_size=8).digest(), "little") % buckets


# ============================================================================ data


@dataclass
class StreamExample:
    """One training/evaluation unit: a stream (or a window of one) ready for the model."""

    stream_id: str
    labels: np.ndarray  # [T]
    streamer: int
    positives: np.ndarray  # [T] bool: steps inside a highlight (for AUC / top-5 mAP)
    inputs: MultimodalInputs | None = None  # clip route
    video: np.ndarray | None = None  # feature route [T, d_v]
    text: np.ndarray | None = None  # feature route [T, d_t]
    start_step: int = 0


def _positives(labels: np.ndarray, windows: Sequence[Sequence[float]] | None, step_seconds: float) -> np.ndarray:
    """Highlight steps: inside the record's highlight windows when it has them (synthetic streams,
    own logs that carry them), else the top 20% of its labels."""
    t = len(labels)
    if windows:
        mid = (np.arange(t) + 0.5) * step_seconds
        return np.any([(mid >= a) & (mid < b) for a, b in windows], axis=0)
    return labels >= np.quantile(labels, 0.8)


def comment_bags(comments: Sequence[Comment], clip: Clip, cfg: Config) -> list[list[Comment]]:
    return lookback_bags(comments, clip.step_starts.numpy(), clip.step_seconds, cfg.media.comment_lookback,
                         cfg.encoders.comment.max_comments_per_step)


def load_stream_clip(path: Path, cfg: Config, start: float | None = None, end: float | None = None) -> Clip:
    m = cfg.media
    return load_clip(path, step_seconds=m.step_seconds, frames_per_step=m.frames_per_step, frame_size=m.frame_size,
                     sample_rate=m.sample_rate, start=start, end=end, keyframes_only=m.keyframes_only)


def clip_examples(manifest: str | Path, cfg: Config, encoder: MultimodalEncoder, *, split: str | None = None,
                  window: int = 64, progress: bool = True) -> list[StreamExample]:
    """Decode, read and prepare every stream of an own-logs manifest (windows of ``window`` steps)."""
    from tqdm.auto import tqdm

    from mm_live.data.manifest import check_media, read_manifest

    records = read_manifest(manifest, split=split)
    if not records:
        raise DataError(f"{manifest} has no streams{f' in split {split!r}' if split else ''}: check the manifest's 'split' values")
    check_media(records)
    out = []
    for rec in tqdm(records, desc=f"prepare {split or 'streams'}", unit="stream", disable=not progress):
        if abs(rec.step_seconds - cfg.media.step_seconds) > 1e-9:
            raise DataError(f"{manifest}: stream {rec.id} has step_seconds={rec.step_seconds} but media.step_seconds="
                            f"{cfg.media.step_seconds}; set media.step_seconds in the config to match")
        clip = load_stream_clip(rec.clip, cfg)
        n = min(clip.num_steps, len(rec.labels))
        comments = read_comments(rec.comments).comments if rec.comments else []
        bags = comment_bags(comments, clip, cfg)
        labels = np.asarray(rec.labels[:n], dtype=np.float32)
        pos = _positives(labels, rec.extra.get("highlights"), rec.step_seconds)
        streamer = hash_streamer(rec.streamer_id, cfg.highlight.n_streamers)
        inputs = encoder.prepare(clip, bags)
        for a in range(0, n, window):
            b = min(a + window, n)
            out.append(StreamExample(rec.id, labels[a:b], streamer, pos[a:b], inputs=inputs[a:b], start_step=a))
    return out


def feature_examples(records: Sequence[Any], cfg: Config, *, window: int = 256) -> list[StreamExample]:
    """HighlightRecords with per-step features (``features["image"/"text"]`` from KLive logs, or a
    paired ``feature_path``) -> examples of at most ``window`` steps."""
    from mm_live.data.sources import load_features

    out = []
    for rec in records:
        if rec.labels is None:
            continue
        if "image" in rec.features:
            video, text = rec.features["image"], rec.features.get("text")
        elif rec.feature_path is not None:
            video, text = load_features(rec.feature_path), None
        else:
            raise DataError(f"record {rec.id} has no features: pair a feature folder (--features DIR) or use KLive logs")
        n = min(len(video), len(rec.labels))
        labels = np.asarray(rec.labels[:n], dtype=np.float32)
        lo, hi = float(labels.min()), float(labels.max())
        if lo < 0 or hi > 1:  # e.g. 0-4 saliency, 1-5 TVSum scores: rescale to [0, 1] for BCE
            labels = (labels - lo) / max(hi - lo, 1e-9)
        pos = _positives(labels, rec.extra.get("highlights"), rec.step_seconds)
        streamer = hash_streamer(rec.streamer_id, cfg.highlight.n_streamers)
        for a in range(0, n, window):
            b = min(a + window, n)
            out.append(StreamExample(rec.id, labels[a:b], streamer, pos[a:b], video=np.asarray(video[a:b], np.float32),
                                     text=None if text is None else np.asarray(text[a:b], np.float32), start_step=a))
    if not out:
        raise DataError("no labelled records with features: check the annotations and the feature folder")
    return out


def concat_inputs(parts: Sequence[MultimodalInputs]) -> MultimodalInputs:
    """Concatenate prepared inputs along steps, padding comment slots and token lengths."""
    k = max(p.comments.mask.shape[1] for p in parts)
    length = max(p.comments.input_ids.shape[2] for p in parts)

    def pad(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        widths: list[int] = []
        for dim, size in reversed(list(enumerate(dims))):
            if size is None:
                widths += [0, 0]
            else:
                widths += [0, size - x.shape[dim]]
        return F.pad(x, widths) if any(widths) else x

    comments = CommentBatch(
        torch.cat([pad(p.comments.input_ids, (None, k, length)) for p in parts]),
        torch.cat([pad(p.comments.attention_mask, (None, k, length)) for p in parts]),
        torch.cat([pad(p.comments.mask, (None, k)) for p in parts]),
        torch.cat([pad(p.comments.offsets, (None, k)) for p in parts]),
    )
    streamer = None if parts[0].streamer is None else torch.cat([p.streamer for p in parts])
    cached = {}
    for name in parts[0].cached:
        toks = [p.cached[name] for p in parts]
        width = max(t.tokens.shape[1] for t in toks)
        cached[name] = type(toks[0])(torch.cat([pad(t.tokens, (None, width, None)) for t in toks]),
                                     torch.cat([pad(t.mask, (None, width)) for t in toks]),
                                     torch.cat([pad(t.offsets, (None, width)) for t in toks]))
    return MultimodalInputs(torch.cat([p.frames for p in parts]),
                            {key: torch.cat([p.audio[key] for p in parts]) for key in parts[0].audio},
                            torch.cat([p.has_audio for p in parts]), comments, streamer, cached)


def collate(examples: Sequence[StreamExample]) -> HighlightBatch:
    s, t = len(examples), max(len(e.labels) for e in examples)
    labels = torch.full((s, t), -1.0)
    lengths = torch.tensor([len(e.labels) for e in examples])
    for i, e in enumerate(examples):
        labels[i, : len(e.labels)] = torch.from_numpy(e.labels)
    streamer = torch.tensor([e.streamer for e in examples])
    if examples[0].inputs is not None:
        index = torch.full((s, t), -1, dtype=torch.long)
        start = 0
        for i, e in enumerate(examples):
            index[i, : len(e.labels)] = torch.arange(start, start + len(e.labels))
            start += len(e.labels)
        return HighlightBatch(labels, lengths, streamer, index=index, inputs=concat_inputs([e.inputs for e in examples]))
    dv = examples[0].video.shape[1]
    dt = examples[0].text.shape[1] if examples[0].text is not None else 1
    video, text, has_text = torch.zeros(s, t, dv), torch.zeros(s, t, dt), torch.zeros(s, t, dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e.labels)
        video[i, :n] = torch.from_numpy(e.video)
        if e.text is not None:
            text[i, :n], has_text[i, :n] = torch.from_numpy(e.text), True
    return HighlightBatch(labels, lengths, streamer, video=video, text=text, has_text=has_text)


# ============================================================================ build / evaluate


def build_model(cfg: Config, *, route: str = "clips", feature_dims: tuple[int, int] | None = None,
                modalities: Sequence[str] = MODALITIES, use_alignment: bool = True) -> HighlightModel:
    """The highlight model for ``route`` "clips" (encoders from ``cfg``) or "features" (``feature_dims`` = (video, text))."""
    if route == "clips":
        steps: ClipSteps | FeatureSteps = ClipSteps(MultimodalEncoder.from_config(cfg), modalities)
    elif route == "features":
        if feature_dims is None:
            raise ConfigError("the features route needs feature_dims=(video_dim, text_dim)")
        steps = FeatureSteps(feature_dims[0], feature_dims[1], cfg.fusion.d)
    else:
        raise ConfigError(f"route must be 'clips' or 'features', got {route!r}")
    return HighlightModel(cfg, steps, use_alignment=use_alignment)


@torch.no_grad()
def predict(model: HighlightModel, examples: Sequence[StreamExample], batch_size: int = 4) -> list[np.ndarray]:
    """Per-example probabilities [T] (model put in eval mode for the call)."""
    was = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(examples), batch_size):
            chunk = examples[i : i + batch_size]
            probs = torch.sigmoid(model(collate(chunk)).logits)
            out += [probs[j, : len(e.labels)].numpy() for j, e in enumerate(chunk)]
    finally:
        model.train(was)
    return out


def evaluate_examples(model: HighlightModel, examples: Sequence[StreamExample]) -> dict[str, float]:
    """AUC (highlight vs not, over all steps), mean Kendall τ against the CTR labels, and top-5 mAP
    (per stream: AP of the 5 best-scored steps with highlight steps as positives, UMT's AP)."""
    preds = predict(model, examples)
    pos = np.concatenate([e.positives for e in examples]).astype(float)
    scores = np.concatenate(preds)
    taus = [kendall_tau(p, e.labels) for p, e in zip(preds, examples)]
    taus = [t for t in taus if not math.isnan(t)]
    aps = [float(trapezoid_ap(e.positives[np.argsort(-p, kind="stable")[:5]].astype(float))) for p, e in zip(preds, examples)
           if e.positives.any()]
    return {
        "auc": auc(pos, scores) if 0 < pos.sum() < len(pos) else float("nan"),
        "kendall_tau": float(np.mean(taus)) if taus else float("nan"),
        "top5_map": float(np.mean(aps)) if aps else float("nan"),
    }


# ============================================================================ train


def train(data: str | Path, out: str | Path, *, config: Config | str | Path | None = None, epochs: int | None = None,
          seed: int | None = None, resume: bool = False, route: str = "clips", dataset: str | None = None,
          features: str | Path | None = None, progress: bool = True, modalities: Sequence[str] = MODALITIES,
          use_alignment: bool = True) -> TrainResult:
    """Train the highlight model and write ``out`` (``best/``, ``last/``, ``metrics.jsonl``).

    Clip route: ``data`` is an own-logs manifest; lines with ``"split": "test"`` are held out for
    evaluation (if none are marked, every 4th stream is). Feature route: ``dataset`` names the
    reader (``klive``, ``qvhighlights``, ``tvsum``, ``youtube_highlights``) of the annotation file
    ``data`` and ``features`` the folder of per-video features (KLive logs carry their own).
    """
    cfg = config if isinstance(config, Config) else (load_config(config) if config else Config())
    overrides = {}
    if epochs is not None:
        overrides["train.epochs"] = epochs
    if seed is not None:
        overrides["train.seed"] = seed
    cfg = cfg.replace(**overrides) if overrides else cfg
    torch.manual_seed(cfg.train.seed)
    if route == "clips":
        model = build_model(cfg, modalities=modalities, use_alignment=use_alignment)
        train_ex, test_ex = _split_clip_examples(data, cfg, model.steps.encoder, progress)
    else:
        records, held_out = _feature_records(dataset, data, features)
        ex = feature_examples(records, cfg)
        if held_out is not None:
            train_ex, test_ex = ex, feature_examples(held_out, cfg)
        else:  # every 4th video held out for evaluation
            test_ex, train_ex = ex[::4], [e for i, e in enumerate(ex) if i % 4] or ex[::4]
        dv = ex[0].video.shape[1]
        dt = ex[0].text.shape[1] if ex[0].text is not None else 0
        model = build_model(cfg, route="features", feature_dims=(dv, dt), use_alignment=use_alignment and dt > 0)
    source = ShuffledBatches(train_ex, cfg.train.batch_size, collate)
    trainer = Trainer(model, cfg, out, kind=KIND, train_data=source, evaluate=lambda m: evaluate_examples(m, test_ex),
                      metric="auc", mode="max", progress=progress)
    meta = {"route": route, "modalities": list(modalities), "use_alignment": use_alignment,
            "feature_dims": None if route == "clips" else [int(ex[0].video.shape[1]), int(ex[0].text.shape[1]) if ex[0].text is not None else 0]}
    Path(out).mkdir(parents=True, exist_ok=True)
    from mm_live.fileio import write_json

    write_json(Path(out) / "model.json", meta)
    return trainer.fit(resume=resume)


def _split_clip_examples(manifest: str | Path, cfg: Config, encoder: MultimodalEncoder, progress: bool):
    from mm_live.data.manifest import read_manifest

    records = read_manifest(manifest)
    splits = {r.extra.get("split") for r in records}
    if "test" in splits:
        return (clip_examples(manifest, cfg, encoder, split="train", progress=progress),
                clip_examples(manifest, cfg, encoder, split="test", progress=progress))
    ex = clip_examples(manifest, cfg, encoder, progress=progress)
    ids = sorted({e.stream_id for e in ex})
    held = set(ids[::4])
    return [e for e in ex if e.stream_id not in held], [e for e in ex if e.stream_id in held]


def _feature_records(dataset: str | None, annotations: str | Path, features: str | Path | None):
    """(train records, held-out records or None) of a dataset's annotations for the feature route."""
    from mm_live.data import klive, qvhighlights, sources, tvsum, youtube_highlights

    readers = {"klive": klive.read_klive_log, "qvhighlights": qvhighlights.read_qvhighlights,
               "tvsum": tvsum.read_tvsum, "youtube_highlights": youtube_highlights.read_youtube_highlights}
    if dataset not in readers:
        raise ConfigError(f"--dataset must be one of {sorted(readers)} for the features route, got {dataset!r}")
    if dataset == "klive" and Path(annotations).is_dir():  # the KLive release: train/ and test/ folders
        return klive.read_klive(annotations, "train"), klive.read_klive(annotations, "test")
    records = readers[dataset](annotations)
    if dataset != "klive":
        if features is None:
            raise ConfigError(f"--features DIR is needed for {dataset}: a folder of per-video .npz/.npy features")
        records = sources.pair_features(records, features)
    return records, None


# ============================================================================ score


@dataclass
class ScoreResult:
    clip: Path
    step_seconds: float
    step_starts: np.ndarray
    scores: np.ndarray  # [T] probabilities
    windows: list
    embedding: np.ndarray  # [d_emb]
    timings: dict[str, float]
    outputs: dict[str, Path]


def _thumbnails(clip: Path, windows: Sequence[Any], scores: np.ndarray, step_starts: np.ndarray,
                width: int = 192) -> list[tuple[float, np.ndarray]]:
    """The frame at the peak step of each window, decoded again with one PyAV open (scoring keeps no
    frames, so memory stays bounded on long streams)."""
    import av

    times = []
    for w in windows:
        inside = np.flatnonzero((step_starts >= w.start - 1e-6) & (step_starts < w.end - 1e-6))
        k = int(inside[np.argmax(scores[inside])]) if len(inside) else int(np.searchsorted(step_starts, w.start))
        times.append(float(step_starts[min(k, len(step_starts) - 1)]))
    out = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        height = max(2, round(width * stream.height / stream.width / 2) * 2)
        for t in times:
            container.seek(int(t / stream.time_base), stream=stream, backward=True)
            frame = next((f for f in container.decode(stream) if f.time is not None and f.time >= t - 1e-3), None)
            if frame is not None:
                out.append((t, frame.reformat(width=width, height=height, format="rgb24").to_ndarray()))
    return out


def load_model(checkpoint: str | Path) -> HighlightModel:
    """Rebuild a highlight model for inference from a run directory (its ``best/``) or a checkpoint
    directory; LoRA adapters are merged into the backbones (do not train the result further)."""
    path = Path(checkpoint)
    if (path / "best").is_dir():
        path = path / "best"
    ckpt = load_checkpoint(path, kind=KIND)
    meta_path = path.parent / "model.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"route": "clips"}
    if meta.get("route") != "clips":
        raise ConfigError(f"checkpoint {checkpoint} was trained on precomputed features; 'score' needs a clip-route model")
    model = build_model(ckpt.config, modalities=meta.get("modalities", MODALITIES), use_alignment=meta.get("use_alignment", True))
    load_weights(model, ckpt)
    merge_lora(model)
    return model.eval()


def score_clip(clip: str | Path, checkpoint: str | Path, *, comments: str | Path | None = None,
               out_dir: str | Path | None = None, top_k: int | None = None, streamer_id: str | None = None,
               skip_bad_lines: bool = False, window_steps: int = 300, encode_batch: int = 32,
               model: HighlightModel | None = None) -> ScoreResult:
    """Score every step of ``clip`` and (with ``out_dir``) write scores.json/csv, highlights.png and
    predictions.jsonl. Works with no comments and on a clip without audio."""
    from mm_live.media import iter_clip

    clip = Path(clip)
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    info = probe(clip)  # bad inputs fail before the (slow) model load
    log = read_comments(comments, skip_bad_lines=skip_bad_lines).comments if comments else []
    model = model if model is not None else load_model(checkpoint)
    cfg = model.cfg
    timings = {"decode": 0.0, "prepare": 0.0, "encode": 0.0, "fuse": 0.0, "temporal": 0.0, "write": 0.0}
    encoder: MultimodalEncoder = model.steps.encoder
    m = cfg.media
    feats, starts = [], []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for part in iter_clip(clip, window_steps=window_steps, step_seconds=m.step_seconds, frames_per_step=m.frames_per_step,
                              frame_size=m.frame_size, sample_rate=m.sample_rate, keyframes_only=m.keyframes_only):
            t1 = time.perf_counter()
            inputs = encoder.prepare(part, comment_bags(log, part, cfg))
            t2 = time.perf_counter()
            timings["decode"] += t1 - t0
            timings["prepare"] += t2 - t1
            for a in range(0, len(inputs), encode_batch):  # cache-friendly batches of steps
                chunk = inputs[a : a + encode_batch]
                t2 = time.perf_counter()
                toks = encoder.tokens(chunk)
                t3 = time.perf_counter()
                feats.append(model.steps.from_tokens(toks, chunk.streamer, torch.arange(len(chunk))[None]))
                timings["encode"] += t3 - t2
                timings["fuse"] += time.perf_counter() - t3
            starts.append(part.step_starts.numpy())
            t0 = time.perf_counter()
        if not feats:
            raise MediaError(f"{clip} is shorter than one step ({m.step_seconds} s): nothing to score")
        t1 = time.perf_counter()
        f = StepFeatures(*(torch.cat([getattr(x, k) for x in feats], 1) for k in ("fused", "text", "has_text", "video")))
        n = f.fused.shape[1]
        batch = HighlightBatch(torch.zeros(1, n), torch.tensor([n]),
                               torch.tensor([hash_streamer(streamer_id, cfg.highlight.n_streamers)]))
        out = model.forward_steps(f, batch.lengths, batch.streamer)
        scores = torch.sigmoid(out.logits[0]).numpy()
        timings["temporal"] = time.perf_counter() - t1
    step_starts = np.concatenate(starts)
    windows = highlight_windows(scores, m.step_seconds, top_k or cfg.highlight.top_k)
    result = ScoreResult(clip, m.step_seconds, step_starts, scores, windows, out.embedding[0].numpy(), timings, {})
    if out_dir is not None:
        t2 = time.perf_counter()
        thumbs = _thumbnails(clip, windows[:4], scores, step_starts)
        result.outputs = write_score_outputs(out_dir, clip_name=clip.name, step_seconds=m.step_seconds,
                                             step_starts=step_starts, scores=scores, windows=windows,
                                             embedding=result.embedding, thumbnails=thumbs,
                                             extra={"duration": info.duration, "has_audio": info.has_audio,
                                                    "comments": len(log), "realign": bool(cfg.highlight.realign)})
        timings["write"] = time.perf_counter() - t2
    return result
