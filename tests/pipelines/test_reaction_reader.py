"""The reaction reader: its distant-supervision targets and loss, what the CTR head may train, and
which models carry it."""

import json

import pytest
import torch
import torch.nn.functional as F

from mm_live.checkpoint import load_checkpoint, save_checkpoint
from mm_live.config import Config
from mm_live.errors import ConfigError
from mm_live.losses import reaction_loss, reaction_targets
from mm_live.pipelines.highlight import build_model
from mm_live.reaction import ReactionReader
from tiny_config import TINY


def test_targets_are_the_highest_label_up_to_lag_steps_back():
    labels = torch.tensor([[0.1, 0.9, 0.2, 0.1, 0.05, -1.0]])
    expected = torch.tensor([[0.1, 0.9, 0.9, 0.9, 0.2, 0.1]])  # padding (-1) counts as 0
    torch.testing.assert_close(reaction_targets(labels, 2), expected)
    torch.testing.assert_close(reaction_targets(labels, 0), labels.clamp(min=0))


def _reader_inputs():
    torch.manual_seed(0)
    reader = ReactionReader(6)
    tokens = torch.randn(4, 3, 6)
    own = torch.tensor([[True, True, False], [False, False, False], [True, False, False], [True, True, True]])
    return reader, tokens, own


def test_loss_from_step_statistics_equals_the_mean_bce_over_comments():
    reader, tokens, own = _reader_inputs()
    _, stats = reader(tokens, own)
    targets = torch.tensor([0.8, 0.3, 0.0, 0.5])
    logits = reader.probe(tokens).squeeze(-1)
    expected = F.binary_cross_entropy_with_logits(logits[own], targets[:, None].expand(4, 3)[own])
    got = reaction_loss(stats[None], targets[None])
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(stats[:, 2], torch.tensor([2.0, 0.0, 1.0, 3.0]))


def test_no_comments_gives_zero_loss_and_zero_feature():
    reader, tokens, _ = _reader_inputs()
    none = torch.zeros(4, 3, dtype=torch.bool)
    feature, stats = reader(tokens, none)
    assert feature.abs().sum() == 0 and stats.abs().sum() == 0
    loss = reaction_loss(stats[None], torch.ones(1, 4))
    assert loss.item() == 0.0 and not torch.isnan(loss)


def test_the_ctr_path_cannot_train_the_probe_only_its_loss_does():
    reader, tokens, own = _reader_inputs()
    feature, stats = reader(tokens, own)
    assert feature[1].abs().sum() == 0  # the step without comments adds nothing
    feature.sum().backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in reader.probe.parameters())
    assert reader.proj.weight.grad.abs().sum() > 0
    reaction_loss(stats[None], torch.full((1, 4), 0.5)).backward()
    assert reader.probe[1].weight.grad.abs().sum() > 0


def test_the_count_rises_with_the_number_of_reacting_comments():
    """Sum pooling, not mean: two comments the probe reads as reactions count more than one."""
    reader = ReactionReader(4)
    with torch.no_grad():
        reader.probe[1].weight.zero_()
        reader.probe[1].bias.fill_(3.0)  # every comment reads as a reaction
        reader.proj.weight.copy_(torch.tensor([[1.0, 0.0]] * 4))
        reader.proj.bias.zero_()
    tokens = torch.randn(2, 2, 4)
    own = torch.tensor([[True, False], [True, True]])
    feature, _ = reader(tokens, own)
    p = torch.sigmoid(torch.tensor(3.0))
    torch.testing.assert_close(feature[:, 0], torch.stack([torch.log1p(p), torch.log1p(2 * p)]))


def _tiny(**over):
    return Config.from_dict(TINY).replace(**over) if over else Config.from_dict(TINY)


def test_the_reader_exists_only_with_comments_on_the_clip_route():
    assert build_model(_tiny()).steps.reader is not None  # on by default
    assert build_model(_tiny(**{"highlight.reaction_reader": False})).steps.reader is None
    assert build_model(_tiny(**{"task.modalities": ["frame", "audio"]})).steps.reader is None


def test_a_checkpoint_written_before_the_switch_loads_without_the_reader(tmp_path):
    cfg = _tiny(**{"highlight.reaction_reader": False})
    path = save_checkpoint(tmp_path / "old", config=cfg, model=build_model(cfg), kind="highlight")
    raw = json.loads((path / "config.json").read_text())
    del raw["highlight"]["reaction_reader"]  # what a checkpoint from before the switch holds
    (path / "config.json").write_text(json.dumps(raw))
    assert load_checkpoint(path, kind="highlight").config.highlight.reaction_reader is False
    new = save_checkpoint(tmp_path / "new", config=_tiny(), model=build_model(_tiny()), kind="highlight")
    assert load_checkpoint(new, kind="highlight").config.highlight.reaction_reader is True


def test_a_negative_weight_is_a_config_error():
    with pytest.raises(ConfigError, match="highlight.reaction_weight"):
        _tiny(**{"highlight.reaction_weight": -1.0})
