"""The frame backbone on ONNX Runtime at inference: equal to torch, cached, rebuilt when damaged,
used only by an inference-ready (LoRA-merged, eval-mode) encoder, and scoring gives the same scores."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from mm_live.checkpoint import save_checkpoint  # noqa: E402
from mm_live.config import Config  # noqa: E402
from mm_live.encoders.frame import FrameEncoder  # noqa: E402
from mm_live.encoders.onnx_runtime import OnnxBackbone, attach, wanted  # noqa: E402
from mm_live.errors import ConfigError  # noqa: E402
from mm_live.lora import apply_lora, merge_lora  # noqa: E402


def _adapted(encoder: FrameEncoder, seed: int = 0) -> FrameEncoder:
    """LoRA B matrices made non-zero (a trained adapter), so merging changes the weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return encoder


def _tiny(seed: int = 0) -> FrameEncoder:
    torch.manual_seed(seed)
    return _adapted(apply_lora(FrameEncoder("tiny", tiny_dim=16), r=4, alpha=8, dropout=0.0), seed).eval()


def test_onnx_tokens_equal_torch_on_merged_efficientnet_lite0(efficientnet, tmp_path):
    enc = _adapted(copy.deepcopy(efficientnet))
    assert merge_lora(enc) == 12  # the expand/project convs of blocks 10-15
    x = enc.preprocess(torch.randint(0, 256, (2, 1, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)))
    with torch.inference_mode():
        want = enc(x).tokens
        attach(enc, "auto", (224, 224), tmp_path)  # auto: efficientnet-lite0, merged, CPU -> ONNX Runtime
        assert enc.runtime is not None and enc.runtime.exported
        got = enc(x).tokens
        prefix = enc.forward_from_prefix(enc.frozen_prefix(x)).tokens  # scoring's route: whole backbone as the prefix
    assert got.shape == want.shape == (2, 49, 1280)
    assert float((got - want).abs().max()) < 1e-3  # measured ~2e-5 (features up to ~6)
    assert torch.equal(prefix, got)
    # the adapters are in the export: the un-adapted backbone gives other features
    with torch.inference_mode():
        plain = efficientnet(x).tokens
    assert float((plain - want).abs().max()) > 1e-2


def test_cache_is_reused_and_a_damaged_file_is_rebuilt(tmp_path):
    enc = _tiny()
    merge_lora(enc)
    first = OnnxBackbone.load(enc.backbone, (32, 32), tmp_path)
    assert first.exported and first.path.parent == tmp_path / "onnx" and first.path.is_file()
    stamp = first.path.stat().st_mtime_ns
    second = OnnxBackbone.load(enc.backbone, (32, 32), tmp_path)
    assert not second.exported and second.path == first.path and first.path.stat().st_mtime_ns == stamp
    # another frame size or other weights: another file
    assert OnnxBackbone.load(enc.backbone, (48, 32), tmp_path).path != first.path
    assert OnnxBackbone.load(_tiny(seed=1).backbone, (32, 32), tmp_path).path != first.path

    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 2])  # truncated (a killed copy, a full disk)
    third = OnnxBackbone.load(enc.backbone, (32, 32), tmp_path)
    assert third.exported and third.path.read_bytes() == data
    first.path.write_bytes(b"not an onnx model")
    assert OnnxBackbone.load(enc.backbone, (32, 32), tmp_path).exported
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = enc.backbone(x)
    assert float((third.run(x) - want).abs().max()) < 1e-4  # dynamic batch: exported at 2, run at 3


