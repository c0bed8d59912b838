"""The pipeline core: runs rebuild themselves, resume is refused unless it is the same setup,
optimizer groups, devices, and chunked scoring context."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mm_live.config import Config
from mm_live.errors import CheckpointError, ConfigError
from mm_live.runs import load_run, train
from mm_live.runtime import resolve_device
from mm_live.temporal import CausalTemporalTransformer
from mm_live.training import param_groups

sys.path.insert(0, str(Path(__file__).parent / "pipelines"))
from tiny_config import TINY  # noqa: E402


def _klive_log(path: Path, streams: int = 6, steps: int = 24) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for live in range(streams):
        for ts in range(steps):
            y = float(rng.uniform(0, 1))
            img = (rng.normal(size=6) + 2 * y).round(4).tolist()
            rows.append(f"{live}\t{ts}\t{y:.4f}\t{json.dumps(img)}\t{json.dumps(rng.normal(size=4).round(4).tolist())}\n")
    path.write_text("".join(rows))
    return path


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    log = _klive_log(tmp / "0_test_score_infer_output.log")
    cfg = Config.from_dict(TINY).replace(**{"train.epochs": 2})
    train("highlight", log, tmp / "run", config=cfg, progress=False, dataset="klive")
    return tmp, log, cfg


def test_load_run_rebuilds_the_model_from_the_checkpoint_alone(feature_run):
    tmp, _, _ = feature_run
    saved = json.loads((tmp / "run" / "best" / "config.json").read_text())
    assert saved["task"] == {"name": "highlight", "route": "features", "modalities": ["frame", "audio", "comment"],
                             "feature_dims": [6, 4]}
    run = load_run(tmp / "run", device="cpu")
    assert run.task.name == "highlight" and not run.model.training
    from safetensors.torch import load_file

    weights = load_file(str(tmp / "run" / "best" / "model.safetensors"))
    for k, v in run.model.state_dict().items():
        torch.testing.assert_close(v, weights[k])
    with pytest.raises(CheckpointError, match="not a 'gifting' model"):
        load_run(tmp / "run", task="gifting")


def test_resume_is_refused_without_last_and_with_other_settings(feature_run, tmp_path):
    tmp, log, cfg = feature_run
    with pytest.raises(CheckpointError, match="does not exist"):
        train("highlight", log, tmp_path / "fresh", config=cfg, progress=False, dataset="klive", resume=True)
    with pytest.raises(CheckpointError, match="fusion.d_emb"):
        train("highlight", log, tmp / "run", config=cfg.replace(**{"fusion.d_emb": 8}), progress=False,
              dataset="klive", resume=True)
    # data whose feature width differs changes the model: refused, naming the field
    wide = tmp_path / "wide" / "0_test_score_infer_output.log"
    wide.parent.mkdir()
    wide.write_text("".join(f"{i // 24}\t{i % 24}\t0.5\t{json.dumps([0.1] * 9)}\t[0.2]\n" for i in range(96)))
    with pytest.raises(CheckpointError, match="task.feature_dims"):
        train("highlight", wide, tmp / "run", config=cfg, progress=False, dataset="klive", resume=True)
    # how a run computes (threads, cache size) may change on resume
    res = train("highlight", log, tmp / "run", config=cfg.replace(**{"train.threads": 1, "train.cache_mb": 7}),
                progress=False, dataset="klive", resume=True)
    assert res.steps > 0


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = nn.ModuleDict({"emb": nn.Embedding(5, 4), "lin": nn.Linear(4, 3), "ln": nn.LayerNorm(3),
                           "conv": nn.Conv2d(2, 2, 3), "frozen": nn.Linear(3, 3)})
    model["frozen"].requires_grad_(False)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["conv.weight", "lin.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["conv.bias", "emb.weight", "lin.bias", "ln.bias", "ln.weight"]


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_trained_on_cpu_scores_on_cuda_and_back(feature_run):
    tmp, _, _ = feature_run
    cpu, gpu = load_run(tmp / "run", device="cpu"), load_run(tmp / "run", device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    x = torch.randn(1, 30, cpu.model.temporal.proj.in_features)
    with torch.no_grad():
        torch.testing.assert_close(gpu.model.temporal(x.cuda()).cpu(), cpu.model.temporal(x), rtol=1e-3, atol=1e-3)


def test_stream_context_cap_bounds_the_past_each_step_sees():
    torch.manual_seed(0)
    net = CausalTemporalTransformer(5, 16, 2, 2, lookback=None).eval()
    x = torch.randn(40, 5)
    with torch.no_grad():
        capped = net.stream(x, window=4, context=6)
        y = x.clone()
        y[:20] = torch.randn(20, 5)  # more than 6 + 3 steps before step 30
        torch.testing.assert_close(net.stream(y, window=4, context=6)[30:], capped[30:])
        assert not torch.allclose(net.stream(y, window=4, context=None)[30:], net.stream(x, window=4, context=None)[30:])
        # without a cap a bounded look-back streams exactly like one pass
        bounded = CausalTemporalTransformer(5, 16, 2, 2, lookback=5).eval()
        torch.testing.assert_close(bounded.stream(x, window=7), bounded(x[None])[0])
