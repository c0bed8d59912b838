"""Room-click data for EM3: which user clicked which live room when, and each room's content.

Two parts:

* :func:`synthesize_rooms` writes synthetic rooms whose clicks depend on what the rooms *look*
  like and on the users' taste groups, with the truth written down. Each room is one stream of
  :mod:`mm_live.data.synthetic` (its clip, comments and planted events); its **look** is the hue of
  the stream's background palette, which covers most of every frame, so the frame encoder can see
  it. User ``u`` belongs to taste group ``g(u)`` with a preferred hue direction ``d_g``; an
  impression of room ``r`` is clicked with probability

      P(click) = sigmoid(bias + content_weight · ⟨hue_r, d_g⟩ / s + id_weight · pop_r)

  with ``hue_r`` the room's mean background colour minus its grey level (2-d, in the plane
  orthogonal to grey), ``s`` the hue magnitudes' standard deviation over rooms, and ``pop_r ~ N(0,1)``
  a per-room popularity that no content shows (only the room's ID can learn it). The last
  ``cold_fraction`` of the rooms go live only when the held-out period starts: they are the
  cold-start rooms (no training impression, no history entry).

* :func:`read_clicks` reads any KuaiLive-schema folder (the synthetic one above, or the real
  KuaiLive release) into impressions, a time split and per-user click histories. Positives are
  ``click.csv``; negatives are ``negative.csv`` when the folder has one, otherwise ``negatives``
  rooms drawn per click among the rooms live at that moment that the user did not click.

Layout written by :func:`synthesize_rooms`::

    OUT/synth/                     a mm_live.data.synthetic dataset: one stream per room
                                   (manifest.jsonl maps live_id -> clip and comments)
    OUT/kuailive/                  KuaiLive schema: user, streamer, room, click (positives),
                                   negative (shown, not clicked), comment, like, gift .csv and
                                   title_embeddings.npy (row i = room on line i of room.csv: the
                                   room's hue through a fixed random projection plus noise, a
                                   stand-in for a title that names the room's style)
    OUT/truth.json                 taste groups, every room's hue, popularity and cold flag, the
                                   click model's parameters and the split time

Split (:func:`read_clicks`): impressions before the ``1 - test_fraction`` quantile of their
timestamps train, the rest are held out. A held-out impression is **cold** when its room has no
training impression. A history holds the user's earlier clicks on rooms that have training
impressions, so no cold room ever appears in training, as a target or in a history.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mm_live.data.kuailive import REQUIRED, TITLE_FILES, read_table
from mm_live.data.sources import read_array
from mm_live.data.synthetic import BASE_EPOCH_MS, SynthConfig, plan_stream, synthesize, write_csv
from mm_live.errors import ConfigError, DataError
from mm_live.fileio import atomic_dir, write_json

TEST_FRACTION = 0.2  # the latest 20% of impressions are held out
DAY_MS = 86_400_000
_TIME_BITS = 42  # a history key is (user << 42) | (timestamp - first timestamp): 139 years of ms


@dataclass
class RoomsConfig:
    """Knobs of :func:`synthesize_rooms` (frames are small: the encoders only need the room's colours)."""

    rooms: int = 48
    users: int = 240
    groups: int = 4
    impressions_per_user: int = 24
    cold_fraction: float = 0.25
    seconds: float = 8.0
    width: int = 96
    height: int = 64
    fps: int = 4
    days: int = 10  # impressions are spread over this many days
    bias: float = -1.0
    content_weight: float = 2.0
    id_weight: float = 1.0
    title_dim: int = 128
    title_noise: float = 1.0  # std of the title noise relative to the hue signal
    seed: int = 0

    def validate(self) -> None:
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"room data: {name} must be {allowed}, got {getattr(self, name)!r}")

        for name in ("rooms", "users", "groups", "impressions_per_user", "days", "title_dim"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "an integer >= 1")
        need(self.rooms >= 4, "rooms", "at least 4 (some warm and some cold rooms)")
        need(0.0 < self.cold_fraction < 1.0 and round(self.rooms * self.cold_fraction) >= 1
             and round(self.rooms * self.cold_fraction) < self.rooms, "cold_fraction",
             "a fraction leaving at least one cold and one warm room")
        need(self.content_weight >= 0 and self.id_weight >= 0, "content_weight", "a number >= 0 (id_weight too)")
        need(self.title_noise >= 0, "title_noise", "a number >= 0")

    def synth(self) -> SynthConfig:
        """The stream generator's settings for the rooms (one stream per room, no split of its own)."""
        return SynthConfig(streams=self.rooms, seconds=self.seconds, seed=self.seed, width=self.width,
                           height=self.height, fps=self.fps, n_users=self.users, test_every=0)


