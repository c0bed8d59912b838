"""LoRA wiring: peft adapters on an encoder's frozen backbone.

Only the backbone goes through peft (``inject_adapter_in_model``), so peft's "freeze everything that
is not LoRA" never reaches the Fusion-Q-Former or its learnable queries, which stay trainable.
"""

from __future__ import annotations

from torch import nn

from mm_live.encoders.base import Encoder
from mm_live.errors import ConfigError

_ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of target names: the full dotted name or a dotted suffix."""
    return name == target or name.endswith("." + target)


def check_targets(backbone: nn.Module, targets: list[str], where: str, label: str = "") -> None:
    """Raise :class:`ConfigError` when ``targets`` is empty or a target names no module of ``backbone``."""
    names = [n for n, m in backbone.named_modules() if isinstance(m, _ADAPTABLE)]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})[:30]
    what = f"the {label} backbone ({type(backbone).__name__})" if label else f"the {type(backbone).__name__} backbone"
    if not targets:
        raise ConfigError(f"{where}.target_modules: no default LoRA targets are known for {what}; "
                          f"set them to some of its adaptable module names {leaves}")
    missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if missing:
        raise ConfigError(f"{where}.target_modules: {missing} match no Linear/Conv module of {what}; "
                          f"its adaptable module names are {leaves}")


def apply_lora(
    encoder: Encoder,
    *,
    enabled: bool = True,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: list[str] | None = None,
    where: str = "encoder.lora",
) -> Encoder:
    """Adapt ``encoder`` in place and return it.

    - A backbone of a LoRA family (``encoder.family`` set): ``enabled`` -> peft LoRA on
      ``target_modules`` (default: the family's table), everything else in the backbone frozen;
      not ``enabled`` -> the whole encoder frozen (its tokens can then be cached).
    - A random backbone without a family (the mel transformer): trained fully; settings ignored
      unless ``target_modules`` is given.
    """
    if encoder.family is None and target_modules is None:
        for p in encoder.parameters():
            p.requires_grad_(True)
        return encoder
    if not enabled:
        for p in encoder.parameters():
            p.requires_grad_(False)
        return encoder
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(target_modules) if target_modules is not None else encoder.default_lora_targets
    check_targets(encoder.backbone, targets, where, str(encoder.spec.get("backbone", "")))
    for p in encoder.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    encoder.backbone = inject_adapter_in_model(config, encoder.backbone)
    encoder._signature = None
    return encoder


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA adapter inside ``module`` into its base weight (peft ``LoraLayer.merge``) for
    inference: scoring then runs the plain backbone, without the adapters' extra matmuls. Returns the
    number of layers merged. Do not train or save the module afterwards (the adapters would count twice)."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for layer in module.modules():
        if isinstance(layer, LoraLayer) and not layer.merged:
            layer.merge()
            merged += 1
    return merged
