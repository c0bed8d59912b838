import json

import pytest

from mm_live.config import Config, load_config, save_config
from mm_live.errors import ConfigError


def test_defaults_validate_and_round_trip_json(tmp_path):
    cfg = Config()
    cfg.validate()
    path = tmp_path / "cfg.json"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert json.loads(path.read_text())["fusion"]["n_queries"] == cfg.fusion.n_queries


def test_round_trip_yaml_with_partial_sections(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("fusion:\n  n_queries: 8\nencoders:\n  frame:\n    backbone: tiny\n    lora: {r: 4}\n")
    cfg = load_config(path)
    assert cfg.fusion.n_queries == 8
    assert cfg.encoders.frame.backbone == "tiny" and cfg.encoders.frame.lora.r == 4
    assert cfg.encoders.frame.lora.alpha == 16  # untouched defaults stay
    save_config(cfg, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == cfg


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"fusion": {"n_querys": 8}}, "fusion.n_querys"),
        ({"fusion": {"n_queries": "8"}}, "fusion.n_queries must be an integer"),
        ({"fusion": {"n_queries": 0}}, "fusion.n_queries must be > 0"),
        ({"fusion": {"d": 100, "n_heads": 3}}, "fusion.n_heads=3 must divide fusion.d=100"),
        ({"highlight": {"pointwise": "hinge"}}, "highlight.pointwise must be one of ['bce', 'mse']"),
        ({"train": {"amp": "yes"}}, "train.amp must be true or false"),
        ({"media": {"step_seconds": -1}}, "media.step_seconds must be > 0"),
        ({"quant": {"m": 7}}, "quant.m=7 must divide fusion.d_emb=128"),
        ({"encoders": {"frame": {"lora": {"target_modules": "q_proj"}}}}, "encoders.frame.lora.target_modules must be a list"),
        ({"fusion": [1, 2]}, "fusion must be a mapping"),
        # hashed-id tables keep bucket 0 for an unknown id: a single bucket used to pass validation and
        # then fail inside nn.Embedding with an IndexError
        ({"highlight": {"n_streamers": 1}}, "highlight.n_streamers must be >= 2"),
        ({"em3": {"n_items": 1}}, "em3.n_items must be >= 2"),
        # unset (null) is the data-decided default; anything but a bool or null is refused
        ({"highlight": {"level_skip": "auto"}}, "highlight.level_skip must be true or false, got 'auto' (null is allowed too)"),
        # the shift is a way of re-aligning: with re-alignment off it would silently do nothing
        ({"highlight": {"realign_by": "shift", "realign": False}}, "highlight.realign_by: shift moves comments only when"),
    ],
)
def test_bad_values_name_the_field(data, needle):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(data)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_open_ended_backbone_accepts_a_path():
    cfg = Config.from_dict({"encoders": {"comment": {"backbone": "/models/my-bert"}}})
    assert cfg.encoders.comment.backbone == "/models/my-bert"


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid json"):
        load_config(bad)
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(lst)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"fusion": {"d": "wide"}}')
    with pytest.raises(ConfigError, match=r"wrong.json: fusion.d must be an integer"):
        load_config(wrong)


def test_replace_and_hash():
    cfg = Config()
    other = cfg.replace(**{"fusion.n_queries": 8})
    assert other.fusion.n_queries == 8 and cfg.fusion.n_queries == 16
    assert other.hash() != cfg.hash() and Config().hash() == cfg.hash()
    with pytest.raises(ConfigError, match="unknown config field 'fusion.nq'"):
        cfg.replace(**{"fusion.nq": 8})
