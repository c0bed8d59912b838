import json

import numpy as np

from mm_live.report import Window, highlight_windows, write_score_outputs


def test_windows_merge_runs_and_rank_by_peak():
    s = [0, 0, 5, 6, 0, 5, 0, 0, 0, 9, 8, 0, 0, 0, 0, 0]
    w = highlight_windows(s, step_seconds=2.0, top_k=5, quantile=0.7, max_gap=1)
    assert [x.to_dict() for x in w] == [
        {"start": 18.0, "end": 22.0, "score": 9.0},
        {"start": 4.0, "end": 12.0, "score": 6.0},  # 2..5 merged across the one-step gap
    ]
    assert highlight_windows([], 1.0) == []
    assert len(highlight_windows(s, 1.0, top_k=1)) == 1


def test_outputs_are_written_and_readable(tmp_path):
    scores = np.linspace(0, 1, 10).tolist()
    thumbs = [(3.0, np.zeros((8, 8, 3), np.uint8))]
    paths = write_score_outputs(tmp_path / "o", clip_name="clip.mp4", step_seconds=1.0, step_starts=list(range(10)),
                                scores=scores, windows=[Window(8, 10, 1.0)], embedding=[0.6, 0.8], thumbnails=thumbs)
    data = json.loads(paths["scores.json"].read_text())
    assert data["step_seconds"] == 1.0 and len(data["scores"]) == 10 and data["highlights"][0]["start"] == 8
    assert paths["scores.csv"].read_text().splitlines()[0] == "step,start,end,score"
    pred = json.loads(paths["predictions.jsonl"].read_text())
    assert pred["vid"] == "clip" and len(pred["pred_saliency_scores"]) == 10
    assert paths["highlights.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["highlights.png", "predictions.jsonl", "scores.csv", "scores.json"]
