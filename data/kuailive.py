"""KuaiLive (Kuaishou, 2025): users, streamers, live rooms and their click/comment/like/gift logs.

Source: https://imgkkk574.github.io/KuaiLive (field descriptions: ``detailed_statistics.html``),
data at https://zenodo.org/records/16565801 (``KuaiLive.zip``). Licence: CC BY-NC-SA 4.0.
Layout::

    KuaiLive/
      user.csv  streamer.csv  room.csv
      click.csv  comment.csv  like.csv  gift.csv  [negative.csv]
      title_embeddings.npy   (the release names it title_embeddings_pca128.npy; both are found)

:data:`REQUIRED` lists the columns every file must have (what the gifting pipeline and the
synthetic generator use); every other column present (the release's side information such as
``fans_group_fans_num``, ``accu_live_cnt``, ``onehot_feat0-6``, ``p_date``, ``live_name_id``) is read
too. Ids, interaction timestamps (unix milliseconds), ``watch_live_time`` (ms) and the other
integer fields become int64 arrays; ``gift_price`` float64; side information stays strings — the
release gives counts as range strings (``"10000-100000"``) and registration/first-live times as
dates (``"2014-07-03"``), not unix ms.

Title embeddings: when ``room.csv`` has ``live_name_id`` (the release), room ``i``'s title vector is
row ``live_name_id[i]`` of the matrix; otherwise (synthetic data) row ``i`` belongs to the room on
data line ``i`` of ``room.csv``. :attr:`KuaiLive.room_titles` returns [n_rooms, d] either way.

Read with the csv module (pandas is not a dependency): the full release (11.8 M rooms, 4.9 M
clicks) needs several GB of memory and minutes; read subsets by copying the rows you need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mm_live.data.records import bad
from mm_live.data.sources import check_finite, read_array
from mm_live.errors import DataError
from mm_live.jsonl import iter_csv, open_text

REQUIRED: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "age", "gender", "country", "device_brand", "device_price", "reg_timestamp", "fans_num", "follow_num"),
    "streamer": ("streamer_id", "gender", "age", "country", "device_brand", "device_price", "live_operation_tag",
                 "fans_user_num", "reg_timestamp"),
    "room": ("live_id", "streamer_id", "live_type", "live_content_category", "start_timestamp", "end_timestamp"),
    "click": ("user_id", "live_id", "streamer_id", "timestamp", "watch_live_time"),
    "comment": ("user_id", "live_id", "streamer_id", "timestamp"),
    "like": ("user_id", "live_id", "streamer_id", "timestamp"),
    "gift": ("user_id", "live_id", "streamer_id", "timestamp", "gift_price"),
}
OPTIONAL_TABLES = {"negative": ("user_id", "live_id", "streamer_id", "timestamp")}

INT_COLUMNS = frozenset({
    "user_id", "streamer_id", "live_id", "timestamp", "start_timestamp", "end_timestamp", "watch_live_time",
    "live_type", "p_date", "live_name_id", "is_live_streamer", "is_photo_author",
    *(f"onehot_feat{i}" for i in range(7)),
})
FLOAT_COLUMNS = frozenset({"gift_price"})
TITLE_FILES = ("title_embeddings.npy", "title_embeddings_pca128.npy")


@dataclass
class Table:
    """Columns of one csv as arrays (int64 / float64 / str), all of one length."""

    path: Path
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise DataError(f"{self.path}: no column '{name}' (columns: {', '.join(self.columns)}); add it (docs/datasets.md)")
        return self.columns[name]


@dataclass
class KuaiLive:
    """All KuaiLive tables; ``negative`` is None when the file is absent."""

    root: Path
    user: Table
    streamer: Table
    room: Table
    click: Table
    comment: Table
    like: Table
    gift: Table
    negative: Table | None
    title_embeddings: np.ndarray  # [n_titles, d] float32

    @property
    def room_titles(self) -> np.ndarray:
        """[n_rooms, d] title embedding of each row of ``room.csv``."""
        if "live_name_id" in self.room.columns:
            return self.title_embeddings[self.room["live_name_id"]]
        return self.title_embeddings


def _convert(values: list[str], name: str, rows: list[int], path: Path) -> np.ndarray:
    """Typed column; on failure name the first bad line (``rows`` = file line of each value)."""
    if name not in INT_COLUMNS and name not in FLOAT_COLUMNS:
        return np.asarray(values, dtype=str)
    dtype = np.int64 if name in INT_COLUMNS else np.float64
    parse = int if dtype is np.int64 else float
    try:
        arr = np.array([parse(v) for v in values], dtype=dtype)
        if dtype is np.float64 and not np.isfinite(arr).all():
            raise ValueError("not finite")
        return arr
    except (ValueError, OverflowError):
        for v, line in zip(values, rows):
            try:
                value = parse(v)
            except ValueError:
                kind = "an integer" if dtype is np.int64 else "a number"
                raise bad(path, line, name, f"must be {kind}, got {v[:40]!r}") from None
            try:
                if not np.isfinite(dtype(value)):
                    raise bad(path, line, name, f"must be a finite number, got {v[:40]!r}")
            except OverflowError:
                raise bad(path, line, name, f"must fit in 64 bits, got {v[:40]}") from None
        raise


def read_table(path: str | Path, required: tuple[str, ...]) -> Table:
    """Read one KuaiLive csv (header row first), checking ``required`` columns and every row's width."""
    path = Path(path)
    with open_text(path, "KuaiLive table", newline="") as fh:
        rows = iter_csv(fh, path)
        first = next(rows, None)
        if first is None:
            raise bad(path, 1, None, "is empty; expected a header row")
        header = [h.strip() for h in first[1]]
        missing = [c for c in required if c not in header]
        if missing:
            unknown = [h for h in header if h not in required]
            hint = f" (unexpected: {', '.join(unknown)})" if unknown else ""
            raise bad(path, first[0], missing[0], f"required column is missing{hint}; required: {', '.join(required)}")
        width = len(header)
        cols: list[list[str]] = [[] for _ in header]
        lines: list[int] = []
        for line, row in rows:
            if len(row) != width:
                name = header[len(row)] if len(row) < width else None
                raise bad(path, line, name, f"row has {len(row)} fields, the header has {width}")
            for c, v in zip(cols, row):
                c.append(v)
            lines.append(line)
    for name, values in zip(header, cols):
        empty = next((line for v, line in zip(values, lines) if v == ""), None)
        if empty is not None and name in required:
            raise bad(path, empty, name, "is empty")
    return Table(path=path, columns={n: _convert(v, n, lines, path) for n, v in zip(header, cols)})


