from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mm_live.multimodal import MultimodalEncoder
from test_multimodal import BAGS, fake_clip, tiny_config


def frozen_model(cache: Path | None, **overrides) -> tuple[MultimodalEncoder, dict[str, int]]:
    """Tiny model with LoRA off on frame and comment encoders; counts their backbone calls."""
    torch.manual_seed(0)
    cfg = tiny_config(**{"encoders.frame.lora.enabled": False, "encoders.comment.lora.enabled": False,
                         "encoders.cache_dir": None if cache is None else str(cache), **overrides})
    m = MultimodalEncoder.from_config(cfg).eval()
    calls = {"frame": 0, "comment": 0}
    for name in calls:
        getattr(m, name).backbone.register_forward_hook(lambda *a, name=name: calls.__setitem__(name, calls[name] + 1))
    return m, calls


def test_second_run_skips_the_frozen_backbones(tmp_path):
    m, calls = frozen_model(tmp_path)
    with torch.no_grad():
        first = m(m.prepare(fake_clip(), BAGS)).queries
    assert calls == {"frame": 1, "comment": 1}
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 2 and all(f.endswith(".safetensors") and not f.startswith(".") for f in files)

    m2, calls2 = frozen_model(tmp_path)  # a new process would build the same model
    with torch.no_grad():
        inputs = m2.prepare(fake_clip(), BAGS)
        second = m2(inputs).queries
    assert calls2 == {"frame": 0, "comment": 0} and set(inputs.cached) == {"frame", "comment"}
    torch.testing.assert_close(second, first)


@pytest.mark.parametrize("on_disk", [True, False])
def test_frozen_tokens_of_a_training_model_are_the_eval_tokens(tmp_path, on_disk):
    """Tokens computed once and reused must not carry dropout (the tiny BERT has dropout 0.1)."""
    m, _ = frozen_model(tmp_path if on_disk else None)
    m.train()
    modes = {name: mod.training for name, mod in m.named_modules()}
    inputs = m.prepare(fake_clip(), BAGS)
    assert {name: mod.training for name, mod in m.named_modules()} == modes  # every module's mode restored
    m.eval()
    with torch.no_grad():
        expected = {"frame": m.frame(m.frame.preprocess(fake_clip().frames)), "comment": m.comment(inputs.comments)}
    for name, tok in expected.items():
        torch.testing.assert_close(inputs.cached[name].tokens, tok.tokens, rtol=1e-6, atol=1e-6)


def test_config_change_or_new_content_recomputes(tmp_path):
    m, _ = frozen_model(tmp_path)
    m.prepare(fake_clip(), BAGS)
    # The comment encoder is built last, so the frame weights stay the same under the seed.
    m2, calls = frozen_model(tmp_path, **{"encoders.comment.max_tokens": 16})
    m2.prepare(fake_clip(), BAGS)
    assert calls == {"frame": 0, "comment": 1}  # only the changed encoder recomputes
    m2.prepare(fake_clip(seed=1), BAGS)
    assert calls == {"frame": 1, "comment": 1}  # same comments, new frames
    m2.prepare(fake_clip(seed=1), [["other"], [], []])
    assert calls == {"frame": 1, "comment": 2}
    m3, calls = frozen_model(tmp_path, **{"encoders.frame.tiny_dim": 8})  # new frame weights and width
    m3.prepare(fake_clip(), BAGS)
    assert calls["frame"] == 1


def test_damaged_file_is_recomputed(tmp_path):
    m, calls = frozen_model(tmp_path)
    m.prepare(fake_clip(), BAGS)
    for f in tmp_path.rglob("*.safetensors"):
        f.write_bytes(b"broken")
    m.prepare(fake_clip(), BAGS)
    assert calls == {"frame": 2, "comment": 2}
    m.prepare(fake_clip(), BAGS)
    assert calls == {"frame": 2, "comment": 2}


def test_adapted_encoders_cache_their_frozen_prefix_keyed_by_the_split(tmp_path):
    m, calls = frozen_model(tmp_path, **{"encoders.frame.lora.enabled": True})  # LoRA on conv2, conv3
    inputs = m.prepare(fake_clip(), BAGS)
    assert set(inputs.cached) == {"comment"} and set(inputs.prefix) == {"frame"} and inputs.frames is None
    assert calls == {"frame": 1, "comment": 1}
    with torch.no_grad():
        for name, p in m.frame.named_parameters():
            if "lora_" in name:
                p.normal_()  # trained adapters above the split do not change the prefix or its key
    again = m.prepare(fake_clip(), BAGS)
    assert calls == {"frame": 1, "comment": 1}
    torch.testing.assert_close(again.prefix["frame"], inputs.prefix["frame"], rtol=0, atol=0)

    m2, calls2 = frozen_model(tmp_path, **{"encoders.frame.lora.enabled": True,
                                           "encoders.frame.lora.target_modules": ["conv3"]})  # split moves up
    deeper = m2.prepare(fake_clip(), BAGS)
    assert calls2["frame"] == 1  # (the comment weights differ too: fewer LoRA layers drew from the seed)
    assert deeper.prefix["frame"].shape == (3, 2, 16, 8, 8) and inputs.prefix["frame"].shape == (3, 2, 8, 16, 16)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 4


def test_without_frozen_prefix_only_frozen_encoders_are_cached(tmp_path):
    m, calls = frozen_model(tmp_path, **{"encoders.frame.lora.enabled": True, "encoders.frozen_prefix": False})
    inputs = m.prepare(fake_clip(), BAGS)
    assert set(inputs.cached) == {"comment"} and not inputs.prefix and inputs.frames is not None
    m.prepare(fake_clip(), BAGS)
    assert calls == {"frame": 0, "comment": 1}
