"""Gifting data: synthetic rooms where gifts follow live content, shared taste and generosity; and
a reader of any KuaiLive-schema folder into timed view samples and gift events.

* :func:`synthesize_gifting` writes rooms (each one stream of :mod:`mm_live.data.synthetic`, with
  its clip, comments and planted highlights), views and gifts, and the truth. Users belong to
  ``groups`` taste groups, streamers too; user ``u`` watching room ``r`` of streamer ``a`` from
  step ``s`` sends a gift (one or more, in that step) with probability

      P(gift) = sigmoid(bias + excitement_weight · x[r, s] + taste_weight · [g(u) = h(a)] + z_u)

  ``x[r, s]`` the **excitement** of the step — the stream's planted-highlight curve, ``(ctr − base)
  / 0.85`` clipped to [0, 1] as in the generator's other interactions, which the clip shows (the
  disc and flash, the cheer, the late comment burst) — ``[g(u) = h(a)]`` **shared taste** (1 when
  the user's group is the streamer's group), ``z_u ~ N(0, generosity_std²)`` the user's
  **generosity**. Viewers pick rooms of their own taste group ``exp(taste_preference)`` times as
  often as others, each at most once per room. Most users end with few gifts (``truth.json`` counts those with ≤ 2).
  Gifts do not depend on this stream generator's CTR-driven ``gift.csv`` (a separate, unrelated
  table of :func:`~mm_live.data.synthetic.synthesize`); that file is not copied.

* :func:`read_gift_data` reads ``click.csv``, ``gift.csv`` and ``room.csv`` (the real KuaiLive
  release or the folder above) into samples. A **sample** is a view (a ``click.csv`` row: user,
  room, streamer, time ``t``, ``watch_live_time`` ``w``), labelled 1 when the user sent that room a
  gift in ``[t, t + w]``; a gift no view covers becomes a positive sample of its own at the gift's
  time. Samples before the ``1 − test_fraction`` quantile of their times train, the rest are held
  out. The gift events (indices, times, ``gift_price`` as value) are what :mod:`mm_live.graph`
  builds its graphs from.

Layout written by :func:`synthesize_gifting`::

    OUT/synth/       a mm_live.data.synthetic dataset, one stream per room (manifest live_id -> clip)
    OUT/kuailive/    user, streamer, room, click (views), gift, comment, like (header only) .csv and
                     title_embeddings.npy (row i = room on line i of room.csv: its streamer's
                     group centroid plus noise, a stand-in for a title naming the room's genre)
    OUT/truth.json   the model above, every user's group and generosity, every streamer's group,
                     every room's start and per-step excitement, and oracle AUCs on the held-out views
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mm_live.data.kuailive import REQUIRED, TITLE_FILES, read_table
from mm_live.data.rooms import manifest_path
from mm_live.data.sources import read_array
from mm_live.data.synthetic import BASE_EPOCH_MS, SynthConfig, plan_stream, synthesize, write_csv
from mm_live.errors import ConfigError, DataError
from mm_live.fileio import atomic_dir, write_json

TEST_FRACTION = 0.2  # the latest 20% of samples are held out
DAY_MS = 86_400_000
PRICES = np.array([1, 5, 10, 52, 99, 520])
PRICE_P = np.array([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])


# ----------------------------------------------------------------------------- synthetic data


@dataclass
class GiftSynthConfig:
    """Knobs of :func:`synthesize_gifting` (small frames: the encoders see the planted events at any size)."""

    streamers: int = 16
    rooms_per_streamer: int = 3  # each on its own day
    users: int = 300
    groups: int = 4  # taste groups of users and of streamers
    days: int = 6
    seconds: float = 30.0  # length of every room's stream
    views_per_room: int = 200
    watch_seconds: float = 8.0  # mean watch time of a view
    bias: float = -6.5
    excitement_weight: float = 4.0
    taste_weight: float = 2.5
    generosity_std: float = 1.5
    taste_preference: float = 1.0  # log-odds of watching a room of one's own taste group
    extra_gifts: float = 0.5  # mean number of further gifts in a gifting view (Poisson)
    title_dim: int = 128
    width: int = 96
    height: int = 64
    fps: int = 4
    seed: int = 0  # users, groups, schedule, views and gifts
    stream_seed: int | None = None  # the rooms' streams (clips, comments, highlights); None: seed

    def validate(self) -> None:
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"gifting data: {name} must be {allowed}, got {getattr(self, name)!r}")

        for name in ("streamers", "rooms_per_streamer", "users", "groups", "days", "views_per_room", "title_dim"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "an integer >= 1")
        need(self.rooms_per_streamer <= self.days, "rooms_per_streamer", f"at most days ({self.days}): one room a day")
        need(self.views_per_room <= self.users, "views_per_room", f"at most users ({self.users}): one view per user and room")
        need(self.groups <= min(self.users, self.streamers), "groups", "at most the number of users and of streamers")
        need(self.watch_seconds > 0 and self.generosity_std >= 0 and self.extra_gifts >= 0, "watch_seconds",
             "> 0 (and generosity_std, extra_gifts >= 0)")

    def synth(self) -> SynthConfig:
        """The stream generator's settings: one stream per room, a streamer's rooms consecutive."""
        seed = self.seed if self.stream_seed is None else self.stream_seed
        return SynthConfig(streams=self.streamers * self.rooms_per_streamer, seconds=self.seconds, seed=seed,
                           width=self.width, height=self.height, fps=self.fps, n_users=self.users,
                           streams_per_streamer=self.rooms_per_streamer, test_every=0)


def gift_probability(excitement: np.ndarray, same_group: np.ndarray, generosity: np.ndarray, cfg: GiftSynthConfig) -> np.ndarray:
    """P(gift) of views from their step's excitement, taste match (0/1) and viewer generosity (module docstring)."""
    logit = cfg.bias + cfg.excitement_weight * excitement + cfg.taste_weight * same_group + generosity
    return 1.0 / (1.0 + np.exp(-logit))


