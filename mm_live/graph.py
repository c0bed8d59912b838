"""Gifting graphs and metapath neighbour tables ("graph behaviour offline storage", MMBee).

From gift events (user index, streamer index, time in ms, value) taken **strictly before** a
cutoff — the start of the time window a sample falls in — this module builds, with scipy.sparse:

* **U2A** ``[n_users, n_streamers]``: one edge per (user, streamer) with at least one gift;
  weight ``log(1 + total value)`` (``weight="log_value"``) or the number of gifts (``"count"``).
* **A2A** ``[n_streamers, n_streamers]``: Swing similarity over U2A,
  ``sim(a, b) = Σ_{u ≠ v ∈ U_a ∩ U_b} 1 / (α + |A_u ∩ A_v|)`` with the sum over *ordered* user
  pairs (the Swing paper's double sum; twice the unordered sum), then the ``a2a_top_k`` most
  similar streamers per streamer.
* **U2U** ``[n_users, n_users]``: co-gifting, weight = number of streamers both users gifted,
  kept when ≥ ``u2u_min_shared`` (default 2), the ``u2u_top_k`` strongest per user. One shared,
  often popular, streamer is weak evidence and is what U→A→U already samples; 2 also makes
  U2U come from the same user pairs as Swing. ``u2u_min_shared=1`` gives the full co-gifting
  graph (at 1 M gifts it makes the pass about twice as slow: a top-k over every co-gifting pair).

**Hub caps.** Swing and U2U run over a *capped* copy of U2A, as production Swing implementations
do: each user keeps at most ``max_streamers_per_user`` streamers and then each streamer at most
``max_users_per_streamer`` users, sampled by gift weight (below). Their cost is the number of
user pairs sharing a streamer, ``Σ_a min(|U_a|, cap)²``; without the cap a streamer with 100 k
gifters alone would make 10¹⁰ pairs. Swing and U2U are exact over the capped graph (the tests
hand-compute them with caps that do not bind).

**Metapath tables.** For users ``UA`` (U→A), ``UAA`` (U→A→A), ``UAU`` (U→A→U); for streamers
``AU``, ``AA``, ``AUA``: ``k`` neighbour indices per node as ``int32 [n, k]`` (−1 padding) with
weights ``float32 [n, k]`` (0 padding), each row ordered by weight (desc) then index. One-hop
weights are the graph's edge weights (U2A weight; Swing similarity). A two-hop path X→Y→Z has
the random-walk weight ``Σ_y P(y|x) P(z|y)`` computed over the one-hop *tables* (each hop's
weights normalised per row), so a row has at most ``k²`` candidates whatever the hub sizes;
paths that return to their start (U→A→U back to u, A→U→A back to a) are dropped.

**Sampling by weight, deterministically.** Whenever a row has more candidates than it may keep
(table width, hub caps), ``k`` are drawn without replacement with probability proportional to
weight (Efraimidis–Spirakis: keep the largest ``log(r)/w``), where ``r`` is a hash of
(seed, purpose, row, column) rather than a stream of random numbers — a node's sample depends
only on the seed and its own candidates, not on unrelated edges or on the order of work. Top-k
by score (A2A, U2U) breaks ties by the same hash.

**Time windows.** :class:`TimeWindows` maps sample times to fixed-length windows;
:func:`build_window_tables` builds, for every window that holds a sample, the graphs from the
events before that window's start and stores the tables under one directory::

    OUT/windows.json                  format, format_version, length_ms, origin_ms, windows
                                      [ids], k, metapaths, n_users, n_streamers, graph config
    OUT/window-<id>/header.json       format, format_version, window, window_start_ms, n_events,
                                      k, metapaths, n_users, n_streamers, graph config
    OUT/window-<id>/<MP>.ids.npy      int32 [n_src, k], −1 padded   (MP in UA UAA UAU AU AA AUA;
    OUT/window-<id>/<MP>.weights.npy  float32 [n_src, k], 0 padded   n_src = n_users for U*)

written atomically (:func:`mm_live.fileio.atomic_dir`) and memory-mapped when opened.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import scipy.sparse as sp

from mm_live.errors import ConfigError, DataError
from mm_live.fileio import atomic_dir, write_json

USER_METAPATHS = ("UA", "UAA", "UAU")
STREAMER_METAPATHS = ("AU", "AA", "AUA")
METAPATHS = USER_METAPATHS + STREAMER_METAPATHS
FORMAT = "mm-live-metapath-tables"
FORMAT_VERSION = 1
HEADER = "header.json"
INDEX = "windows.json"

# Weight of an edge whose gifts are all worth 0 under "log_value": the edge exists (it shapes
# Swing and U2U) but is sampled after every edge with a real weight.
_MIN_WEIGHT = 1e-6
# Purposes hashed into the per-edge random numbers, so two samplings never share draws.
_SALT = {"cap_user": 1, "cap_streamer": 2, "u2u": 3, "a2a": 4, **{mp: 10 + i for i, mp in enumerate(METAPATHS)}}
# Product entries per block in the row-blocked sparse products (bounds peak memory).
_BLOCK_WORK = 4_000_000


# ----------------------------------------------------------------------------- config and events


@dataclass(frozen=True)
class GraphConfig:
    """How the gifting graphs and metapath tables are built."""

    weight: str = "log_value"  # U2A edge weight: "log_value" = log(1 + Σ value), "count" = number of gifts
    swing_alpha: float = 1.0  # α in 1 / (α + |A_u ∩ A_v|)
    a2a_top_k: int = 50  # Swing neighbours kept per streamer
    u2u_top_k: int = 50  # co-gifters kept per user
    u2u_min_shared: int = 2  # U2U links users who gifted at least this many common streamers
    max_users_per_streamer: int = 100  # hub cap for Swing / U2U (sampled by gift weight)
    max_streamers_per_user: int = 100  # hub cap for Swing / U2U (sampled by gift weight)
    k: int = 16  # neighbours per node per metapath table
    seed: int = 0  # seeds every weighted sample and tie-break

    def validate(self) -> None:
        if self.weight not in ("log_value", "count"):
            raise ConfigError(f"graph.weight must be 'log_value' or 'count', got {self.weight!r}")
        if not self.swing_alpha > 0:
            raise ConfigError(f"graph.swing_alpha must be > 0, got {self.swing_alpha}")
        for name in ("a2a_top_k", "u2u_top_k", "u2u_min_shared", "max_users_per_streamer", "max_streamers_per_user", "k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"graph.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"graph.seed must be an integer >= 0, got {self.seed!r}")


@dataclass(frozen=True)
class GiftEvents:
    """Gift events as parallel arrays ``[E]``, sorted by time (stable).

    ``user``/``streamer`` are int32 indices into ``[0, n_users)`` / ``[0, n_streamers)`` (map raw
    ids with :func:`id_index`), ``time`` int64 milliseconds, ``value`` float32 gift value (≥ 0).
    """

    user: np.ndarray
    streamer: np.ndarray
    time: np.ndarray
    value: np.ndarray
    n_users: int
    n_streamers: int

    @classmethod
    def from_arrays(cls, user, streamer, time, value, *, n_users: int, n_streamers: int) -> GiftEvents:
        """Check and sort events; indices out of range or negative values raise :class:`DataError`."""
        user, streamer = np.asarray(user), np.asarray(streamer)
        time, value = np.asarray(time), np.asarray(value)
        n = len(user)
        if not (len(streamer) == len(time) == len(value) == n):
            raise DataError(f"gift events: user, streamer, time, value must have one length, got "
                            f"{len(user)}, {len(streamer)}, {len(time)}, {len(value)}")
        for name, idx, size in (("user", user, n_users), ("streamer", streamer, n_streamers)):
            bad = np.flatnonzero((idx < 0) | (idx >= size))
            if len(bad):
                raise DataError(f"gift events: {name} index {idx[bad[0]]} at event {bad[0]} is outside [0, {size}); "
                                f"map raw ids with mm_live.graph.id_index and drop or add the unknown ones")
        bad = np.flatnonzero(~(np.isfinite(value) & (value >= 0)))
        if len(bad):
            i = int(bad[0])
            raise DataError(f"gift events: value {value[i]} at event {i} must be a finite number >= 0")
        order = np.argsort(time, kind="stable")
        return cls(user[order].astype(np.int32), streamer[order].astype(np.int32), time[order].astype(np.int64),
                   value[order].astype(np.float32), int(n_users), int(n_streamers))

    def __len__(self) -> int:
        return len(self.time)

    def before(self, cutoff_ms: int) -> GiftEvents:
        """Events with ``time < cutoff_ms`` (views, no copy)."""
        end = int(np.searchsorted(self.time, cutoff_ms, side="left"))
        return GiftEvents(self.user[:end], self.streamer[:end], self.time[:end], self.value[:end],
                          self.n_users, self.n_streamers)


def id_index(vocab: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each of ``ids`` in the sorted, unique ``vocab`` (int64), −1 where absent."""
    vocab, ids = np.asarray(vocab), np.asarray(ids)
    if len(vocab) == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(vocab, ids), len(vocab) - 1)
    return np.where(vocab[pos] == ids, pos, -1).astype(np.int64)


