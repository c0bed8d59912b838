"""KuaiLive reader: the documented schema, the synthetic generator's output, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mm_live.data.kuailive import REQUIRED, read_kuailive, read_table
from mm_live.errors import DataError

ROWS = {
    "user": [(1, "18-23", "M", "China", "APPLE", "5000+", "2023-05-03", "0-10", "10-100"),
             (2, "24-30", "F", "China", "OPPO", "0", "2021-01-01", "10-100", "0-10")],
    "streamer": [(50, "M", "24-30", "China", "APPLE", "5000+", "Relationship", "10000-100000", "2014-07-03")],
    "room": [(700, 50, 1, "shop", 1748131180878, 1748275200000), (701, 50, 2, "game", 1748131180000, 1748131990000)],
    "click": [(1, 700, 50, 1748131181000, 2852)],
    "comment": [(1, 700, 50, 1748131182000)],
    "like": [(2, 701, 50, 1748131183000)],
    "gift": [(2, 701, 50, 1748131184000, 2)],
}


def _write(root: Path, rows=ROWS, extra_cols: dict | None = None, titles: int = 2) -> Path:
    root.mkdir(exist_ok=True)
    for name, cols in REQUIRED.items():
        header = list(cols) + list((extra_cols or {}).get(name, {}))
        lines = [",".join(header)]
        for i, row in enumerate(rows[name]):
            extra = [str(v[i]) for v in (extra_cols or {}).get(name, {}).values()]
            lines.append(",".join([str(v) for v in row] + extra))
        (root / f"{name}.csv").write_text("\n".join(lines) + "\n")
    np.save(root / "title_embeddings.npy", np.arange(titles * 4, dtype=np.float32).reshape(titles, 4))
    return root


def test_reads_documented_schema(tmp_path: Path):
    k = read_kuailive(_write(tmp_path / "kl"))
    assert len(k.user) == 2 and len(k.room) == 2 and k.negative is None
    assert k.click["watch_live_time"].dtype == np.int64 and k.gift["gift_price"].dtype == np.float64
    assert k.room["start_timestamp"][0] == 1748131180878
    assert k.user["reg_timestamp"][0] == "2023-05-03" and k.streamer["fans_user_num"][0] == "10000-100000"
    np.testing.assert_array_equal(k.room_titles[1], [4, 5, 6, 7])


def test_release_columns_and_live_name_id(tmp_path: Path):
    root = _write(tmp_path / "kl", extra_cols={"room": {"p_date": [20250525, 20250525], "live_name_id": [2, 0]},
                                                "streamer": {"accu_live_cnt": ["100-500"]}}, titles=3)
    (root / "title_embeddings.npy").rename(root / "title_embeddings_pca128.npy")
    k = read_kuailive(root)
    np.testing.assert_array_equal(k.room_titles[:, 0], [8, 0])  # rows 2 and 0
    assert k.streamer["accu_live_cnt"][0] == "100-500" and k.room["p_date"].dtype == np.int64


def test_synthetic_generator_output_reads(tmp_path: Path):
    synthetic = pytest.importorskip("mm_live.data.synthetic")
    synthetic.synthesize(tmp_path / "syn", synthetic.SynthConfig(streams=2, seconds=5, width=64, height=36,
                                                                   n_users=20, viewers_per_stream=10))
    k = read_kuailive(tmp_path / "syn" / "kuailive")
    assert len(k.room) == 2 and k.room_titles.shape == (2, k.title_embeddings.shape[1])
    assert set(k.click["live_id"]) <= set(k.room["live_id"])


def test_missing_required_column(tmp_path: Path):
    root = _write(tmp_path / "kl")
    (root / "gift.csv").write_text("user_id,live_id,streamer_id,timestamp,price\n1,2,3,4,5\n")
    with pytest.raises(DataError, match=r"gift\.csv:1: field 'gift_price' required column is missing \(unexpected: price\)"):
        read_kuailive(root)


def test_non_numeric_id_and_short_row(tmp_path: Path):
    p = tmp_path / "click.csv"
    p.write_text("user_id,live_id,streamer_id,timestamp,watch_live_time\n1,2,3,4,5\n1,abc,3,4,5\n")
    with pytest.raises(DataError, match=r"click\.csv:3: field 'live_id' must be an integer, got 'abc'"):
        read_table(p, REQUIRED["click"])
    p.write_text("user_id,live_id,streamer_id,timestamp,watch_live_time\n1,2,3,4,5\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"click\.csv:3: field 'watch_live_time' row has 4 fields, the header has 5"):
        read_table(p, REQUIRED["click"])
    p.write_text("user_id,live_id,streamer_id,timestamp,watch_live_time\n1,2,,4,5\n")
    with pytest.raises(DataError, match=r"click\.csv:2: field 'streamer_id' is empty"):
        read_table(p, REQUIRED["click"])


def test_missing_files_listed_together_and_title_rows_checked(tmp_path: Path):
    root = _write(tmp_path / "kl")
    (root / "like.csv").unlink()
    (root / "title_embeddings.npy").unlink()
    with pytest.raises(DataError, match="missing like.csv, title_embeddings.npy"):
        read_kuailive(root)
    root = _write(tmp_path / "k2", titles=3)
    with pytest.raises(DataError, match="3 rows for 2 rooms"):
        read_kuailive(root)


def test_non_utf8_csv_overflow_and_damaged_titles(tmp_path: Path):
    p = tmp_path / "room.csv"
    p.write_bytes(b"live_id,streamer_id,live_type,live_content_category,start_timestamp,end_timestamp\n"
                  b"1,2,1,\xd3\xce\xcf\xb7,10,20\n")  # GBK-encoded category
    with pytest.raises(DataError, match=r"room\.csv:2: byte 0xd3 at offset 88 is not UTF-8; re-save the file as UTF-8$"):
        read_table(p, REQUIRED["room"])
    p.write_text("user_id,live_id,streamer_id,timestamp,watch_live_time\n1,2,3,99999999999999999999,5\n")
    with pytest.raises(DataError, match=r"room\.csv:2: field 'timestamp' must fit in 64 bits"):
        read_table(p, REQUIRED["click"])
    p.write_text("user_id,live_id,streamer_id,timestamp,gift_price\n1,2,3,4,nan\n")
    with pytest.raises(DataError, match=r"room\.csv:2: field 'gift_price' must be a finite number, got 'nan'"):
        read_table(p, REQUIRED["gift"])
    root = _write(tmp_path / "kl")
    (root / "title_embeddings.npy").write_bytes((root / "title_embeddings.npy").read_bytes()[:100])
    with pytest.raises(DataError, match=r"title_embeddings\.npy: cannot read the array"):
        read_kuailive(root)
