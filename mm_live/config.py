"""Typed configuration: one dataclass per box, one root :class:`Config` saved in every checkpoint.

Load/save JSON or YAML with :func:`load_config` / :func:`save_config`. Every value is checked on
load: an unknown key, a value of the wrong type, or a value outside its allowed range raises
:class:`~mm_live.errors.ConfigError` naming the dotted field (``fusion.n_queries``) and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_live.errors import ConfigError


def _choice(default: str, *choices: str, open_ended: str | None = None):
    """A string field limited to ``choices`` (``open_ended`` names what else is accepted, e.g. a path)."""
    return field(default=default, metadata={"choices": choices, "open_ended": open_ended})


# ----------------------------------------------------------------------------- sections


MODALITIES = ("frame", "audio", "comment")


@dataclass
class TaskConfig:
    """What a run is: the task and the parts of the model that depend on the data it was built for.

    Saved with every checkpoint so a run rebuilds its own model (:func:`mm_live.runs.load_run`).
    """

    name: str = _choice("highlight", "highlight", "gifting", "em3")
    route: str = _choice("clips", "clips", "features")  # clips: encoders end to end; features: precomputed
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))  # what the model may see
    feature_dims: list[int] | None = None  # features route: [video_dim, text_dim] (text_dim 0: none)

    def validate(self, p: str) -> None:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or "frame" not in self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"{p}.modalities must list 'frame' and optionally 'audio', 'comment' once each, "
                              f"got {self.modalities}")
        if self.route == "features":
            if self.feature_dims is None or len(self.feature_dims) != 2 or self.feature_dims[0] < 1 or self.feature_dims[1] < 0:
                raise ConfigError(f"{p}.feature_dims must be [video_dim >= 1, text_dim >= 0] for the features route, "
                                  f"got {self.feature_dims}")


@dataclass
class MediaConfig:
    """How a clip is cut into steps and sampled."""

    step_seconds: float = 1.0  # length of one step (the unit a score is given for)
    frames_per_step: int = 1  # frames sampled evenly inside each step
    frame_size: int = 224  # frames are resized to frame_size x frame_size
    sample_rate: int = 16000  # audio is resampled to this rate, mono
    comment_lookback: float = 5.0  # seconds: step t sees comments posted in (t - lookback, t]
    max_comment_lag: int = 5  # steps: causal DTW band, comment step i may align to video [i-w, i]
    keyframes_only: bool = False  # decode key frames only (fast; needs steps >= one GOP)

    def validate(self, p: str) -> None:
        # Bounds that catch absurd values before they become a decoder failure or a huge allocation
        # (mm_live.media checks the same frame size; a step shorter than a frame is refused there).
        _positive(self.step_seconds, f"{p}.step_seconds")
        _in_range(self.step_seconds, f"{p}.step_seconds", 0.01, 3600.0)
        _in_range(self.frames_per_step, f"{p}.frames_per_step", 1, 1000)
        _in_range(self.frame_size, f"{p}.frame_size", 1, 4096)
        _in_range(self.sample_rate, f"{p}.sample_rate", 4000, 192000)
        _in_range(self.comment_lookback, f"{p}.comment_lookback", 0.0, 3600.0)
        _in_range(self.max_comment_lag, f"{p}.max_comment_lag", 0, 10000)


@dataclass
class LoraSettings:
    """peft LoRA on a frozen backbone."""

    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: the default table for the backbone family

    def validate(self, p: str) -> None:
        _positive(self.r, f"{p}.r")
        _positive(self.alpha, f"{p}.alpha")
        _in_range(self.dropout, f"{p}.dropout", 0.0, 0.99)


@dataclass
class FrameEncoderConfig:
    backbone: str = _choice("efficientnet-lite0", "efficientnet-lite0", "tiny", open_ended="a local Hugging Face vision checkpoint directory")
    lora: LoraSettings = field(default_factory=LoraSettings)
    tiny_dim: int = 32  # width of the tiny random backbone used in tests
    channels_last: bool = True  # faster convolutions on CPU
    # What runs the conv backbone when scoring/watching (LoRA merged): "onnx" = ONNX Runtime (exported
    # once, cached; encoders/onnx_runtime.py), "torch", or "auto" = onnx for efficientnet-lite0 on the
    # CPU when onnxruntime imports. Training always runs torch.
    runtime: str = _choice("auto", "auto", "torch", "onnx")

    def validate(self, p: str) -> None:
        self.lora.validate(f"{p}.lora")
        _positive(self.tiny_dim, f"{p}.tiny_dim")
        if self.runtime == "onnx" and self.backbone not in ("efficientnet-lite0", "tiny"):
            raise ConfigError(f"{p}.runtime='onnx' runs the conv backbones only (efficientnet-lite0, tiny), not "
                              f"{self.backbone!r}; use runtime 'torch' or 'auto'")


@dataclass
class AudioEncoderConfig:
    backbone: str = _choice("mel-transformer", "mel-transformer", "tiny", open_ended="a local Hugging Face audio checkpoint directory")
    n_mels: int = 64
    patch_frames: int = 10  # mel frames per token of the mel transformer (10 ms hop: 100 ms)
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    # One extra token carrying the step's loudness (log RMS), which the mel transformer's final LayerNorm
    # partly normalises away. Off: on the hard generator it helped with 12 training streams, hurt with 18
    # and made no difference with 30 (docs/results.md).
    level_token: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)  # used for Hugging Face backbones

    def validate(self, p: str) -> None:
        for name in ("n_mels", "patch_frames", "d_model", "n_layers", "n_heads"):
            _positive(getattr(self, name), f"{p}.{name}")
        _divides(self.n_heads, self.d_model, f"{p}.n_heads", f"{p}.d_model")
        self.lora.validate(f"{p}.lora")


@dataclass
class CommentEncoderConfig:
    # "use-multilingual": multilingual USE v3 for chat that is not English (docs/chat.md)
    backbone: str = _choice("minilm", "minilm", "use-multilingual", "tiny", open_ended="a local Hugging Face text checkpoint directory")
    max_tokens: int = 32  # tokens per comment
    max_comments_per_step: int = 16  # most recent comments kept in one look-back bag
    lora: LoraSettings = field(default_factory=LoraSettings)
    tiny_dim: int = 32

    def validate(self, p: str) -> None:
        _positive(self.max_tokens, f"{p}.max_tokens")
        _positive(self.max_comments_per_step, f"{p}.max_comments_per_step")
        _positive(self.tiny_dim, f"{p}.tiny_dim")
        self.lora.validate(f"{p}.lora")


@dataclass
class EncodersConfig:
    frame: FrameEncoderConfig = field(default_factory=FrameEncoderConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    comment: CommentEncoderConfig = field(default_factory=CommentEncoderConfig)
    cache_dir: str | None = None  # frozen-token cache on disk (used when a backbone's LoRA is off)
    # Run the frozen layers below a backbone's first LoRA-adapted layer once per input and keep their
    # output, so a training step runs only the adapted top (results are the same, tested).
    frozen_prefix: bool = True

    def validate(self, p: str) -> None:
        self.frame.validate(f"{p}.frame")
        self.audio.validate(f"{p}.audio")
        self.comment.validate(f"{p}.comment")


@dataclass
class FusionConfig:
    """Fusion-Q-Former (EM3 / MMBee MFQ)."""

    d: int = 256  # fusion width
    n_queries: int = 16
    n_layers: int = 2
    n_heads: int = 4
    cross_attention_every: int = 1  # cross-attend to modality tokens every k layers
    ffn_mult: int = 4
    dropout: float = 0.0
    d_emb: int = 128  # pooled, L2-normalised embedding for retrieval
    streamer_dim: int = 0  # width of the streamer embedding u (0: queries not streamer-conditioned)
    max_offsets: int = 16  # temporal embedding positions (step offsets in the look-back window)

    def validate(self, p: str) -> None:
        for name in ("d", "n_queries", "n_layers", "n_heads", "cross_attention_every", "ffn_mult", "d_emb", "max_offsets"):
            _positive(getattr(self, name), f"{p}.{name}")
        _divides(self.n_heads, self.d, f"{p}.n_heads", f"{p}.d")
        _in_range(self.dropout, f"{p}.dropout", 0.0, 0.99)
        _in_range(self.streamer_dim, f"{p}.streamer_dim", 0, 1 << 16)


@dataclass
class HighlightConfig:
    """ContentCTR / KuaiHL highlight CTR head and losses."""

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    lookback_steps: int | None = 64  # causal attention window W (None: the whole past)
    n_streamers: int = 1024  # hashed streamer-id buckets
    pointwise: str = _choice("bce", "bce", "mse")
    alpha_bap: float = 1.0  # weight of the border-aware pairwise loss
    beta_diff: float = 1.0  # weight of the first-order difference term
    align_weight: float = 0.01  # weight of the soft-DTW contrastive alignment loss
    dtw_gamma: float = 0.1
    n_negatives: int = 7  # permuted text orders per stream in the alignment loss
    realign: bool = True  # hard-DTW re-alignment of comment embeddings (score t then sees comments up to t + max_comment_lag)
    alignment: bool = True  # False: no alignment loss and no re-alignment (the ablation)
    # How re-alignment picks the step a comment moves to: "dtw" (the online hard DTW against the
    # frames) or "shift" (every comment moves back by max_comment_lag steps, whatever it says): the
    # ablation of the matching itself.
    realign_by: str = _choice("dtw", "dtw", "shift")
    # What comments are aligned to (soft-DTW loss and re-alignment), clip route: the step's pooled
    # frame tokens, or "scene": its pooled frame and audio tokens (a reaction to a sound off-screen
    # has something to match). The feature route aligns to its video features either way.
    align_to: str = _choice("frames", "frames", "scene")
    # Score t attends to the comments of steps t .. t + max_comment_lag (mm_live/lookahead.py): places a
    # chat reaction back at what it reacts to when nothing in frames/audio matches; scores are final
    # max_comment_lag steps late (as with realign). +0.07-0.08 held-out AUC over the model without it on
    # the hard generator, 3 seeds (docs/results.md). lookahead_dropout: on its comment features.
    comment_lookahead: bool = True
    lookahead_dropout: float = 0.2
    # Clip route: a per-comment reaction probe (mm_live/reaction.py) whose count is added to each
    # step's pooled comments; trained by reaction_weight x its loss, whose targets come from the CTR
    # labels alone (the highest label in the max_comment_lag steps up to a comment). It earns its
    # place with 18 training streams in the ablation, and with 30 on the LoRA route when the
    # loudness term below is on (the default there); without that term it costs at 30, and with
    # frozen backbones it costs at 30: turn it off there (docs/results.md).
    # Checkpoints written before this switch existed load with it off.
    reaction_reader: bool = True
    reaction_weight: float = 5.0
    # Clip route with audio: add slope x the step's loudness (encoders.audio.step_level of the raw
    # waveform, 0 where a step has no audio) to its score, the slope learned and kept >= 0 (softplus).
    # A score-level prior: a step quieter than another cannot gain from loudness, and the temporal
    # head has to learn to pull down loud steps nobody reacts to. level_skip_slope: the slope at the
    # start; training barely moves it (the head fits the training streams without it), so it sets the
    # prior's strength: 4 puts a couple of logits between room tone and a loud sound. It pays with 30
    # training streams and costs with 18 (LoRA route, docs/results.md), so unset (None) it is decided
    # by `train` from the run's number of training streams (pipelines/highlight.py,
    # resolve_level_skip) and saved in the checkpoint as true or false; true/false force it.
    level_skip: bool | None = None
    level_skip_slope: float = 4.0
    window_steps: int = 64  # steps per training window; scoring never gives a step more past context than this
    # The clip/segment embedding (what export-index stores) is trained by a multi-positive InfoNCE over
    # the embed_segment_steps-step segments of a batch: positives are segments of the same stream, and
    # (a second term) segments of the same event state (inside a highlight or not). 0: untrained head.
    embed_weight: float = 0.1
    embed_temperature: float = 0.1
    embed_segment_steps: int = 4
    top_k: int = 5  # highlight windows reported by `score`

    def validate(self, p: str) -> None:
        for name in ("d_model", "n_layers", "n_heads", "n_negatives", "top_k", "window_steps", "embed_segment_steps",
                     "level_skip_slope"):
            _positive(getattr(self, name), f"{p}.{name}")
        _buckets(self.n_streamers, f"{p}.n_streamers")
        _divides(self.n_heads, self.d_model, f"{p}.n_heads", f"{p}.d_model")
        if self.lookback_steps is not None:
            _positive(self.lookback_steps, f"{p}.lookback_steps")
        for name in ("alpha_bap", "beta_diff", "align_weight", "embed_weight", "reaction_weight"):
            _in_range(getattr(self, name), f"{p}.{name}", 0.0, 1e6)
        _positive(self.dtw_gamma, f"{p}.dtw_gamma")
        _positive(self.embed_temperature, f"{p}.embed_temperature")
        _in_range(self.lookahead_dropout, f"{p}.lookahead_dropout", 0.0, 0.99)
        if self.realign_by == "shift" and not self.realign:
            raise ConfigError(f"{p}.realign_by: shift moves comments only when {p}.realign is true: "
                              f"set {p}.realign to true or {p}.realign_by to dtw")


@dataclass
class GiftingConfig:
    """MMBee gifting ranker and graph expansion."""

    d_model: int = 64
    neighbours: int = 10  # top-k neighbours kept per metapath
    swing_alpha: float = 1.0
    edge_weight: str = _choice("log_value", "log_value", "count")
    pretrain_epochs: int = 5  # LightGCN epochs on the training-period gift graph (0: random ID embeddings)
    n_users: int = 0  # size of the run's user vocabulary (set from the data by `train`)
    n_streamers: int = 0  # size of the run's streamer vocabulary (set from the data by `train`)
    window_hours: float = 24.0  # neighbour tables are rebuilt per window from the gifts before its start
    segment_steps: int = 2  # live segment: this many steps ending at the sample's step (clip route)
    expansion: bool = True  # False: no metapath target attention (ablation)
    content: bool = True  # False: no live-content embedding (ablation)
    dropout: float = 0.0  # on the ranker's MLP input (ID embeddings, segment, attended neighbours)

    def validate(self, p: str) -> None:
        _positive(self.d_model, f"{p}.d_model")
        _positive(self.neighbours, f"{p}.neighbours")
        _positive(self.swing_alpha, f"{p}.swing_alpha")
        _in_range(self.pretrain_epochs, f"{p}.pretrain_epochs", 0, 10000)
        _in_range(self.n_users, f"{p}.n_users", 0, 1 << 40)
        _in_range(self.n_streamers, f"{p}.n_streamers", 0, 1 << 40)
        _positive(self.window_hours, f"{p}.window_hours")
        _positive(self.segment_steps, f"{p}.segment_steps")
        _in_range(self.dropout, f"{p}.dropout", 0.0, 0.99)


@dataclass
class EM3Config:
    """EM3 end-to-end ranking with content-ID contrastive alignment."""

    d_id: int = 64
    history_len: int = 20
    cic_weight: float = 0.1
    cic_temperature: float = 0.1
    learnable_temperature: bool = False
    item: str = _choice("both", "both", "id", "content")  # item representation: [ID ; content], ID only, content only
    n_items: int = 1 << 17  # hashed item-ID buckets (bucket 0: an ID unseen in training)
    id_dropout: float = 0.1  # training targets whose ID is hidden (as for a new room) so cold start is learned
    segment_steps: int = 4  # steps of a room's clip that make its content (clip route)
    history_grad: bool = True  # False: history items' content runs without autograd (targets still train it)
    d_hidden: int = 64  # width of the attention unit and the click MLP
    negatives: int = 4  # non-clicked rooms drawn per click when the data has no negative.csv
    cache_mb: int = 512  # prepared room inputs kept in memory (LRU); the rest is decoded again
    data: str | None = None  # the click data the run was trained on ('score --user' reads the user's history there)

    def validate(self, p: str) -> None:
        for name in ("d_id", "history_len", "segment_steps", "d_hidden"):
            _positive(getattr(self, name), f"{p}.{name}")
        _buckets(self.n_items, f"{p}.n_items")
        _in_range(self.cic_weight, f"{p}.cic_weight", 0.0, 1e6)
        _positive(self.cic_temperature, f"{p}.cic_temperature")
        _in_range(self.id_dropout, f"{p}.id_dropout", 0.0, 0.99)
        _in_range(self.negatives, f"{p}.negatives", 0, 1000)
        _in_range(self.cache_mb, f"{p}.cache_mb", 0, 1 << 24)


@dataclass
class QuantConfig:
    """Codebook product quantization and the exported FAISS index."""

    m: int = 8  # sub-vectors
    nbits: int = 8  # codebook size K = 2**nbits
    commitment: float = 0.25
    ivf_lists: int = 0  # >0: export IndexIVFPQ with this many lists
    # Learn the codebooks with the model (highlight): k-means on the first 4*2**nbits segment embeddings,
    # then straight-through + commitment, the contrastive term on the quantized vectors, unused
    # codewords re-seeded every restart_every steps. False: codebooks are fitted after training (post hoc).
    learn: bool = False
    restart_every: int = 100
    ema: float = 0.99  # learned codebooks follow running means of their vectors (0: gradient steps on the codebook loss)

    def validate(self, p: str) -> None:
        _positive(self.m, f"{p}.m")
        _in_range(self.nbits, f"{p}.nbits", 1, 16)
        _in_range(self.commitment, f"{p}.commitment", 0.0, 1e6)
        _in_range(self.ivf_lists, f"{p}.ivf_lists", 0, 1 << 24)
        _positive(self.restart_every, f"{p}.restart_every")
        _in_range(self.ema, f"{p}.ema", 0.0, 0.999)


@dataclass
class TrainConfig:
    # Generic defaults; a task may set its own before a config file is applied (Task.train_defaults:
    # the highlight task trains with small batches, sized for a small dataset on 2 CPU cores).
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # linear warm-up length; None: warmup_fraction of the run's optimizer steps
    warmup_fraction: float = 0.1
    epochs: int = 10
    batch_size: int = 8
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int = 50
    seed: int = 0
    amp: bool = True  # bf16 autocast, CUDA only (ignored on CPU)
    num_workers: int = 0  # DataLoader worker processes that decode and prepare windows
    threads: int = 0  # torch intra-op threads (0: torch's default, one per core)
    cache_mb: int = 1024  # prepared training windows kept in memory (LRU); the rest is decoded again

    def validate(self, p: str) -> None:
        _positive(self.lr, f"{p}.lr")
        _in_range(self.weight_decay, f"{p}.weight_decay", 0.0, 10.0)
        if self.warmup_steps is not None:
            _in_range(self.warmup_steps, f"{p}.warmup_steps", 0, 1 << 30)
        _in_range(self.warmup_fraction, f"{p}.warmup_fraction", 0.0, 1.0)
        for name in ("epochs", "batch_size", "grad_accum", "eval_every"):
            _positive(getattr(self, name), f"{p}.{name}")
        _in_range(self.grad_clip, f"{p}.grad_clip", 0.0, 1e9)
        _in_range(self.num_workers, f"{p}.num_workers", 0, 256)
        _in_range(self.threads, f"{p}.threads", 0, 4096)
        _in_range(self.cache_mb, f"{p}.cache_mb", 0, 1 << 24)


@dataclass
class Config:
    """Everything a run needs; saved as ``config.json`` inside every checkpoint."""

    task: TaskConfig = field(default_factory=TaskConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    highlight: HighlightConfig = field(default_factory=HighlightConfig)
    gifting: GiftingConfig = field(default_factory=GiftingConfig)
    em3: EM3Config = field(default_factory=EM3Config)
    quant: QuantConfig = field(default_factory=QuantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, p: str = "") -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f.name)
        if self.fusion.d_emb % self.quant.m:
            raise ConfigError(
                f"quant.m={self.quant.m} must divide fusion.d_emb={self.fusion.d_emb}: choose m among "
                f"{_divisors(self.fusion.d_emb)}"
            )

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        cfg = _build(cls, d, "")
        cfg.validate()
        return cfg

    def replace(self, **dotted: Any) -> "Config":
        """Return a copy with dotted overrides, e.g. ``cfg.replace(**{"fusion.n_queries": 8})``."""
        d = self.to_dict()
        for key, value in dotted.items():
            node = d
            *parents, leaf = key.split(".")
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown config field '{key}'")
                node = node[part]
            if leaf not in node:
                raise ConfigError(f"unknown config field '{key}': allowed here are {sorted(node)}")
            node[leaf] = value
        return Config.from_dict(d)

    def diff(self, other: "Config") -> list[str]:
        """Dotted fields whose values differ between ``self`` and ``other`` (sorted)."""
        def walk(a: Any, b: Any, path: str) -> list[str]:
            if isinstance(a, dict) and isinstance(b, dict):
                return [d for k in sorted(set(a) | set(b)) for d in walk(a.get(k), b.get(k), _join(path, k))]
            return [] if a == b else [path]

        return walk(self.to_dict(), other.to_dict(), "")

    def hash(self) -> str:
        """Stable short hash of the whole config (index sidecars, caches)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_config(path: str | Path, defaults: dict[str, Any] | None = None) -> Config:
    """Read a JSON or YAML config; missing sections/fields take ``defaults`` (dotted, e.g. a task's
    ``{"train.batch_size": 2}``), then the dataclass defaults."""
    from mm_live.jsonl import read_text

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist: pass an existing .json/.yaml file")
    text = read_text(path, "config", error=ConfigError)
    yaml_file = path.suffix.lower() in (".yaml", ".yml")
    kind = path.suffix.lstrip(".") or "JSON"
    try:
        if yaml_file:
            import yaml

            data = yaml.safe_load(text) or {}  # safe_load: a config builds no Python objects
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid {kind} ({exc.msg} at line {exc.lineno} column {exc.colno}): "
                          "fix it (YAML files need a .yaml suffix)") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, [[[[... nested too deep
        raise ConfigError(f"config file {path} is not valid {kind} ({type(exc).__name__}): fix it") from None
    except Exception as exc:  # yaml.YAMLError and its subclasses
        msg = " ".join(str(exc).split())[:200]
        raise ConfigError(f"config file {path} is not valid {kind} ({msg}): fix it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (e.g. {{\"media\": {{...}}}}), "
                          f"got {type(data).__name__}")
    for key, value in (defaults or {}).items():
        section, field = key.split(".")
        if isinstance(data.get(section, {}), dict):
            data[section] = {field: value, **data.get(section, {})}  # the file's own value wins
    try:
        return Config.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as JSON (or YAML by suffix), atomically."""
    from mm_live.fileio import atomic_open

    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)
        else:
            json.dump(cfg.to_dict(), fh, indent=2)
            fh.write("\n")


# ----------------------------------------------------------------------------- checking


def _build(cls: type, data: Any, path: str) -> Any:
    where = path or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of fields, got {type(data).__name__} {_short(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in data if k not in fields), key=str)
    if unknown:
        raise ConfigError(f"unknown config field '{_join(path, str(unknown[0]))}'{_did_you_mean(unknown[0], fields)}: "
                          f"allowed are {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, _join(path, name), fields[name])
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str, f: dataclasses.Field | None = None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        try:
            return _coerce(non_none[0], value, path, f)
        except ConfigError as exc:
            if type(None) in args:  # e.g. highlight.level_skip: null means "decide from the data"
                raise ConfigError(f"{exc} (null is allowed too)") from None
            raise
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list, got {_short(value)}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {_short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {_short(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {_short(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {_short(value)}")
        meta = f.metadata if f is not None else {}
        choices = meta.get("choices")
        if choices and value not in choices and not meta.get("open_ended"):
            raise ConfigError(f"{path} must be one of {list(choices)}, got {_short(value)}")
        return value
    return value


def _did_you_mean(name: Any, known: Any) -> str:
    """``" (did you mean 'x'?)"`` for the closest known name, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _short(value: Any) -> str:
    """``repr(value)``, cut to one short line for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _positive(value: float, path: str) -> None:
    if not value > 0:
        raise ConfigError(f"{path} must be > 0, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path} must be a finite number, got {value!r}")


def _buckets(value: int, path: str) -> None:
    """A hashed-id table (:func:`mm_live.ops.hash_id`): bucket 0 is the unknown id, so at least 2."""
    if not value >= 2:
        raise ConfigError(f"{path} must be >= 2 (bucket 0 is kept for an unknown id), got {value!r}")


def _in_range(value: float, path: str, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{path} must be between {lo} and {hi}, got {value!r}")


def _divides(a: int, b: int, pa: str, pb: str) -> None:
    if b % a:
        raise ConfigError(f"{pa}={a} must divide {pb}={b}: choose {pa} among {_divisors(b)}")


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]