# ----------------------------------------------------------------------------- sampling helpers


def _uniform(rows: np.ndarray, cols: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A uniform number in (0, 1) per (row, col): splitmix64 of (seed, salt, row, col)."""
    with np.errstate(over="ignore"):
        x = (rows.astype(np.uint64) << np.uint64(32)) ^ cols.astype(np.uint64)
        x ^= np.uint64((seed * 1_000_003 + salt) * 0x9E3779B97F4A7C15 % 2**64)
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def _rows_of(m: sp.csr_matrix, offset: int = 0) -> np.ndarray:
    """Row index (+ ``offset``) of every stored entry of CSR ``m``."""
    return np.repeat(np.arange(offset, offset + m.shape[0], dtype=np.int64), np.diff(m.indptr))


Priority = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (entry positions, their rows) -> priorities


def _select(m: sp.csr_matrix, k: int, priority: Priority, row_ids: np.ndarray | None = None) -> sp.csr_matrix:
    """Keep the ``k`` highest-priority entries of every row of CSR ``m`` (all of a row with ≤ k).

    ``priority`` is evaluated only for the entries of rows longer than ``k``, and is given each
    entry's node id ``row_ids[row]`` (default: the row number), so a row block hashes like the
    whole matrix would. numpy has no segmented top-k: those rows are grouped by length into
    power-of-two buckets, padded to the bucket width and cut with one ``argpartition`` per
    bucket, so the cost stays linear in the entries (padding at most doubles it).
    """
    counts = np.diff(m.indptr)
    keep = np.repeat(counts <= k, counts)
    big = np.flatnonzero(counts > k)
    row_ids = np.arange(m.shape[0]) if row_ids is None else row_ids
    if len(big):
        width = 1 << np.ceil(np.log2(counts[big])).astype(np.int64)
        for w in np.unique(width).tolist():
            rows = big[width == w]
            col = np.arange(w)
            step = max(1, _BLOCK_WORK // w)
            for lo in range(0, len(rows), step):
                r, cnt = rows[lo:lo + step], counts[rows[lo:lo + step]]
                valid = col[None, :] < cnt[:, None]
                idx = np.where(valid, m.indptr[r][:, None] + col[None, :], 0)
                pr = np.full(idx.shape, -np.inf)
                pr[valid] = priority(idx[valid], np.repeat(row_ids[r], cnt))
                top = np.argpartition(-pr, k - 1, axis=1)[:, :k]
                keep[np.take_along_axis(idx, top, axis=1).ravel()] = True
    return _masked(m, keep)


def _masked(m: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The entries of CSR ``m`` where ``keep`` is True (same shape)."""
    indptr = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])[m.indptr]
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


