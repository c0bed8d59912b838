from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mm_live.config import Config
from mm_live.errors import CommentsError
from mm_live.multimodal import MultimodalEncoder, MultimodalInputs

RATE = 8000


def tiny_config(**overrides) -> Config:
    base = {
        "encoders.frame.backbone": "tiny", "encoders.frame.tiny_dim": 16,
        "encoders.audio.backbone": "tiny", "encoders.comment.backbone": "tiny", "encoders.comment.tiny_dim": 16,
        "media.sample_rate": RATE, "fusion.d": 16, "fusion.n_queries": 4, "fusion.n_heads": 2, "fusion.d_emb": 8,
        "quant.m": 4,
    }
    base.update(overrides)
    return Config().replace(**base)


def fake_clip(steps: int = 3, seed: int = 0) -> SimpleNamespace:
    """What mm_live.media.Clip holds, built directly."""
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        frames=torch.randint(0, 256, (steps, 2, 3, 32, 32), dtype=torch.uint8, generator=g),
        audio=0.1 * torch.randn(steps, RATE, generator=g),
        has_audio=torch.ones(steps, dtype=torch.bool),
        step_starts=torch.arange(steps, dtype=torch.float64),
        step_seconds=1.0,
        sample_rate=RATE,
    )


def model(**overrides) -> MultimodalEncoder:
    torch.manual_seed(0)
    return MultimodalEncoder.from_config(tiny_config(**overrides)).eval()


BAGS = [["hello there", "nice"], [], ["wow"]]


def test_prepare_forward_shapes_and_inference_mode():
    m = model(**{"encoders.frozen_prefix": False})
    inputs = m.prepare(fake_clip(), BAGS)
    assert inputs.frames.shape == (3, 2, 3, 32, 32) and inputs.frames.dtype == torch.float32 and not inputs.prefix
    assert inputs.comments.mask.tolist() == [[True, True], [False, False], [True, False]]
    with torch.no_grad():
        out = m(inputs)
    assert out.queries.shape == (3, 4, 16) and out.embedding.shape == (3, 8)
    scored = m.embed(inputs, batch_size=2)  # inference_mode, chunked over steps
    torch.testing.assert_close(scored.embedding, out.embedding, atol=1e-5, rtol=1e-5)


