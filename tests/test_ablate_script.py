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


def _row(ablate, value: float, step: float) -> dict:
    """A row of three seeds: value, value + step, value + 2 step for every metric and highlight type."""
    stat = ablate._stat([value, value + step, value + 2 * step])
    per_type = {t: {"auc": stat, "kendall_tau": stat} for t in ablate.RISING + ablate.DISTRACTORS}
    return {"auc": stat, "kendall_tau": stat, "top5_map": stat, "per_type": per_type}


def test_table_judges_full_against_each_baseline_on_every_route(ablate):
    """The target table (paired full − baseline, overall, per type, and τ per rising type) is printed for
    the LoRA route's "(same seeds)" baselines as for the frozen route's; ✓ only for a win on every seed."""
    lora = {"full": _row(ablate, 0.8, 0.01), "audio_rms (same seeds)": _row(ablate, 0.7, 0.0),
            "random (same seeds)": _row(ablate, 0.79, 0.02)}  # paired: +0.01, 0.00, -0.01 -> no win
    text = ablate.table({"seeds": 0, "lora_seeds": 3, "results": {"lora": lora}})
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    assert "τ " + ablate.RISING[-1] in rows["full − baseline (paired Δ)"]
    width = 2 + 2 * len(ablate.RISING) + len(ablate.DISTRACTORS)
    assert rows["audio_rms (same seeds)"].count("+0.110 ± 0.010 ✓") == width
    assert rows["random (same seeds)"].count("+0.000 ± 0.010") == width and "✓" not in rows["random (same seeds)"]


def test_lora_only_report_plots_and_sorts_baselines_after_models(ablate, tmp_path):
    """With --seeds 0 only the LoRA route has rows, its baselines named "(same seeds)": the plot
    draws that route and the oracle/baseline rows are told from the model rows by name."""
    assert ablate._is_baseline("audio_rms (same seeds)") and ablate._is_baseline("audio_rms")
    assert ablate._is_baseline(ablate.ORACLE + ablate.SAME_SEEDS) and not ablate._is_baseline("full")
    lora = {"full": _row(ablate, 0.8, 0.01), "audio_rms (same seeds)": _row(ablate, 0.7, 0.0),
            ablate.ORACLE + ablate.SAME_SEEDS: _row(ablate, 0.9, 0.0)}
    out = tmp_path / "ablation.png"
    ablate.plot({"streams": 4, "seeds": 0, "lora_seeds": 3, "results": {"lora": lora}}, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
