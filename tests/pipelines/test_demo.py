import json

from mm_live.cli import main
from mm_live.config import Config
from mm_live.pipelines.demo import DEMO_CONFIG, run_demo
from tiny_config import TINY as TINY_BASE

TINY = {**TINY_BASE, "train": {"epochs": 1, "batch_size": 2, "eval_every": 2}}


def test_demo_runs_the_whole_journey_on_a_tiny_config(tmp_path, capsys, monkeypatch, bigbuckbunny):
    monkeypatch.setenv("MM_LIVE_REAL_DATA", str(bigbuckbunny.parents[1]))
    res = run_demo(tmp_path / "out", seed=1, streams=4, seconds=8.0, config=Config.from_dict(TINY), progress=False)
    assert set(res["metrics"]) == {"auc", "kendall_tau", "top5_map"}
    assert set(res["outputs"]) == {"s0003", "bigbuckbunny"}  # the held-out stream and the real clip
    for files in res["outputs"].values():
        assert json.loads(files["scores.json"].read_text())["scores"]
    out = capsys.readouterr().out
    assert "held-out synthetic streams" in out and "planted highlights of s0003" in out
    assert (tmp_path / "out" / "run" / "best" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["fusion"]["d"] == 32


def test_demo_config_is_valid_and_uses_the_default_pretrained_encoders():
    cfg = Config.from_dict(DEMO_CONFIG)
    assert (cfg.encoders.frame.backbone, cfg.encoders.comment.backbone) == ("efficientnet-lite0", "minilm")
    assert cfg.encoders.frame.lora.enabled and cfg.encoders.comment.lora.enabled


def test_demo_cli_refuses_a_foreign_output_folder(tmp_path, capsys):
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "precious.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "mm-live: error:" in capsys.readouterr().err
    assert (tmp_path / "synth" / "precious.txt").read_text() == "keep me"
