"""The online highlight tracker of `mm-live watch`, on hand-made score sequences."""

from __future__ import annotations

import dataclasses

import pytest

from mm_live.live import HighlightTracker


def _run(tracker: HighlightTracker, scores: list[float]) -> list[tuple[float, float, float, float]]:
    out = [tracker.update(float(t), s) for t, s in enumerate(scores)]
    out.append(tracker.finish())
    return [dataclasses.astuple(h) for h in out if h is not None]


def test_windows_from_the_running_quantile():
    # min_history 4: steps 0-2 decide nothing. Step t is high when its score reaches the median of
    # the scores so far (itself included). Hand-computed: step 3 (0.9 >= median(.1,.2,.1,.9)=.15) high;
    # 4 (0.8 >= .2) high; 5 (0.1 < .15) low; 6 (0.1 < .1? no: median(.1,.2,.1,.9,.8,.1,.1) = .1, so
    # 0.1 >= 0.1 is high); 7 (0.0 < .1) low; 8 (0.0) low -> the window 3..7 closes after 2 low steps.
    t = HighlightTracker(1.0, quantile=0.5, min_history=4, max_gap=1)
    got = _run(t, [0.1, 0.2, 0.1, 0.9, 0.8, 0.1, 0.1, 0.0, 0.0])
    assert got == [(3.0, 7.0, 0.9, 3.0)]


def test_gap_longer_than_max_gap_splits_windows_and_finish_closes_the_last():
    t = HighlightTracker(2.0, quantile=0.5, min_history=1, max_gap=0)
    # step_seconds 2: step k starts at k (the caller's start times), ends at start + 2
    got = _run(t, [1.0, 0.0, 2.0, 3.0])
    # 0: 1.0 >= median(1.0) high; 1: 0.0 < 0.5 low -> closes [0, 2); 2: 2.0 >= 1.0 high; 3: 3.0 >= 1.5 high
    assert got == [(0.0, 2.0, 1.0, 0.0), (2.0, 5.0, 3.0, 3.0)]


def test_state_round_trip_continues_the_same_decisions():
    scores = [0.1, 0.2, 0.1, 0.9, 0.8, 0.1, 0.1, 0.0, 0.0]
    whole = _run(HighlightTracker(1.0, quantile=0.5, min_history=4), scores)
    a = HighlightTracker(1.0, quantile=0.5, min_history=4)
    first = [a.update(float(t), s) for t, s in enumerate(scores[:4])]
    b = HighlightTracker(1.0, quantile=0.5, min_history=4)
    b.load_state_dict(a.state_dict())
    rest = [b.update(float(t), s) for t, s in enumerate(scores[4:], start=4)] + [b.finish()]
    assert [dataclasses.astuple(h) for h in first + rest if h is not None] == whole


@pytest.mark.parametrize("quantile", [0.0, 1.0])
def test_extreme_quantiles(quantile):
    t = HighlightTracker(1.0, quantile=quantile, min_history=1, max_gap=0)
    got = _run(t, [0.3, 0.1, 0.2])
    # quantile 0: every step reaches the minimum so far -> one window; quantile 1: only new maxima
    assert got == ([(0.0, 3.0, 0.3, 0.0)] if quantile == 0.0 else [(0.0, 1.0, 0.3, 0.0)])
