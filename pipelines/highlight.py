"""Highlight CTR (ContentCTR / KuaiHL): a click-through score for every step of a live stream.

Per step, fused multimodal features (clip route) or projected precomputed features (feature route)
plus the streamer embedding feed a causal temporal transformer; one score per step. Loss:
``L = L_point + α·L_BAP + β·L_diff + λ_align·L_align + λ_embed·L_embed (+ L_PQ)``, where L_embed
trains the segment embedding export-index stores (:meth:`HighlightModel.embedding_loss`) and L_PQ,
with ``quant.learn``, the product quantizer's codebooks along with it.
Comment re-alignment (ContentCTR's DTW, our placement): the text embedding of step i moves, by the
open-end hard DTW in the band ``[i − w, i]`` (``w = media.max_comment_lag``), to the video step it
refers to, so score t depends on comments up to ``t + w`` and nothing later (tested).
``highlight.comment_lookahead`` (on by default) adds a learned, bounded look-ahead
(mm_live/lookahead.py): score t attends to the comments of steps ``t .. t + w``. Turn both
``highlight.realign`` and ``highlight.comment_lookahead`` off for strictly causal scores. See docs/highlight.md and docs/design.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mm_live import runs
from mm_live.alignment import alignment_loss, realign_comments
from mm_live.config import MODALITIES, Config
from mm_live.errors import ConfigError
from mm_live.live_head import HighlightStepper
from mm_live.lookahead import CommentLookahead
from mm_live.losses import highlight_loss, reaction_loss, reaction_targets, supervised_info_nce
from mm_live.metrics import auc, kendall_tau, trapezoid_ap
from mm_live.multimodal import MultimodalEncoder, MultimodalInputs
from mm_live.ops import hash_id, masked_mean
from mm_live.quantization import ProductQuantizer
from mm_live.runtime import eval_mode
from mm_live.scoring import ClipSource, ScoreResult, encode_clip, finish_scores, segment_masks
from mm_live.streams import ClipWindows, FeatureWindows, StreamWindow, pad_labels
from mm_live.tasks import Task, TaskData, register
from mm_live.steps import ClipSteps, FeatureSteps, StepFeatures
from mm_live.temporal import CausalTemporalTransformer
from mm_live.training import LoaderBatches, ShuffledBatches, StepOutput, Trainer, TrainResult, to_device

KIND = "highlight"
D_ALIGN = 64  # width of the text/frame spaces the soft-DTW alignment compares


@dataclass
class HighlightOutput:
    """logits [S, T] (score = sigmoid); text/video [S, T, D_ALIGN] alignment embeddings;
    embedding [S, d_emb] pooled, L2-normalised clip embedding; hidden [S, T, d_model] temporal states."""

    logits: torch.Tensor
    text: torch.Tensor
    video: torch.Tensor
    embedding: torch.Tensor
    hidden: torch.Tensor


@dataclass
class HighlightBatch:
    """S streams: labels [S, T] (-1 = padding), lengths [S], streamer [S] hashed ids, stream [S] hashed
    stream ids, positives [S, T] bool (steps inside a highlight); clip route: ``inputs`` (N steps)
    and ``index`` [S, T] into them; feature route: video/text/has_text [S, T, ...]."""

    labels: torch.Tensor
    lengths: torch.Tensor
    streamer: torch.Tensor
    stream: torch.Tensor | None = None
    positives: torch.Tensor | None = None
    index: torch.Tensor | None = None
    inputs: MultimodalInputs | None = None
    video: torch.Tensor | None = None
    text: torch.Tensor | None = None
    has_text: torch.Tensor | None = None


class HighlightModel(nn.Module):
    """Step features + streamer embedding -> causal temporal transformer -> one score per step."""

    def __init__(self, cfg: Config, steps: ClipSteps | FeatureSteps):
        super().__init__()
        h = cfg.highlight
        self.cfg, self.steps, self.use_alignment = cfg, steps, h.alignment
        d = steps.fused_dim
        self.text_proj = nn.Linear(steps.text_dim, D_ALIGN)
        self.video_proj = nn.Linear(steps.video_dim, D_ALIGN)
        self.streamer = nn.Embedding(h.n_streamers, d)
        nn.init.normal_(self.streamer.weight, std=0.02)
        # bounded look-ahead over the as-posted comments of steps t .. t + max_comment_lag (None: off)
        self.lookahead = (CommentLookahead(d, steps.text_dim, D_ALIGN, cfg.media.max_comment_lag, h.lookahead_dropout)
                          if h.comment_lookahead else None)
        self.temporal = CausalTemporalTransformer(d + D_ALIGN + 1, h.d_model, h.n_layers, h.n_heads, h.lookback_steps,
                                                  dropout=cfg.fusion.dropout)
        self.head = nn.Linear(h.d_model, 1)
        # highlight.level_skip: logit + softplus(level_slope) x step loudness, starting at level_skip_slope
        self.level_slope = (nn.Parameter(torch.tensor(h.level_skip_slope).expm1().log()) if h.level_skip else None)
        self.embed_head = nn.Linear(h.d_model, cfg.fusion.d_emb)
        self.quantizer = ProductQuantizer.from_config(cfg.quant, cfg.fusion.d_emb) if cfg.quant.learn else None

    def step_features(self, batch: HighlightBatch) -> StepFeatures:
        if batch.inputs is not None:
            return self.steps(batch.inputs, batch.index)
        return self.steps(batch.video, batch.text, batch.has_text)

    def forward(self, batch: HighlightBatch) -> HighlightOutput:
        """batch of S streams (T steps) -> :class:`HighlightOutput` (logits [S, T])."""
        return self.forward_steps(self.step_features(batch), batch.lengths, batch.streamer)

    def forward_steps(self, f: StepFeatures, lengths: torch.Tensor, streamer: torch.Tensor) -> HighlightOutput:
        """Step features [S, T, ...], lengths [S], hashed streamer ids [S] -> :class:`HighlightOutput`.

        One stream in eval mode (scoring, evaluation) streams through the temporal model in chunks
        whose steps see at most ``highlight.window_steps`` of past, as in training windows. With
        ``highlight.comment_lookahead`` the step features [S, T, d] also get the look-ahead's reading
        of the comments of steps t .. t + max_comment_lag (the as-posted ones, whatever re-alignment does)."""
        z, v = self.text_proj(f.text), self.video_proj(f.video)  # [S, T, D_ALIGN]
        if self.use_alignment and self.cfg.highlight.realign:
            z_in, m = torch.zeros_like(z), torch.zeros_like(f.has_text)
            for s, n in enumerate(lengths.tolist()):
                z_in[s, :n], m[s, :n] = realign_comments(z[s, :n], v[s, :n], self.cfg.media.max_comment_lag,
                                                          f.has_text[s, :n], online=True, by=self.cfg.highlight.realign_by)
        else:
            z_in, m = z * f.has_text.unsqueeze(-1).to(z.dtype), f.has_text
        step = f.fused + self.streamer(streamer).unsqueeze(1)  # [S, T, d]
        if self.lookahead is not None:
            step = step + self.lookahead(step, f.text, f.has_text)
        x = torch.cat([step, z_in, m.unsqueeze(-1).to(z.dtype)], -1)
        if x.shape[0] == 1 and not self.training:
            w = self.cfg.highlight.window_steps
            hidden = self.temporal.stream(x[0], window=max(1, w // 2), context=w - max(1, w // 2))[None]
        else:
            hidden = self.temporal(x)  # [S, T, d_model]
        valid = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
        return HighlightOutput(self.score(hidden, f.level), z, v, self.embed(hidden, valid), hidden)

    def score(self, hidden: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Temporal states [..., d_model] and step loudness [...] -> logits [...]: the head, plus the
        learned non-negative loudness term with ``highlight.level_skip``."""
        logits = self.head(hidden).squeeze(-1)
        if self.level_slope is None:
            return logits
        return logits + F.softplus(self.level_slope) * level.to(logits.dtype)

    def embed(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Temporal states [S, T, d_model] pooled over ``mask`` [S, T] -> L2-normalised [S, d_emb]."""
        return F.normalize(self.embed_head(masked_mean(hidden, mask)), dim=-1)

    def embedding_loss(self, hidden: torch.Tensor, batch: HighlightBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The term that trains the segment embedding, from temporal states [S, T, d_model].

        Each window is cut into segments of ``highlight.embed_segment_steps`` steps (a window shorter
        than that is one segment), embedded like ``embed_clip`` embeds a segment, and
        ``L_embed = SupCon(same stream) + SupCon(same event)`` (:func:`supervised_info_nce`): a segment's
        positives are the other segments of its stream in the batch (the stream's look: scene,
        streamer, voice), and, in a second term, the segments whose event state matches (at least
        half the steps inside a highlight, or not), from any stream. Our choice over a self-supervised
        pair (two views of one segment): these are the two things a search "more like this moment"
        should match, the labels are already in every batch, and one pass over the states serves both.
        With ``quant.learn`` the contrastive terms see the quantized segments (straight-through), and
        the quantizer's codebook + commitment loss is added (after its k-means start).
        """
        h, n = self.cfg.highlight, self.cfg.highlight.embed_segment_steps
        owner, masks = segment_spans(batch.lengths, n)
        owner, masks = owner.to(hidden.device), masks.to(hidden.device)
        emb = self.embed(hidden[owner], masks)  # [N, d_emb]
        event = masked_mean(batch.positives[owner].float(), masks) >= 0.5
        parts, pq_loss = {}, None
        if self.quantizer is not None:
            q = self.quantizer.train_forward(emb, restart_every=self.cfg.quant.restart_every)
            if q is not None:
                emb, pq_loss = q.quantized, q.loss
                parts["pq"] = float(q.loss.detach())
        stream = batch.stream.to(hidden.device)[owner]
        loss = (supervised_info_nce(emb, stream * 2 + event.long(), h.embed_temperature)
                + supervised_info_nce(emb, event.long(), h.embed_temperature))
        parts["embed"] = float(loss.detach())
        total = h.embed_weight * loss + (pq_loss if pq_loss is not None else 0.0)
        return total, parts

    def training_step(self, batch: HighlightBatch) -> StepOutput:
        h = self.cfg.highlight
        f = self.step_features(batch)
        out = self.forward_steps(f, batch.lengths, batch.streamer)
        align = None
        if self.use_alignment and h.align_weight > 0:
            align = alignment_loss(out.text, out.video, batch.lengths.cpu(), h.n_negatives, h.dtw_gamma)
        loss = highlight_loss(out.logits, batch.labels, alpha=h.alpha_bap, beta=h.beta_diff, pointwise=h.pointwise,
                              align_loss=align, align_weight=h.align_weight)
        total, parts = loss.total, {k: v for k, v in loss.as_dict().items() if k != "total"}
        if self.steps.reader is not None:
            reaction = reaction_loss(f.reaction, reaction_targets(batch.labels, self.cfg.media.max_comment_lag))
            total, parts["reaction"] = total + h.reaction_weight * reaction, float(reaction.detach())
        if h.embed_weight > 0 or self.quantizer is not None:
            emb, emb_parts = self.embedding_loss(out.hidden, batch)
            return StepOutput(total + emb, parts | emb_parts)
        return StepOutput(total, parts)


def segment_spans(lengths: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive ``n``-step segments of S right-padded sequences: owner [N] (the sequence of each
    segment) and masks [N, T] bool. A trailing piece shorter than ``n`` is dropped unless it is the
    whole sequence."""
    t = int(lengths.max())
    owner, starts, ends = [], [], []
    for s, length in enumerate(lengths.tolist()):
        for a in range(0, max(length - n, 0) + 1, n) if length >= n else [0]:
            owner.append(s), starts.append(a), ends.append(min(a + n, length))
    steps = torch.arange(t)[None]
    masks = (steps >= torch.tensor(starts)[:, None]) & (steps < torch.tensor(ends)[:, None])
    return torch.tensor(owner), masks


def build_model(cfg: Config) -> HighlightModel:
    """The highlight model ``cfg.task`` describes (route, modalities, feature dims)."""
    t = cfg.task
    if t.route == "clips":
        return HighlightModel(cfg, ClipSteps(MultimodalEncoder.from_config(cfg), t.modalities,
                                             scene=cfg.highlight.align_to == "scene",
                                             reaction_reader=cfg.highlight.reaction_reader))
    return HighlightModel(cfg, FeatureSteps(t.feature_dims[0], t.feature_dims[1], cfg.fusion.d))


def collate(windows: Sequence[StreamWindow], n_streamers: int) -> HighlightBatch:
    """Windows of S streams -> a padded :class:`HighlightBatch`."""
    labels, lengths, valid = pad_labels(windows)
    (s, t), stream = labels.shape, torch.tensor([hash_id(w.stream_id, 1 << 62) for w in windows])
    streamer = torch.tensor([hash_id(w.streamer_id, n_streamers) for w in windows])
    positives = torch.zeros(s, t, dtype=torch.bool)
    positives[valid] = torch.from_numpy(np.concatenate([w.positives for w in windows]).astype(bool))
    if windows[0].inputs is not None:
        index = torch.full((s, t), -1, dtype=torch.long)
        index[valid] = torch.arange(int(lengths.sum()))
        return HighlightBatch(labels, lengths, streamer, stream, positives, index=index,
                              inputs=MultimodalInputs.cat([w.inputs for w in windows]))
    dv, dt = windows[0].video.shape[1], 1 if windows[0].text is None else windows[0].text.shape[1]
    video, text, has_text = torch.zeros(s, t, dv), torch.zeros(s, t, dt), torch.zeros(s, t, dtype=torch.bool)
    video[valid] = torch.from_numpy(np.concatenate([w.video for w in windows]))
    if windows[0].text is not None:
        text[valid], has_text[valid] = torch.from_numpy(np.concatenate([w.text for w in windows])), True
    return HighlightBatch(labels, lengths, streamer, stream, positives, video=video, text=text, has_text=has_text)


@torch.no_grad()
def predict_streams(model: HighlightModel, data: ClipWindows | FeatureWindows, device: torch.device | str = "cpu",
                    batch: int = 4) -> list[tuple[list[StreamWindow], np.ndarray]]:
    """Per held-out stream: its windows and the probabilities [T] of one pass over the whole stream."""
    out = []
    with eval_mode(model):
        for ids in data.streams:
            windows = [data[i] for i in ids]
            feats = []
            for a in range(0, len(windows), batch):  # step features are per step: window batches are exact
                chunk = to_device(collate(windows[a : a + batch], model.cfg.highlight.n_streamers), device)
                f = model.step_features(chunk)
                feats += [StepFeatures(*(getattr(f, k.name)[j : j + 1, : len(w)] for k in dataclasses.fields(f)))
                          for j, w in enumerate(windows[a : a + batch])]
            f = StepFeatures.cat(feats)
            streamer = torch.tensor([hash_id(windows[0].streamer_id, model.cfg.highlight.n_streamers)], device=device)
            logits = model.forward_steps(f, torch.tensor([f.fused.shape[1]], device=device), streamer).logits
            out.append((windows, torch.sigmoid(logits[0]).float().cpu().numpy()))
    return out


def evaluate(model: HighlightModel, data: ClipWindows | FeatureWindows, device: torch.device | str = "cpu") -> dict[str, float]:
    """AUC (highlight steps vs the rest, pooled), mean per-stream Kendall τ vs the labels, top-5 mAP (UMT's AP)."""
    preds = predict_streams(model, data, device)
    labels = [np.concatenate([w.labels for w in ws]) for ws, _ in preds]
    pos = [np.concatenate([w.positives for w in ws]) for ws, _ in preds]
    taus = [t for t in (kendall_tau(p, y) for (_, p), y in zip(preds, labels)) if not math.isnan(t)]
    aps = [float(trapezoid_ap(q[np.argsort(-p, kind="stable")[:5]].astype(float))) for (_, p), q in zip(preds, pos) if q.any()]
    all_pos, scores = np.concatenate(pos).astype(float), np.concatenate([p for _, p in preds])
    return {"auc": auc(all_pos, scores) if 0 < all_pos.sum() < len(all_pos) else float("nan"),
            "kendall_tau": float(np.mean(taus)) if taus else float("nan"),
            "top5_map": float(np.mean(aps)) if aps else float("nan")}


def train(data: str | Path, out: str | Path, *, config: Config | str | Path | None = None, epochs: int | None = None,
          seed: int | None = None, resume: bool = False, dataset: str | None = None, features: str | Path | None = None,
          modalities: Sequence[str] | None = None, alignment: bool | None = None, device: str = "auto",
          progress: bool = True, max_steps: int | None = None) -> TrainResult:
    """Train into ``out``: clip route from a manifest ``data``; feature route with ``dataset``/``features``."""
    overrides = {"train.epochs": epochs, "train.seed": seed, "highlight.alignment": alignment,
                 "task.modalities": None if modalities is None else list(modalities)}
    return runs.train(KIND, data, out, config=config, overrides=overrides, resume=resume, device=device,
                      progress=progress, max_steps=max_steps, dataset=dataset, features=features)


def load_model(checkpoint: str | Path, device: str = "auto") -> HighlightModel:
    """A clip-route highlight model ready to score (eval mode, LoRA merged) from a run or checkpoint."""
    run = runs.load_run(checkpoint, task=KIND, device=device)
    if run.config.task.route != "clips":
        raise ConfigError(f"checkpoint {checkpoint} was trained on precomputed features; 'score' and 'watch' need a "
                          "clip-route model (trained on a manifest of videos)")
    return run.model


def encode_steps(model: HighlightModel, inputs: MultimodalInputs) -> StepFeatures:
    """Prepared steps (N) -> their :class:`StepFeatures` ``[1, N, ...]`` (what scoring and ``watch`` feed the head)."""
    steps, dev = model.steps, inputs.has_audio.device
    return steps.from_tokens(steps.encoder.tokens(inputs), inputs.streamer, torch.arange(len(inputs), device=dev)[None],
                             inputs.level)


class LiveHighlight(HighlightStepper):
    """``mm-live watch``'s :class:`~mm_live.tasks.LiveStepper` for a clip-route highlight model: new
    steps are prepared and encoded as in scoring, then the incremental head (:class:`HighlightStepper`)."""

    def __init__(self, model: HighlightModel, streamer_id: str | None = None):
        self.cfg, self.device = model.cfg, next(model.parameters()).device
        super().__init__(model, torch.tensor([hash_id(streamer_id, self.cfg.highlight.n_streamers)], device=self.device))

    def prepare(self, clip: Any, bags: list) -> MultimodalInputs:
        return self.model.steps.encoder.prepare(clip, bags).to(self.device)

    def encode(self, inputs: MultimodalInputs) -> StepFeatures:
        return encode_steps(self.model, inputs)


def _run_clip(model: HighlightModel, source: ClipSource, streamer_id: str | None, encode_batch: int = 32):
    """Encode a clip's steps, run the temporal head -> (EncodedClip, HighlightOutput).

    Steps are decoded by the reader ``mm-live watch`` uses (mm_live.live_source), so a finished
    recording scores the same live or afterwards."""
    from mm_live.live_source import clip_windows
    from mm_live.streams import clip_kwargs

    cfg, dev, steps = model.cfg, next(model.parameters()).device, model.steps
    windows = clip_windows(source.path, window_steps=300, **clip_kwargs(cfg))
    enc = encode_clip(source, cfg, steps.encoder, lambda inputs: encode_steps(model, inputs), encode_batch=encode_batch,
                      device=dev, windows=windows)
    f = StepFeatures.cat(enc.outputs)
    with torch.inference_mode():
        streamer = torch.tensor([hash_id(streamer_id, cfg.highlight.n_streamers)], device=dev)
        return enc, model.forward_steps(f, torch.tensor([f.fused.shape[1]], device=dev), streamer)


def embed_clip(model: HighlightModel, source: ClipSource, *, segment_seconds: float | None = None,
               streamer_id: str | None = None) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clip's embedding, or one per ``segment_seconds`` segment (the temporal states pooled over it)."""
    enc, out = _run_clip(model, source, streamer_id)
    step, starts = model.cfg.media.step_seconds, enc.step_starts
    if segment_seconds is None:
        return out.embedding.float().cpu().numpy(), [(float(starts[0]), float(starts[-1] + step))]
    masks, spans = segment_masks(starts, step, segment_seconds)
    with torch.inference_mode():
        vecs = model.embed(out.hidden.expand(len(masks), -1, -1), masks.to(out.hidden.device))
    return vecs.float().cpu().numpy(), spans


@torch.no_grad()
def embed_features(model: HighlightModel, video: np.ndarray, text: np.ndarray | None, segment_steps: int,
                   streamer_id: str | None = None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Feature route's ``embed_clip``: one stream's per-step features video [T, d_v], text [T, d_t]
    -> segment embeddings [n, d_emb] float32 and (first step, steps) of each segment."""
    dev = next(model.parameters()).device
    v = torch.as_tensor(video, dtype=torch.float32, device=dev)[None]
    t = torch.zeros(1, v.shape[1], 1, device=dev) if text is None else torch.as_tensor(text, dtype=torch.float32, device=dev)[None]
    has_text = torch.full(v.shape[:2], text is not None, device=dev)
    lengths = torch.tensor([v.shape[1]], device=dev)
    streamer = torch.tensor([hash_id(streamer_id, model.cfg.highlight.n_streamers)], device=dev)
    with eval_mode(model):
        out = model.forward_steps(model.steps(v, t, has_text), lengths, streamer)
        owner, masks = segment_spans(lengths.cpu(), segment_steps)
        vecs = model.embed(out.hidden.expand(len(masks), -1, -1), masks.to(dev))
    first = masks.float().argmax(1)
    return vecs.float().cpu().numpy(), [(int(a), int(n)) for a, n in zip(first, masks.sum(1))]


def fit_feature_items(model: HighlightModel, items: Sequence[tuple], out: str | Path, max_steps: int, *,
                      progress: bool = False) -> HighlightModel:
    """Train a features-route ``model`` for ``max_steps`` optimizer steps on in-memory items
    (record, video [T, d_v], text [T, d_t], labels [T]) with the project's Trainer, checkpoints under
    ``out``; the model is returned in eval mode. For synthetic-feature experiments (the embedding
    test and benchmarks); ``mm-live train`` reads features from a manifest instead."""
    cfg = model.cfg
    windows = FeatureWindows(items, window_steps=cfg.highlight.window_steps)
    batches = ShuffledBatches(windows, cfg.train.batch_size, lambda ws: collate(ws, cfg.highlight.n_streamers))
    Trainer(model, cfg, out, kind="highlight", train_data=batches, progress=progress, max_steps=max_steps).fit()
    return model.eval()


def score_clip(clip: str | Path, checkpoint: str | Path | None = None, *, comments: str | Path | None = None,
               out_dir: str | Path | None = None, top_k: int | None = None, streamer_id: str | None = None,
               skip_bad_lines: bool = False, encode_batch: int = 32, model: HighlightModel | None = None,
               device: str = "auto") -> ScoreResult:
    """Score every step of ``clip`` and (with ``out_dir``) write scores.json/csv, highlights.png and
    predictions.jsonl. Works with no comments and on a clip without audio."""
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    source = ClipSource.open(clip, comments, skip_bad_lines=skip_bad_lines)  # bad input fails before the model load
    model = model if model is not None else load_model(checkpoint, device)
    enc, out = _run_clip(model, source, streamer_id, encode_batch)
    cfg = model.cfg
    return finish_scores(source, enc, torch.sigmoid(out.logits[0]).float().cpu().numpy(), out.embedding[0].float().cpu().numpy(),
                         step_seconds=cfg.media.step_seconds, top_k=top_k or cfg.highlight.top_k, out_dir=out_dir,
                         extra={"realign": bool(cfg.highlight.realign)})


# highlight.level_skip left unset is on from this many training streams. Measured at two sizes
# (LoRA route, docs/results.md): with 30 training streams the loudness term raised held-out AUC on
# every seed (0.872 against 0.820) and was the only variant ahead of loudness on every highlight
# type; with 18 it cost (0.836 against 0.900): with few streams to learn from, the head does not
# learn to pull a loud step nobody reacts to back down. Between the two nothing was measured, so it
# stays off there.
LEVEL_SKIP_MIN_STREAMS = 30


def _hears_clips(cfg: Config, dataset: str | None) -> bool:
    """A clip-route run (no feature ``dataset``) with audio among its modalities: one the loudness term can read."""
    return dataset is None and "audio" in cfg.task.modalities


def resolve_level_skip(cfg: Config, data: Any, *, dataset: str | None = None) -> Config:
    """``cfg`` with ``highlight.level_skip`` decided when it is unset (None): true for a clip-route
    run that hears audio and trains on at least :data:`LEVEL_SKIP_MIN_STREAMS` streams of the
    manifest ``data`` (its split as :func:`mm_live.streams.split_records` makes it), else false."""
    if cfg.highlight.level_skip is not None:
        return cfg
    on = False
    if _hears_clips(cfg, dataset):
        from mm_live.data.manifest import read_manifest
        from mm_live.streams import split_records

        on = len(split_records(read_manifest(data))[0]) >= LEVEL_SKIP_MIN_STREAMS
    return cfg.replace(**{"highlight.level_skip": on})


class HighlightTask(Task):
    name, metric, mode = KIND, "auc", "max"
    # Sized for a small dataset on 2 CPU cores (16 streams x 60 s: 72 optimizer steps of 2 windows in
    # about 5 minutes; held-out highlight scores >= 2x the rest on the easy and the hard generator,
    # docs/results.md "Training defaults"). Small batches give more optimizer steps per pass over the
    # data and a quarter of batch 8's memory; 6 epochs left the hard generator's curve flat (1.1x).
    train_defaults = {"train.lr": 1e-3, "train.epochs": 12, "train.batch_size": 2}

    def configure(self, cfg: Config, data: Any, *, dataset: str | None = None, features: Any = None, **_: Any) -> Config:
        if cfg.highlight.level_skip and not _hears_clips(cfg, dataset):
            raise ConfigError("highlight.level_skip adds each step's loudness to its score, so it needs a manifest of "
                              "clips with 'audio' in task.modalities; set highlight.level_skip to false for this run")
        cfg = resolve_level_skip(cfg, data, dataset=dataset)
        if dataset is None:
            return cfg.replace(**{"task.route": "clips", "task.feature_dims": None})
        from mm_live.data.windows import feature_dims, feature_items

        dims = feature_dims(feature_items(dataset, data, features)[0])
        return cfg.replace(**{"task.route": "features", "task.feature_dims": dims, "task.modalities": list(MODALITIES),
                              "highlight.alignment": cfg.highlight.alignment and dims[1] > 0})

    build_model = staticmethod(build_model)

    def data(self, data: Any, cfg: Config, model: nn.Module, *, progress: bool = True, dataset: str | None = None,
             features: Any = None, **_: Any) -> TaskData:
        from mm_live.data.windows import window_datasets

        encoder = model.steps.encoder if dataset is None else None
        train, test = window_datasets(data, cfg, encoder, dataset=dataset, features=features, progress=progress)
        batches = LoaderBatches(train, cfg.train.batch_size, lambda ws: collate(ws, cfg.highlight.n_streamers),
                                num_workers=cfg.train.num_workers)
        device = lambda m: next(m.parameters()).device  # noqa: E731
        return TaskData(batches, lambda m: evaluate(m, test, device(m)),
                        f"{len(train.streams)} training streams ({len(train)} windows), {len(test.streams)} held-out streams"
                        + (f"; loudness term (highlight.level_skip) {'on' if cfg.highlight.level_skip else 'off'}"
                           if _hears_clips(cfg, dataset) else ""))

    embed_clip = staticmethod(embed_clip)

    def score(self, clip: Any, checkpoint: Any, *, user_id: str | None = None, **options: Any) -> ScoreResult:
        if user_id is not None:
            raise ConfigError("--user applies to gifting and EM3 runs; a highlight run scores the clip for everyone")
        return score_clip(clip, checkpoint, **options)

    def live_stepper(self, checkpoint: Any, *, streamer_id: str | None = None, device: str = "auto",
                     model: nn.Module | None = None) -> LiveHighlight:
        return LiveHighlight(model if model is not None else load_model(checkpoint, device), streamer_id)


register(HighlightTask())
