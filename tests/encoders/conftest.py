"""Pretrained default encoders, loaded once per test session (with LoRA: its B matrices start at 0,
so outputs equal the pretrained backbone's until trained)."""

from __future__ import annotations

import pytest

from mm_live.encoders.comment import CommentEncoder
from mm_live.encoders.frame import FrameEncoder
from mm_live.lora import apply_lora


@pytest.fixture(scope="session")
def efficientnet() -> FrameEncoder:
    return apply_lora(FrameEncoder("efficientnet-lite0"), r=8, alpha=16, dropout=0.0).eval()


@pytest.fixture(scope="session")
def minilm() -> CommentEncoder:
    return apply_lora(CommentEncoder("minilm"), r=8, alpha=16, dropout=0.0).eval()