def _sample_rows(m: sp.csr_matrix, k: int, seed: int, salt: int, row_ids: np.ndarray | None = None) -> sp.csr_matrix:
    """At most ``k`` entries per row drawn by weight without replacement (Efraimidis–Spirakis:
    the ``k`` largest ``log(r) / w``), deterministic given ``seed``."""
    def es_key(pos, rows):
        return np.log(_uniform(rows, m.indices[pos], seed, salt)) / np.maximum(m.data[pos].astype(np.float64), _MIN_WEIGHT)
    return _select(m, k, es_key, row_ids)


def _top_rows(m: sp.csr_matrix, k: int, seed: int, salt: int, row_ids: np.ndarray | None = None) -> sp.csr_matrix:
    """The ``k`` largest entries per row; exact ties broken by a seeded hash of (row, col)."""
    def nudged(pos, rows):
        # A relative nudge far below float32 resolution orders exact ties and nothing else.
        return m.data[pos].astype(np.float64) * (1.0 + 1e-9 * _uniform(rows, m.indices[pos], seed, salt))
    return _select(m, k, nudged, row_ids)


def _drop_diagonal(m: sp.csr_matrix, row_offset: int = 0) -> sp.csr_matrix:
    """Entries ``(i, i + row_offset)`` removed: a row block of a square matrix without self-loops."""
    return _masked(m, m.indices != _rows_of(m, row_offset))