def read_kuailive(root: str | Path) -> KuaiLive:
    """Read a KuaiLive folder (see module docstring); checks that room titles and ids line up."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"KuaiLive folder not found: {root}; pass the folder holding user.csv, room.csv, click.csv, ...")
    missing = [f"{n}.csv" for n in REQUIRED if not (root / f"{n}.csv").is_file()]
    title_path = next((root / n for n in TITLE_FILES if (root / n).is_file()), None)
    if title_path is None:
        missing.append(TITLE_FILES[0])
    if missing:
        raise DataError(f"{root}: missing {', '.join(missing)}; expected the KuaiLive layout (docs/datasets.md)")
    tables = {n: read_table(root / f"{n}.csv", cols) for n, cols in REQUIRED.items()}
    neg = root / "negative.csv"
    negative = read_table(neg, OPTIONAL_TABLES["negative"]) if neg.is_file() else None
    titles = read_array(title_path)
    if titles.ndim != 2 or not np.issubdtype(titles.dtype, np.floating):
        raise DataError(f"{title_path}: expected a float matrix [n_rooms, d], got {titles.dtype} {titles.shape}; "
                        "save the title embeddings as one float row per title")
    check_finite(titles, title_path, "title embeddings")
    room = tables["room"]
    if "live_name_id" in room.columns:
        ids = room["live_name_id"]
        if len(ids) and (ids.min() < 0 or ids.max() >= len(titles)):
            raise DataError(f"{room.path}: live_name_id reaches {ids.max()} but {title_path.name} has {len(titles)} rows; "
                            "use the title embeddings of the same release")
    elif len(titles) != len(room):
        raise DataError(f"{title_path}: {len(titles)} rows for {len(room)} rooms in {room.path.name}; "
                        "row i must be the room on data line i")
    return KuaiLive(root=root, negative=negative, title_embeddings=titles.astype(np.float32, copy=False), **tables)
