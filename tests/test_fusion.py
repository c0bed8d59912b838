from __future__ import annotations

import torch

from mm_live.encoders.base import Tokens
from mm_live.fusion import FusionQFormer


def _fusion(**kw) -> FusionQFormer:
    torch.manual_seed(0)
    args = dict(d=16, n_queries=4, n_layers=2, n_heads=2, d_emb=8, max_offsets=4)
    args.update(kw)
    return FusionQFormer([6, 5, 3], **args).eval()


def _tokens(seed: int = 0) -> list[Tokens]:
    g = torch.Generator().manual_seed(seed)
    frame = Tokens.full(torch.randn(3, 4, 6, generator=g))
    audio = Tokens.full(torch.randn(3, 2, 5, generator=g))
    comment = Tokens.full(torch.randn(3, 3, 3, generator=g))
    comment.offsets[:] = torch.tensor([0, 1, 7])  # 7 is past max_offsets: clamped
    return [frame, audio, comment]


def test_shapes_and_normalised_embedding():
    out = _fusion()(_tokens())
    assert out.queries.shape == (3, 4, 16) and out.embedding.shape == (3, 8)
    torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(3))


def test_masked_tokens_do_not_change_the_output():
    fusion, toks = _fusion(), _tokens()
    toks[1].mask[1] = False  # step 1 has no audio
    toks[2].mask[1, 1:] = False  # and one comment
    ref = fusion(toks)
    toks[1].tokens[1] = 1e3 * torch.randn(2, 5)
    toks[2].tokens[1, 1:] = -1e3
    toks[2].offsets[1, 1:] = 3
    out = fusion(toks)
    torch.testing.assert_close(out.queries, ref.queries)
    assert not torch.equal(out.queries, _fusion()(_tokens()).queries)  # the masks did change something


def test_all_tokens_masked_gives_finite_output():
    toks = _tokens()
    for t in toks:
        t.mask[:] = False
    out = _fusion()(toks)
    assert torch.isfinite(out.queries).all() and torch.isfinite(out.embedding).all()


def test_temporal_offsets_and_modality_matter():
    fusion, toks = _fusion(), _tokens()
    ref = fusion(toks).queries
    toks[2].offsets[:, 0] = 2
    assert not torch.allclose(fusion(toks).queries, ref)


def test_streamer_conditioned_queries():
    fusion = _fusion(streamer_dim=5)
    toks, u = _tokens(), torch.randn(3, 5)
    a, b = fusion(toks, u), fusion(toks, torch.roll(u, 1, 0))
    assert not torch.allclose(a.queries, b.queries)
    assert fusion(toks).queries.shape == (3, 4, 16)  # u is optional


def test_cross_attention_every_k_layers():
    fusion = _fusion(n_layers=4, cross_attention_every=2)
    assert [b.cross_attn is not None for b in fusion.blocks] == [True, False, True, False]


def test_gradients_reach_queries_and_projections():
    fusion = _fusion(streamer_dim=2).train()
    fusion(_tokens(), torch.randn(3, 2)).embedding.sum().backward()
    assert all(p.grad is not None for p in fusion.parameters())


def test_deterministic_values():
    out = _fusion()(_tokens())
    # Computed once with this seed and input (torchtune style).
    torch.testing.assert_close(out.embedding[0, :4], torch.tensor([-0.124364, 0.46135, 0.228328, 0.480915]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.queries[2, 3, -4:], torch.tensor([0.469428, -1.386839, -2.681784, 0.424316]), atol=1e-4, rtol=0)