def synthesize_gifting(out_dir: str | Path, cfg: GiftSynthConfig) -> dict:
    """Write rooms, views, gifts and the truth to ``out_dir`` (layout in the module docstring);
    returns a summary. The folder is built aside and swapped in whole."""
    cfg.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "truth.json").is_file():
        raise ConfigError(f"gifting data: --out {out_dir} exists and is not a gifting dataset; give a new or empty directory")
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(9,)))
    scfg = cfg.synth()
    plans = [plan_stream(k, scfg) for k in range(scfg.streams)]
    excitement = np.stack([np.clip((p.ctr - p.base_ctr) / 0.85, 0.0, 1.0) for p in plans])  # [R, T]
    n_rooms, n_steps = excitement.shape
    user_group = rng.integers(cfg.groups, size=cfg.users)
    streamer_group = rng.permutation(np.arange(cfg.streamers) % cfg.groups)
    generosity = rng.normal(0.0, cfg.generosity_std, size=cfg.users)
    user_ids = 10_000 + np.arange(cfg.users)
    room_streamer = np.arange(n_rooms) // cfg.rooms_per_streamer
    days = np.concatenate([np.sort(rng.choice(cfg.days, cfg.rooms_per_streamer, replace=False)) for _ in range(cfg.streamers)])
    start = BASE_EPOCH_MS + days * DAY_MS + rng.integers(8 * 3600, 22 * 3600, size=n_rooms) * 1000

    # Views: per room, viewers drawn with a preference for their own taste group.
    views = []
    for r in range(n_rooms):
        same = user_group == streamer_group[room_streamer[r]]
        w = np.exp(cfg.taste_preference * same)
        u = rng.choice(cfg.users, size=cfg.views_per_room, replace=False, p=w / w.sum())  # one view per user and room
        s = rng.integers(n_steps, size=cfg.views_per_room)
        watch = np.minimum(np.maximum(1.0, rng.exponential(cfg.watch_seconds, size=len(s))), n_steps - s)
        t = start[r] + s * 1000 + rng.integers(0, 300, size=len(s))
        views.append((np.full(len(s), r), u, s, t, (watch * 1000).astype(np.int64)))
    vr, vu, vs, vt, vw = (np.concatenate(x) for x in zip(*views))
    order = np.lexsort((vu, vt))
    vr, vu, vs, vt, vw = vr[order], vu[order], vs[order], vt[order], vw[order]
    same = (user_group[vu] == streamer_group[room_streamer[vr]]).astype(float)
    p = gift_probability(excitement[vr, vs], same, generosity[vu], cfg)  # [V]
    gifted = rng.uniform(size=len(p)) < p
    n_gifts = np.where(gifted, 1 + rng.poisson(cfg.extra_gifts, size=len(p)), 0)
    gv = np.repeat(np.arange(len(p)), n_gifts)  # the view of every gift; gifts fall in the view's first step
    gt = vt[gv] + rng.integers(0, 600, size=len(gv))
    gvalue = rng.choice(PRICES, size=len(gv), p=PRICE_P)
    g_order = np.lexsort((vu[gv], gt))
    gv, gt, gvalue = gv[g_order], gt[g_order], gvalue[g_order]

    split = split_time(vt)
    held = vt >= split
    past = _counts_before(vu[gv], gt, vu, (vt // DAY_MS) * DAY_MS)  # gifts before the view's day (24 h windows)
    sparse = held & (past <= 2)
    # Oracles: the true probability, and the same with one term replaced by its mean (what is left
    # to a model blind to that term).
    terms = {"excitement": excitement[vr, vs], "same_group": same, "generosity": generosity[vu]}
    oracle = {"full": p}
    for name, key in (("no_excitement", "excitement"), ("no_taste", "same_group"), ("no_generosity", "generosity")):
        oracle[name] = gift_probability(**{**terms, key: np.full(len(p), terms[key].mean())}, cfg=cfg)
    from mm_live.metrics import auc

    def oracle_auc(mask: np.ndarray) -> dict:
        y = gifted[mask].astype(float)
        return {k: round(auc(y, v[mask]), 4) if 0 < y.sum() < len(y) else float("nan") for k, v in oracle.items()}

    gifts_per_user = np.bincount(vu[gv], minlength=cfg.users)
    live = np.array([pl.live_id for pl in plans])
    sid = np.array([pl.streamer_id for pl in plans])
    centroids = rng.standard_normal((cfg.groups, cfg.title_dim))
    titles = centroids[streamer_group[room_streamer]] + rng.standard_normal((n_rooms, cfg.title_dim))
    with atomic_dir(out_dir) as tmp:
        synthesize(tmp / "synth", scfg)
        kl = tmp / "kuailive"
        kl.mkdir()
        for name in ("user", "streamer"):
            shutil.copyfile(tmp / "synth" / "kuailive" / f"{name}.csv", kl / f"{name}.csv")
        write_csv(kl / "room.csv", REQUIRED["room"], [(int(live[r]), int(sid[r]), 1, "chat", int(start[r]),
                                                        int(start[r] + cfg.seconds * 1000)) for r in range(n_rooms)])
        write_csv(kl / "click.csv", REQUIRED["click"], list(zip(user_ids[vu].tolist(), live[vr].tolist(), sid[vr].tolist(),
                                                                 vt.tolist(), vw.tolist())))
        write_csv(kl / "gift.csv", REQUIRED["gift"], list(zip(user_ids[vu[gv]].tolist(), live[vr[gv]].tolist(),
                                                               sid[vr[gv]].tolist(), gt.tolist(), gvalue.tolist())))
        comments = []
        for r, pl in enumerate(plans):
            with open(tmp / "synth" / "streams" / f"{pl.stream_id}.comments.jsonl", encoding="utf-8") as fh:
                comments += [(c["user_id"], int(live[r]), int(sid[r]), int(start[r] + round(c["t"] * 1000)))
                             for c in map(json.loads, fh)]
        write_csv(kl / "comment.csv", REQUIRED["comment"], sorted(comments, key=lambda c: (c[3], c[0])))
        write_csv(kl / "like.csv", REQUIRED["like"], [])
        np.save(kl / "title_embeddings.npy", (titles / np.linalg.norm(titles, axis=1, keepdims=True)).astype(np.float32))
        truth = {
            "config": asdict(cfg),
            "gift_model": "P = sigmoid(bias + excitement_weight * excitement[room, step] + taste_weight * "
                          "[group(user) == group(streamer)] + generosity[user])",
            "split_timestamp": int(split), "views": int(len(p)), "gifting_views": int(gifted.sum()),
            "gifts": int(len(gv)), "users_with_at_most_2_gifts": int((gifts_per_user <= 2).sum()),
            "held_out_views": int(held.sum()), "held_out_sparse_views": int(sparse.sum()),
            "oracle_auc_held_out": oracle_auc(held), "oracle_auc_held_out_sparse": oracle_auc(sparse),
            "users": {str(u): {"group": int(g), "generosity": round(float(z), 4), "gifts": int(n)}
                      for u, g, z, n in zip(user_ids, user_group, generosity, gifts_per_user)},
            "streamers": {str(int(sid[a * cfg.rooms_per_streamer])): {"group": int(streamer_group[a])} for a in range(cfg.streamers)},
            "rooms": [{"live_id": int(live[r]), "stream_id": plans[r].stream_id, "streamer_id": int(sid[r]),
                       "start_timestamp": int(start[r]), "excitement": excitement[r].round(3).tolist()} for r in range(n_rooms)],
        }
        write_json(tmp / "truth.json", truth)
    return {"out_dir": str(out_dir), "rooms": n_rooms, "users": cfg.users, "views": truth["views"],
            "gifting_views": truth["gifting_views"], "gifts": truth["gifts"],
            "users_with_at_most_2_gifts": truth["users_with_at_most_2_gifts"],
            "oracle_auc_held_out": truth["oracle_auc_held_out"]}


# ----------------------------------------------------------------------------- reading


def split_time(times: np.ndarray, test_fraction: float = TEST_FRACTION) -> int:
    """The time from which samples are held out: the ``1 - test_fraction`` quantile of ``times``."""
    return int(np.quantile(np.asarray(times, dtype=np.int64), 1.0 - test_fraction, method="higher"))


def _counts_before(ev_code: np.ndarray, ev_time: np.ndarray, q_code: np.ndarray, q_time: np.ndarray,
                   q_start: np.ndarray | None = None) -> np.ndarray:
    """Per query: events with the query's code and ``q_start <= time < q_time`` (no lower bound
    when ``q_start`` is None). Codes are small non-negative ints; one sort, two binary searches."""
    ev_code, q_code = np.asarray(ev_code, np.int64), np.asarray(q_code, np.int64)
    if not len(ev_code):
        return np.zeros(len(q_code), dtype=np.int64)
    t0 = int(min(ev_time.min(), np.min(q_time)))
    span = int(max(ev_time.max(), np.max(q_time)) - t0 + 2)

    def key(code, t):
        return code * span + np.clip(np.asarray(t, np.int64) - t0, 0, span - 1)

    keys = np.sort(key(ev_code, ev_time))
    hi = np.searchsorted(keys, key(q_code, q_time), side="left")
    lo = np.searchsorted(keys, q_code * span if q_start is None else key(q_code, q_start), side="left")
    return hi - lo


@dataclass
class GiftData:
    """Samples and gift events of a KuaiLive-schema folder (see the module docstring).

    Vocabularies are sorted raw ids: ``user_ids`` [U], ``streamer_ids`` [A]; rooms are the lines of
    ``room.csv``: ``live_ids`` [R], ``room_start`` [R] ms. Samples, sorted by time: ``user`` [N],
    ``streamer`` [N], ``room`` [N] indices, ``time`` [N] ms, ``label`` [N] float32, ``train`` [N]
    bool. Every gift, sorted by time: ``gift_user``, ``gift_streamer`` [E] indices, ``gift_time``
    [E] ms, ``gift_value`` [E] float32. ``titles`` [R, d] or None; ``clips`` [R] manifest
    records (None for a room without a clip) or None when the folder has no manifest.
    """

    root: Path
    user_ids: np.ndarray
    streamer_ids: np.ndarray
    live_ids: np.ndarray
    room_start: np.ndarray
    user: np.ndarray
    streamer: np.ndarray
    room: np.ndarray
    time: np.ndarray
    label: np.ndarray
    train: np.ndarray
    gift_user: np.ndarray
    gift_streamer: np.ndarray
    gift_time: np.ndarray
    gift_value: np.ndarray
    titles: np.ndarray | None
    clips: list | None
    split_ms: int

    def past_gifts(self, rows: np.ndarray, cutoff_ms: np.ndarray) -> dict[str, np.ndarray]:
        """Gifts before ``cutoff_ms`` [n] for samples ``rows`` [n]: by the user (``user``), by the
        user to the sample's streamer (``pair``), to the streamer from anyone (``streamer``)."""
        gu, gs, gt = self.gift_user, self.gift_streamer, self.gift_time
        pairs, inv = np.unique(gu * len(self.streamer_ids) + gs, return_inverse=True)
        q = self.user[rows] * len(self.streamer_ids) + self.streamer[rows]
        pos = np.minimum(np.searchsorted(pairs, q), max(len(pairs) - 1, 0))
        known = (pairs[pos] == q) if len(pairs) else np.zeros(len(q), bool)
        pair = np.where(known, _counts_before(inv.ravel(), gt, np.where(known, pos, 0), cutoff_ms), 0)
        return {"user": _counts_before(gu, gt, self.user[rows], cutoff_ms), "pair": pair,
                "streamer": _counts_before(gs, gt, self.streamer[rows], cutoff_ms)}


def gift_tables_dir(root: str | Path) -> Path:
    """The KuaiLive-schema folder inside ``root`` (``root/kuailive`` of a synthetic dataset) or ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"gifting data folder not found: {root}; pass a KuaiLive folder or one written by synthesize_gifting")
    return root / "kuailive" if (root / "kuailive" / "gift.csv").is_file() else root


def _room_index(live: np.ndarray, ids: np.ndarray, table) -> np.ndarray:
    order = np.argsort(live, kind="stable")
    pos = np.minimum(np.searchsorted(live[order], ids), len(live) - 1)
    if (live[order][pos] != ids).any():
        bad_id = int(ids[np.flatnonzero(live[order][pos] != ids)[0]])
        raise DataError(f"{table.path}: live_id {bad_id} is not in room.csv; the tables must come from one release")
    return order[pos]


def read_gift_data(root: str | Path, *, test_fraction: float = TEST_FRACTION) -> GiftData:
    """Samples, gift events, room titles and clips of a KuaiLive-schema folder (module docstring)."""
    tables = gift_tables_dir(root)
    for name in ("room", "click", "gift"):
        if not (tables / f"{name}.csv").is_file():
            raise DataError(f"{tables}: missing {name}.csv; gifting needs the KuaiLive room.csv, click.csv and gift.csv (docs/gifting.md)")
    room = read_table(tables / "room.csv", ("live_id", "streamer_id", "start_timestamp"))
    click = read_table(tables / "click.csv", ("user_id", "live_id", "streamer_id", "timestamp", "watch_live_time"))
    gift = read_table(tables / "gift.csv", ("user_id", "live_id", "streamer_id", "timestamp", "gift_price"))
    live = room["live_id"]
    if len(np.unique(live)) != len(live):
        raise DataError(f"{room.path}: live_id values repeat; each room must be on one line")
    if len(gift) == 0 or len(click) == 0:
        raise DataError(f"{tables}: gifting needs views and gifts; click.csv has {len(click)} rows, gift.csv {len(gift)}")
    bad = np.flatnonzero(gift["gift_price"] < 0)
    if len(bad):
        raise DataError(f"{gift.path}: gift_price {gift['gift_price'][bad[0]]} on data line {bad[0] + 1} must be >= 0")
    users = np.unique(np.concatenate([click["user_id"], gift["user_id"]]))
    streamers = np.unique(np.concatenate([click["streamer_id"], gift["streamer_id"]]))
    c_room, g_room = _room_index(live, click["live_id"], click), _room_index(live, gift["live_id"], gift)
    c_user, g_user = np.searchsorted(users, click["user_id"]), np.searchsorted(users, gift["user_id"])
    ct, gt, cw = click["timestamp"], gift["timestamp"], np.maximum(click["watch_live_time"], 0)

    # (user, room) pairs as small codes; a view is positive when a gift of its pair falls in [t, t + w].
    codes, inv = np.unique(np.concatenate([c_user * len(live) + c_room, g_user * len(live) + g_room]), return_inverse=True)
    cc, gc = inv[: len(click)], inv[len(click):]
    label = _counts_before(gc, gt, cc, ct + cw + 1, ct) > 0
    # A gift is covered when some view of its pair started at or before it and lasted until it.
    order = np.lexsort((ct, cc))
    span = int(max(ct.max(), (ct + cw).max(), gt.max()) - min(ct.min(), gt.min()) + 2)
    t0 = int(min(ct.min(), gt.min()))
    start_key = cc[order] * span + (ct[order] - t0)
    end_key = np.maximum.accumulate(cc[order] * span + np.minimum(ct[order] + cw[order] - t0, span - 1))
    g_key = gc * span + (gt - t0)
    j = np.searchsorted(start_key, g_key, side="right") - 1
    covered = (j >= 0) & (cc[order][np.maximum(j, 0)] == gc) & (end_key[np.maximum(j, 0)] >= g_key)
    extra = ~covered

    user = np.concatenate([c_user, g_user[extra]])
    streamer = np.searchsorted(streamers, np.concatenate([click["streamer_id"], gift["streamer_id"][extra]]))
    rm = np.concatenate([c_room, g_room[extra]])
    tm = np.concatenate([ct, gt[extra]])
    y = np.concatenate([label, np.ones(int(extra.sum()), bool)]).astype(np.float32)
    o = np.lexsort((streamer, user, tm))
    user, streamer, rm, tm, y = user[o], streamer[o], rm[o], tm[o], y[o]
    split = split_time(tm, test_fraction)
    train = tm < split
    if not train.any() or train.all() or y.min() == y.max():
        raise DataError(f"{tables}: need gifting and non-gifting views on both sides of the time split "
                        f"({int(y.sum())} of {len(y)} views have a gift)")
    g = np.argsort(gt, kind="stable")

    titles = None
    title_path = next((tables / n for n in TITLE_FILES if (tables / n).is_file()), None)
    if title_path is not None:
        mat = read_array(title_path).astype(np.float32, copy=False)
        if "live_name_id" not in room.columns and len(mat) != len(live):
            raise DataError(f"{title_path}: {len(mat)} rows for {len(live)} rooms; row i must be the room on line i of room.csv")
        titles = mat[room["live_name_id"]] if "live_name_id" in room.columns else mat
    return GiftData(root=Path(root), user_ids=users, streamer_ids=streamers, live_ids=live, room_start=room["start_timestamp"],
                    user=user, streamer=streamer, room=rm, time=tm, label=y, train=train, gift_user=g_user[g],
                    gift_streamer=np.searchsorted(streamers, gift["streamer_id"])[g], gift_time=gt[g],
                    gift_value=gift["gift_price"][g].astype(np.float32),
                    titles=titles, clips=_room_records(root, live), split_ms=split)


def _room_records(root: str | Path, live: np.ndarray) -> list | None:
    """The manifest record (clip, comments, labels) of each room by ``live_id``, or None without a manifest."""
    path = manifest_path(root)
    if path is None:
        return None
    from mm_live.data.manifest import check_media, read_manifest

    records = [r for r in read_manifest(path) if "live_id" in r.extra]
    if not records:
        raise DataError(f"{path}: no line has a live_id; each room's clip line needs \"live_id\" to match room.csv")
    check_media(records)
    by_live = {int(r.extra["live_id"]): r for r in records}
    return [by_live.get(int(v)) for v in live]


def main(argv: list[str] | None = None) -> int:
    """``python -m mm_live.data.gifting --out DIR [--streamers N --users N --seed S ...]``: write a gifting dataset."""
    import argparse

    p = argparse.ArgumentParser(description="Write synthetic rooms whose gifts follow content, taste and generosity.")
    p.add_argument("--out", required=True, type=Path)
    for name in ("streamers", "rooms_per_streamer", "users", "groups", "days", "views_per_room", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(GiftSynthConfig, name))
    p.add_argument("--seconds", type=float, default=GiftSynthConfig.seconds)
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    print(json.dumps(synthesize_gifting(out, GiftSynthConfig(**args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
