import faiss
import numpy as np
import pytest
import torch

from mm_live.errors import ConfigError, DataError
from mm_live.index import faiss_pq_index
from mm_live.quantization import (
    ApproxTargetAttention,
    CodedHistory,
    ProductQuantizer,
    exact_target_attention,
    lookup_tables,
    table_scores,
)


def unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def fitted():
    x = unit_vectors(1000, 32)
    return x, ProductQuantizer(32, m=4, nbits=5).fit(x, niter=10)


def test_m_must_divide_d():
    with pytest.raises(ConfigError, match=r"quant.m=5 must divide the embedding size d=32: choose m among \[1, 2, 4, 8, 16, 32\]"):
        ProductQuantizer(32, m=5)


def test_too_few_training_vectors_names_the_fix():
    with pytest.raises(DataError, match="100 training vectors for 256 codewords .* lower quant.nbits to 6"):
        ProductQuantizer(16, m=4, nbits=8).fit(unit_vectors(100, 16))


def test_forward_before_fit_is_refused():
    with pytest.raises(RuntimeError, match=r"call fit"):
        ProductQuantizer(16, m=4, nbits=4)(torch.zeros(2, 16))


@pytest.mark.parametrize("nbits, dtype", [(8, torch.uint8), (4, torch.uint8), (10, torch.uint16)])
def test_faiss_codes_equal_model_codes_and_decode_agrees(nbits, dtype):
    x = unit_vectors(1200, 32, seed=nbits)
    pq = ProductQuantizer(32, m=4, nbits=nbits).fit(x, niter=8)
    codes = pq.encode(x)
    assert codes.dtype == dtype and codes.shape == (1200, 4)
    index = faiss_pq_index(pq.codebooks_numpy())
    packed = index.sa_encode(x)  # faiss packs codes of nbits != 8 into a bit string per vector
    faiss_codes = faiss.unpack_bitstrings(packed, 4, nbits)
    np.testing.assert_array_equal(faiss_codes, codes.long().numpy())
    np.testing.assert_array_equal(index.sa_decode(packed), pq.decode(codes).numpy())


def test_forward_is_straight_through_with_vq_loss(fitted):
    x, pq = fitted
    xt = torch.tensor(x[:64], requires_grad=True)
    out = pq(xt)
    q = pq.decode(pq.encode(x[:64]))
    assert torch.equal(out.codes, pq.encode(x[:64]).long())
    torch.testing.assert_close(out.quantized.detach(), q)
    torch.testing.assert_close(out.loss, (1 + pq.commitment) * ((q - xt.detach()) ** 2).mean())
    w = torch.randn(64, 32)
    pq.codebooks.grad = None
    (out.quantized * w).sum().backward(retain_graph=True)
    torch.testing.assert_close(xt.grad, w)  # straight-through: d quantized / d x = identity
    assert pq.codebooks.grad is None  # codewords learn from the loss only
    out.loss.backward()
    used = torch.zeros(4, pq.k, dtype=torch.bool)
    used[torch.arange(4), out.codes] = True
    grad_norm = pq.codebooks.grad.norm(dim=-1)
    assert (grad_norm[~used] == 0).all() and (grad_norm[used] > 0).all()  # only the chosen codewords move


def test_training_with_the_loss_reaches_kmeans_quality():
    x = torch.tensor(unit_vectors(400, 16, seed=3))
    kmeans_loss = ProductQuantizer(16, m=4, nbits=3).fit(x)(x).loss.item()
    pq = ProductQuantizer(16, m=4, nbits=3).fit(x[:8])  # a poor start: 8 vectors for 8 codewords
    assert pq(x).loss.item() > 1.3 * kmeans_loss
    for _ in range(30):  # plain gradient descent (torch.optim would import torch._dynamo: seconds)
        pq.codebooks.grad = None
        pq(x).loss.backward()
        with torch.no_grad():
            pq.codebooks -= 20.0 * pq.codebooks.grad
    assert pq(x).loss.item() < 1.05 * kmeans_loss