def room_hue(palette: np.ndarray) -> np.ndarray:
    """A room's look: the mean of its background palette ([2, 3] RGB) minus its grey level, as 2-d
    coordinates in the plane orthogonal to grey (what a colour-sensitive encoder sees)."""
    c = palette.mean(axis=0)
    c = c - c.mean()
    basis = np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0]])
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    return basis @ c


def click_probability(hue: np.ndarray, pop: np.ndarray, groups: np.ndarray, directions: np.ndarray,
                      cfg: RoomsConfig, scale: float) -> np.ndarray:
    """P(click) of impressions: hue [N, 2] and pop [N] of the rooms shown, groups [N] of the users,
    directions [G, 2] unit taste directions (module docstring)."""
    affinity = (hue * directions[groups]).sum(-1) / scale
    return 1.0 / (1.0 + np.exp(-(cfg.bias + cfg.content_weight * affinity + cfg.id_weight * pop)))


def synthesize_rooms(out_dir: str | Path, cfg: RoomsConfig) -> dict:
    """Write the rooms, users, impressions and truth to ``out_dir`` (layout in the module docstring);
    returns a summary dict. The folder is built aside and swapped in whole."""
    cfg.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "truth.json").is_file():
        raise ConfigError(f"room data: --out {out_dir} exists and is not a room dataset; give a new or empty directory")
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(7,)))
    scfg = cfg.synth()
    plans = [plan_stream(k, scfg) for k in range(cfg.rooms)]
    hue = np.stack([room_hue(p.palettes[0]) for p in plans])  # [R, 2]
    scale = float(np.linalg.norm(hue, axis=1).std() + 1e-9)
    pop = rng.standard_normal(cfg.rooms)
    n_cold = int(round(cfg.rooms * cfg.cold_fraction))
    cold = np.zeros(cfg.rooms, dtype=bool)
    cold[rng.permutation(cfg.rooms)[:n_cold]] = True
    angles = 2 * np.pi * (np.arange(cfg.groups) + rng.uniform()) / cfg.groups
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [G, 2]
    group = rng.integers(cfg.groups, size=cfg.users)
    user_ids = 10_000 + np.arange(cfg.users)

    span = cfg.days * DAY_MS
    # Impressions: per user, sorted times over the span; each shows a room live at that time.
    n = cfg.users * cfg.impressions_per_user
    users = np.repeat(np.arange(cfg.users), cfg.impressions_per_user)
    times = BASE_EPOCH_MS + np.sort(rng.integers(0, span, size=n).reshape(cfg.users, -1), axis=1).ravel()
    split_ms = int(np.ceil(np.quantile(times, 1 - TEST_FRACTION)))  # the split read_clicks computes
    start = np.where(cold, split_ms, BASE_EPOCH_MS)  # cold rooms go live when the held-out period starts
    warm_rooms, all_rooms = np.flatnonzero(~cold), np.arange(cfg.rooms)
    late = times >= split_ms
    rooms = np.where(late, rng.choice(all_rooms, size=n), rng.choice(warm_rooms, size=n))
    p = click_probability(hue[rooms], pop[rooms], group[users], directions, cfg, scale)
    clicked = rng.uniform(size=n) < p

    titles_dir = rng.standard_normal((2, cfg.title_dim))
    titles = hue @ titles_dir / scale + cfg.title_noise * rng.standard_normal((cfg.rooms, cfg.title_dim)) / math.sqrt(cfg.title_dim)
    with atomic_dir(out_dir) as tmp:
        synthesize(tmp / "synth", scfg)
        kl = tmp / "kuailive"
        kl.mkdir()
        for name in ("user", "streamer", "comment", "like", "gift"):  # the streams' own side tables
            shutil.copyfile(tmp / "synth" / "kuailive" / f"{name}.csv", kl / f"{name}.csv")
        live = np.array([pl.live_id for pl in plans])
        streamer = np.array([pl.streamer_id for pl in plans])
        room_rows = [(int(live[r]), int(streamer[r]), 1, "chat", int(start[r]), BASE_EPOCH_MS + span) for r in range(cfg.rooms)]
        write_csv(kl / "room.csv", REQUIRED["room"], room_rows)
        watch = (1000 + rng.exponential(30_000.0, size=n)).astype(np.int64)
        rows = [(int(user_ids[users[i]]), int(live[rooms[i]]), int(streamer[rooms[i]]), int(times[i])) for i in range(n)]
        write_csv(kl / "click.csv", REQUIRED["click"], [r + (int(watch[i]),) for i, r in enumerate(rows) if clicked[i]])
        write_csv(kl / "negative.csv", ("user_id", "live_id", "streamer_id", "timestamp"),
                   [r for i, r in enumerate(rows) if not clicked[i]])
        np.save(kl / "title_embeddings.npy", titles.astype(np.float32))
        truth = {
            "config": asdict(cfg), "split_timestamp": split_ms, "hue_scale": scale,
            "click_model": "P = sigmoid(bias + content_weight * <hue_room, direction_group> / hue_scale + id_weight * pop_room)",
            "groups": {"directions": directions.round(6).tolist(), "users": {str(u): int(g) for u, g in zip(user_ids, group)}},
            "rooms": [{"live_id": int(live[r]), "stream_id": plans[r].stream_id, "hue": hue[r].round(6).tolist(),
                       "pop": round(float(pop[r]), 6), "cold": bool(cold[r])} for r in range(cfg.rooms)],
            "impressions": int(n), "clicks": int(clicked.sum()),
            "oracle_auc_held_out": _oracle_auc(p[late], clicked[late]),
        }
        write_json(tmp / "truth.json", truth)
    return {"out_dir": str(out_dir), "rooms": cfg.rooms, "cold_rooms": n_cold, "users": cfg.users,
            "impressions": int(n), "clicks": int(clicked.sum()), "oracle_auc_held_out": truth["oracle_auc_held_out"]}


