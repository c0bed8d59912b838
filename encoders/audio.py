"""Audio encoder: log-mel + a small transformer over mel patches, or a local HF audio checkpoint.

The mel transformer is randomly initialised and trained end to end (no LoRA); a Hugging Face
checkpoint (AST, Whisper encoder, wav2vec2) is loaded by path with its own feature extractor and
adapted with LoRA like the other pretrained backbones. Neither has a frozen prefix (the mel
transformer trains from its first layer; LoRA adapts every attention layer of an HF checkpoint);
a frozen HF checkpoint (LoRA off) has its tokens computed once instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchaudio
from torch import nn

from mm_live.encoders.base import Encoder, Tokens, quiet_transformers, hf_family
from mm_live.errors import ConfigError


class MelTransformer(nn.Module):
    """Transformer over patches of ``patch_frames`` log-mel frames, plus an optional level token.

    forward: mel [B, n_mels, frames], level [B, 1] or None
             -> tokens [B, max(frames // patch_frames, 1) (+1 with ``level_token``), d_model]

    The level token embeds the step's loudness (:func:`step_level`). The patch tokens carry it only
    indirectly: a louder sound shifts every log-mel value by about the same amount, and the final
    LayerNorm removes much of such a common shift.
    """

    def __init__(self, n_mels: int, patch_frames: int, d_model: int, n_layers: int, n_heads: int,
                 max_patches: int = 512, level_token: bool = False):
        super().__init__()
        self.patch_frames, self.max_patches = patch_frames, max_patches
        self.patch = nn.Linear(n_mels * patch_frames, d_model)
        self.pos = nn.Embedding(max_patches, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(d_model)
        self.level = nn.Sequential(nn.Linear(1, d_model), nn.GELU(), nn.Linear(d_model, d_model)) if level_token else None

    def forward(self, mel: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self._patches(mel)
        if self.level is None:
            return tokens
        if level is None:
            raise ValueError("this MelTransformer has a level token: pass level [B, 1] (AudioEncoder.preprocess makes it)")
        return torch.cat([tokens, self.level(level.to(tokens.dtype)).unsqueeze(1)], dim=1)

    def _patches(self, mel: torch.Tensor) -> torch.Tensor:
        b, m, t = mel.shape
        pf = self.patch_frames
        if t < pf:  # a very short step: pad with the row's floor to one patch
            mel = torch.cat([mel, mel.amin(dim=(1, 2), keepdim=True).expand(b, m, pf - t)], dim=2)
        p = mel.shape[2] // pf  # trailing frames that do not fill a patch are dropped
        if p > self.max_patches:
            raise ConfigError(f"audio step of {t} mel frames needs {p} patches > {self.max_patches}: "
                              "use shorter media.step_seconds or larger encoders.audio.patch_frames")
        x = mel[..., : p * pf].reshape(b, m, p, pf).permute(0, 2, 1, 3).reshape(b, p, m * pf)
        x = self.patch(x) + self.pos.weight[:p]
        return self.ln(self.blocks(x))


def step_level(audio: torch.Tensor) -> torch.Tensor:
    """Waveforms [B, S] in [-1, 1] -> loudness [B, 1]: (log10(RMS + 1e-4) + 2) / 2.

    Silence maps to -1, an RMS of 0.01 (quiet room tone) to 0 and full scale to about 1.
    """
    rms = audio.float().pow(2).mean(dim=1, keepdim=True).sqrt()
    return (torch.log10(rms + 1e-4) + 2.0) / 2.0


def _load_hf_audio(path: Path) -> tuple[nn.Module, object, int]:
    """A local HF audio checkpoint -> (encoder module, feature extractor, width)."""
    from transformers import AutoFeatureExtractor, AutoModel

    quiet_transformers()

    where = f"encoders.audio.backbone={str(path)!r}"
    try:
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # OSError, ValueError, KeyError from transformers
        raise ConfigError(f"{where}: cannot load a Hugging Face audio model ({str(exc).splitlines()[0]}); "
                          "pass a directory saved with save_pretrained") from None
    try:
        extractor = AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
    except Exception:
        raise ConfigError(f"{where}: no feature extractor (preprocessor_config.json) next to the model; "
                          "save it with feature_extractor.save_pretrained(dir)") from None
    if getattr(model.config, "is_encoder_decoder", False):  # Whisper: the audio encoder only
        model = model.get_encoder()
    return model, extractor, int(model.config.d_model if hasattr(model.config, "d_model") else model.config.hidden_size)


class AudioEncoder(Encoder):
    """Audio of a step -> tokens.

    backbone: "mel-transformer" (log-mel at ``sample_rate`` + :class:`MelTransformer`), "tiny" (the
    same with d_model 32, one layer, two heads, at most 16 mels) or a local HF audio checkpoint directory.
    """

    def __init__(self, backbone: str = "mel-transformer", *, sample_rate: int = 16000, n_mels: int = 64,
                 patch_frames: int = 10, d_model: int = 128, n_layers: int = 2, n_heads: int = 4,
                 level_token: bool = False):
        super().__init__()
        if backbone == "tiny":
            n_mels, d_model, n_layers, n_heads = min(n_mels, 16), 32, 1, 2
        self.spec = {"backbone": backbone, "sample_rate": sample_rate, "n_mels": n_mels, "patch_frames": patch_frames,
                     "d_model": d_model, "n_layers": n_layers, "n_heads": n_heads}
        self.extractor, self.level_token = None, False
        if backbone in ("mel-transformer", "tiny"):
            self.sample_rate = sample_rate
            # 25 ms window, 10 ms hop (a mel frame every 10 ms, as in Whisper/AST).
            self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=sample_rate // 40,
                                                            hop_length=sample_rate // 100, n_mels=n_mels)
            self.level_token = level_token
            if level_token:
                self.spec["level_token"] = True
            self.backbone = MelTransformer(n_mels, patch_frames, d_model, n_layers, n_heads, level_token=level_token)
            self.dim, self.family = d_model, None
        elif Path(backbone).is_dir():
            self.backbone, self.extractor, self.dim = _load_hf_audio(Path(backbone))
            self.sample_rate = int(self.extractor.sampling_rate)
            self.family = hf_family(self.backbone) or "unknown"
        else:
            raise ConfigError(f"encoders.audio.backbone={backbone!r} is not 'mel-transformer', 'tiny' or an "
                              "existing local Hugging Face audio checkpoint directory")

    @torch.no_grad()
    def preprocess(self, audio: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
        """Waveforms [B, S] float at ``sample_rate`` -> backbone features, each with batch dim B.

        mel transformer: ``{"mel": [B, n_mels, frames]}``, Whisper-normalised log10 mel
        (clamped to 8 below each row's maximum, then (x + 4) / 4), and with the level token
        ``"level": [B, 1]`` (:func:`step_level`); HF: the checkpoint's extractor output.
        """
        audio = audio.float()
        level = step_level(audio) if self.level_token else None
        if sample_rate != self.sample_rate:
            audio = torchaudio.functional.resample(audio, sample_rate, self.sample_rate)
        if self.extractor is not None:
            feats = self.extractor([a.numpy() for a in audio.cpu()], sampling_rate=self.sample_rate, return_tensors="pt")
            return {k: v for k, v in feats.items() if isinstance(v, torch.Tensor)}
        mel = self.mel.to(audio.device)(audio).clamp_min(1e-10).log10()  # [B, n_mels, frames]
        mel = torch.maximum(mel, mel.amax(dim=(1, 2), keepdim=True) - 8.0)
        return {"mel": (mel + 4.0) / 4.0} if level is None else {"mel": (mel + 4.0) / 4.0, "level": level}

    def forward(self, features: dict[str, torch.Tensor]) -> Tokens:
        """features from :meth:`preprocess` (batch B) -> Tokens [B, N, dim], all present."""
        if self.extractor is None:
            return Tokens.full(self.backbone(features["mel"], features.get("level")))
        return Tokens.full(self.backbone(**features).last_hidden_state)
