"""The bounded comment look-ahead: what step t may read, and that live scoring reproduces it."""

import numpy as np
import pytest
import torch

from mm_live.config import Config
from mm_live.errors import ConfigError
from mm_live.live_head import HighlightStepper
from mm_live.lookahead import CommentLookahead
from mm_live.pipelines.highlight import build_model
from mm_live.steps import StepFeatures
from tiny_config import TINY

LAG = 3


def _model(realign: bool):
    torch.manual_seed(0)
    cfg = Config.from_dict(TINY).replace(**{
        "highlight.comment_lookahead": True, "highlight.realign": realign, "fusion.d": 8, "fusion.n_heads": 2,
        "media.max_comment_lag": LAG, "task.route": "features", "task.feature_dims": [6, 5], "highlight.window_steps": 8})
    model = build_model(cfg).eval()
    with torch.no_grad():  # the output layer starts at zero (= no look-ahead); give it weights to test
        torch.nn.init.normal_(model.lookahead.out.weight, std=0.5)
    return model


def _features(t: int, seed: int = 1) -> StepFeatures:
    g = torch.Generator().manual_seed(seed)
    return StepFeatures(torch.randn(1, t, 8, generator=g), torch.randn(1, t, 5, generator=g),
                        torch.rand(1, t, generator=g) > 0.5, torch.randn(1, t, 6, generator=g))


def test_windows_hold_steps_t_to_t_plus_lag_and_mask_the_end():
    box = CommentLookahead(4, 2, 4, horizon=2)
    text = torch.arange(10.0).view(1, 5, 2)
    mask = torch.tensor([[True, False, True, True, True]])
    tw, mw = box.windows(text, mask)
    assert tw.shape == (1, 5, 3, 2) and mw.shape == (1, 5, 3)
    assert tw[0, 1, :, 0].tolist() == [2.0, 4.0, 6.0]  # step 1 sees steps 1, 2, 3
    assert mw[0, 1].tolist() == [False, True, True]
    assert mw[0, 4].tolist() == [True, False, False]  # past the end: nothing


@pytest.mark.parametrize("realign", [False, True])
def test_score_reads_comments_up_to_t_plus_lag_and_no_later(realign):
    """Changing the comments of step 20 moves scores 20 - LAG .. (later, through the causal model) and
    never an earlier one; without re-alignment the look-ahead alone is responsible."""
    model, f, t = _model(realign), _features(40), 40
    g = f.text.clone()
    g[0, 20] += 5.0
    h = f.has_text.clone()
    h[0, 20] = True
    f = StepFeatures(f.fused, f.text, h, f.video)
    with torch.no_grad():
        a = model.forward_steps(f, torch.tensor([t]), torch.tensor([3])).logits[0]
        b = model.forward_steps(StepFeatures(f.fused, g, h, f.video), torch.tensor([t]), torch.tensor([3])).logits[0]
    moved = (a - b).abs() > 1e-6
    assert not moved[: 20 - LAG].any()
    assert moved[20 - LAG]  # the step LAG before the comment reads it: what the look-ahead is for


def test_lookahead_off_ignores_future_comments():
    """The same probe with the look-ahead and re-alignment off (strictly causal) moves nothing before step 20."""
    torch.manual_seed(0)
    cfg = Config.from_dict(TINY).replace(**{"highlight.realign": False, "highlight.comment_lookahead": False,
                                            "fusion.d": 8, "fusion.n_heads": 2,
                                            "media.max_comment_lag": LAG, "task.route": "features",
                                            "task.feature_dims": [6, 5]})
    model, f = build_model(cfg).eval(), _features(30)
    assert model.lookahead is None
    g = f.text.clone()
    g[0, 20] += 5.0
    with torch.no_grad():
        a = model.forward_steps(f, torch.tensor([30]), torch.tensor([3])).logits[0]
        b = model.forward_steps(StepFeatures(f.fused, g, f.has_text, f.video), torch.tensor([30]), torch.tensor([3])).logits[0]
    assert torch.equal(a[:20], b[:20])


@pytest.mark.parametrize("realign", [False, True])
def test_stepper_equals_forward_steps_with_lookahead(realign):
    model, t = _model(realign), 40
    f = _features(t)
    with torch.no_grad():
        want = model.forward_steps(f, torch.tensor([t]), torch.tensor([3])).logits[0]
    stepper = HighlightStepper(model, torch.tensor([3]))
    assert stepper.lag == LAG  # scores are final max_comment_lag steps late even without re-alignment
    got, cuts = [], [0, 1, 2, 7, 8, 13, 25, 26, 33, t]  # uneven chunks, one of them longer than the lag
    for a, b in zip(cuts, cuts[1:]):
        got += stepper.push(StepFeatures(*(x[:, a:b] for x in (f.fused, f.text, f.has_text, f.video))))
        assert len(got) == max(0, b - LAG)
        if b == 13:  # restarted watcher: a fresh stepper continues from the saved state
            fresh = HighlightStepper(model, torch.tensor([3]))
            fresh.load_state_dict(stepper.state_dict())
            stepper = fresh
    got += stepper.finish()
    assert [i for i, _ in got] == list(range(t))
    np.testing.assert_allclose([x for _, x in got], want.numpy(), atol=1e-5)


def test_lookahead_dropout_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="lookahead_dropout"):
        Config.from_dict(TINY).replace(**{"highlight.lookahead_dropout": 1.5}).validate()