def _oracle_auc(p: np.ndarray, y: np.ndarray) -> float:
    """AUC of the true click probabilities on the held-out impressions (the ceiling a model can reach)."""
    from mm_live.metrics import auc

    return round(auc(y.astype(float), p), 4) if 0 < y.sum() < len(y) else float("nan")


# ----------------------------------------------------------------------------- reading


@dataclass
class ClickData:
    """Impressions of a KuaiLive-schema folder, split in time, with per-user click histories.

    Rooms are indexed densely ``0..R-1`` (``live_ids[r]``). Impressions, sorted by time:
    ``user`` [N] user ids, ``room`` [N] room indices, ``time`` [N] unix ms, ``label`` [N] float32,
    ``train`` [N] bool, ``cold`` [N] bool (held out, room never in training). ``known`` [R] bool:
    rooms with training impressions (their IDs are learned). ``titles`` [R, d] or None;
    ``clips`` [R] (clip, comments) paths or None per room (None when no manifest is present).
    """

    root: Path
    live_ids: np.ndarray
    user: np.ndarray
    room: np.ndarray
    time: np.ndarray
    label: np.ndarray
    train: np.ndarray
    cold: np.ndarray
    known: np.ndarray
    titles: np.ndarray | None
    clips: list[tuple[Path, Path | None] | None] | None
    _hkey: np.ndarray  # [H] sorted history keys (user rank << 42 | time offset) of the clicks on known rooms
    _hroom: np.ndarray  # [H] their rooms
    _urank: dict[int, int]
    _t0: int

    def _key(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        ranks = np.array([self._urank.get(int(u), -1) for u in users], dtype=np.int64)
        return (ranks << _TIME_BITS) | (times.astype(np.int64) - self._t0), ranks

    def history_before(self, users: np.ndarray, times: np.ndarray, length: int) -> np.ndarray:
        """[n, length] room indices of each user's latest clicks strictly before each time
        (oldest first, right-aligned, -1 padding); only rooms with training impressions."""
        key, ranks = self._key(np.asarray(users), np.asarray(times))
        end = np.searchsorted(self._hkey, key, side="left")
        first = np.searchsorted(self._hkey, np.maximum(ranks, 0) << _TIME_BITS, side="left")
        idx = end[:, None] - length + np.arange(length)[None]
        valid = (idx >= first[:, None]) & (ranks[:, None] >= 0)
        if not len(self._hroom):
            return np.full(idx.shape, -1, dtype=np.int64)
        return np.where(valid, self._hroom[np.clip(idx, 0, len(self._hroom) - 1)], -1)

    def has_user(self, user: int) -> bool:
        """True when ``user`` has impressions in the data."""
        return int(user) in self._urank

    def history(self, rows: np.ndarray, length: int) -> np.ndarray:
        """Histories of impressions ``rows`` (see :meth:`history_before`)."""
        return self.history_before(self.user[rows], self.time[rows], length)


def tables_dir(root: str | Path) -> Path:
    """The KuaiLive-schema folder inside ``root`` (``root/kuailive`` of a room dataset) or ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"EM3 data folder not found: {root}; pass a KuaiLive folder or one written by 'synthesize_rooms'")
    return root / "kuailive" if (root / "kuailive" / "click.csv").is_file() else root


def manifest_path(root: str | Path) -> Path | None:
    """The manifest mapping ``live_id`` to clips (``root/synth/manifest.jsonl`` or ``root/manifest.jsonl``)."""
    for p in (Path(root) / "synth" / "manifest.jsonl", Path(root) / "manifest.jsonl"):
        if p.is_file():
            return p
    return None


def _sample_negatives(users: np.ndarray, rooms: np.ndarray, times: np.ndarray, start: np.ndarray, end: np.ndarray,
                      k: int, rng: np.random.Generator, tries: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``k`` rooms per click, each live at the click's time (start <= t <= end) and not the clicked
    room; a draw that finds no live room in ``tries`` attempts takes any other room."""
    n = len(users)
    u, t, pos = np.repeat(users, k), np.repeat(times, k), np.repeat(rooms, k)
    order = np.argsort(start, kind="stable")
    s_sorted = start[order]
    n_started = np.searchsorted(s_sorted, t, side="right")  # rooms started by t are order[:n_started]
    out = np.full(n * k, -1, dtype=np.int64)
    todo = np.flatnonzero(n_started > 0)
    for _ in range(tries):
        if not len(todo):
            break
        cand = order[(rng.uniform(size=len(todo)) * n_started[todo]).astype(np.int64)]
        ok = (end[cand] >= t[todo]) & (cand != pos[todo])
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
    left = np.flatnonzero(out < 0)
    if len(left) and len(start) > 1:
        r = rng.integers(len(start) - 1, size=len(left))
        out[left] = r + (r >= pos[left])  # any room but the clicked one
    keep = out >= 0
    return u[keep], out[keep], t[keep]


def read_clicks(root: str | Path, *, negatives: int = 4, seed: int = 0, test_fraction: float = TEST_FRACTION) -> ClickData:
    """Impressions of a KuaiLive-schema folder (or a room dataset), split in time (module docstring)."""
    root = Path(root)
    tables = tables_dir(root)
    for name in ("room", "click"):
        if not (tables / f"{name}.csv").is_file():
            raise DataError(f"{tables}: missing {name}.csv; EM3 needs the KuaiLive room.csv and click.csv (docs/em3.md)")
    room = read_table(tables / "room.csv", REQUIRED["room"])
    click = read_table(tables / "click.csv", ("user_id", "live_id", "timestamp"))
    live = room["live_id"]
    if len(np.unique(live)) != len(live):
        raise DataError(f"{room.path}: live_id values repeat; each room must be on one line")
    index = {int(v): i for i, v in enumerate(live)}

    def rooms_of(table) -> np.ndarray:
        ids = table["live_id"]
        r = np.array([index.get(int(v), -1) for v in ids], dtype=np.int64)
        if (r < 0).any():
            bad_id = int(ids[np.flatnonzero(r < 0)[0]])
            raise DataError(f"{table.path}: live_id {bad_id} is not in {room.path.name}; the tables must come from one release")
        return r

    users, rooms, times = click["user_id"], rooms_of(click), click["timestamp"]
    labels = [np.ones(len(users), np.float32)]
    neg_path = tables / "negative.csv"
    if neg_path.is_file():
        neg = read_table(neg_path, ("user_id", "live_id", "timestamp"))
        nu, nr, nt = neg["user_id"], rooms_of(neg), neg["timestamp"]
    elif negatives > 0:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(11,)))
        nu, nr, nt = _sample_negatives(users, rooms, times, room["start_timestamp"], room["end_timestamp"], negatives, rng)
    else:
        raise DataError(f"{tables}: no negative.csv and em3.negatives=0: set em3.negatives > 0 to draw non-clicked rooms")
    user = np.concatenate([users, nu])
    rm = np.concatenate([rooms, nr])
    tm = np.concatenate([times, nt])
    label = np.concatenate(labels + [np.zeros(len(nu), np.float32)])
    order = np.lexsort((rm, user, tm))
    user, rm, tm, label = user[order], rm[order], tm[order], label[order]
    if len(tm) < 2 or label.min() == label.max():
        raise DataError(f"{tables}: need clicked and non-clicked impressions to rank; found {int(label.sum())} of {len(label)} clicked")
    train = tm < np.ceil(np.quantile(tm, 1 - test_fraction))
    if not train.any() or train.all():
        raise DataError(f"{tables}: every impression falls on one side of the time split; the data needs a spread of timestamps")
    known = np.zeros(len(live), dtype=bool)
    known[rm[train]] = True
    cold = ~train & ~known[rm]

    titles = None
    title_path = next((tables / n for n in TITLE_FILES if (tables / n).is_file()), None)
    if title_path is not None:
        mat = read_array(title_path).astype(np.float32, copy=False)
        titles = mat[room["live_name_id"]] if "live_name_id" in room.columns else mat
        if "live_name_id" not in room.columns and len(mat) != len(live):
            raise DataError(f"{title_path}: {len(mat)} rows for {len(live)} rooms; row i must be the room on line i of room.csv")
    clips = _room_clips(root, live)

    urank = {int(u): i for i, u in enumerate(np.unique(user))}
    t0 = int(tm.min())
    hist = (label > 0) & known[rm]
    ranks = np.array([urank[int(u)] for u in user[hist]], dtype=np.int64)
    hkey = (ranks << _TIME_BITS) | (tm[hist] - t0)
    o = np.argsort(hkey, kind="stable")
    return ClickData(root=root, live_ids=live, user=user, room=rm, time=tm, label=label, train=train, cold=cold,
                     known=known, titles=titles, clips=clips, _hkey=hkey[o], _hroom=rm[hist][o], _urank=urank, _t0=t0)


