from __future__ import annotations

from mm_live.encoders.audio import AudioEncoder
from mm_live.lora import apply_lora


def test_trainable_share_of_default_encoders_below_5_percent(efficientnet, minilm):
    audio = apply_lora(AudioEncoder("mel-transformer"))  # random init, trained fully
    counts = {"frame": efficientnet.parameter_counts(), "audio": audio.parameter_counts(), "comment": minilm.parameter_counts()}
    for name, (trainable, total) in counts.items():
        print(f"{name}: {trainable:,} / {total:,} trainable ({100 * trainable / total:.2f}%)")
    trainable, total = (sum(c[i] for c in counts.values()) for i in (0, 1))
    print(f"all default encoders: {trainable:,} / {total:,} trainable ({100 * trainable / total:.2f}%)")
    assert trainable / total < 0.05
    for name in ("frame", "comment"):  # the LoRA-adapted pretrained backbones
        assert 0 < counts[name][0] / counts[name][1] < 0.05
