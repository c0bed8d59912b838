"""EM3: a click ranker of live rooms that trains its multimodal content model end to end.

Item = a live room. Its vector is ``[ID embedding ; content]`` (``em3.item`` picks both, ID only or
content only). Content, clip route: the Fusion-Q-Former embedding over the LoRA-adapted encoders of
each of ``em3.segment_steps`` steps from the middle of the room's clip, averaged and L2-normalised,
then projected to the item width; feature route (KuaiLive's title embeddings, or any pre-extracted
room features): a small MLP over the fixed vector. User interest: DIN target attention — an
attention unit scores each history item against the target from ``[h, t, h − t, h ⊙ t]`` — over
the user's latest ``em3.history_len`` clicks. Our choice: the weights are a softmax over the history
(DIN's raw weights are unnormalised) so one model serves histories of 5 or 1000. An MLP over
``[interest, target, interest ⊙ target]`` gives the click logit. Loss: BCE plus
``λ · L_CIC`` (``em3.cic_weight``).

Content-ID contrastive loss (CIC), over the B targets of a batch whose IDs are known:
``S = norm(g(c)) · norm(e)ᵀ / τ``, ``L = ½ [CE(S, I) + CE(Sᵀ, I)]``, with ``g`` a linear map from
content to the ID space, ``e`` the ID embeddings, ``τ`` fixed (``em3.cic_temperature``) or learnt
(``em3.learnable_temperature``, CLIP's log-parametrised scale). Two rows of the same room are not
negatives of each other: their off-diagonal logits are masked out.

Long histories stay affordable: every room's segment is prepared once
(:meth:`~mm_live.multimodal.MultimodalEncoder.prepare` runs the frozen layers in eval mode) and
kept (LRU, ``em3.cache_mb``); a training step runs only the trainable parts (LoRA-adapted top
layers, Q-Former) and runs them once per distinct room of the batch, however many targets and
histories name it. Targets always get gradients; history-only rooms too unless
``em3.history_grad`` is off (then they run without autograd).

Cold start: a room unseen in training has no ID embedding (bucket 0, a zero vector); training hides
the ID of ``em3.id_dropout`` of the targets the same way, so the ranker learns to rank from content
alone when the ID is missing (our addition; EM3's paper does not say how cold rooms are served).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mm_live import runs
from mm_live.comments import read_comments
from mm_live.config import Config
from mm_live.losses import symmetric_info_nce
from mm_live.errors import ConfigError, DataError
from mm_live.media import load_clip, probe
from mm_live.metrics import auc, gauc
from mm_live.multimodal import MultimodalEncoder, MultimodalInputs
from mm_live.ops import hash_id
from mm_live.runtime import eval_mode
from mm_live.scoring import ClipSource, ScoreResult, encode_clip, finish_scores, segment_masks
from mm_live.streams import LRU, clip_kwargs, comment_bags
from mm_live.tasks import Task, TaskData, register
from mm_live.training import ShuffledBatches, StepOutput

KIND = "em3"
MASKED = -1e9  # logit of a masked attention slot (finite: an empty history gives zeros, not NaN)


# ----------------------------------------------------------------------------- batch


@dataclass
class EM3Batch:
    """B impressions over U distinct rooms (rooms ``[0, n_grad)`` are the targets' rooms).

    labels [B] float (1 = clicked); users [B] long (for GAUC, unused by the model);
    target [B] long index into the U rooms; target_id [B] long ID bucket (0 = unknown);
    history [B, L] long index into the U rooms (-1 = padding); history_id [B, L] long buckets.
    Content of the U rooms, one of: inputs (clip route, U·S prepared steps, room u = steps
    ``[u·S, (u+1)·S)``), features [U, d] (feature route), embedding [U, d_emb] (already encoded).
    """

    labels: torch.Tensor
    users: torch.Tensor
    target: torch.Tensor
    target_id: torch.Tensor
    history: torch.Tensor
    history_id: torch.Tensor
    n_grad: int
    inputs: MultimodalInputs | None = None
    features: torch.Tensor | None = None
    embedding: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "EM3Batch":
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if f.name != "n_grad" and getattr(self, f.name) is not None})


@dataclass
class EM3Output:
    """logits [B] (P(click) = sigmoid); content [U, d_emb] L2-normalised room content and normed
    [U, d_emb] the same batch-normalised (what the ranker and g read); None for ID-only items."""

    logits: torch.Tensor
    content: torch.Tensor | None
    normed: torch.Tensor | None


# ----------------------------------------------------------------------------- model parts


class ClipContent(nn.Module):
    """Clip route: mean over a room's ``segment_steps`` steps of the Fusion-Q-Former embedding."""

    def __init__(self, encoder: MultimodalEncoder, segment_steps: int):
        super().__init__()
        self.encoder, self.segment_steps = encoder, segment_steps
        self.dim = encoder.fusion.head.out_features

    def forward(self, inputs: MultimodalInputs, n_grad: int | None = None) -> torch.Tensor:
        """inputs of U·S steps -> [U, d_emb]; rooms from ``n_grad`` on run without autograd."""
        s = self.segment_steps
        n = len(inputs) // s
        cut = n if n_grad is None else n_grad
        parts = [self.encoder(inputs[: cut * s]).embedding] if cut else []
        if cut < n:
            with torch.no_grad():
                parts.append(self.encoder(inputs[cut * s :]).embedding)
        return F.normalize(torch.cat(parts).view(n, s, -1).mean(1), dim=-1)


class FeatureContent(nn.Module):
    """Feature route: a fixed room vector (title embedding, pre-extracted features) -> [U, d_emb]."""

    def __init__(self, feature_dim: int, d_emb: int):
        super().__init__()
        self.dim = d_emb
        self.net = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, d_emb), nn.GELU(), nn.Linear(d_emb, d_emb))

    def forward(self, features: torch.Tensor, n_grad: int | None = None) -> torch.Tensor:
        """features [U, feature_dim] -> [U, d_emb] L2-normalised (the MLP is small: all rooms get gradients)."""
        return F.normalize(self.net(features), dim=-1)