def _room_clips(root: Path, live: np.ndarray) -> list[tuple[Path, Path | None] | None] | None:
    """(clip, comments) of each room from the manifest's ``live_id`` lines, or None without a manifest."""
    path = manifest_path(root)
    if path is None:
        return None
    from mm_live.data.manifest import check_media, read_manifest

    records = read_manifest(path)
    check_media(records)
    by_live = {int(r.extra["live_id"]): (r.clip, r.comments) for r in records if "live_id" in r.extra}
    if not by_live:
        raise DataError(f"{path}: no line has a live_id; each room's clip line needs \"live_id\" to match room.csv")
    return [by_live.get(int(v)) for v in live]


def main(argv: list[str] | None = None) -> int:
    """``python -m mm_live.data.rooms --out DIR [--rooms N --users N --seed S]``: write a room dataset."""
    import argparse

    p = argparse.ArgumentParser(description="Write synthetic rooms with content-driven clicks (EM3 data).")
    p.add_argument("--out", required=True, type=Path)
    for name in ("rooms", "users", "groups", "impressions_per_user", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(RoomsConfig, name))
    args = p.parse_args(argv)
    summary = synthesize_rooms(args.out, RoomsConfig(rooms=args.rooms, users=args.users, groups=args.groups,
                                                     impressions_per_user=args.impressions_per_user, seed=args.seed))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
