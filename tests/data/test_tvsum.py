"""TVSum: the .mat and the Lighthouse JSONL agree; GT-mean predictions beat random; 10-domain table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mm_live.data.evaluate import evaluate
from mm_live.data.tvsum import TVSUM_DOMAINS, read_tvsum, read_tvsum_jsonl, read_tvsum_mat
from mm_live.errors import DataError


@pytest.fixture(scope="module")
def tvsum(real_data: Path) -> Path:
    root = real_data / "tvsum"
    if not (root / "ydata-tvsum50.mat").is_file():
        pytest.skip(f"TVSum files not found under {root}")
    return root


@pytest.fixture(scope="module")
def mat_records(tvsum: Path):
    return {r.video_id: r for r in read_tvsum_mat(tvsum / "ydata-tvsum50.mat")}


def test_mat_and_jsonl_agree_on_every_video(tvsum: Path, mat_records):
    jsonl = read_tvsum_jsonl(tvsum / "tvsum_train_release.jsonl") + read_tvsum_jsonl(tvsum / "tvsum_val_release.jsonl")
    assert len(mat_records) == 50 and len(jsonl) == 50
    same_length = 0
    for j in jsonl:
        m = mat_records[j.video_id]
        assert m.domain == j.domain and m.query == j.query
        t = min(m.n_steps, j.n_steps)
        assert abs(m.n_steps - j.n_steps) <= 1
        np.testing.assert_array_equal(m.annotators[:t], j.annotators[:t], err_msg=j.video_id)
        same_length += m.n_steps == j.n_steps
    assert same_length == 49  # kLxoNp-UchI: the JSONL drops the last clip


def _write_preds(path: Path, records, scores) -> Path:
    path.write_text("".join(json.dumps({"qid": r.id, "vid": r.video_id, "pred_saliency_scores": [float(x) for x in s]}) + "\n"
                            for r, s in zip(records, scores)))
    return path


@pytest.mark.parametrize("annotations", ["ydata-tvsum50.mat", "tvsum_val_release.jsonl"])
def test_gt_mean_far_above_random_and_domain_table(tvsum: Path, tmp_path: Path, annotations: str):
    ann = tvsum / annotations
    records = read_tvsum(ann)
    rng = np.random.default_rng(0)
    gt = evaluate("tvsum", predictions=_write_preds(tmp_path / "gt.jsonl", records, [r.labels for r in records]), annotations=ann)
    rnd = evaluate("tvsum", predictions=_write_preds(tmp_path / "rnd.jsonl", records, [rng.random(r.n_steps) for r in records]),
                   annotations=ann)
    assert gt.overall["top5-mAP"] > 75 and rnd.overall["top5-mAP"] < 50
    assert gt.overall["top5-mAP"] - rnd.overall["top5-mAP"] > 30
    assert [r.name for r in gt.rows[:-1]] == sorted(TVSUM_DOMAINS) and gt.rows[-1].name == "overall"
    table = gt.table()
    assert all(f"\n{d} " in table for d in TVSUM_DOMAINS)
    assert set(gt.to_dict()["per_domain"]) == set(TVSUM_DOMAINS)


def test_jsonl_reader_errors(tmp_path: Path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"vid": "x", "label": [[1] * 19], "domain": "VT"}) + "\n")
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'label' must hold 20 annotator scores"):
        read_tvsum_jsonl(p)
    p.write_text(json.dumps({"vid": "x", "label": [[1] * 20], "domain": "XX"}) + "\n")
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'domain' must be one of"):
        read_tvsum_jsonl(p)


def test_mat_reader_rejects_non_hdf5(tmp_path: Path):
    p = tmp_path / "x.mat"
    p.write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(DataError, match="not a MATLAB 7.3"):
        read_tvsum_mat(p)


def test_damaged_mat_and_non_utf8_jsonl_are_one_line_errors(tvsum: Path, tmp_path: Path):
    data = bytearray((tvsum / "ydata-tvsum50.mat").read_bytes())
    for name, damaged in (("half.mat", data[: len(data) // 2]),
                          ("mid.mat", data[: len(data) // 2] + bytes(5000) + data[len(data) // 2 + 5000 :])):
        (tmp_path / name).write_bytes(bytes(damaged))
        with pytest.raises(DataError) as err:
            read_tvsum(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: ") and "\n" not in str(err.value)
    (tmp_path / "t.jsonl").write_bytes(b'{"vid": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:1: byte 0xe9 at offset 12 is not UTF-8"):
        read_tvsum(tmp_path / "t.jsonl")
