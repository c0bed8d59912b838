from __future__ import annotations

import math

import pytest
import torch

from mm_live.encoders.audio import AudioEncoder, step_level
from mm_live.errors import ConfigError
from mm_live.lora import apply_lora


def _tone(b: int, seconds: float, rate: int) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return torch.stack([0.3 * torch.sin(2 * math.pi * (220.0 * (i + 1)) * t) for i in range(b)])


def test_default_mel_transformer_shape_and_full_training():
    enc = apply_lora(AudioEncoder("mel-transformer", level_token=True))  # random init: trained fully, LoRA unused
    feats = enc.preprocess(_tone(2, 1.0, 16000), 16000)
    assert feats["mel"].shape == (2, 64, 101) and feats["level"].shape == (2, 1)
    tok = enc(feats)
    assert tok.tokens.shape == (2, 10 + 1, 128) and tok.mask.all()  # 10 patches + the level token
    trainable, total = enc.parameter_counts()
    assert trainable == total > 0
    tok.tokens.sum().backward()
    assert all(p.grad is not None for p in enc.backbone.parameters() if p is not enc.backbone.pos.weight)


def test_resampling_gives_the_same_features_as_native_rate():
    enc = AudioEncoder("tiny", sample_rate=16000)
    native = enc.preprocess(_tone(1, 1.0, 16000), 16000)["mel"]
    resampled = enc.preprocess(_tone(1, 1.0, 44100), 44100)["mel"]
    assert resampled.shape == native.shape
    assert (resampled - native).abs().mean() < 0.05


def test_tiny_shape_and_deterministic_values():
    torch.manual_seed(0)
    enc = AudioEncoder("tiny", sample_rate=8000, patch_frames=5).eval()
    with torch.no_grad():
        tok = enc(enc.preprocess(_tone(2, 0.5, 8000), 8000)).tokens
    assert tok.shape == (2, 10, 32)
    # Computed once with this seed and input (torchtune style).
    torch.testing.assert_close(tok[0, 0, :4], torch.tensor([0.302938, -0.381, 0.602172, 1.542939]), atol=1e-4, rtol=0)
    torch.testing.assert_close(tok[1, -1, -4:], torch.tensor([0.165348, 1.018946, 0.11557, 1.605086]), atol=1e-4, rtol=0)


def test_step_level_hand_values():
    silence = torch.zeros(1, 800)
    room = torch.full((1, 800), 0.01)  # RMS 0.01
    full = torch.ones(1, 800)
    got = step_level(torch.cat([silence, room, full]))
    want = (torch.log10(torch.tensor([[1e-4], [0.01 + 1e-4], [1.0 + 1e-4]])) + 2) / 2
    torch.testing.assert_close(got, want)
    assert got[0, 0].item() == pytest.approx(-1.0) and got[1, 0].item() == pytest.approx(0.0, abs=0.01)


def test_level_token_depends_on_loudness_only():
    """Two pitches at the same RMS share the level token; the same pitch at another volume does not.
    Without the option there is no extra token."""
    torch.manual_seed(0)
    enc = AudioEncoder("tiny", sample_rate=8000, patch_frames=5, level_token=True).eval()
    tones = _tone(2, 0.5, 8000)  # 220 Hz and 440 Hz, both RMS 0.3 / sqrt(2)
    with torch.no_grad():
        tok = enc(enc.preprocess(torch.cat([tones, tones[:1] * 0.05]), 8000)).tokens
    torch.testing.assert_close(tok[0, -1], tok[1, -1], atol=1e-4, rtol=0)
    assert (tok[0, :-1] - tok[1, :-1]).abs().max() > 0.1  # the patch tokens hear the pitch
    assert (tok[0, -1] - tok[2, -1]).norm() > 0.1 * tok[0, -1].norm()
    plain = AudioEncoder("tiny", sample_rate=8000, patch_frames=5)  # the default: no level token
    feats = plain.preprocess(tones, 8000)
    assert "level" not in feats and plain(feats).tokens.shape == (2, 10, 32)


def test_local_hf_wav2vec2(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4),
                                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(tmp_path)
    enc = apply_lora(AudioEncoder(str(tmp_path)), r=4, alpha=8, dropout=0.0)
    assert enc.default_lora_targets == ["q_proj", "v_proj"] and enc.sample_rate == 16000
    tok = enc(enc.preprocess(_tone(2, 0.5, 8000), 8000))  # resampled to the extractor's 16 kHz
    assert tok.tokens.shape[0] == 2 and tok.tokens.shape[2] == 32 and tok.tokens.shape[1] > 100
    tok.tokens.sum().backward()
    assert all((p.grad is not None) == ("lora_" in n) for n, p in enc.named_parameters())


def test_local_hf_ast(tmp_path):
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(0)
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    num_mel_bins=32, max_length=64, patch_size=16, frequency_stride=16, time_stride=16)
    ASTModel(cfg).save_pretrained(tmp_path)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(tmp_path)
    enc = AudioEncoder(str(tmp_path))
    tok = enc(enc.preprocess(_tone(3, 0.5, 16000), 16000))
    assert tok.tokens.shape == (3, 2 + 2 * 4, 32)  # CLS + distillation token + (32/16) x (64/16) patches


def test_hf_audio_without_feature_extractor_is_a_config_error(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=(16,), conv_stride=(5,), conv_kernel=(10,),
                                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="feature extractor"):
        AudioEncoder(str(tmp_path))
