from __future__ import annotations

import pytest
import torch
from torch import nn

from mm_live.encoders.base import Encoder, Tokens
from mm_live.errors import ConfigError
from mm_live.lora import apply_lora


class _Stub(Encoder):
    def __init__(self, family):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
        self.dim, self.family, self.spec = 3, family, {"backbone": "stub"}

    def forward(self, x: torch.Tensor) -> Tokens:
        return Tokens.full(self.backbone(x))


def test_pretrained_backbone_without_default_targets_asks_for_them():
    with pytest.raises(ConfigError, match=r"encoders.frame.lora.target_modules: no default .*stub.*\['0', '2'\]"):
        apply_lora(_Stub("unknown"), where="encoders.frame.lora")


def test_explicit_targets_freeze_everything_else():
    enc = apply_lora(_Stub("unknown"), target_modules=["2"], r=2, alpha=4, dropout=0.0)
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".2." in n for n in trainable)
    assert enc.parameter_counts() == (2 * 4 + 3 * 2, 4 * 4 + 4 + 4 * 3 + 3 + 2 * 4 + 3 * 2)


def test_lora_off_freezes_the_encoder_and_random_backbones_train_fully():
    assert apply_lora(_Stub("hf-q_proj"), enabled=False).frozen
    assert apply_lora(_Stub(None), enabled=True).parameter_counts()[0] == 4 * 4 + 4 + 4 * 3 + 3


def test_merge_lora_keeps_outputs_and_removes_adapters_from_the_path():
    import torch

    from mm_live.encoders.comment import CommentEncoder
    from mm_live.lora import apply_lora, merge_lora

    torch.manual_seed(0)
    enc = apply_lora(CommentEncoder("tiny"), r=4, where="t").eval()
    for name, p in enc.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # non-zero adapters, so merging matters
    batch = enc.tokenize([["a goal", "wow"], ["666"]])
    with torch.no_grad():
        before = enc(batch).tokens
        assert merge_lora(enc) == 4  # query/value of 2 layers
        after = enc(batch).tokens
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert merge_lora(enc) == 0
