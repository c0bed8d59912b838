"""scripts/ablate_highlight.py --reuse: a run directory is measured only when it holds the row's model."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ablate_highlight.py"


@pytest.fixture(scope="module")
def ablate():
    spec = importlib.util.spec_from_file_location("ablate_highlight", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablate_highlight"] = module
    spec.loader.exec_module(module)
    return module


def test_reuse_accepts_the_rows_config_with_another_token_cache(ablate, tmp_path):
    cfg = ablate.base_config("lora", 8, "/here").replace(**{"train.seed": 1})
    saved = cfg.replace(**{"encoders.cache_dir": "/elsewhere"})
    ablate._check_reused(tmp_path, saved, cfg, ablate.VARIANTS["full"])
    spec = ablate.VARIANTS["frames_audio"]  # train() fills task.modalities from the row's modalities
    ablate._check_reused(tmp_path, cfg.replace(**{"task.modalities": ["frame", "audio"]}), cfg, spec)


def test_reuse_refuses_another_model_with_exit_code_2(ablate, tmp_path, capsys):
    spec = ablate.EXTRA["level_no_reader"]
    cfg = ablate.base_config("lora", 8, "/here").replace(**{"train.seed": 1, **spec["overrides"]})
    saved = cfg.replace(**{"highlight.reaction_reader": True})  # the default model, not this row's
    with pytest.raises(SystemExit) as exit_info:
        ablate._check_reused(tmp_path, saved, cfg, spec)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "highlight.reaction_reader" in err and "\n" not in err.rstrip("\n")
