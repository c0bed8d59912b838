from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mm_live.encoders.comment import CommentEncoder, minilm_path
from mm_live.errors import ConfigError
from mm_live.lora import apply_lora


def test_tokenize_masks_empty_bags_and_keeps_most_recent():
    enc = CommentEncoder("tiny", max_comments_per_step=2, max_tokens=8)
    batch = enc.tokenize([["old", "mid", "new"], [], ["  ", ""], ["a b c d e f g h i j k l"]], [[3, 2, 1], [], [0, 0], [0]])
    assert batch.mask.tolist() == [[True, True], [False, False], [False, False], [True, False]]
    assert batch.offsets[0].tolist() == [2, 1]  # "mid", "new"
    assert batch.input_ids.shape[-1] <= 8 and (batch.input_ids[~batch.mask] == 0).all()
    decoded = enc.tokenizer.decode(batch.input_ids[0, 1], skip_special_tokens=True)
    assert decoded == "new"


def test_all_steps_in_one_backbone_call_and_empty_bags_never_encoded():
    enc = CommentEncoder("tiny").eval()
    seen = []
    enc.backbone.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["input_ids"].shape), with_kwargs=True)
    with torch.no_grad():
        tok = enc(enc.tokenize([["hi", "there"], [], ["wow"]]))
    assert seen == [torch.Size([3, seen[0][1]])]  # 3 comments of 3 steps, one call
    assert tok.tokens.shape == (3, 2, 32) and (tok.tokens[1] == 0).all() and tok.mask.sum() == 3
    with torch.no_grad():
        assert (enc(enc.tokenize([[], []])).tokens == 0).all() and len(seen) == 1  # no comment: no call


def test_minilm_is_pretrained(minilm):
    with torch.inference_mode():
        tok = minilm(minilm.tokenize([["cat"], ["kitten"], ["stock market"]])).tokens[:, 0]
    assert tok.shape == (3, 384)
    near, far = F.cosine_similarity(tok[0], tok[1], dim=0), F.cosine_similarity(tok[0], tok[2], dim=0)
    print(f"MiniLM cos(cat, kitten)={near:.3f} cos(cat, stock market)={far:.3f}")
    assert near > far + 0.2


def test_minilm_lora_grads(minilm):
    tok = minilm(minilm.tokenize([["a great goal"], ["what a save"]]))
    tok.tokens.square().sum().backward()
    named = dict(minilm.named_parameters())
    assert any("lora_B" in n for n in named) and all(named[n].grad is not None for n in named if "lora_B" in n)
    assert all(p.grad is None for n, p in named.items() if "lora_" not in n)
    for p in minilm.parameters():
        p.grad = None


def test_local_hf_text_checkpoint(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=48)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    enc = CommentEncoder(str(tmp_path))
    assert enc.dim == 24 and enc.default_lora_targets == ["query", "value"]
    with torch.no_grad():
        assert enc(enc.tokenize([["one"], ["two", "three"]])).tokens.shape == (2, 2, 24)


def test_tiny_deterministic_values():
    torch.manual_seed(0)
    enc = CommentEncoder("tiny", tiny_dim=16).eval()
    with torch.no_grad():
        tok = enc(enc.tokenize([["hello world"], ["nice play", "gg"]])).tokens
    assert tok.shape == (2, 2, 16)
    # Computed once with this seed and input (torchtune style).
    torch.testing.assert_close(tok[0, 0, :4], torch.tensor([0.467085, -0.456342, -1.125161, 0.022585]), atol=1e-4, rtol=0)
    torch.testing.assert_close(tok[1, 1, -4:], torch.tensor([0.437769, -0.709956, -0.093608, 0.927883]), atol=1e-4, rtol=0)


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="encoders.comment.backbone"):
        CommentEncoder("no-such-model")


def test_repeated_comments_of_overlapping_bags_are_encoded_once():
    enc = CommentEncoder("tiny").eval()
    seen = []
    enc.backbone.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    bags = [["a goal", "wow"], ["wow", "a goal", "666"], ["666"]]  # look-back bags share comments
    with torch.no_grad():
        tok = enc(enc.tokenize(bags))
        alone = enc(enc.tokenize([["666"]]))
    assert seen[0] == 3  # 6 slots, 3 distinct comments
    torch.testing.assert_close(tok.tokens[0, 1], tok.tokens[1, 0])  # "wow" == "wow"
    torch.testing.assert_close(tok.tokens[2, 0], alone.tokens[0, 0])


def test_length_chunks_cut_padding_and_give_the_same_tokens(monkeypatch):
    torch.manual_seed(0)
    enc = CommentEncoder("tiny").eval()
    bags = [["a", "a much longer comment with many more words in it"], ["mid length one", "b"], ["wow such goal"]]
    batch = enc.tokenize(bags)
    with torch.no_grad():
        whole = enc(batch).tokens
        seen = []
        enc.backbone.register_forward_hook(lambda m, args, kwargs, out: seen.append(tuple(kwargs["input_ids"].shape)),
                                           with_kwargs=True)
        monkeypatch.setattr(CommentEncoder, "CHUNK", 2)
        chunked = enc(batch).tokens
    assert seen[0][0] == 2 and seen[0][1] < batch.input_ids.shape[-1] == seen[-1][1]  # shortest first, cut to length
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_training_mode_keeps_the_frozen_backbone_deterministic_but_not_lora_dropout():
    """BERT's own dropout is off in the frozen backbone; the LoRA adapters' dropout still acts."""
    torch.manual_seed(0)
    batch = CommentEncoder("tiny").tokenize([["a great goal"], ["what a save", "666"]])
    for dropout, same in ((0.0, True), (0.5, False)):
        torch.manual_seed(0)
        enc = apply_lora(CommentEncoder("tiny"), r=4, alpha=8, dropout=dropout)
        for name, p in enc.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.5)
        with torch.no_grad():
            ref = enc.eval()(batch).tokens
            trained = enc.train()(batch).tokens
        assert torch.allclose(trained, ref, rtol=1e-5, atol=1e-6) == same, dropout