def test_frozen_prefix_replaces_the_float_frames_and_gives_the_same_output():
    m = model()  # LoRA on the tiny conv's conv2/conv3: the prefix is conv1 + bn1 (8 channels at 16x16)
    inputs = m.prepare(fake_clip(), BAGS)
    assert inputs.frames is None and set(inputs.prefix) == {"frame"} and not inputs.cached
    assert inputs.prefix["frame"].shape == (3, 2, 8, 16, 16)
    m.frozen_prefix = False
    full = m.prepare(fake_clip(), BAGS)
    assert inputs.prefix["frame"].numel() < full.frames.numel()  # 4096 vs 6144 floats per step here
    with torch.no_grad():
        torch.testing.assert_close(m(inputs).queries, m(full).queries, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(m.embed(inputs, batch_size=2).embedding, m.embed(full).embedding, rtol=1e-6, atol=1e-6)


def _tiny_highlight_config() -> Config:
    """tests/pipelines/tiny_config.py's TINY (frame backbone "tiny", LoRA on conv2/conv3)."""
    return Config.from_dict(runpy.run_path(str(Path(__file__).parent / "pipelines" / "tiny_config.py"))["TINY"])


def _loss_and_grads(frozen_prefix: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training forward/backward of the TINY encoders + fusion with non-zero LoRA B, LoRA dropout on."""
    torch.manual_seed(0)
    cfg = _tiny_highlight_config().replace(**{"encoders.frozen_prefix": frozen_prefix, "media.sample_rate": RATE})
    m = MultimodalEncoder.from_config(cfg).train()
    for name, p in m.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # B = 0 would make every LoRA A gradient zero
    inputs = m.prepare(fake_clip(steps=4), BAGS + [["late one"]])
    assert bool(inputs.prefix) == frozen_prefix
    torch.manual_seed(1)  # the same LoRA dropout masks on both paths
    pooled = m(inputs).queries.mean(1)  # [B, d]
    loss = (pooled @ torch.linspace(-1, 1, pooled.shape[1])).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in m.named_parameters() if p.requires_grad}


def test_prefix_path_has_the_loss_and_gradients_of_the_full_path():
    loss, grads = _loss_and_grads(frozen_prefix=True)
    ref_loss, ref_grads = _loss_and_grads(frozen_prefix=False)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    lora = [n for n in grads if "lora_" in n]
    assert grads.keys() == ref_grads.keys() and any(n.startswith("frame.") for n in lora) and len(lora) == 12
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in lora)
    for name, g in grads.items():
        if g is None:  # (the fusion's embedding head is not in this loss)
            assert ref_grads[name] is None, name
        else:
            torch.testing.assert_close(g, ref_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_inputs_cat_take_and_slices_keep_every_step():
    m = model(**{"encoders.comment.lora.enabled": False})  # comment tokens cached, frame prefix, mel features
    a = m.prepare(fake_clip(seed=1), BAGS)
    b = m.prepare(fake_clip(steps=2, seed=2), [["a much longer comment than any other here", "x", "y"], []])
    assert a.comments.mask.shape[1] == 2 and b.comments.mask.shape[1] == 3  # slots and lengths differ
    both = MultimodalInputs.cat([a, b])
    assert len(both) == 5 and both.comments.input_ids.shape[1:] == (3, b.comments.input_ids.shape[2])
    with torch.no_grad():
        parts = torch.cat([m(a).queries, m(b).queries])
        torch.testing.assert_close(m(both).queries, parts, rtol=1e-5, atol=1e-6)  # zero padding is masked
        order = torch.tensor([4, 0, 0, 2])
        torch.testing.assert_close(m(both.take(order)).queries, parts[order], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m(both[1:4]).queries, parts[1:4], rtol=1e-5, atol=1e-6)
    moved = both.to("cpu")
    assert moved.frames is None and set(moved.prefix) == {"frame"} and set(moved.cached) == {"comment"}
    m.frozen_prefix = False
    with pytest.raises(ValueError, match="prepared differently"):
        MultimodalInputs.cat([a, m.prepare(fake_clip(), BAGS)])


def test_one_backward_reaches_lora_queries_fusion_but_not_backbones():
    m = model(**{"encoders.frame.lora.dropout": 0.0, "encoders.comment.lora.dropout": 0.0, "fusion.streamer_dim": 3}).train()
    out = m(m.prepare(fake_clip(), BAGS, streamer=torch.randn(3, 3)))
    out.embedding.sum().backward()
    named = dict(m.named_parameters())
    lora = [n for n in named if "lora_" in n]
    assert any(n.startswith("frame.") for n in lora) and any(n.startswith("comment.") for n in lora)
    assert all(named[n].grad is not None for n in lora)
    for prefix in ("frame.backbone", "comment.backbone"):
        frozen = [n for n in named if n.startswith(prefix) and "lora_" not in n]
        assert frozen and all(named[n].grad is None and not named[n].requires_grad for n in frozen)
    assert named["fusion.queries.weight"].grad is not None and named["fusion.streamer.weight"].grad is not None
    assert all(p.grad is not None for n, p in named.items() if n.startswith(("fusion.", "audio.")))


def test_masked_audio_does_not_change_the_fused_output():
    m, clip = model(), fake_clip()
    clip.has_audio[1] = False
    with torch.no_grad():
        ref = m(m.prepare(clip, BAGS)).queries
        clip.audio[1] = 0.5 * torch.randn(RATE)
        masked = m(m.prepare(clip, BAGS)).queries
        clip.has_audio[1] = True
        unmasked = m(m.prepare(clip, BAGS)).queries
    torch.testing.assert_close(masked, ref)
    assert not torch.allclose(unmasked[1], ref[1], atol=1e-4)  # the audio does count when present


def test_empty_comment_bag_is_masked():
    m, clip = model(), fake_clip()
    with torch.no_grad():
        inputs = m.prepare(clip, BAGS)
        ref = m(inputs).queries
        inputs.comments.input_ids[1] = 1000 + torch.arange(inputs.comments.input_ids[1].numel()).view_as(inputs.comments.input_ids[1])
        inputs.comments.attention_mask[1] = 1
        junk = m(inputs).queries
        other = m(m.prepare(clip, [["hello there", "nice", "more", "words"], [], ["wow"]])).queries
        filled = m(m.prepare(clip, [["hello there", "nice"], ["now a comment"], ["wow"]])).queries
    torch.testing.assert_close(junk, ref)
    torch.testing.assert_close(other[1], ref[1], atol=1e-5, rtol=1e-5)  # other steps' bags do not leak in
    assert not torch.allclose(filled[1], ref[1], atol=1e-4)


def test_comment_objects_give_lookback_offsets():
    m = model()
    bag = [SimpleNamespace(t=0.5, text="early"), SimpleNamespace(t=2.2, text="late")]
    inputs = m.prepare(fake_clip(), [[], [], bag])  # step 2 ends at 3.0 s
    assert inputs.comments.offsets[2].tolist() == [2, 0]


def test_wrong_number_of_bags_is_a_comments_error():
    m = model()
    with pytest.raises(CommentsError, match="3 steps"):
        m.prepare(fake_clip(), [["a"]])


def test_prepare_keeps_each_steps_loudness_and_zero_without_audio():
    """MultimodalInputs.level is step_level of each step's raw waveform; a step without audio gets 0
    (not the -1 of silence): what highlight.level_skip adds to a score must not depend on padding."""
    m, clip = model(), fake_clip()
    clip.audio[2] = 0.0
    clip.has_audio[1] = False
    inputs = m.prepare(clip, BAGS)
    rms = clip.audio[0].pow(2).mean().sqrt()
    expected = [(torch.log10(rms + 1e-4).item() + 2) / 2, 0.0, -1.0]  # RMS 0.1 -> about 0.5; silence -> -1
    torch.testing.assert_close(inputs.level, torch.tensor(expected), atol=1e-4, rtol=0)
    assert abs(expected[0] - 0.5) < 0.01
    assert MultimodalInputs.cat([inputs[:2], inputs[2:]]).level.tolist() == inputs.level.tolist()
