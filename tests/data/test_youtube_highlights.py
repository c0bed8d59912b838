"""YouTube Highlights val: all records load; the labels score mAP 1.0; reader errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mm_live.data.evaluate import evaluate
from mm_live.data.youtube_highlights import YOUTUBE_DOMAINS, read_youtube_highlights
from mm_live.errors import DataError


@pytest.fixture(scope="module")
def yt_val(real_data: Path) -> Path:
    path = real_data / "youtube_highlights" / "youtube_highlight_val_release.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_all_val_records_load(yt_val: Path):
    records = read_youtube_highlights(yt_val)
    assert len(records) == 152
    assert {r.domain for r in records} == set(YOUTUBE_DOMAINS)
    for r in records:
        np.testing.assert_array_equal(r.labels, (r.extra["match"] > 0).astype(np.float32))


def test_labels_as_predictions_score_map_one(yt_val: Path, tmp_path: Path):
    records = read_youtube_highlights(yt_val)
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"qid": r.id, "pred_saliency_scores": r.labels.tolist()}) + "\n" for r in records))
    result = evaluate("youtube_highlights", predictions=pred, annotations=yt_val)
    assert result.overall["mAP"] == pytest.approx(100.0)
    assert [r.name for r in result.rows[:-1]] == sorted(YOUTUBE_DOMAINS)
    assert all(r.metrics["mAP"] == pytest.approx(100.0) for r in result.rows)


def test_label_disagreeing_with_match_is_an_error(tmp_path: Path):
    p = tmp_path / "y.jsonl"
    p.write_text(json.dumps({"vid": "v", "domain": "dog", "duration": 4.0, "match": [1, -1], "label": [[0], [0]]}) + "\n")
    with pytest.raises(DataError, match=r"y\.jsonl:1: field 'label' disagrees with 'match'"):
        read_youtube_highlights(p)