def test_only_an_inference_ready_encoder_gets_onnx_and_training_drops_it(tmp_path):
    enc = _tiny()
    assert not wanted(enc, "onnx")  # LoRA not merged: the weights may still train (evaluation inside training)
    merge_lora(enc)
    assert not wanted(enc, "auto")  # auto keeps the tiny test backbone on torch
    assert not wanted(enc, "torch") and wanted(enc, "onnx")
    attach(enc, "onnx", (32, 32), tmp_path)
    runtime = enc.runtime
    assert runtime is not None and enc.prefix_stages() == 3
    attach(enc, "onnx", (32, 32), tmp_path)
    assert enc.runtime is runtime  # same size: nothing re-done
    enc.load_state_dict(enc.state_dict())
    assert enc.runtime is None  # loaded weights: the export no longer describes them
    attach(enc, "onnx", (32, 32), tmp_path)
    enc.train()
    assert enc.runtime is None and enc.prefix_stages() < 3  # training runs torch again
    enc.eval()
    assert not wanted(enc.train(), "onnx")
    with pytest.raises(ConfigError, match="encoders.frame.runtime must be one of"):
        wanted(enc.eval(), "tensorrt")


def test_a_run_without_frame_lora_gets_onnx_once_prepared_for_inference(tmp_path):
    """No adapters to show that the weights are final: Task.prepare_inference marks the encoder."""
    from mm_live.tasks import Task

    torch.manual_seed(0)
    enc = FrameEncoder("tiny", tiny_dim=16).eval()
    assert not wanted(enc, "onnx")  # could be evaluation inside training
    Task.prepare_inference(Task(), torch.nn.ModuleList([enc]))
    assert enc.inference_ready and wanted(enc, "onnx")
    attach(enc, "onnx", (32, 32), tmp_path)
    x = enc.preprocess(torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)))
    with torch.inference_mode():
        got = enc(x).tokens
        enc.use_runtime(None)
        want = enc(x).tokens
    assert float((got - want).abs().max()) < 1e-4
    enc.train()
    assert not enc.inference_ready and not wanted(enc.eval(), "onnx")  # back in training: final no more


@pytest.mark.parametrize("value, message", [
    ("onnxx", "encoders.frame.runtime must be one of ['auto', 'torch', 'onnx'], got 'onnxx'"),
    (1, "encoders.frame.runtime must be a string"),
])
def test_bad_runtime_values_are_refused_in_one_line(value, message):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"encoders": {"frame": {"runtime": value}}})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_onnx_runtime_is_refused_for_a_hugging_face_backbone(tmp_path):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"encoders": {"frame": {"runtime": "onnx", "backbone": str(tmp_path)}}})
    assert "runtime='onnx' runs the conv backbones only" in str(err.value) and "\n" not in str(err.value)
    assert Config.from_dict({"encoders": {"frame": {"runtime": "onnx", "backbone": "tiny"}}}).encoders.frame.runtime == "onnx"
    assert Config().encoders.frame.runtime == "auto"


def test_scores_with_onnx_equal_scores_with_torch(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pipelines"))
    from tiny_config import TINY

    from mm_live.pipelines.highlight import KIND, build_model, load_model, score_clip
    from mm_live.video_writer import write_video

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the default ONNX cache root
    rng = np.random.default_rng(0)
    clip = tmp_path / "clip.mp4"
    write_video(clip, (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(60)), fps=10)
    comments = tmp_path / "c.jsonl"
    comments.write_text("".join(f'{{"t": {t / 2}, "user_id": {t}, "text": "wow {t % 3}"}}\n' for t in range(12)))
    scores, models = {}, {}
    for runtime in ("torch", "onnx"):
        cfg = Config.from_dict(TINY).replace(**{"encoders.frame.runtime": runtime})
        torch.manual_seed(0)
        model = build_model(cfg)
        _adapted(model.steps.encoder.frame)
        save_checkpoint(tmp_path / runtime / "best", config=cfg, model=model, kind=KIND)
        models[runtime] = load_model(tmp_path / runtime, device="cpu")
        scores[runtime] = score_clip(clip, comments=comments, model=models[runtime]).scores
    assert models["torch"].steps.encoder.frame.runtime is None
    assert models["onnx"].steps.encoder.frame.runtime is not None  # attached while preparing the clip
    assert list((tmp_path / "xdg" / "mm-live" / "onnx").glob("*.onnx"))
    assert len(scores["onnx"]) == 6 and np.isfinite(scores["onnx"]).all()
    np.testing.assert_allclose(scores["onnx"], scores["torch"], atol=1e-4)