def _row_normalised(m: sp.csr_matrix, dtype=np.float32) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(((m.data * np.repeat(scale, np.diff(m.indptr))).astype(dtype), m.indices, m.indptr),
                         shape=m.shape)


def _row_blocks(left: sp.csr_matrix, right: sp.csr_matrix, budget: int = _BLOCK_WORK) -> Iterator[tuple[int, int]]:
    """Row ranges of ``left`` whose product with ``right`` makes about ``budget`` partial products each."""
    work = np.concatenate([[0], np.cumsum(np.diff(right.indptr)[left.indices], dtype=np.int64)])[left.indptr]
    start, n = 0, left.shape[0]
    while start < n:
        end = max(int(np.searchsorted(work, work[start] + budget, side="right")) - 1, start + 1)
        yield start, min(end, n)
        start = end


# ----------------------------------------------------------------------------- graphs


@dataclass
class GiftGraphs:
    """The three gifting graphs built from events before ``cutoff_ms`` (None: all events)."""

    u2a: sp.csr_matrix  # [n_users, n_streamers] float32 edge weights
    a2a: sp.csr_matrix  # [n_streamers, n_streamers] float32 Swing similarity, ≤ a2a_top_k per row
    u2u: sp.csr_matrix  # [n_users, n_users] float32 shared streamers (≥ u2u_min_shared), ≤ u2u_top_k per row
    cutoff_ms: int | None
    n_events: int


def u2a_graph(events: GiftEvents, weight: str = "log_value") -> sp.csr_matrix:
    """User→streamer graph ``[n_users, n_streamers]`` float32 (``weight`` as in :class:`GraphConfig`).

    Every (user, streamer) pair with a gift is an edge, even when its gifts were worth 0: scipy
    sums duplicate coordinates and keeps explicit zeros (``eliminate_zeros`` is never called).
    """
    data = np.ones(len(events)) if weight == "count" else events.value.astype(np.float64)
    m = sp.csr_matrix((data, (events.user, events.streamer)), shape=(events.n_users, events.n_streamers))
    m.sum_duplicates()
    if weight == "log_value":
        m.data = np.maximum(np.log1p(m.data), _MIN_WEIGHT)
    return m.astype(np.float32)


def capped_u2a(u2a: sp.csr_matrix, cfg: GraphConfig) -> sp.csr_matrix:
    """Binary int32 U2A with the hub caps applied (streamers per user first, then users per streamer)."""
    m = _sample_rows(u2a, cfg.max_streamers_per_user, cfg.seed, _SALT["cap_user"])
    mt = _sample_rows(m.T.tocsr(), cfg.max_users_per_streamer, cfg.seed, _SALT["cap_streamer"])
    out = mt.T.tocsr()
    out.data = np.ones(out.nnz, np.int32)
    out.sort_indices()
    return out