def test_restart_unused_reseeds_only_the_codewords_no_forward_chose():
    x = torch.tensor(unit_vectors(600, 16, seed=6))
    pq = ProductQuantizer(16, m=4, nbits=4).fit(x)
    pq.eval()
    pq(x)
    assert pq.usage.sum() == 0  # counts only in training mode
    pq.train()
    batch = x[:10]  # 10 vectors choose at most 10 of 16 codewords per sub-space
    codes = pq(batch).codes
    before = pq.codebooks.detach().clone()
    used = torch.zeros(4, 16, dtype=torch.bool)
    used[torch.arange(4), codes] = True
    other = x[100:400]
    assert pq.restart_unused(other, generator=torch.Generator().manual_seed(0)) == int((~used).sum())
    assert torch.equal(pq.codebooks[used], before[used]) and pq.usage.sum() == 0
    sub = other.reshape(-1, 4, 4)
    for j in range(4):
        for c in pq.codebooks[j, ~used[j]]:
            assert (sub[:, j] == c).all(-1).any()  # a re-seeded codeword is one of the given sub-vectors


def test_lookup_table_scores_equal_inner_products_with_decoded(fitted):
    x, pq = fitted
    codes = pq.encode(x[:500])
    decoded = pq.decode(codes)
    q = torch.tensor(unit_vectors(3, 32, seed=9))
    tables = lookup_tables(q, pq.codebooks.detach())
    assert tables.shape == (3, 4, pq.k)
    torch.testing.assert_close(table_scores(tables, codes), q @ decoded.t(), rtol=1e-5, atol=1e-5)
    per_query = codes.unsqueeze(0).expand(3, -1, -1)  # [B, L, m] histories
    torch.testing.assert_close(table_scores(tables, per_query), q @ decoded.t(), rtol=1e-5, atol=1e-5)


def test_approx_attention_over_everything_equals_exact_attention(fitted):
    x, pq = fitted
    codes = pq.encode(x[:300])
    q = torch.tensor(unit_vectors(2, 32, seed=4))
    with torch.no_grad():
        full = ApproxTargetAttention(pq, top_k=300)(q, codes)
        ctx, _ = exact_target_attention(q, pq.decode(codes))
        torch.testing.assert_close(full.context, ctx, rtol=1e-5, atol=1e-6)
        raw = torch.tensor(x[:300])
        full_raw = ApproxTargetAttention(pq, top_k=300)(q, codes, history=raw)
        torch.testing.assert_close(full_raw.context, exact_target_attention(q, raw)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nbits, shared", [(8, True), (5, True), (5, False)])  # faiss scanner; torch gather
def test_approx_attention_picks_the_exact_top_k_of_the_decoded_items(nbits, shared):
    x = unit_vectors(1000, 32)
    pq = ProductQuantizer(32, m=4, nbits=nbits).fit(x, niter=5)
    codes = pq.encode(x)
    q = torch.tensor(unit_vectors(4, 32, seed=5))
    with torch.no_grad():
        out = ApproxTargetAttention(pq, top_k=20)(q, codes if shared else codes.unsqueeze(0).expand(4, -1, -1))
        exact = q @ pq.decode(codes).t()
    assert out.indices.shape == out.weights.shape == (4, 20)
    for b in range(4):
        assert set(out.indices[b].tolist()) == set(exact[b].topk(20).indices.tolist())
    torch.testing.assert_close(out.scores, exact.topk(20).values / 32 ** 0.5)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(4))


@pytest.fixture(scope="module")
def four_bit():
    x = unit_vectors(2000, 32, seed=11)
    return x, ProductQuantizer(32, m=8, nbits=4).fit(x, niter=8)


