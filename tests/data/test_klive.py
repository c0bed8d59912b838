"""KLive reader on small files in the documented schema; errors name file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mm_live.data.evaluate import evaluate
from mm_live.data.klive import read_klive, read_klive_log, read_live_id2aid
from mm_live.errors import DataError

HEADER = "live_id\ttimestamp\tlvtr\timage_feaure\ttext_feaure\n"


def _rows(sep: str = "\t") -> str:
    rows = [(17792, 685138931, 0.5, [0.1, 0.2, 0.3], [1.0, 2.0]),
            (17792, 685138930, 0.25, [0.4, 0.5, 0.6], [3.0, 4.0]),
            (9, 100, 0.9, [0.0, 0.0, 1.0], [5.0, 6.0])]
    return "".join(f"{a}{sep}{b}{sep}{c}{sep}{json.dumps(d)}{sep}{json.dumps(e)}\n" for a, b, c, d, e in rows)


@pytest.mark.parametrize("sep, header", [("\t", HEADER), ("\t", ""), (",", ""), (" ", "")])
def test_reads_rooms_sorted_by_time(tmp_path: Path, sep: str, header: str):
    log = tmp_path / "0_test_score_infer_output.log"
    log.write_text(header + _rows(sep))
    recs = {r.id: r for r in read_klive_log(log, authors={"17792": "9932"})}
    r = recs["17792"]
    np.testing.assert_allclose(r.labels, [0.25, 0.5])  # sorted by timestamp
    np.testing.assert_allclose(r.features["image"], [[0.4, 0.5, 0.6], [0.1, 0.2, 0.3]])
    assert r.features["text"].shape == (2, 2) and r.step_seconds == 1.0 and r.streamer_id == "9932"
    assert recs["9"].n_steps == 1 and recs["9"].streamer_id is None


def test_tab_fields_with_unbracketed_lists(tmp_path: Path):
    log = tmp_path / "x.log"
    log.write_text("5\t10\t0.3\t0.1,0.2\t0.3 0.4\n5\t11\t0.4\t0.5,0.6\t0.7 0.8\n")
    (r,) = read_klive_log(log)
    np.testing.assert_allclose(r.features["text"], [[0.3, 0.4], [0.7, 0.8]])


@pytest.mark.parametrize("content, match", [
    ("live_id\ttimestamp\tlvtr\tvideo_feature\ttext_feature\n", r"x\.log:1: field 'video_feature' is not the expected column 4"),
    ("1\t2\t0.5\t[0.1, abc]\t[1.0]\n", r"x\.log:1: field 'image_feature' item 1 is not a number: 'abc'"),
    ("1\t2\t0.5\t[0.1, 0.2]\n", r"x\.log:1: expected 5 tab-separated fields"),
    ("1,2,0.5,[0.1]\n", r"x\.log:1: expected 5 fields"),
    ("1\tnoon\t0.5\t[0.1]\t[1.0]\n", r"x\.log:1: field 'timestamp' must be an integer"),
    ("1\t2\t0.5\t[0.1]\t[1.0]\n1\t3\t0.5\t[0.1, 0.2]\t[1.0]\n", r"x\.log:2: field 'image_feature' has 2 values, earlier rows have 1"),
    ("1\t2\t0.5\t[0.1]\t[1.0]\n1\t2\t0.6\t[0.1]\t[1.0]\n", r"x\.log:2: field 'timestamp' repeats 2"),
])
def test_errors_name_file_line_field(tmp_path: Path, content: str, match: str):
    log = tmp_path / "x.log"
    log.write_text(content)
    with pytest.raises(DataError, match=match):
        read_klive_log(log)


def test_live_id2aid_and_folder(tmp_path: Path):
    (tmp_path / "live_id2aid.txt").write_text("live_id author_id\n17792 9932\n9,11\n")
    assert read_live_id2aid(tmp_path / "live_id2aid.txt") == {"17792": "9932", "9": "11"}
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "0_test_score_infer_output.log").write_text(_rows())
    recs = read_klive(tmp_path, "test")
    assert {r.id: r.streamer_id for r in recs} == {"17792": "9932", "9": "11"}
    with pytest.raises(DataError, match="no \\*_test_score_infer_output.log files"):
        read_klive(tmp_path, "train")
    (tmp_path / "bad.txt").write_text("1 x\n")
    with pytest.raises(DataError, match=r"bad\.txt:1: field 'author_id' must be an integer"):
        read_live_id2aid(tmp_path / "bad.txt")


def test_eval_klive_log(tmp_path: Path):
    log = tmp_path / "0_test_score_infer_output.log"
    log.write_text("".join(f"7\t{t}\t{y}\t[0.0]\t[0.0]\n" for t, y in enumerate([0.1, 0.4, 0.2, 0.9, 0.3])))
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"qid": 7, "pred_saliency_scores": [1, 4, 2, 9, 3]}) + "\n")
    result = evaluate("klive", predictions=pred, annotations=log)
    assert result.overall["kendall_tau"] == pytest.approx(1.0) and result.overall["ndcg@5"] == pytest.approx(1.0)
    assert evaluate("klive", predictions=pred, annotations=tmp_path).overall == result.overall


def test_non_utf8_log_and_int64_overflow(tmp_path: Path):
    log = tmp_path / "x.log"
    log.write_bytes(_rows().encode() + b"5\t10\t0.3\t[0.1]\t[\xff]\n")
    with pytest.raises(DataError, match=r"x\.log:4: byte 0xff at offset \d+ is not UTF-8; re-save the file as UTF-8$"):
        read_klive_log(log)
    log.write_text("1\t99999999999999999999\t0.5\t[0.1]\t[1.0]\n")
    with pytest.raises(DataError, match=r"x\.log:1: field 'timestamp' must fit in 64 bits"):
        read_klive_log(log)
    (tmp_path / "aid.txt").write_bytes(b"1 2\n3 \xc0\n")
    with pytest.raises(DataError, match=r"aid\.txt:2: byte 0xc0 at offset 6 is not UTF-8"):
        read_live_id2aid(tmp_path / "aid.txt")