class TargetAttention(nn.Module):
    """DIN's activation unit: weight of history item h for target t from ``[h, t, h − t, h ⊙ t]``."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.unit = nn.Sequential(nn.Linear(4 * d, hidden), nn.PReLU(), nn.Linear(hidden, 1))

    def forward(self, history: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """history [B, L, d], mask [B, L] bool, target [B, d] -> interest [B, d] (zeros for an empty history)."""
        t = target.unsqueeze(1).expand_as(history)
        scores = self.unit(torch.cat([history, t, history - t, history * t], -1)).squeeze(-1)  # [B, L]
        w = torch.softmax(scores.masked_fill(~mask, MASKED), -1) * mask.to(history.dtype)
        return (w.unsqueeze(-1) * history).sum(1)


def cic_loss(content: torch.Tensor, ids: torch.Tensor, items: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """Content-ID contrastive loss: the core's symmetric in-batch InfoNCE between g(c) [B, d] and the ID
    embeddings e [B, d]; rows of the same room (``items`` [B]) are not negatives of each other."""
    return symmetric_info_nce(content, ids, items, temperature)


class EM3Model(nn.Module):
    """Item vectors ([ID ; content]) -> DIN target attention over the history -> MLP -> click logit."""

    def __init__(self, cfg: Config, content: ClipContent | FeatureContent | None):
        super().__init__()
        e = cfg.em3
        self.cfg, self.content = cfg, content
        self.use_id, self.use_content = e.item in ("id", "both"), e.item in ("content", "both")
        if self.use_content and content is None:
            raise ConfigError(f"em3.item={e.item!r} needs a content model; use em3.item='id' for IDs alone")
        self.item_id = nn.Embedding(e.n_items, e.d_id, padding_idx=0) if self.use_id else None
        if self.item_id is not None:
            nn.init.normal_(self.item_id.weight, std=0.05)
            with torch.no_grad():
                self.item_id.weight[0].zero_()
        # Rooms' content embeddings start out nearly collinear (the Q-Former's learned queries dominate
        # at init: mean cosine ~0.98 on the synthetic rooms); normalising each dimension over the batch's
        # rooms lets the ranker see their differences from the first step.
        self.content_norm = nn.BatchNorm1d(content.dim) if self.use_content else None
        self.content_proj = nn.Linear(content.dim, e.d_id) if self.use_content else None
        self.cic = nn.Linear(content.dim, e.d_id) if self.use_id and self.use_content else None  # g
        self.log_temperature = nn.Parameter(torch.tensor(math.log(e.cic_temperature)),
                                            requires_grad=e.learnable_temperature)
        d = e.d_id * (int(self.use_id) + int(self.use_content))
        self.attention = TargetAttention(d, e.d_hidden)
        self.head = nn.Sequential(nn.Linear(3 * d, e.d_hidden), nn.PReLU(), nn.Linear(e.d_hidden, 1))

    def encode_rooms(self, batch: EM3Batch) -> torch.Tensor | None:
        """[U, d_emb] content of the batch's rooms (None for ID-only items)."""
        if not self.use_content:
            return None
        if batch.embedding is not None:
            return batch.embedding
        source = batch.inputs if batch.inputs is not None else batch.features
        if source is None:
            raise ValueError("an EM3 batch needs inputs, features or embedding for a content model")
        grad = None if self.cfg.em3.history_grad or not self.training else batch.n_grad
        return self.content(source, grad)

    def item_vectors(self, ids: torch.Tensor, content: torch.Tensor | None) -> torch.Tensor:
        """ids [...] buckets and content [..., d_emb] (from :meth:`normalise`; None for ID-only) -> item vectors [..., d]."""
        parts = [self.item_id(ids)] if self.use_id else []
        if self.use_content:
            parts.append(self.content_proj(content))
        return torch.cat(parts, -1)

    def normalise(self, content: torch.Tensor) -> torch.Tensor:
        """content [U, d_emb] -> batch-normalised over the U rooms (running statistics in eval mode or for one room)."""
        bn = self.content_norm
        return F.batch_norm(content, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                            self.training and len(content) > 1, bn.momentum, bn.eps)

    def rank(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """target [B, d], history [B, L, d], mask [B, L] -> logits [B]."""
        interest = self.attention(history, mask, target)
        return self.head(torch.cat([interest, target, interest * target], -1)).squeeze(-1)

    def forward(self, batch: EM3Batch, target_id: torch.Tensor | None = None) -> EM3Output:
        """batch of B impressions -> :class:`EM3Output`; ``target_id`` overrides the targets' ID buckets."""
        c = self.encode_rooms(batch)
        n = None if c is None else self.normalise(c)
        tc = None if n is None else n[batch.target]  # [B, d_emb]
        hc = None if n is None else n[batch.history.clamp(min=0)]  # [B, L, d_emb]
        tid = batch.target_id if target_id is None else target_id
        logits = self.rank(self.item_vectors(tid, tc), self.item_vectors(batch.history_id, hc), batch.history >= 0)
        return EM3Output(logits, c, n)

    def training_step(self, batch: EM3Batch) -> StepOutput:
        e = self.cfg.em3
        tid = batch.target_id
        if self.use_id and e.id_dropout > 0:
            tid = torch.where(torch.rand(tid.shape, device=tid.device) < e.id_dropout, torch.zeros_like(tid), tid)
        out = self(batch, tid)
        bce = F.binary_cross_entropy_with_logits(out.logits, batch.labels)
        parts = {"bce": float(bce.detach())}
        loss = bce
        known = batch.target_id > 0
        if self.cic is not None and e.cic_weight > 0 and int(known.sum()) > 1:
            rows = known.nonzero(as_tuple=True)[0]
            cic = cic_loss(self.cic(out.normed[batch.target[rows]]), self.item_id(batch.target_id[rows]),
                           batch.target[rows], self.log_temperature.exp())
            loss = loss + e.cic_weight * cic
            parts["cic"] = float(cic.detach())
        return StepOutput(loss, parts)


def build_model(cfg: Config) -> EM3Model:
    """The EM3 model ``cfg`` describes: content from clips (LoRA encoders + Q-Former) or from features."""
    if cfg.em3.item == "id":
        return EM3Model(cfg, None)
    if cfg.task.route == "clips":
        return EM3Model(cfg, ClipContent(MultimodalEncoder.from_config(cfg), cfg.em3.segment_steps))
    return EM3Model(cfg, FeatureContent(cfg.task.feature_dims[0], cfg.fusion.d_emb))


# ----------------------------------------------------------------------------- data


class RoomInputs:
    """Clip route: the prepared ``segment_steps`` steps from the middle of each room's clip, made
    on first use and kept in an LRU bounded by ``em3.cache_mb`` (frozen layers run once per room)."""

    def __init__(self, clips: list[tuple[Path, Path | None] | None], cfg: Config, encoder: MultimodalEncoder):
        self.clips, self.cfg, self.encoder = clips, cfg, encoder
        self.cache = LRU(cfg.em3.cache_mb << 20)

    def __getitem__(self, room: int) -> MultimodalInputs:
        hit = self.cache.get(room)
        if hit is not None:
            return hit
        if self.clips[room] is None:
            raise DataError(f"room {room} has no clip in the manifest: every room with impressions needs a clip line with its live_id")
        clip_path, comments = self.clips[room]
        inputs = prepare_segment(clip_path, comments, self.cfg, self.encoder)
        self.cache.put(room, inputs)
        return inputs


def prepare_segment(clip: Path, comments: Path | None, cfg: Config, encoder: MultimodalEncoder) -> MultimodalInputs:
    """The ``em3.segment_steps`` steps from the middle of ``clip`` (repeated when the clip is shorter), prepared."""
    s, step = cfg.em3.segment_steps, cfg.media.step_seconds
    info = probe(clip)
    t0 = max(0.0, (info.duration - s * step) / 2)
    part = load_clip(clip, start=info.start_time + t0, end=min(info.start_time + info.duration, info.start_time + t0 + s * step),
                     **clip_kwargs(cfg))
    log = read_comments(comments).comments if comments is not None else []
    with torch.no_grad():
        inputs = encoder.prepare(part, comment_bags(log, part, cfg))
    if len(inputs) != s:
        inputs = inputs.take(torch.arange(s) % max(len(inputs), 1))
    return inputs


def room_buckets(live_ids: np.ndarray, known: np.ndarray, n_items: int) -> np.ndarray:
    """[R] ID bucket of each room: hashed live_id for rooms seen in training, 0 for the others."""
    return np.array([hash_id(int(v), n_items) if k else 0 for v, k in zip(live_ids, known)], dtype=np.int64)


def make_batch(rows: np.ndarray, clicks: Any, cfg: Config, buckets: np.ndarray, content: Any,
               embedding: torch.Tensor | None = None) -> EM3Batch:
    """Impressions ``rows`` of a :class:`~mm_live.data.rooms.ClickData` -> :class:`EM3Batch`.

    ``content``: :class:`RoomInputs` (clip route), a [R, d] feature matrix, or None (ID-only);
    ``embedding``: [R, d_emb] content already encoded for every room (evaluation).
    """
    rows = np.asarray(rows, dtype=np.int64)
    tgt = clicks.room[rows]
    hist = clicks.history(rows, cfg.em3.history_len)
    targets = np.unique(tgt)
    others = np.setdiff1d(np.unique(hist[hist >= 0]), targets)
    rooms = np.concatenate([targets, others])
    lookup = np.full(len(clicks.live_ids), -1, dtype=np.int64)
    lookup[rooms] = np.arange(len(rooms))
    batch = EM3Batch(
        labels=torch.from_numpy(clicks.label[rows].astype(np.float32)),
        users=torch.from_numpy(clicks.user[rows].astype(np.int64)),
        target=torch.from_numpy(lookup[tgt]), target_id=torch.from_numpy(buckets[tgt]),
        history=torch.from_numpy(np.where(hist >= 0, lookup[np.maximum(hist, 0)], -1)),
        history_id=torch.from_numpy(np.where(hist >= 0, buckets[np.maximum(hist, 0)], 0)),
        n_grad=len(targets))
    if embedding is not None:
        batch.embedding = embedding[torch.from_numpy(rooms)]
    elif isinstance(content, RoomInputs):
        batch.inputs = MultimodalInputs.cat([content[int(r)] for r in rooms])
    elif content is not None:
        batch.features = torch.from_numpy(np.asarray(content[rooms], dtype=np.float32))
    return batch


def content_source(clicks: Any, cfg: Config, model: EM3Model) -> Any:
    """What :func:`make_batch` reads room content from, for this run's route and items."""
    if not model.use_content:
        return None
    if cfg.task.route == "clips":
        if clicks.clips is None:
            raise DataError(f"{clicks.root}: no manifest.jsonl with the rooms' clips; the clip route needs one "
                            "(or train on title embeddings: a KuaiLive folder without a manifest)")
        return RoomInputs(clicks.clips, cfg, model.content.encoder)
    if clicks.titles is None:
        raise DataError(f"{clicks.root}: no title_embeddings.npy; the feature route needs a vector per room")
    return clicks.titles


@torch.no_grad()
def room_embeddings(model: EM3Model, rooms: np.ndarray, n_rooms: int, content: Any, device: torch.device,
                    chunk: int = 32) -> torch.Tensor | None:
    """[n_rooms, d_emb] content of ``rooms`` (other rows zero), encoded once each in eval mode."""
    if not model.use_content:
        return None
    out = torch.zeros(n_rooms, model.content.dim, device=device)
    with eval_mode(model):
        for a in range(0, len(rooms), chunk):
            part = rooms[a : a + chunk]
            if isinstance(content, RoomInputs):
                src = MultimodalInputs.cat([content[int(r)] for r in part]).to(device)
            else:
                src = torch.from_numpy(np.asarray(content[part], dtype=np.float32)).to(device)
            out[torch.from_numpy(part).to(device)] = model.content(src)
    return out


@torch.no_grad()
def predict(model: EM3Model, clicks: Any, rows: np.ndarray, cfg: Config, buckets: np.ndarray, content: Any,
            device: torch.device, batch_size: int = 512) -> np.ndarray:
    """P(click) [len(rows)] of impressions ``rows``; each room's content is encoded once."""
    hist = clicks.history(rows, cfg.em3.history_len)
    needed = np.unique(np.concatenate([clicks.room[rows], hist[hist >= 0]]))
    emb = room_embeddings(model, needed, len(clicks.live_ids), content, device)
    out = []
    with eval_mode(model):
        for a in range(0, len(rows), batch_size):
            batch = make_batch(rows[a : a + batch_size], clicks, cfg, buckets, None, embedding=emb).to(device)
            out.append(torch.sigmoid(model(batch).logits).float().cpu().numpy())
    return np.concatenate(out)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return auc(y, p) if 0 < y.sum() < len(y) else float("nan")


def evaluate(model: EM3Model, clicks: Any, cfg: Config, buckets: np.ndarray, content: Any,
             device: torch.device) -> dict[str, float]:
    """AUC and GAUC (by user) on held-out impressions of rooms seen in training (warm) and of
    rooms never seen in training (cold)."""
    rows = np.flatnonzero(~clicks.train)
    p = predict(model, clicks, rows, cfg, buckets, content, device)
    y, users, cold = clicks.label[rows], clicks.user[rows], clicks.cold[rows]
    return {"auc": _auc(y[~cold], p[~cold]), "gauc": gauc(y[~cold], p[~cold], users[~cold]),
            "cold_auc": _auc(y[cold], p[cold]), "cold_gauc": gauc(y[cold], p[cold], users[cold]) if cold.any() else float("nan")}


def title_dim(root: Path) -> int:
    """Width of the title embeddings of a KuaiLive folder (read from the .npy header only)."""
    from mm_live.data.kuailive import TITLE_FILES
    from mm_live.data.rooms import tables_dir
    from mm_live.data.sources import array_shape

    tables = tables_dir(root)
    path = next((tables / n for n in TITLE_FILES if (tables / n).is_file()), None)
    if path is None:
        raise DataError(f"{tables}: no manifest.jsonl with clips and no {TITLE_FILES[0]}: EM3 needs room content "
                        "(clips, or title embeddings)")
    shape = array_shape(path)
    if len(shape) != 2:
        raise DataError(f"{path}: expected a matrix [n_titles, d], got shape {shape}; save one title vector per row")
    return int(shape[1])


class EM3Task(Task):
    name, metric, mode = KIND, "auc", "max"

    def configure(self, cfg: Config, data: Any, **_: Any) -> Config:
        from mm_live.data.rooms import manifest_path

        root = Path(data).resolve()
        over: dict[str, Any] = {"em3.data": str(root)}
        if manifest_path(root) is not None:
            over |= {"task.route": "clips", "task.feature_dims": None}
        else:
            over |= {"task.route": "features", "task.feature_dims": [title_dim(root), 0]}
        return cfg.replace(**over)

    def build_model(self, cfg: Config) -> EM3Model:
        return build_model(cfg)

    def data(self, data: Any, cfg: Config, model: nn.Module, *, progress: bool = True, **_: Any) -> TaskData:
        from mm_live.data.rooms import read_clicks

        clicks = read_clicks(data, negatives=cfg.em3.negatives, seed=cfg.train.seed)
        buckets = room_buckets(clicks.live_ids, clicks.known, cfg.em3.n_items)
        content = content_source(clicks, cfg, model)
        train = np.flatnonzero(clicks.train)
        batches = ShuffledBatches(train, cfg.train.batch_size, lambda rows: make_batch(rows, clicks, cfg, buckets, content))
        device = lambda m: next(m.parameters()).device  # noqa: E731
        n_test = int((~clicks.train).sum())
        return TaskData(batches, lambda m: evaluate(m, clicks, cfg, buckets, content, device(m)),
                        f"{len(train)} training impressions over {int(clicks.known.sum())} rooms; {n_test} held out "
                        f"({int(clicks.cold.sum())} on {len(np.unique(clicks.room[clicks.cold]))} cold rooms); "
                        f"content: {cfg.task.route if model.use_content else 'none (IDs only)'}")

    def score(self, clip: Any, checkpoint: Any, *, user_id: str | None = None, **options: Any) -> ScoreResult:
        options.pop("streamer_id", None)  # a room's content, not its streamer, is what EM3 scores
        return score_clip(clip, checkpoint, user_id=user_id, **options)

    def embed_clip(self, model: nn.Module, source: Any, **options: Any) -> tuple[np.ndarray, list[tuple[float, float]]]:
        return embed_clip(model, source, **options)


register(EM3Task())


# ----------------------------------------------------------------------------- scoring


def load_model(checkpoint: str | Path, device: str = "auto") -> EM3Model:
    """A clip-route EM3 model with content, ready to score (eval mode, LoRA merged)."""
    run = runs.load_run(checkpoint, task=KIND, device=device)
    if run.config.task.route != "clips" or not run.model.use_content:
        what = "IDs only" if not run.model.use_content else "title embeddings / precomputed features"
        raise ConfigError(f"checkpoint {checkpoint} was trained on {what}; scoring a clip needs a clip-route EM3 run with content")
    return run.model


def user_history(model: EM3Model, user_id: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The user's latest clicks in the run's data (``em3.data``): history item vectors [1, L, d],
    mask [1, L] and the number of clicks used."""
    from mm_live.data.rooms import read_clicks

    cfg = model.cfg
    if not cfg.em3.data or not Path(cfg.em3.data).is_dir():
        raise ConfigError(f"--user needs the click data the run was trained on, em3.data={cfg.em3.data!r}, which is not a "
                          "folder here; restore it or drop --user")
    clicks = read_clicks(cfg.em3.data, negatives=cfg.em3.negatives, seed=cfg.train.seed)
    try:
        uid = int(user_id)
    except ValueError:
        raise ConfigError(f"--user {user_id!r} must be an integer user_id as in click.csv") from None
    if not clicks.has_user(uid):
        raise ConfigError(f"--user {uid} has no impressions in {cfg.em3.data}; drop --user to score for a new user")
    hist = clicks.history_before(np.array([uid]), np.array([int(clicks.time.max()) + 1]), cfg.em3.history_len)
    buckets = room_buckets(clicks.live_ids, clicks.known, cfg.em3.n_items)
    valid = hist[0] >= 0
    rooms = hist[0][valid]
    emb = room_embeddings(model, np.unique(rooms), len(clicks.live_ids), content_source(clicks, cfg, model), device)
    ids = torch.from_numpy(np.where(hist[0] >= 0, buckets[np.maximum(hist[0], 0)], 0)).to(device)
    vec = model.item_vectors(ids, model.normalise(emb)[torch.from_numpy(np.maximum(hist[0], 0)).to(device)])
    return vec[None], torch.from_numpy(valid).to(device)[None], int(valid.sum())


def _step_content(model: EM3Model, source: ClipSource, encode_batch: int = 32) -> tuple[torch.Tensor, Any]:
    """(Fusion-Q-Former embeddings [T, d_emb] of every step, the EncodedClip): what a room's content averages."""
    if model.content is None or not isinstance(model.content, ClipContent):
        raise ConfigError("this EM3 run has no clip content model (IDs only or title embeddings); "
                          "embedding clips needs a clip-route EM3 run with content")
    encoder, dev = model.content.encoder, next(model.parameters()).device
    enc = encode_clip(source, model.cfg, encoder, lambda inputs: encoder(inputs).embedding, encode_batch=encode_batch, device=dev)
    return torch.cat(enc.outputs), enc


def embed_clip(model: EM3Model, source: ClipSource, *, segment_seconds: float | None = None,
               streamer_id: str | None = None) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The room content embedding c (what the ranker and the CIC loss train), of the whole clip or of
    each ``segment_seconds`` segment: step embeddings averaged and L2-normalised, as a room's
    ``em3.segment_steps`` steps are in training. ``streamer_id`` is ignored (EM3 content is not
    streamer-conditioned)."""
    steps, enc = _step_content(model, source)
    step, starts = model.cfg.media.step_seconds, enc.step_starts
    with torch.inference_mode():
        if segment_seconds is None:
            return F.normalize(steps.mean(0, keepdim=True), dim=-1).float().cpu().numpy(), [(float(starts[0]), float(starts[-1] + step))]
        masks, spans = segment_masks(starts, step, segment_seconds)
        m = masks.to(steps)  # [n, T] float on the steps' device
        return F.normalize(m @ steps / m.sum(1, keepdim=True), dim=-1).float().cpu().numpy(), spans


def score_clip(clip: str | Path, checkpoint: str | Path | None = None, *, user_id: str | None = None,
               comments: str | Path | None = None, out_dir: str | Path | None = None, top_k: int | None = None,
               skip_bad_lines: bool = False, encode_batch: int = 32, model: EM3Model | None = None,
               device: str = "auto") -> ScoreResult:
    """The room's content embedding and, per step, P(click) of the room as it looked over the last
    ``em3.segment_steps`` steps, for ``user_id`` (their latest clicks in the run's data) or, without
    one, for a user with no history. The room is new to the model (no ID embedding). With ``out_dir``
    the score files are written; ``scores.json`` adds ``p_click`` for the whole clip."""
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    source = ClipSource.open(clip, comments, skip_bad_lines=skip_bad_lines)
    model = model if model is not None else load_model(checkpoint, device)
    cfg, dev = model.cfg, next(model.parameters()).device
    steps, enc = _step_content(model, source, encode_batch)  # [T, d_emb]
    with torch.inference_mode():
        s = cfg.em3.segment_steps
        csum = torch.cat([steps.new_zeros(1, steps.shape[1]), steps.cumsum(0)])
        idx = torch.arange(1, len(steps) + 1, device=dev)
        seg = F.normalize(csum[idx] - csum[(idx - s).clamp(min=0)], dim=-1)  # causal segment means [T, d_emb]
        room = F.normalize(steps.mean(0, keepdim=True), dim=-1)
        targets = model.item_vectors(torch.zeros(len(seg) + 1, dtype=torch.long, device=dev), model.normalise(torch.cat([seg, room])))
        if user_id is not None:
            hist, mask, n_hist = user_history(model, user_id, dev)
        else:
            hist, mask, n_hist = targets.new_zeros(1, 1, targets.shape[1]), torch.zeros(1, 1, dtype=torch.bool, device=dev), 0
        n = len(targets)
        probs = torch.sigmoid(model.rank(targets, hist.expand(n, -1, -1), mask.expand(n, -1))).float().cpu().numpy()
    return finish_scores(source, enc, probs[:-1], room[0].float().cpu().numpy(), step_seconds=cfg.media.step_seconds,
                         top_k=top_k or cfg.highlight.top_k, out_dir=out_dir,
                         extra={"task": KIND, "user": user_id, "history_clicks": n_hist, "p_click": float(probs[-1])})
