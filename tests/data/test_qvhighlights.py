"""QVHighlights reader, the golden evaluator test on the official sample, and `mm-live eval`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mm_live.cli import main
from mm_live.data.evaluate import evaluate
from mm_live.data.qvhighlights import read_qvhighlights
from mm_live.errors import DataError


@pytest.fixture(scope="module")
def qvh(real_data: Path) -> Path:
    root = real_data / "qvhighlights"
    if not (root / "highlight_val_release.jsonl").is_file():
        pytest.skip(f"QVHighlights files not found under {root}")
    return root


def test_golden_reproduces_every_official_hl_number(qvh: Path):
    result = evaluate("qvhighlights", predictions=qvh / "sample_val_preds.jsonl",
                      annotations=qvh / "highlight_val_release.jsonl")
    official = json.loads((qvh / "sample_val_preds_metrics_raw.json").read_text())["brief"]
    hl = {k: v for k, v in official.items() if k.startswith("HL-")}
    assert len(hl) == 6
    for key, value in hl.items():
        assert result.overall[key] == pytest.approx(value, abs=0.005), key
    assert result.rows[-1].n == 1550


def test_cli_eval_on_real_files_writes_json(qvh: Path, tmp_path: Path, capsys):
    out = tmp_path / "metrics.json"
    code = main(["eval", "--dataset", "qvhighlights", "--predictions", str(qvh / "sample_val_preds.jsonl"),
                 "--annotations", str(qvh / "highlight_val_release.jsonl"), "--out", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["dataset"] == "qvhighlights" and data["n"] == 1550
    assert data["metrics"]["HL-min-VeryGood-mAP"] == pytest.approx(35.65, abs=0.005)
    assert "HL-min-Fair-Hit1" in capsys.readouterr().out


def test_cli_eval_missing_file_exits_2(tmp_path: Path, capsys):
    code = main(["eval", "--dataset", "qvhighlights", "--predictions", str(tmp_path / "nope.jsonl"),
                 "--annotations", str(tmp_path / "also_nope.jsonl")])
    assert code == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err


def test_reader_full_video_matrix(tmp_path: Path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"qid": 7, "query": "q", "duration": 10, "vid": "v_0_10",
                             "relevant_clip_ids": [1, 3], "saliency_scores": [[4, 2, 0], [1, 1, 1]],
                             "relevant_windows": [[2, 4]]}) + "\n"
                 + json.dumps({"qid": 8, "query": "test split", "duration": 4, "vid": "w"}) + "\n")
    r, test = read_qvhighlights(p)
    assert r.id == "7" and r.n_steps == 5 and r.step_seconds == 2.0
    np.testing.assert_array_equal(r.annotators[1], [4, 2, 0])
    np.testing.assert_allclose(r.labels, [0, 2, 0, 1, 0])
    assert test.labels is None and test.n_steps == 2


@pytest.mark.parametrize("bad_line, field", [
    ({"qid": 1, "vid": "v", "duration": 10, "relevant_clip_ids": [9], "saliency_scores": [[1, 1, 1]]}, "relevant_clip_ids"),
    ({"qid": 1, "vid": "v", "duration": 10, "relevant_clip_ids": [1], "saliency_scores": [[1, 1]]}, "saliency_scores"),
    ({"qid": 1, "vid": "v", "relevant_clip_ids": [1], "saliency_scores": [[1, 1, 1]]}, "duration"),
    ({"qid": 1, "vid": "v", "duration": "ten", "relevant_clip_ids": [], "saliency_scores": []}, "duration"),
])
def test_reader_errors_name_file_line_field(tmp_path: Path, bad_line: dict, field: str):
    p = tmp_path / "a.jsonl"
    good = {"qid": 0, "vid": "v", "duration": 4, "relevant_clip_ids": [0], "saliency_scores": [[1, 2, 3]]}
    p.write_text(json.dumps(good) + "\n" + json.dumps(bad_line) + "\n")
    with pytest.raises(DataError, match=rf"a\.jsonl:2: field '{field}'"):
        read_qvhighlights(p)


def test_reader_bad_json_line(tmp_path: Path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"qid": 1,\n')
    with pytest.raises(DataError, match=r"a\.jsonl:1: is not valid JSON"):
        read_qvhighlights(p)
