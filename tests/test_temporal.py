import torch

from mm_live.temporal import CausalTemporalTransformer, alibi_slopes, causal_bias


def _model(lookback=4):
    torch.manual_seed(0)
    return CausalTemporalTransformer(d_in=6, d_model=16, n_layers=2, n_heads=4, lookback=lookback).eval()


def test_future_steps_do_not_change_the_past():
    m = _model()
    x = torch.randn(2, 12, 6)
    y = m(x)
    x2 = x.clone()
    x2[:, 7:] = torch.randn(2, 5, 6) * 10
    y2 = m(x2)
    torch.testing.assert_close(y[:, :7], y2[:, :7])
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


def test_lookback_limits_the_receptive_field():
    m = _model(lookback=3)
    assert m.receptive_field == 5
    x = torch.randn(1, 12, 6)
    x2 = x.clone()
    x2[:, 2] += 5.0  # reaches steps 2..6 only (2 layers x (3-1) + 1)
    d = (m(x) - m(x2)).abs().amax(-1)[0]
    assert (d[:2] == 0).all() and (d[2:7] > 0).all() and (d[7:] == 0).all()


def test_streaming_windows_equal_one_pass():
    m = _model(lookback=4)
    x = torch.randn(50, 6)
    with torch.no_grad():
        torch.testing.assert_close(m.stream(x, window=7), m(x[None])[0], rtol=1e-5, atol=1e-5)


def test_mask_and_slopes():
    b = causal_bias(4, 2, lookback=2)
    assert b.shape == (2, 4, 4)
    assert torch.isinf(b[0, 0, 1]) and torch.isinf(b[0, 3, 1]) and b[0, 3, 3] == 0
    assert b[0, 3, 2] == -alibi_slopes(2)[0]
    assert len(alibi_slopes(6)) == 6


def test_eval_mode_attends_to_the_past_exactly_like_training_mode():
    """Regression: nn.TransformerEncoderLayer's inference fast path dropped the float ALiBi mask
    (each step attended only to itself in eval mode)."""
    torch.manual_seed(0)
    net = CausalTemporalTransformer(5, 16, 2, 2, lookback=None, dropout=0.0)
    x = torch.randn(2, 12, 5)
    with torch.no_grad():
        train_out = net.train()(x)
        eval_out = net.eval()(x)
        torch.testing.assert_close(eval_out, train_out)
        y = x.clone()
        y[:, 0] += 5
        assert (net(y) - eval_out).abs()[:, 5:].amax() > 1e-3  # step 0 reaches later steps