def swing_and_cogifting(u2a: sp.csr_matrix, cfg: GraphConfig) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(A2A Swing top-k, U2U co-gifting top-k) over the capped U2A, in one pass over user pairs.

    The user-pair overlap ``C = B Bᵀ`` (``C[u, v] = |A_u ∩ A_v|``) is computed in row blocks. Each
    block gives its users' U2U rows (pairs with ``C ≥ u2u_min_shared``) and its pairs ``u < v``
    with ``C ≥ 2`` (a streamer pair needs two shared streamers) give the Swing terms: with ``P``
    the pairs' intersection indicators ``[n_pairs, n_streamers]`` and ``w = 1 / (α + C)``,
    ``Σ_pairs w · p pᵀ = Pᵀ diag(w) P``. Users with fewer capped streamers than
    ``min(2, u2u_min_shared)`` can add to neither and are left out of ``C``.
    """
    b = capped_u2a(u2a, cfg)
    n_users, n_streamers = b.shape
    active = np.flatnonzero(np.diff(b.indptr) >= min(2, cfg.u2u_min_shared))
    ba = b[active]
    bat = ba.T.tocsr()
    u2u_coo: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    swing = sp.csr_matrix((n_streamers, n_streamers), dtype=np.float64)
    for r0, r1 in _row_blocks(ba, bat):
        c = _drop_diagonal((ba[r0:r1] @ bat).tocsr(), r0)  # rows and columns index `active`
        strong = c.data >= cfg.u2u_min_shared
        indptr = np.concatenate([[0], np.cumsum(strong, dtype=np.int64)])[c.indptr]
        cand = sp.csr_matrix((c.data[strong].astype(np.float32), active[c.indices[strong]], indptr), shape=(r1 - r0, n_users))
        top = _top_rows(cand, cfg.u2u_top_k, cfg.seed, _SALT["u2u"], active[r0:r1])
        u2u_coo.append((active[_rows_of(top, r0)], top.indices, top.data))
        rows = _rows_of(c, r0)
        pair = (c.indices > rows) & (c.data >= 2)
        pu, pv = rows[pair], c.indices[pair]
        if not len(pu):
            continue
        p = ba[pu].multiply(ba[pv]).tocsr()
        w = 1.0 / (cfg.swing_alpha + c.data[pair].astype(np.float64))
        pw = sp.csr_matrix((np.repeat(w, np.diff(p.indptr)), p.indices, p.indptr), shape=p.shape)
        swing = swing + (p.T.tocsr().astype(np.float64) @ pw)
    rows, cols, data = (np.concatenate(x) for x in zip(*u2u_coo)) if u2u_coo else (np.zeros(0, np.int64),) * 3
    u2u = sp.csr_matrix((data.astype(np.float32), (rows, cols)), shape=(n_users, n_users))
    swing = _drop_diagonal(swing.tocsr())
    swing.data *= 2.0  # ordered pairs (u, v) and (v, u)
    swing.sort_indices()
    a2a = _top_rows(swing, cfg.a2a_top_k, cfg.seed, _SALT["a2a"]).astype(np.float32)
    return a2a, u2u


def build_graphs(events: GiftEvents, cfg: GraphConfig, cutoff_ms: int | None = None) -> GiftGraphs:
    """U2A, A2A (Swing) and U2U from the events with ``time < cutoff_ms`` (all events if None)."""
    cfg.validate()
    if cutoff_ms is not None:
        events = events.before(cutoff_ms)
    u2a = u2a_graph(events, cfg.weight)
    a2a, u2u = swing_and_cogifting(u2a, cfg)
    return GiftGraphs(u2a=u2a, a2a=a2a, u2u=u2u, cutoff_ms=cutoff_ms, n_events=len(events))


# ----------------------------------------------------------------------------- metapath tables


@dataclass
class MetapathTables:
    """Top-k neighbour tables of one time window (arrays may be read-only memory maps)."""

    ids: dict[str, np.ndarray]  # metapath -> int32 [n_src, k], −1 padded
    weights: dict[str, np.ndarray]  # metapath -> float32 [n_src, k], 0 padded
    k: int
    n_users: int
    n_streamers: int
    window: int | None = None
    window_start_ms: int | None = None
    n_events: int = 0
    graph: dict = field(default_factory=dict)  # the GraphConfig the tables were built with

    def neighbours(self, metapath: str, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32 [B, k], weights float32 [B, k]) for source node indices ``nodes`` [B].

        A node index of −1 (unknown / cold-start node) gets an all-padding row.
        """
        if metapath not in self.ids:
            raise ConfigError(f"unknown metapath {metapath!r}; choose from {', '.join(METAPATHS)}")
        nodes = np.asarray(nodes, dtype=np.int64)
        table, weight = self.ids[metapath], self.weights[metapath]
        if len(nodes) and (nodes.max() >= len(table) or nodes.min() < -1):
            raise DataError(f"metapath {metapath}: node index out of range [-1, {len(table)})")
        ok = nodes >= 0
        ids = np.full((len(nodes), self.k), -1, dtype=np.int32)
        w = np.zeros((len(nodes), self.k), dtype=np.float32)
        ids[ok], w[ok] = table[nodes[ok]], weight[nodes[ok]]
        return ids, w

    def header(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "window": self.window,
                "window_start_ms": self.window_start_ms, "n_events": self.n_events, "k": self.k,
                "metapaths": list(self.ids), "n_users": self.n_users, "n_streamers": self.n_streamers,
                "graph": self.graph}


