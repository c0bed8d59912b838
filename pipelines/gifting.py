"""Gifting (MMBee): will this user send this streamer a gift now, from the live content and from
the user's and streamer's neighbourhoods in the gifting graph.

A sample is a view (:func:`mm_live.data.gifting.read_gift_data`): user ``u`` watching a room of
streamer ``a`` from time ``t``. Its logit comes from an MLP over

* ``e_u``, ``e_a``, ``e_u ⊙ e_a``: user and streamer embeddings, initialised from LightGCN
  pre-training (:mod:`mm_live.graph_pretrain`) on the gifts before the held-out period, then
  fine-tuned (``gifting.pretrain_epochs = 0``: random initialisation);
* ``c``, the live segment (``gifting.content``). Clip route (MMBee's MFQ): the Fusion-Q-Former
  embedding of each of the ``gifting.segment_steps`` steps ending at the view's step, with the
  streamer's embedding fed to the queries (``fusion.streamer_dim = gifting.d_model``), concatenated
  and projected. Feature route (the KuaiLive release has no videos): an MLP over the room's title
  embedding, the same for every moment of the room;
* graph interest expansion (``gifting.expansion``): for each metapath (user: U→A, U→A→A, U→A→U;
  streamer: A→U, A→A, A→U→A) a query made from ``[e_u, e_a, c]`` attends over the embeddings of
  the node's top-k neighbours (scaled dot product, padding masked; our reading of MMBee's target
  attention). The tables come from :func:`mm_live.graph.build_window_tables`: one set per
  ``gifting.window_hours`` window, built from the gifts strictly before the window's start and
  memory-mapped; a sample reads the tables of its own window.

Loss: BCE. Held-out metrics: AUC, GAUC (per user, impression-weighted), UAUC, and the same on
sparse users (at most 2 gifts before the sample's window). The checkpoint carries the id
vocabularies and the neighbour tables built from every gift of the training data, which is what
``score`` uses for "now". A user or streamer outside the vocabulary is refused unless asked for
as ``new``: it then gets the mean embedding of its kind and no neighbours.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mm_live import runs
from mm_live.config import Config
from mm_live.errors import ConfigError, DataError
from mm_live.graph import (METAPATHS, USER_METAPATHS, GiftEvents, GraphConfig, TimeWindows, build_graphs, build_window_tables,
                           metapath_tables, u2a_graph)
from mm_live.graph_pretrain import LightGCNConfig, init_embedding, pretrain_lightgcn
from mm_live.metrics import auc, gauc, uauc
from mm_live.multimodal import MultimodalEncoder, MultimodalInputs
from mm_live.runtime import eval_mode
from mm_live.scoring import ClipSource, ScoreResult, encode_clip, finish_scores, segment_masks
from mm_live.streams import ClipWindows
from mm_live.tasks import Task, TaskData, register
from mm_live.training import IndexBatches, ShuffledBatches, StepOutput

KIND = "gifting"
TARGET = {"UA": "streamer", "UAA": "streamer", "UAU": "user", "AU": "user", "AA": "streamer", "AUA": "streamer"}
NEW = "new"  # --user / --streamer value that asks for cold-start scoring
WINDOW_STEPS = 64  # steps per prepared clip window (the unit ClipWindows decodes and caches)


@dataclass
class GiftBatch:
    """B samples. labels [B] float; user, streamer [B] long vocabulary indices (-1: new);
    neighbours: metapath -> [B, k] long node indices (-1: padding). Content, one of: clip route
    ``inputs`` (U distinct prepared steps), ``step_streamer`` [U] long, ``segment`` [B, S] long
    index into the U steps; feature route ``features`` [B, d_f]."""

    labels: torch.Tensor
    user: torch.Tensor
    streamer: torch.Tensor
    neighbours: dict[str, torch.Tensor]
    inputs: MultimodalInputs | None = None
    step_streamer: torch.Tensor | None = None
    segment: torch.Tensor | None = None
    features: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "GiftBatch":
        moved = {f.name: None if (v := getattr(self, f.name)) is None else v.to(device)
                 for f in dataclasses.fields(self) if f.name != "neighbours"}
        return GiftBatch(**moved, neighbours={k: v.to(device) for k, v in self.neighbours.items()})


class MetapathAttention(nn.Module):
    """Target attention: per metapath, a query from the target attends over the neighbours' embeddings."""

    def __init__(self, d_query: int, d: int, metapaths: tuple[str, ...] = METAPATHS):
        super().__init__()
        self.query = nn.ModuleDict({mp: nn.Linear(d_query, d) for mp in metapaths})

    def forward(self, query: torch.Tensor, keys: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """query [B, d_query]; keys[mp] [B, k, d]; masks[mp] [B, k] bool -> [B, n_metapaths·d] (zeros for no neighbours)."""
        out = []
        for mp, proj in self.query.items():
            q, k, m = proj(query), keys[mp], masks[mp]
            s = (k @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(q.shape[-1])  # [B, k]
            w = torch.softmax(s.masked_fill(~m, -1e9), -1) * m.to(s.dtype)
            out.append((w.unsqueeze(-1) * k).sum(1))
        return torch.cat(out, -1)


class GiftingModel(nn.Module):
    """User/streamer embeddings + live segment + metapath target attention -> MLP -> gift logit."""

    def __init__(self, cfg: Config, encoder: MultimodalEncoder | None, feature_dim: int | None):
        super().__init__()
        g = cfg.gifting
        d, self.cfg, self.encoder = g.d_model, cfg, encoder
        if g.n_users < 1 or g.n_streamers < 1:
            raise ConfigError("gifting.n_users and gifting.n_streamers are set from the data by 'mm-live train gifting'; "
                              "build the model through the task, not from a bare config")
        self.user, self.streamer = nn.Embedding(g.n_users, d), nn.Embedding(g.n_streamers, d)
        for table in (self.user, self.streamer):
            nn.init.normal_(table.weight, std=0.1)
        # The run's vocabularies and its "now" neighbour tables (every training gift), for scoring.
        self.register_buffer("user_ids", torch.zeros(g.n_users, dtype=torch.long))
        self.register_buffer("streamer_ids", torch.zeros(g.n_streamers, dtype=torch.long))
        for mp in METAPATHS:
            n = g.n_users if mp in USER_METAPATHS else g.n_streamers
            self.register_buffer(f"table_{mp}", torch.full((n, g.neighbours), -1, dtype=torch.int32))
        self.segment_proj = nn.Linear(g.segment_steps * cfg.fusion.d_emb, d) if encoder is not None else None
        self.title = (nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, d), nn.GELU(), nn.Linear(d, d))
                      if feature_dim else None)
        has_content = encoder is not None or feature_dim is not None
        self.attention = MetapathAttention((3 if has_content else 2) * d, d) if g.expansion else None
        d_in = 3 * d + (d if has_content else 0) + (len(METAPATHS) * d if g.expansion else 0)
        self.head = nn.Sequential(nn.Dropout(g.dropout), nn.Linear(d_in, 2 * d), nn.GELU(), nn.Linear(2 * d, 1))

    def node(self, kind: str, index: torch.Tensor) -> torch.Tensor:
        """Embeddings [..., d] of vocabulary indices [...]; -1 (a new node) gets the table's mean."""
        table = self.user if kind == "user" else self.streamer
        emb = table(index.clamp(min=0))
        return torch.where((index >= 0).unsqueeze(-1), emb, table.weight.mean(0))

    def step_embeddings(self, inputs: MultimodalInputs, streamer: torch.Tensor) -> torch.Tensor:
        """U prepared steps and their streamers' indices [U] -> streamer-conditioned MFQ embeddings [U, d_emb]."""
        return self.encoder(dataclasses.replace(inputs, streamer=self.node("streamer", streamer))).embedding

    def segment(self, steps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Step embeddings [U, d_emb] and each sample's segment [B, S] (indices into U) -> c [B, d]."""
        return self.segment_proj(steps[index].flatten(1))

    def rank(self, user: torch.Tensor, streamer: torch.Tensor, content: torch.Tensor | None,
             neighbours: dict[str, torch.Tensor]) -> torch.Tensor:
        """user, streamer [B] indices; content [B, d] or None; neighbours mp -> [B, k] -> logits [B]."""
        eu, ea = self.node("user", user), self.node("streamer", streamer)
        parts = [eu, ea, eu * ea] + ([content] if content is not None else [])
        if self.attention is not None:
            keys = {mp: self.node(TARGET[mp], ids.long().clamp(min=0)) for mp, ids in neighbours.items()}
            masks = {mp: ids >= 0 for mp, ids in neighbours.items()}
            parts.append(self.attention(torch.cat(parts[:2] + parts[3:4], -1), keys, masks))
        return self.head(torch.cat(parts, -1)).squeeze(-1)

    def forward(self, batch: GiftBatch) -> torch.Tensor:
        """batch of B samples -> logits [B] (P(gift) = sigmoid)."""
        content = None
        if self.encoder is not None:
            content = self.segment(self.step_embeddings(batch.inputs, batch.step_streamer), batch.segment)
        elif self.title is not None:
            content = self.title(batch.features)
        return self.rank(batch.user, batch.streamer, content, batch.neighbours)

    def training_step(self, batch: GiftBatch) -> StepOutput:
        loss = F.binary_cross_entropy_with_logits(self(batch), batch.labels)
        return StepOutput(loss, {"bce": float(loss.detach())})


def build_model(cfg: Config) -> GiftingModel:
    """The gifting model ``cfg`` describes (content from clips, from title features, or none)."""
    if not cfg.gifting.content:
        return GiftingModel(cfg, None, None)
    if cfg.task.route == "clips":
        return GiftingModel(cfg, MultimodalEncoder.from_config(cfg), None)
    return GiftingModel(cfg, None, cfg.task.feature_dims[0])


# ----------------------------------------------------------------------------- data


class SegmentSteps:
    """Clip route: the steps the samples' segments use, prepared once and kept in one bank.

    Each room's clip is decoded and prepared window by window through
    :class:`~mm_live.streams.ClipWindows` (frozen layers run there, once); only the needed steps
    are kept, concatenated, so a batch gathers its distinct steps with one ``take``.
    """

    def __init__(self, data: Any, cfg: Config, encoder: MultimodalEncoder, segment_steps: int, progress: bool = False):
        from tqdm.auto import tqdm

        rooms = np.unique(data.room)
        missing = [int(data.live_ids[r]) for r in rooms if data.clips[r] is None]
        if missing:
            raise DataError(f"{len(missing)} rooms with views have no clip line in the manifest (e.g. live_id "
                            f"{missing[0]}); add them or train on title embeddings (a folder without a manifest)")
        windows = ClipWindows([data.clips[r] for r in rooms], cfg, encoder, window_steps=WINDOW_STEPS, cache_mb=0, progress=progress)
        n_steps = np.zeros(len(data.live_ids), dtype=np.int64)
        n_steps[rooms] = [windows.steps(i) for i in range(len(rooms))]
        r = data.room
        step = np.floor((data.time - data.room_start[r]) / (cfg.media.step_seconds * 1000.0)).astype(np.int64)
        self.step = np.clip(step, 0, n_steps[r] - 1)  # [N] clip step of each sample (clip time 0 = room start)
        seg = self.step[:, None] - np.arange(segment_steps)[::-1]  # [N, S], oldest first, clamped at the clip start
        self.keys, index = np.unique(r[:, None] * (1 << 32) + np.maximum(seg, 0), return_inverse=True)
        self.index = index.reshape(seg.shape)  # [N, S] into the bank
        stream = dict(zip(rooms.tolist(), range(len(rooms))))
        key_room, key_step = self.keys >> 32, self.keys & 0xFFFFFFFF
        win = key_step // WINDOW_STEPS
        starts = np.flatnonzero(np.r_[True, (np.diff(key_room) != 0) | (np.diff(win) != 0)])
        parts = []
        for a, b in tqdm(list(zip(starts, np.r_[starts[1:], len(self.keys)])), desc="prepare segments", unit="window",
                         disable=not progress):  # keys are sorted by (room, step): one run per clip window
            w = windows[windows.streams[stream[int(key_room[a])]][int(win[a])]]
            parts.append(w.inputs.take(torch.from_numpy(np.minimum(key_step[a:b] % WINDOW_STEPS, len(w.inputs) - 1))))
        self.bank = MultimodalInputs.cat(parts)
        self.room = key_room  # [K] room of each bank step


class Samples:
    """Builds :class:`GiftBatch` es from sample rows: neighbours from the window tables, content from clips or titles."""

    def __init__(self, data: Any, cfg: Config, tables: Any, steps: SegmentSteps | None):
        self.data, self.cfg, self.tables, self.steps = data, cfg, tables, steps
        self.room_streamer = np.full(len(data.live_ids), -1)
        self.room_streamer[data.room] = data.streamer

    def __call__(self, rows: np.ndarray) -> GiftBatch:
        d, g = self.data, self.cfg.gifting
        rows = np.asarray(rows)
        nbrs = {}
        if self.tables is not None:
            for mp in METAPATHS:
                nodes = d.user[rows] if mp in USER_METAPATHS else d.streamer[rows]
                nbrs[mp] = torch.from_numpy(self.tables.lookup(mp, nodes, d.time[rows])[0].astype(np.int64))
        batch = GiftBatch(torch.from_numpy(d.label[rows]), torch.from_numpy(d.user[rows]), torch.from_numpy(d.streamer[rows]), nbrs)
        if self.steps is not None:
            keys, index = np.unique(self.steps.index[rows], return_inverse=True)
            batch.inputs, batch.segment = self.steps.bank.take(torch.from_numpy(keys)), torch.from_numpy(index.reshape(len(rows), -1))
            batch.step_streamer = torch.from_numpy(self.room_streamer[self.steps.room[keys]])
        elif d.titles is not None and self.cfg.task.route == "features" and g.content:
            batch.features = torch.from_numpy(np.asarray(d.titles[d.room[rows]], dtype=np.float32))
        return batch


class RoomBatches(IndexBatches):
    """A :class:`~mm_live.training.BatchSource` for the clip route: rooms shuffled by ``(seed, epoch)``,
    every view of ``k`` consecutive rooms in one batch (``k`` ≈ ``batch_size`` / views per room), so a
    batch fuses each live step once however many viewers it has (a shuffled batch of the same size
    needs up to ``segment_steps`` steps per view). Under torchrun each rank takes an equal slice."""

    fixed_size = False

    def __init__(self, rows: np.ndarray, rooms: np.ndarray, batch_size: int, collate: Any):
        order = np.argsort(rooms[rows], kind="stable")
        self.groups = np.split(rows[order], np.flatnonzero(np.diff(rooms[rows][order])) + 1)
        self.k = max(1, round(batch_size * len(self.groups) / max(len(rows), 1)))
        self.collate = collate

    def __len__(self) -> int:
        return math.ceil(len(self.groups) / self.k)

    def plan(self, epoch: int, seed: int) -> list[np.ndarray]:
        perm = np.random.default_rng([seed, epoch]).permutation(len(self.groups))
        return [np.concatenate([self.groups[g] for g in perm[b * self.k : (b + 1) * self.k]]) for b in range(len(self))]

    def load(self, batches: list[np.ndarray]):
        return (self.collate(rows) for rows in batches)


@torch.no_grad()
def predict(model: GiftingModel, samples: Samples, rows: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """P(gift) [len(rows)] in eval mode."""
    device = next(model.parameters()).device
    order = np.argsort(samples.data.room[rows], kind="stable")  # a room's views together: its steps are fused once
    out = np.empty(len(rows), dtype=np.float32)
    with eval_mode(model):
        for a in range(0, len(rows), batch_size):
            idx = order[a : a + batch_size]
            out[idx] = torch.sigmoid(model(samples(rows[idx]).to(device))).float().cpu().numpy()
    return out


def ranking_metrics(y: np.ndarray, p: np.ndarray, users: np.ndarray, sparse: np.ndarray) -> dict[str, float]:
    """AUC / GAUC / UAUC over all samples and over the sparse users' samples (NaN where undefined)."""
    out = {}
    for prefix, m in (("", np.ones(len(y), bool)), ("sparse_", sparse)):
        ok = 0 < y[m].sum() < m.sum()
        out |= {f"{prefix}auc": auc(y[m], p[m]) if ok else float("nan"), f"{prefix}gauc": gauc(y[m], p[m], users[m]),
                f"{prefix}uauc": uauc(y[m], p[m], users[m])}
    return out


def held_out(data: Any, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """Held-out rows and whether each is a sparse user's (≤ 2 gifts before the sample's window)."""
    rows = np.flatnonzero(~data.train)
    return rows, data.past_gifts(rows, window_start(cfg, data.time[rows]))["user"] <= 2


def time_windows(cfg: Config) -> TimeWindows:
    return TimeWindows(int(round(cfg.gifting.window_hours * 3_600_000)))


def window_start(cfg: Config, times: np.ndarray) -> np.ndarray:
    """Start [n] (ms) of the graph window each time falls in: its tables hold the gifts before it."""
    w = time_windows(cfg)
    return w.origin_ms + w.index(times) * w.length_ms


def graph_config(cfg: Config) -> GraphConfig:
    g = cfg.gifting
    return GraphConfig(weight=g.edge_weight, swing_alpha=g.swing_alpha, k=g.neighbours, seed=cfg.train.seed)


def prepare_graph(model: GiftingModel, data: Any, cfg: Config, tables_dir: Path, progress: bool) -> Any:
    """Window tables for the samples, the "now" tables and vocabularies into the model, and the
    LightGCN initialisation from the gifts before the held-out period. Returns the window tables."""
    g, gcfg = cfg.gifting, graph_config(cfg)
    events = GiftEvents.from_arrays(data.gift_user, data.gift_streamer, data.gift_time, data.gift_value,
                                    n_users=len(data.user_ids), n_streamers=len(data.streamer_ids))
    with torch.no_grad():
        model.user_ids.copy_(torch.from_numpy(data.user_ids))
        model.streamer_ids.copy_(torch.from_numpy(data.streamer_ids))
        now = metapath_tables(build_graphs(events, gcfg), gcfg)
        for mp in METAPATHS:
            getattr(model, f"table_{mp}").copy_(torch.from_numpy(np.asarray(now.ids[mp])))
    if g.pretrain_epochs > 0:
        lcfg = LightGCNConfig(dim=g.d_model, epochs=g.pretrain_epochs, seed=cfg.train.seed)
        emb = pretrain_lightgcn(u2a_graph(events.before(data.split_ms), g.edge_weight), lcfg, progress=progress).embeddings
        init_embedding(model.user, emb.user, "users")
        init_embedding(model.streamer, emb.streamer, "streamers")
    if not g.expansion:
        return None
    return build_window_tables(events, time_windows(cfg), data.time, tables_dir, gcfg, progress=progress)


class GiftingTask(Task):
    name, metric, mode = KIND, "auc", "max"

    def __init__(self) -> None:
        self._cache: tuple[Path, Any] | None = None

    def read(self, data: Any) -> Any:
        """The samples of ``data`` (read once for configure and data)."""
        from mm_live.data.gifting import read_gift_data

        root = Path(data).resolve()
        if self._cache is None or self._cache[0] != root:
            self._cache = (root, read_gift_data(root))
        return self._cache[1]

    def configure(self, cfg: Config, data: Any, **_: Any) -> Config:
        d = self.read(data)
        over: dict[str, Any] = {"gifting.n_users": len(d.user_ids), "gifting.n_streamers": len(d.streamer_ids)}
        if d.clips is not None:
            if cfg.fusion.streamer_dim not in (0, cfg.gifting.d_model):
                raise ConfigError(f"fusion.streamer_dim={cfg.fusion.streamer_dim}: gifting feeds its streamer embedding "
                                  f"(gifting.d_model={cfg.gifting.d_model}) to the queries; set it to 0 or {cfg.gifting.d_model}")
            over |= {"task.route": "clips", "task.feature_dims": None, "fusion.streamer_dim": cfg.gifting.d_model}
        elif d.titles is not None:
            over |= {"task.route": "features", "task.feature_dims": [int(d.titles.shape[1]), 0]}
        elif cfg.gifting.content:
            raise DataError(f"{data}: no manifest.jsonl with room clips and no title_embeddings.npy; give the rooms "
                            "content or train without it (gifting.content=false)")
        return cfg.replace(**over)

    def build_model(self, cfg: Config) -> GiftingModel:
        return build_model(cfg)

    def data(self, data: Any, cfg: Config, model: nn.Module, *, progress: bool = True, **_: Any) -> TaskData:
        d = self.read(data)
        self._tmp = tempfile.TemporaryDirectory(prefix="mm-live-gifting-")  # window tables live as long as the task
        tables = prepare_graph(model, d, cfg, Path(self._tmp.name) / "tables", progress)
        steps = SegmentSteps(d, cfg, model.encoder, cfg.gifting.segment_steps, progress) if model.encoder is not None else None
        samples = Samples(d, cfg, tables, steps)
        rows, sparse = held_out(d, cfg)
        train = np.flatnonzero(d.train)
        evaluate = lambda m: ranking_metrics(d.label[rows], predict(m, samples, rows), d.user[rows], sparse)  # noqa: E731
        batches = (RoomBatches(train, d.room, cfg.train.batch_size, samples) if d.clips is not None
                   else ShuffledBatches(train, cfg.train.batch_size, samples))
        return TaskData(batches, evaluate,
                        f"{len(train)} training views ({int(d.label[train].sum())} with a gift) of {len(d.user_ids)} users "
                        f"and {len(d.streamer_ids)} streamers; {len(rows)} held out ({int(sparse.sum())} of sparse users); "
                        f"content: {cfg.task.route if cfg.gifting.content else 'none'}")

    def score(self, clip: Any, checkpoint: Any, **options: Any) -> ScoreResult:
        return score_clip(clip, checkpoint, **options)

    def embed_clip(self, model: nn.Module, source: Any, **options: Any) -> tuple[np.ndarray, list[tuple[float, float]]]:
        return embed_clip(model, source, **options)


register(GiftingTask())


# ----------------------------------------------------------------------------- scoring


def vocab_index(model: GiftingModel, kind: str, raw: str) -> int:
    """Vocabulary index of a raw user/streamer id; -1 for ``new``; one-line errors otherwise."""
    ids, flag = (model.user_ids, "--user") if kind == "user" else (model.streamer_ids, "--streamer")
    if str(raw) == NEW:
        return -1
    hit = (ids == int(raw)).nonzero() if str(raw).lstrip("-").isdigit() else ids[:0]
    if not len(hit):
        raise DataError(f"{kind} {raw} is not among the {len(ids)} {kind}s this run was trained on; {flag} {NEW} scores "
                        f"a new {kind} (cold start: the mean {kind} embedding and no graph neighbours)")
    return int(hit[0, 0])


def score_clip(clip: str | Path, checkpoint: str | Path, *, user_id: str | None = None, streamer_id: str | None = None,
               comments: str | Path | None = None, out_dir: str | Path | None = None, top_k: int | None = None,
               skip_bad_lines: bool = False, device: str = "auto") -> ScoreResult:
    """P(gift) of ``user_id`` at every step of ``clip`` of ``streamer_id`` (segment = the step and
    the ``segment_steps - 1`` before it; neighbours from the run's "now" tables)."""
    for kind, raw in (("user", user_id), ("streamer", streamer_id)):
        if raw is None:
            flag = f"--{kind}"
            raise ConfigError(f"a gifting run scores one user watching one streamer: pass {flag} ID (or {flag} {NEW} "
                              f"for the mean {kind} embedding and no graph neighbours)")
    source = ClipSource.open(clip, comments, skip_bad_lines=skip_bad_lines)
    run = runs.load_run(checkpoint, task=KIND, device=device)
    model, cfg = run.model, run.config
    if model.encoder is None:
        raise ConfigError(f"checkpoint {checkpoint} was trained {'without content' if not cfg.gifting.content else 'on title embeddings'}; "
                          "scoring a clip needs a gifting run trained on room clips")
    u, a = vocab_index(model, "user", user_id), vocab_index(model, "streamer", streamer_id)
    with torch.inference_mode():
        scores, steps, enc = _score_steps(model, cfg, source, u, a, run.device)
    who = {"user": {"id": user_id, "cold_start": u < 0}, "streamer": {"id": streamer_id, "cold_start": a < 0}}
    return finish_scores(source, enc, scores, F.normalize(steps.mean(0), dim=-1).float().cpu().numpy(),
                         step_seconds=cfg.media.step_seconds, top_k=top_k or cfg.highlight.top_k, out_dir=out_dir,
                         extra={"task": KIND, "score": "P(gift)", **who})


def _encode_steps(model: GiftingModel, source: ClipSource, a: int, device: torch.device) -> tuple[torch.Tensor, Any]:
    """(streamer-conditioned MFQ step embeddings [T, d_emb], the EncodedClip) of the clip for streamer ``a`` (-1: new)."""
    streamer = torch.tensor([a], device=device)
    enc = encode_clip(source, model.cfg, model.encoder, lambda x: model.step_embeddings(x, streamer.expand(len(x))), device=device)
    return torch.cat(enc.outputs), enc


def embed_clip(model: GiftingModel, source: ClipSource, *, segment_seconds: float | None = None,
               streamer_id: str | None = None) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The live content the ranker reads, as a clip or segment embedding: the streamer-conditioned
    MFQ step embeddings (trained by the gifting loss through the segment projection) averaged over
    the clip or over each ``segment_seconds`` segment, L2-normalised. A streamer outside the run's
    vocabulary (or none) is conditioned on the mean streamer embedding, as ``--streamer new`` scores."""
    if model.encoder is None:
        raise ConfigError("this gifting run was trained without clip content (title embeddings or none); "
                          "export-index needs a gifting run trained on room clips")
    try:
        a = -1 if streamer_id is None else vocab_index(model, "streamer", str(streamer_id))
    except DataError:
        a = -1
    dev = next(model.parameters()).device
    with torch.inference_mode():
        steps, enc = _encode_steps(model, source, a, dev)
        step, starts = model.cfg.media.step_seconds, enc.step_starts
        if segment_seconds is None:
            return F.normalize(steps.mean(0, keepdim=True), dim=-1).float().cpu().numpy(), [(float(starts[0]), float(starts[-1] + step))]
        masks, spans = segment_masks(starts, step, segment_seconds)
        m = masks.to(steps)  # [n, T] float on the steps' device
        return F.normalize(m @ steps / m.sum(1, keepdim=True), dim=-1).float().cpu().numpy(), spans


def _score_steps(model: GiftingModel, cfg: Config, source: ClipSource, u: int, a: int,
                 device: torch.device) -> tuple[np.ndarray, torch.Tensor, Any]:
    """(P(gift) [T], step embeddings [T, d_emb], the EncodedClip) for user ``u``, streamer ``a`` (-1: new)."""
    steps, enc = _encode_steps(model, source, a, device)
    t = torch.arange(len(steps), device=device)
    index = (t[:, None] - torch.arange(cfg.gifting.segment_steps - 1, -1, -1, device=device)).clamp(min=0)  # [T, S]
    nbrs = {}
    if model.attention is not None:
        for mp in METAPATHS:
            node, table = (u if mp in USER_METAPATHS else a), getattr(model, f"table_{mp}")
            row = table[node] if node >= 0 else torch.full_like(table[0], -1)
            nbrs[mp] = row.long().expand(len(steps), -1)
    logits = model.rank(torch.full_like(t, u), torch.full_like(t, a), model.segment(steps, index), nbrs)
    return torch.sigmoid(logits).float().cpu().numpy(), steps, enc
