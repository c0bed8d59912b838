"""`evaluate`: prediction-file errors, and the own-logs / KLive ranking protocol on tiny files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mm_live.data.evaluate import evaluate
from mm_live.errors import DataError


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def qv_ann(tmp_path: Path) -> Path:
    rows = [{"qid": q, "vid": f"v{q}", "duration": 10, "relevant_clip_ids": [1, 2],
             "saliency_scores": [[4, 4, 4], [2, 2, 2]]} for q in range(12)]
    return _write_jsonl(tmp_path / "ann.jsonl", rows)


def _preds(tmp_path: Path, qids, n=5, name="pred.jsonl") -> Path:
    return _write_jsonl(tmp_path / name, [{"qid": q, "pred_saliency_scores": [0.0, 1.0, 0.5, 0.1, 0.2][:n]} for q in qids])


def test_perfect_toy_predictions(tmp_path: Path, qv_ann: Path):
    result = evaluate("qvhighlights", predictions=_preds(tmp_path, range(12)), annotations=qv_ann)
    assert result.overall["HL-min-VeryGood-mAP"] == 100.0 and result.overall["HL-min-Fair-Hit1"] == 100.0


def test_missing_predictions_listed_in_one_error(tmp_path: Path, qv_ann: Path):
    with pytest.raises(DataError) as err:
        evaluate("qvhighlights", predictions=_preds(tmp_path, [0]), annotations=qv_ann)
    msg = str(err.value)
    assert "11 predictions (qids) of 12 annotated missing: 1, 2, 3" in msg and "and 1 more" in msg


def test_wrong_length_names_line_and_field(tmp_path: Path, qv_ann: Path):
    rows = [{"qid": q, "pred_saliency_scores": [0.1] * (2 if q == 3 else 5)} for q in range(12)]
    pred = _write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError, match=r"p\.jsonl:4: field 'pred_saliency_scores' has 2 scores but qid 3 has 5"):
        evaluate("qvhighlights", predictions=pred, annotations=qv_ann)


def test_one_clip_short_is_accepted_like_official(tmp_path: Path, qv_ann: Path):
    result = evaluate("qvhighlights", predictions=_preds(tmp_path, range(12), n=4), annotations=qv_ann)
    assert result.overall["HL-min-Fair-mAP"] == 100.0


@pytest.mark.parametrize("line, match", [
    ('{"qid": 1, "pred_saliency_scores": [0.1, "x"]}', r"p\.jsonl:2: field 'pred_saliency_scores' must be a list of numbers"),
    ('{"pred_saliency_scores": [0.1]}', r"p\.jsonl:2: field 'qid' is missing"),
    ('{"qid": 0, "pred_saliency_scores": [1]}', r"p\.jsonl:2: field 'qid' '0' already predicted on line 1"),
    ("not json", r"p\.jsonl:2: is not valid JSON"),
])
def test_malformed_prediction_lines(tmp_path: Path, qv_ann: Path, line: str, match: str):
    pred = tmp_path / "p.jsonl"
    pred.write_text('{"qid": 0, "pred_saliency_scores": [0.1, 0.2, 0.3, 0.4, 0.5]}\n' + line + "\n")
    with pytest.raises(DataError, match=match):
        evaluate("qvhighlights", predictions=pred, annotations=qv_ann)


def test_missing_annotation_file_and_unknown_dataset(tmp_path: Path):
    with pytest.raises(DataError, match="annotation file not found"):
        evaluate("tvsum", predictions=tmp_path / "p.jsonl", annotations=tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="unknown dataset"):
        evaluate("imagenet", predictions=tmp_path / "p.jsonl", annotations=tmp_path / "a.jsonl")


def test_own_manifest_ranking_metrics(tmp_path: Path):
    ann = _write_jsonl(tmp_path / "manifest.jsonl", [
        {"stream_id": "a", "clip": "a.mp4", "comments": None, "streamer_id": 1, "step_seconds": 1.0,
         "labels": {"ctr": [0.1, 0.5, 0.9, 0.3]}, "split": "test"},
        {"stream_id": "b", "clip": "b.mp4", "streamer_id": 2, "step_seconds": 1.0,
         "labels": {"ctr": [0.2, 0.2, 0.2]}},  # constant: τ and ρ undefined, skipped
    ])
    good = _write_jsonl(tmp_path / "good.jsonl", [{"qid": "a", "pred_saliency_scores": [1, 5, 9, 3]},
                                                  {"qid": "b", "pred_saliency_scores": [1, 2, 3]}])
    rev = _write_jsonl(tmp_path / "rev.jsonl", [{"qid": "a", "pred_saliency_scores": [9, 5, 1, 7]},
                                                {"qid": "b", "pred_saliency_scores": [1, 2, 3]}])
    g = evaluate("own", predictions=good, annotations=ann)
    r = evaluate("own", predictions=rev, annotations=ann)
    assert g.overall["kendall_tau"] == pytest.approx(1.0) and g.overall["spearman_rho"] == pytest.approx(1.0)
    assert r.overall["kendall_tau"] == pytest.approx(-1.0)
    assert g.overall["ndcg@5"] > r.overall["ndcg@5"]
    d = g.to_dict()
    assert d["n"] == 2 and d["per_domain"] == {} and "overall" in g.table()
    assert not math.isnan(d["metrics"]["ndcg@10"])