def _dense_table(m: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR with ≤ k entries per row → (ids int32 [n, k], weights float32 [n, k]), weight desc then id asc.

    Each row is ordered with one int64 sort: high 32 bits = descending order of the weight (the
    bit pattern of a float32 ≥ 0 grows with its value), low 32 bits = the id; padding sorts last.
    """
    n = m.shape[0]
    rows = _rows_of(m)
    pos = np.arange(m.nnz) - m.indptr[rows]
    key = np.full((n, k), np.int64(0x7FFFFFFF) << 32 | np.int64(0xFFFFFFFF))  # weight 0, id -1
    bits = np.asarray(m.data, dtype=np.float32).view(np.int32).astype(np.int64)
    key[rows, pos] = (np.int64(0x7FFFFFFF) - bits) << 32 | m.indices.astype(np.int64)
    key.sort(axis=1)
    ids = (key & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
    weights = (np.int64(0x7FFFFFFF) - (key >> 32)).astype(np.int32).view(np.float32)
    return ids, weights


def _two_hop(first: sp.csr_matrix, second: sp.csr_matrix, k: int, seed: int, salt: int,
             same_type: bool) -> tuple[np.ndarray, np.ndarray]:
    """Table of k endpoints of X→Y→Z walks over two ≤k-per-row tables, sampled by walk probability.

    Built in row blocks written straight into the ``[n, k]`` arrays, so the ``≤ k²``-per-row
    candidate products never exist for all rows at once.
    """
    p1, p2 = _row_normalised(first), _row_normalised(second)
    ids = np.full((first.shape[0], k), -1, dtype=np.int32)
    weights = np.zeros((first.shape[0], k), dtype=np.float32)
    for r0, r1 in _row_blocks(p1, p2):
        w = (p1[r0:r1] @ p2).tocsr()
        if same_type:
            w = _drop_diagonal(w, r0)
        ids[r0:r1], weights[r0:r1] = _dense_table(_sample_rows(w, k, seed, salt, np.arange(r0, r1)), k)
    return ids, weights


def metapath_tables(graphs: GiftGraphs, cfg: GraphConfig, window: int | None = None,
                    window_start_ms: int | None = None) -> MetapathTables:
    """The six metapath tables of ``graphs`` (see module docstring for weights and sampling)."""
    k, seed = cfg.k, cfg.seed
    one_hop = {
        "UA": _sample_rows(graphs.u2a, k, seed, _SALT["UA"]),
        "AU": _sample_rows(graphs.u2a.T.tocsr(), k, seed, _SALT["AU"]),
        "AA": _sample_rows(graphs.a2a, k, seed, _SALT["AA"]),
    }
    tables = {mp: _dense_table(m, k) for mp, m in one_hop.items()}
    for mp, (first, second, same_type) in {"UAA": ("UA", "AA", False), "UAU": ("UA", "AU", True),
                                           "AUA": ("AU", "UA", True)}.items():
        tables[mp] = _two_hop(one_hop[first], one_hop[second], k, seed, _SALT[mp], same_type)
    return MetapathTables(ids={mp: tables[mp][0] for mp in METAPATHS}, weights={mp: tables[mp][1] for mp in METAPATHS},
                          k=k, n_users=graphs.u2a.shape[0], n_streamers=graphs.u2a.shape[1], window=window,
                          window_start_ms=window_start_ms, n_events=graphs.n_events, graph=asdict(cfg))


# ----------------------------------------------------------------------------- storage


def _write_tables(tables: MetapathTables, folder: Path) -> None:
    for mp in tables.ids:
        np.save(folder / f"{mp}.ids.npy", np.ascontiguousarray(tables.ids[mp], dtype=np.int32))
        np.save(folder / f"{mp}.weights.npy", np.ascontiguousarray(tables.weights[mp], dtype=np.float32))
    write_json(folder / HEADER, tables.header())


def save_tables(tables: MetapathTables, path: str | Path) -> Path:
    """Write one window's tables to directory ``path`` atomically (replacing an older one)."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        _write_tables(tables, tmp)
    return path


def _read_json(path: Path, what: str, fix: str) -> dict:
    if not path.is_file():
        raise DataError(f"{what} {path.parent}: missing {path.name}; {fix}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path.parent}: corrupt {path.name} ({exc}); {fix}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DataError(f"{what} {path.parent}: {path.name} is not an mm-live metapath header; {fix}")
    if obj.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{what} {path.parent}: format version {obj.get('format_version')}, this mm-live reads "
                        f"{FORMAT_VERSION}; {fix}")
    return obj


_REBUILD = "rebuild it with mm_live.graph.build_window_tables"


def load_tables(path: str | Path, *, k: int | None = None, n_users: int | None = None,
                n_streamers: int | None = None, mmap: bool = True) -> MetapathTables:
    """Open one window's tables (memory-mapped, read-only); optional expectations are checked."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"metapath tables {path} not found; {_REBUILD}")
    head = _read_json(path / HEADER, "metapath tables", _REBUILD)
    try:
        hk, hu, ha, metapaths = int(head["k"]), int(head["n_users"]), int(head["n_streamers"]), list(head["metapaths"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"metapath tables {path}: {HEADER} lacks a valid {exc}; {_REBUILD}") from None
    for name, want, got in (("k", k, hk), ("n_users", n_users, hu), ("n_streamers", n_streamers, ha)):
        if want is not None and want != got:
            raise DataError(f"metapath tables {path}: built with {name}={got}, this model expects {want}; {_REBUILD}")
    ids, weights = {}, {}
    for mp in metapaths:
        if mp not in METAPATHS:
            raise DataError(f"metapath tables {path}: unknown metapath {mp!r} in {HEADER}; {_REBUILD}")
        n_src = hu if mp.startswith("U") else ha
        for kind, dtype, store in (("ids", np.int32, ids), ("weights", np.float32, weights)):
            f = path / f"{mp}.{kind}.npy"
            if not f.is_file():
                raise DataError(f"metapath tables {path}: missing {f.name}; {_REBUILD}")
            try:
                arr = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise DataError(f"metapath tables {path}: corrupt {f.name} ({exc}); {_REBUILD}") from None
            if arr.dtype != dtype or arr.shape != (n_src, hk):
                raise DataError(f"metapath tables {path}: {f.name} is {arr.dtype} {arr.shape}, the header says "
                                f"{np.dtype(dtype)} {(n_src, hk)}; {_REBUILD}")
            store[mp] = arr
    return MetapathTables(ids=ids, weights=weights, k=hk, n_users=hu, n_streamers=ha, window=head.get("window"),
                          window_start_ms=head.get("window_start_ms"), n_events=int(head.get("n_events", 0)),
                          graph=dict(head.get("graph") or {}))


# ----------------------------------------------------------------------------- time windows


@dataclass(frozen=True)
class TimeWindows:
    """Fixed-length windows ``[origin + w·length, origin + (w+1)·length)`` numbered by integer ``w``."""

    length_ms: int
    origin_ms: int = 0

    def __post_init__(self):
        if not isinstance(self.length_ms, (int, np.integer)) or self.length_ms < 1:
            raise ConfigError(f"time window length must be a positive number of milliseconds, got {self.length_ms!r}")

    def index(self, times_ms: np.ndarray) -> np.ndarray:
        """Window id (int64) of each time."""
        return (np.asarray(times_ms, dtype=np.int64) - self.origin_ms) // self.length_ms

    def start_ms(self, window: int) -> int:
        """First millisecond of ``window``: its tables use events strictly before it."""
        return int(self.origin_ms + int(window) * self.length_ms)


def window_dir(root: str | Path, window: int) -> Path:
    return Path(root) / f"window-{int(window)}"


def build_window_tables(events: GiftEvents, windows: TimeWindows, sample_times_ms: np.ndarray,
                        out_dir: str | Path, cfg: GraphConfig, *, progress: bool = True) -> WindowTables:
    """Build and store the tables of every window that holds a sample (see module docstring).

    Each window's graphs use only the events with ``time < windows.start_ms(window)``. The whole
    directory is replaced atomically; returns it opened (memory-mapped).
    """
    from tqdm.auto import tqdm

    cfg.validate()
    ids = np.unique(windows.index(sample_times_ms)).tolist()
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for w in tqdm(ids, desc="graph windows", unit="window", disable=not progress):
            start = windows.start_ms(w)
            tables = metapath_tables(build_graphs(events, cfg, cutoff_ms=start), cfg, window=w, window_start_ms=start)
            folder = window_dir(tmp, w)
            folder.mkdir()
            _write_tables(tables, folder)
        write_json(tmp / INDEX, {"format": FORMAT, "format_version": FORMAT_VERSION, "length_ms": windows.length_ms,
                                 "origin_ms": windows.origin_ms, "windows": ids, "k": cfg.k, "metapaths": list(METAPATHS),
                                 "n_users": events.n_users, "n_streamers": events.n_streamers, "graph": asdict(cfg)})
    return WindowTables.open(out_dir)


class WindowTables:
    """A directory written by :func:`build_window_tables`; each window's tables opened on first use."""

    def __init__(self, root: Path, windows: TimeWindows, window_ids: list[int], k: int, n_users: int,
                 n_streamers: int, graph: dict):
        self.root, self.windows, self.window_ids = root, windows, window_ids
        self.k, self.n_users, self.n_streamers, self.graph = k, n_users, n_streamers, graph
        self._open: dict[int, MetapathTables] = {}

    @classmethod
    def open(cls, root: str | Path) -> WindowTables:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"graph tables {root} not found; {_REBUILD}")
        head = _read_json(root / INDEX, "graph tables", _REBUILD)
        try:
            return cls(root, TimeWindows(int(head["length_ms"]), int(head["origin_ms"])),
                       [int(w) for w in head["windows"]], int(head["k"]), int(head["n_users"]),
                       int(head["n_streamers"]), dict(head.get("graph") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"graph tables {root}: {INDEX} lacks a valid {exc}; {_REBUILD}") from None

    def tables(self, window: int) -> MetapathTables:
        window = int(window)
        if window not in self._open:
            if window not in self.window_ids:
                raise DataError(f"graph tables {self.root} have no window {window} (start "
                                f"{self.windows.start_ms(window)} ms); rebuild them with these sample times")
            self._open[window] = load_tables(window_dir(self.root, window), k=self.k, n_users=self.n_users,
                                             n_streamers=self.n_streamers)
        return self._open[window]

    def lookup(self, metapath: str, nodes: np.ndarray, times_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32 [B, k], weights float32 [B, k]) of ``nodes`` [B] from the window of each ``times_ms`` [B]."""
        nodes = np.asarray(nodes, dtype=np.int64)
        win = self.windows.index(times_ms)
        ids = np.empty((len(nodes), self.k), dtype=np.int32)
        w = np.empty((len(nodes), self.k), dtype=np.float32)
        for wid in np.unique(win):
            sel = np.flatnonzero(win == wid)
            ids[sel], w[sel] = self.tables(wid).neighbours(metapath, nodes[sel])
        return ids, w
