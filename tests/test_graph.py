"""Gifting graphs and metapath tables: hand-computed tiny graph, brute-force checks, no leakage, storage."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction as F

import numpy as np
import pytest

from mm_live.errors import ConfigError, DataError
from mm_live.graph import (
    METAPATHS,
    GiftEvents,
    GraphConfig,
    MetapathTables,
    TimeWindows,
    WindowTables,
    build_graphs,
    build_window_tables,
    capped_u2a,
    id_index,
    load_tables,
    metapath_tables,
    save_tables,
    u2a_graph,
)

# ----------------------------------------------------------------------------- the tiny graph
#
# 5 users, 4 streamers; gifts before t = 100 (count weights):
#   u0 → a0 ×2, a1, a2        u1 → a0, a1 ×3        u2 → a1, a2        u3 → a0, a1, a2        u4 → a3 ×2
# and two gifts that must never show: u4 → a0 at t = 100 (the cutoff itself), u1 → a2 at t = 200.
GIFTS = [(0, 0, 2), (0, 1, 1), (0, 2, 1), (1, 0, 1), (1, 1, 3), (2, 1, 1), (2, 2, 1),
         (3, 0, 1), (3, 1, 1), (3, 2, 1), (4, 3, 2)]
CUTOFF = 100


def tiny_events() -> GiftEvents:
    user = [u for u, _, c in GIFTS for _ in range(c)] + [4, 1]
    streamer = [a for _, a, c in GIFTS for _ in range(c)] + [0, 2]
    time = list(range(len(user) - 2)) + [CUTOFF, 200]
    return GiftEvents.from_arrays(user, streamer, time, np.ones(len(user)), n_users=5, n_streamers=4)


TINY = GraphConfig(weight="count", k=4)

# Swing, α = 1, ordered user pairs. A_u: u0 {0,1,2}, u1 {0,1}, u2 {1,2}, u3 {0,1,2}, u4 {3}.
# |A_u ∩ A_v|: (u0,u1) 2, (u0,u2) 2, (u0,u3) 3, (u1,u2) 1, (u1,u3) 2, (u2,u3) 2.
# sim(a0,a1): U∩ = {u0,u1,u3}: 2·[1/(1+2) + 1/(1+3) + 1/(1+2)] = 2·11/12 = 11/6
# sim(a0,a2): U∩ = {u0,u3}:    2·[1/4]                          = 1/2
# sim(a1,a2): U∩ = {u0,u2,u3}: 2·[1/3 + 1/4 + 1/3]              = 11/6;  a3 shares no user.
SWING = np.array([[0, 11 / 6, 1 / 2, 0], [11 / 6, 0, 11 / 6, 0], [1 / 2, 11 / 6, 0, 0], [0, 0, 0, 0]])
# U2U: shared streamers per pair (above); u4 shares none. By default only pairs sharing ≥ 2 count.
U2U_ALL = np.array([[0, 2, 2, 3, 0], [2, 0, 1, 2, 0], [2, 1, 0, 2, 0], [3, 2, 2, 0, 0], [0, 0, 0, 0, 0]])
U2U = np.where(U2U_ALL >= 2, U2U_ALL, 0)

# Metapath tables, k = 4: rows of (neighbour, weight), weight desc then id asc; the rest is (-1, 0).
# One hop: U2A counts; Swing for A→A.
# Two hops: P(a|u) = UA row-normalised: u0 (1/2, 1/4, 1/4, 0), u1 (1/4, 3/4, 0, 0), u2 (0, 1/2, 1/2, 0),
#   u3 (1/3, 1/3, 1/3, 0), u4 (0, 0, 0, 1); P(b|a) = AA normalised: a0 → a1 11/14, a2 3/14;
#   a1 → a0 1/2, a2 1/2; a2 → a1 11/14, a0 3/14; a3 → none.  P(v|a) = AU normalised: a0 → u0 1/2,
#   u1 1/4, u3 1/4; a1 → u0 1/6, u1 1/2, u2 1/6, u3 1/6; a2 → u0, u2, u3 1/3 each; a3 → u4 1.
# UAA u0: a0 = 1/4·1/2 + 1/4·3/14 = 10/56, a1 = 1/2·11/14 + 1/4·11/14 = 33/56, a2 = 1/2·3/14 + 1/4·1/2 = 13/56
#     u1: a0 = 3/4·1/2 = 21/56, a1 = 1/4·11/14 = 11/56, a2 = 1/4·3/14 + 3/4·1/2 = 24/56
#     u2: a0 = 1/2·1/2 + 1/2·3/14 = 10/28, a1 = 1/2·11/14 = 11/28, a2 = 1/2·1/2 = 7/28
#     u3: a0 = 1/3·1/2 + 1/3·3/14 = 10/42, a1 = 2·1/3·11/14 = 22/42, a2 = 1/3·3/14 + 1/3·1/2 = 10/42
#     u4: a3 has no Swing neighbour → empty.
# UAU (walks back to the start dropped, the rest not renormalised)
#     u0: u1 = 1/2·1/4 + 1/4·1/2 = 1/4, u2 = 1/4·1/6 + 1/4·1/3 = 1/8, u3 = 1/2·1/4 + 1/4·1/6 + 1/4·1/3 = 1/4
#     u1: u0 = 1/4·1/2 + 3/4·1/6 = 1/4, u2 = 3/4·1/6 = 1/8, u3 = 1/4·1/4 + 3/4·1/6 = 3/16
#     u2: u0 = 1/2·1/6 + 1/2·1/3 = 1/4, u1 = 1/2·1/2 = 1/4, u3 = 1/2·1/6 + 1/2·1/3 = 1/4
#     u3: u0 = 1/3·1/2 + 1/3·1/6 + 1/3·1/3 = 1/3, u1 = 1/3·1/4 + 1/3·1/2 = 1/4, u2 = 1/3·1/6 + 1/3·1/3 = 1/6
#     u4: only itself → empty.
# AUA a0: a1 = 1/2·1/4 + 1/4·3/4 + 1/4·1/3 = 19/48, a2 = 1/2·1/4 + 1/4·1/3 = 10/48
#     a1: a0 = 1/6·1/2 + 1/2·1/4 + 1/6·1/3 = 19/72, a2 = 1/6·1/4 + 1/6·1/2 + 1/6·1/3 = 13/72
#     a2: a0 = 1/3·1/2 + 1/3·1/3 = 10/36, a1 = 1/3·1/4 + 1/3·1/2 + 1/3·1/3 = 13/36
#     a3: only itself → empty.
EXPECTED = {
    "UA": [[(0, 2), (1, 1), (2, 1)], [(1, 3), (0, 1)], [(1, 1), (2, 1)], [(0, 1), (1, 1), (2, 1)], [(3, 2)]],
    "AU": [[(0, 2), (1, 1), (3, 1)], [(1, 3), (0, 1), (2, 1), (3, 1)], [(0, 1), (2, 1), (3, 1)], [(4, 2)]],
    "AA": [[(1, F(11, 6)), (2, F(1, 2))], [(0, F(11, 6)), (2, F(11, 6))], [(1, F(11, 6)), (0, F(1, 2))], []],
    "UAA": [[(1, F(33, 56)), (2, F(13, 56)), (0, F(10, 56))], [(2, F(24, 56)), (0, F(21, 56)), (1, F(11, 56))],
            [(1, F(11, 28)), (0, F(10, 28)), (2, F(7, 28))], [(1, F(22, 42)), (0, F(10, 42)), (2, F(10, 42))], []],
    "UAU": [[(1, F(1, 4)), (3, F(1, 4)), (2, F(1, 8))], [(0, F(1, 4)), (3, F(3, 16)), (2, F(1, 8))],
            [(0, F(1, 4)), (1, F(1, 4)), (3, F(1, 4))], [(0, F(1, 3)), (1, F(1, 4)), (2, F(1, 6))], []],
    "AUA": [[(1, F(19, 48)), (2, F(10, 48))], [(0, F(19, 72)), (2, F(13, 72))],
            [(1, F(13, 36)), (0, F(10, 36))], []],
}


def expected_arrays(rows, k):
    ids = np.full((len(rows), k), -1, dtype=np.int32)
    w = np.zeros((len(rows), k), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, (n, x) in enumerate(row):
            ids[i, j], w[i, j] = n, float(x)
    return ids, w


def test_u2a_counts_and_log_value():
    g = build_graphs(tiny_events(), TINY, cutoff_ms=CUTOFF)
    np.testing.assert_array_equal(g.u2a.toarray(), [[2, 1, 1, 0], [1, 3, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 2]])
    assert g.n_events == 15
    # log(1 + total value); a gift worth 0 still makes an edge (with a negligible weight).
    ev = GiftEvents.from_arrays([0, 0, 1, 1], [0, 0, 1, 0], [1, 2, 3, 4], [5.0, 15.0, 0.0, 3.0], n_users=2, n_streamers=2)
    m = u2a_graph(ev, "log_value")
    assert m.nnz == 3
    np.testing.assert_allclose(m.toarray(), [[np.log(21.0), 0], [np.log(4.0), 1e-6]], rtol=1e-6)


def test_swing_and_u2u_match_the_hand_computation():
    g = build_graphs(tiny_events(), TINY, cutoff_ms=CUTOFF)
    np.testing.assert_allclose(g.a2a.toarray(), SWING, rtol=1e-6)
    np.testing.assert_array_equal(g.u2u.toarray(), U2U)
    g1 = build_graphs(tiny_events(), GraphConfig(weight="count", k=4, u2u_min_shared=1), cutoff_ms=CUTOFF)
    np.testing.assert_array_equal(g1.u2u.toarray(), U2U_ALL)
    np.testing.assert_array_equal(g1.a2a.toarray(), g.a2a.toarray())
    top1 = build_graphs(tiny_events(), GraphConfig(weight="count", k=4, u2u_top_k=1), cutoff_ms=CUTOFF).u2u.toarray()
    assert (top1 > 0).sum(1).tolist() == [1, 1, 1, 1, 0] and top1[0, 3] == 3 and top1[3, 0] == 3


def test_every_metapath_table_matches_the_hand_computation():
    tables = metapath_tables(build_graphs(tiny_events(), TINY, cutoff_ms=CUTOFF), TINY)
    assert set(tables.ids) == set(METAPATHS)
    for mp, rows in EXPECTED.items():
        ids, w = expected_arrays(rows, TINY.k)
        np.testing.assert_array_equal(tables.ids[mp], ids, err_msg=mp)
        np.testing.assert_allclose(tables.weights[mp], w, rtol=1e-6, err_msg=mp)
        assert tables.ids[mp].dtype == np.int32 and tables.weights[mp].dtype == np.float32


def test_events_at_the_cutoff_are_excluded():
    ev = tiny_events()
    assert len(ev.before(CUTOFF)) == 15 and len(ev.before(CUTOFF + 1)) == 16
    g = build_graphs(ev, TINY, cutoff_ms=CUTOFF + 1)  # now u4 → a0 (at t = 100) is in
    assert g.u2a[4, 0] == 1 and build_graphs(ev, TINY, cutoff_ms=CUTOFF).u2a[4, 0] == 0


# ----------------------------------------------------------------------------- brute force on random graphs


def random_events(seed: int, n_users=30, n_streamers=12, n_events=250, t_max=1000) -> GiftEvents:
    rng = np.random.default_rng(seed)
    # a skewed streamer choice makes hubs and repeated pairs
    p = 1.0 / np.arange(1, n_streamers + 1)
    return GiftEvents.from_arrays(rng.integers(n_users, size=n_events), rng.choice(n_streamers, size=n_events, p=p / p.sum()),
                                  rng.integers(0, t_max, size=n_events), rng.choice([1.0, 5.0, 52.0], size=n_events),
                                  n_users=n_users, n_streamers=n_streamers)


def brute_swing(u2a: np.ndarray, alpha: float) -> np.ndarray:
    users_of = [set(np.flatnonzero(u2a[:, a])) for a in range(u2a.shape[1])]
    streamers_of = [set(np.flatnonzero(u2a[u])) for u in range(u2a.shape[0])]
    sim = np.zeros((u2a.shape[1],) * 2)
    for a, b in itertools.permutations(range(u2a.shape[1]), 2):
        common = users_of[a] & users_of[b]
        sim[a, b] = sum(1.0 / (alpha + len(streamers_of[u] & streamers_of[v])) for u in common for v in common if u != v)
    return sim


def rownorm(m):
    s = m.sum(1, keepdims=True)
    return np.divide(m, s, out=np.zeros_like(m), where=s > 0)


def dense_rows(table_ids, table_w, n_cols):
    out = np.zeros((len(table_ids), n_cols))
    for i, (ids, w) in enumerate(zip(table_ids, table_w)):
        out[i, ids[ids >= 0]] = w[ids >= 0]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_swing_and_metapaths_equal_brute_force_when_nothing_is_capped(seed):
    ev = random_events(seed)
    cfg = GraphConfig(weight="log_value", a2a_top_k=100, u2u_top_k=100, max_users_per_streamer=100,
                      max_streamers_per_user=100, k=100, swing_alpha=0.5, u2u_min_shared=1 + seed % 2)
    g = build_graphs(ev, cfg)
    u2a = g.u2a.toarray().astype(np.float64)
    np.testing.assert_allclose(g.a2a.toarray(), brute_swing(u2a > 0, 0.5), rtol=1e-5)
    binary = (u2a > 0).astype(int)
    shared = binary @ binary.T - np.diag(binary.sum(1))
    np.testing.assert_array_equal(g.u2u.toarray(), np.where(shared >= cfg.u2u_min_shared, shared, 0))
    t = metapath_tables(g, cfg)
    aa = g.a2a.toarray().astype(np.float64)
    nu, na = u2a.shape
    want = {"UA": u2a, "AU": u2a.T, "AA": aa, "UAA": rownorm(u2a) @ rownorm(aa),
            "UAU": rownorm(u2a) @ rownorm(u2a.T) * (1 - np.eye(nu)), "AUA": rownorm(u2a.T) @ rownorm(u2a) * (1 - np.eye(na))}
    for mp, dense in want.items():
        got = dense_rows(t.ids[mp], t.weights[mp], dense.shape[1])
        np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-7, err_msg=mp)
        w = t.weights[mp]
        assert np.all(w[:, :-1] >= w[:, 1:]), f"{mp}: rows must be ordered by weight"


def test_hub_caps_bound_degrees_and_swing_is_exact_over_the_capped_graph():
    ev = random_events(0, n_users=60, n_events=900)
    cfg = GraphConfig(max_users_per_streamer=4, max_streamers_per_user=3)
    u2a = u2a_graph(ev)
    b = capped_u2a(u2a, cfg)
    assert np.diff(b.indptr).max() <= 3 and np.diff(b.tocsc().indptr).max() <= 4
    assert np.all(np.asarray(u2a[b.nonzero()]) > 0) and set(np.unique(b.data)) == {1}  # a subset of U2A, binary
    assert b.nnz < (u2a > 0).sum()  # the caps bind here
    g = build_graphs(ev, cfg)
    assert np.diff(g.a2a.indptr).max() <= cfg.a2a_top_k
    np.testing.assert_allclose(g.a2a.toarray(), brute_swing(b.toarray() > 0, 1.0).astype(np.float32), rtol=1e-5)


def test_weighted_sampling_follows_the_weights_and_is_deterministic():
    # Every user gifted a0 once and a1 three times; a table of width 1 must pick a1 with probability
    # 3/4, independently per user (the draw hashes the user and streamer).
    n = 2000
    ev = GiftEvents.from_arrays(np.repeat(np.arange(n), 4), np.tile([0, 1, 1, 1], n), np.arange(4 * n), np.ones(4 * n),
                                n_users=n, n_streamers=2)
    cfg = GraphConfig(weight="count", k=1)
    picks = metapath_tables(build_graphs(ev, cfg), cfg).ids["UA"][:, 0]
    assert abs(np.mean(picks == 1) - 0.75) < 0.04  # ±4 standard deviations
    big = random_events(3, n_users=80, n_events=1500)
    cfg = GraphConfig(k=3, seed=7)
    a, b = (metapath_tables(build_graphs(big, cfg), cfg) for _ in range(2))
    c = metapath_tables(build_graphs(big, GraphConfig(k=3, seed=8)), GraphConfig(k=3, seed=8))
    for mp in METAPATHS:
        np.testing.assert_array_equal(a.ids[mp], b.ids[mp])
    assert any(not np.array_equal(a.ids[mp], c.ids[mp]) for mp in METAPATHS)


# ----------------------------------------------------------------------------- no leakage


def pre_start_oracle(ev: GiftEvents, start: int):
    """Sets of edges from the raw events strictly before ``start`` (independent of the module)."""
    m = ev.time < start
    ua = set(zip(ev.user[m].tolist(), ev.streamer[m].tolist()))
    users_of: dict[int, set] = {}
    for u, a in ua:
        users_of.setdefault(a, set()).add(u)
    return ua, users_of


@pytest.mark.parametrize("seed", range(12))
def test_no_table_for_a_samples_window_contains_an_edge_at_or_after_its_start(seed, tmp_path):
    rng = np.random.default_rng(100 + seed)
    ev = random_events(seed, n_events=int(rng.integers(100, 400)))
    windows = TimeWindows(length_ms=int(rng.integers(50, 300)), origin_ms=int(rng.integers(-100, 100)))
    samples = rng.integers(0, 1100, size=40)
    cfg = GraphConfig(k=int(rng.integers(2, 6)), seed=seed, max_users_per_streamer=int(rng.integers(2, 30)))
    store = build_window_tables(ev, windows, samples, tmp_path / "g", cfg, progress=False)
    checked: set[int] = set()
    for t in samples.tolist():
        w = int(windows.index(np.array([t]))[0])
        start = windows.start_ms(w)
        assert start <= t < start + windows.length_ms
        tables = store.tables(w)
        assert tables.window_start_ms == start
        ua, users_of = pre_start_oracle(ev, start)
        for (src, dst) in zip(*np.nonzero(tables.ids["UA"] >= 0)):
            assert (src, tables.ids["UA"][src, dst]) in ua
        for (src, dst) in zip(*np.nonzero(tables.ids["AU"] >= 0)):
            assert (tables.ids["AU"][src, dst], src) in ua
        for (src, dst) in zip(*np.nonzero(tables.ids["AA"] >= 0)):  # Swing needs two shared earlier gifters
            assert len(users_of[src] & users_of[tables.ids["AA"][src, dst]]) >= 2
        for (src, dst) in zip(*np.nonzero(tables.ids["UAU"] >= 0)):
            v = tables.ids["UAU"][src, dst]
            assert any((src, a) in ua and (v, a) in ua for a in range(ev.n_streamers))
        for (src, dst) in zip(*np.nonzero(tables.ids["AUA"] >= 0)):
            b = tables.ids["AUA"][src, dst]
            assert any((u, src) in ua and (u, b) in ua for u in range(ev.n_users))
        for (src, dst) in zip(*np.nonzero(tables.ids["UAA"] >= 0)):
            b = tables.ids["UAA"][src, dst]
            assert any((src, a) in ua and len(users_of[a] & users_of.get(b, set())) >= 2 for a in range(ev.n_streamers))
        if w in checked:
            continue
        checked.add(w)
        # Metamorphic: rewriting every event at or after the start leaves this window's tables unchanged.
        late = ev.time >= start
        other = GiftEvents.from_arrays(np.where(late, rng.integers(ev.n_users, size=len(ev)), ev.user),
                                       np.where(late, rng.integers(ev.n_streamers, size=len(ev)), ev.streamer),
                                       ev.time, np.where(late, 999.0, ev.value), n_users=ev.n_users, n_streamers=ev.n_streamers)
        again = metapath_tables(build_graphs(other, cfg, cutoff_ms=start), cfg, window=w, window_start_ms=start)
        for mp in METAPATHS:
            np.testing.assert_array_equal(tables.ids[mp], again.ids[mp])
            np.testing.assert_array_equal(tables.weights[mp], again.weights[mp])


def test_time_windows():
    w = TimeWindows(length_ms=10, origin_ms=5)
    np.testing.assert_array_equal(w.index(np.array([5, 14, 15, 4, -6])), [0, 0, 1, -1, -2])
    assert w.start_ms(1) == 15 and w.start_ms(-1) == -5
    with pytest.raises(ConfigError, match="window length"):
        TimeWindows(length_ms=0)


# ----------------------------------------------------------------------------- storage


def test_tables_round_trip_memory_mapped(tmp_path):
    tables = metapath_tables(build_graphs(tiny_events(), TINY, cutoff_ms=CUTOFF), TINY, window=3, window_start_ms=CUTOFF)
    save_tables(tables, tmp_path / "t")
    head = json.loads((tmp_path / "t" / "header.json").read_text())
    assert head["format_version"] == 1 and head["k"] == 4 and head["n_users"] == 5 and head["window"] == 3
    loaded = load_tables(tmp_path / "t", k=4, n_users=5, n_streamers=4)
    for mp in METAPATHS:
        assert isinstance(loaded.ids[mp], np.memmap) and not loaded.ids[mp].flags.writeable
        np.testing.assert_array_equal(loaded.ids[mp], tables.ids[mp])
        np.testing.assert_array_equal(loaded.weights[mp], tables.weights[mp])
    ids, w = loaded.neighbours("UAU", np.array([3, -1, 0]))
    np.testing.assert_array_equal(ids, [tables.ids["UAU"][3], [-1] * 4, tables.ids["UAU"][0]])
    assert w[1].sum() == 0 and loaded.window_start_ms == CUTOFF


def test_window_tables_lookup_routes_each_sample_to_its_window(tmp_path):
    ev = random_events(1)
    windows = TimeWindows(length_ms=250)
    times = np.array([10, 300, 600, 900, 260])
    store = build_window_tables(ev, windows, times, tmp_path / "g", GraphConfig(k=3), progress=False)
    assert store.window_ids == [0, 1, 2, 3]
    nodes = np.array([1, 2, 3, 4, 5])
    ids, w = WindowTables.open(tmp_path / "g").lookup("UA", nodes, times)
    for i, (n, t) in enumerate(zip(nodes, times)):
        np.testing.assert_array_equal(ids[i], store.tables(int(t // 250)).ids["UA"][n])
    assert (store.tables(0).ids["UA"] == -1).all()  # window 0 starts at t = 0: no earlier gift
    with pytest.raises(DataError, match="no window 7"):
        store.lookup("UA", nodes[:1], np.array([1800]))


def error_line(fn, *args, **kwargs) -> str:
    """The message of the DataError ``fn`` raises; it must be one line."""
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_table_directory_errors_are_one_line(tmp_path):
    tables = metapath_tables(build_graphs(tiny_events(), TINY), TINY)
    path = save_tables(tables, tmp_path / "t")
    assert "not found" in error_line(load_tables, tmp_path / "nope")
    msg = error_line(load_tables, path, k=8)
    assert "k=4" in msg and "expects 8" in msg
    np.save(path / "UAA.ids.npy", np.zeros((5, 3), dtype=np.int32))
    msg = error_line(load_tables, path)
    assert "UAA.ids.npy" in msg and "(5, 4)" in msg
    (path / "UAA.ids.npy").write_bytes(b"not numpy")
    assert "corrupt UAA.ids.npy" in error_line(load_tables, path)
    (path / "UAA.ids.npy").unlink()
    assert "missing UAA.ids.npy" in error_line(load_tables, path)
    (path / "header.json").write_text("{broken")
    assert "corrupt header.json" in error_line(load_tables, path)
    (path / "header.json").write_text(json.dumps({**tables.header(), "format_version": 99}))
    assert "format version 99" in error_line(load_tables, path)
    (path / "header.json").unlink()
    assert "missing header.json" in error_line(load_tables, path)
    assert "missing windows.json" in error_line(WindowTables.open, path)


def test_event_validation_and_id_index():
    with pytest.raises(DataError, match="user index 5 at event 1"):
        GiftEvents.from_arrays([0, 5], [0, 0], [0, 1], [1, 1], n_users=5, n_streamers=1)
    with pytest.raises(DataError, match="value -1.0 at event 0"):
        GiftEvents.from_arrays([0], [0], [0], [-1.0], n_users=1, n_streamers=1)
    with pytest.raises(ConfigError, match="graph.weight"):
        build_graphs(tiny_events(), GraphConfig(weight="sum"))
    np.testing.assert_array_equal(id_index(np.array([10, 20, 30]), np.array([20, 5, 30, 31])), [1, -1, 2, -1])
    ev = GiftEvents.from_arrays([1, 0], [0, 0], [5, 2], [1, 1], n_users=2, n_streamers=1)
    np.testing.assert_array_equal(ev.time, [2, 5])
    np.testing.assert_array_equal(ev.user, [0, 1])
    assert isinstance(metapath_tables(build_graphs(ev.before(0), TINY), TINY), MetapathTables)  # empty graph works