def test_coded_history_table_scores_equal_inner_products_with_decoded(four_bit):
    x, pq = four_bit
    history = CodedHistory.from_quantizer(pq, x)
    decoded = pq.decode(pq.encode(x)).numpy()
    q = unit_vectors(3, 32, seed=12) * 20
    ids = np.array([0, 7, 1999, 500, 7])
    np.testing.assert_allclose(history.table_scores(q, ids), q @ decoded[ids].T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(history.vectors(ids), decoded[ids])
    assert history.resident_bytes_per_item == 8  # 4 B of fast-scan blocks + 4 B row-major for decoding


@pytest.mark.parametrize("batch", [1, 4])
def test_coded_history_attends_to_the_exact_top_k_of_the_decoded_items(four_bit, batch):
    x, pq = four_bit
    history = CodedHistory.from_quantizer(pq, x)
    decoded = pq.decode(pq.encode(x)).numpy()
    q = unit_vectors(batch, 32, seed=13) * 20
    out = history.attend(q, top_k=10, shortlist=100)  # the fast-scan shortlist holds the exact top-10
    exact = q @ decoded.T / 32 ** 0.5
    best = -np.sort(-exact, axis=1)[:, :10]
    assert out.indices.shape == out.weights.shape == out.scores.shape == (batch, 10)
    np.testing.assert_allclose(out.scores, best, rtol=1e-5, atol=1e-5)  # same top-k, ties aside
    np.testing.assert_allclose(np.take_along_axis(exact, out.indices, 1), out.scores, rtol=1e-5, atol=1e-5)
    w = np.exp(best - best[:, :1])
    w /= w.sum(1, keepdims=True)
    np.testing.assert_allclose(out.context, np.einsum("bk,bkd->bd", w, decoded[out.indices]), rtol=1e-4, atol=1e-5)


def test_coded_history_with_raw_over_everything_equals_exact_attention(four_bit):
    x, pq = four_bit
    history = CodedHistory.from_quantizer(pq, x[:300], keep_raw=True)
    q = unit_vectors(3, 32, seed=14)
    out = history.attend(torch.tensor(q), top_k=300)
    ctx, scores = exact_target_attention(torch.tensor(q), torch.tensor(x[:300]))
    np.testing.assert_allclose(out.context, ctx.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.scores, -np.sort(-scores.numpy(), axis=1), rtol=1e-5, atol=1e-6)


def test_coded_history_refuses_other_bit_widths_and_misaligned_raw(fitted, four_bit):
    x, pq = fitted
    with pytest.raises(ConfigError, match="4-bit codebooks .* quant.nbits=4"):
        CodedHistory.from_quantizer(pq, x[:100])
    x4, pq4 = four_bit
    with pytest.raises(DataError, match="raw history has 99 rows for 100 codes"):
        CodedHistory(pq4.codebooks_numpy(), pq4.encode(x4[:100]), x4[:99])


def test_shortlist_smaller_than_top_k_is_refused(fitted):
    with pytest.raises(ConfigError, match="top_k <= shortlist"):
        ApproxTargetAttention(fitted[1], top_k=10, shortlist=5)


def test_ema_codebooks_follow_the_embedding_as_it_moves():
    x = torch.tensor(unit_vectors(400, 16, seed=4))
    moved = x + 0.5  # the embedding drifted after the k-means start
    err = lambda pq: float(((pq.decode(pq.encode(moved)) - moved) ** 2).mean())  # noqa: E731
    kmeans = err(ProductQuantizer(16, m=4, nbits=3).fit(moved))
    ema, stale = ProductQuantizer(16, m=4, nbits=3, ema=0.9).fit(x), ProductQuantizer(16, m=4, nbits=3).fit(x)
    for _ in range(50):  # training-mode forwards move EMA codewords (no optimizer involved)
        ema(moved)
    assert err(ema) < 1.4 * kmeans and err(stale) > 4 * kmeans
    assert ema(moved).loss.item() == pytest.approx(0.25 * err(ema), rel=1e-3)  # the commitment term only


def test_train_forward_collects_a_kmeans_start_then_quantizes_and_restarts():
    pq = ProductQuantizer(16, m=4, nbits=3, ema=0.9)  # K = 8: the start needs 4 * 8 = 32 vectors
    x = torch.tensor(unit_vectors(400, 16, seed=5))
    assert pq.train_forward(x[:20]) is None and not bool(pq.fitted)
    out = pq.train_forward(x[20:40], restart_every=2)  # 40 collected: fitted, then quantized
    assert bool(pq.fitted) and out.codes.shape == (20, 4) and int(pq.steps) == 1
    pq.usage.zero_()
    before = pq.codebooks.detach().clone()
    pq.train_forward(x[:1], restart_every=2)  # one vector uses one codeword per sub-space; the rest restart
    assert int(pq.steps) == 2 and int((pq.codebooks != before).any(-1).sum()) >= 4 * 6
    assert pq.usage.sum() == 0
