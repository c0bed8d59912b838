"""EM3 room-click data: the synthetic rooms' truth explains their clicks, the cold-start split leaks
nothing into training, histories look only backwards, and a KuaiLive folder without negatives works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mm_live.data.kuailive import read_kuailive
from mm_live.data.rooms import RoomsConfig, click_probability, read_clicks, synthesize_rooms
from mm_live.errors import ConfigError, DataError
from mm_live.metrics import auc

SMALL = RoomsConfig(rooms=8, users=40, groups=2, impressions_per_user=20, seconds=5.0, width=32, height=32, fps=2, seed=5)


@pytest.fixture(scope="module")
def rooms(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rooms") / "data"
    synthesize_rooms(out, SMALL)
    return out


def test_layout_is_a_kuailive_folder_with_clips(rooms):
    kl = read_kuailive(rooms / "kuailive")
    assert len(kl.room) == 8 and kl.title_embeddings.shape == (8, SMALL.title_dim)
    data = read_clicks(rooms)
    assert data.clips is not None and all(c is not None and c[0].is_file() for c in data.clips)
    truth = json.loads((rooms / "truth.json").read_text())
    assert truth["impressions"] == len(data.user) == 40 * 20
    assert truth["clicks"] == int(data.label.sum())


def test_truth_explains_the_clicks(rooms):
    """Recomputing P(click) from truth.json ranks the logged clicks well; the content term alone too."""
    truth = json.loads((rooms / "truth.json").read_text())
    data = read_clicks(rooms)
    by_live = {r["live_id"]: r for r in truth["rooms"]}
    live = data.live_ids[data.room]
    hue = np.array([by_live[int(v)]["hue"] for v in live])
    pop = np.array([by_live[int(v)]["pop"] for v in live])
    groups = np.array([truth["groups"]["users"][str(int(u))] for u in data.user])
    dirs = np.array(truth["groups"]["directions"])
    p = click_probability(hue, pop, groups, dirs, SMALL, truth["hue_scale"])
    assert auc(data.label, p) > 0.75
    content_only = click_probability(hue, 0 * pop, groups, dirs, SMALL, truth["hue_scale"])
    assert auc(data.label, content_only) > 0.6


def test_cold_rooms_never_reach_training(rooms):
    data = read_clicks(rooms)
    assert data.cold.any() and (~data.train & ~data.cold).any()
    cold_rooms = set(data.room[data.cold].tolist())
    assert not cold_rooms & set(data.room[data.train].tolist())
    hist = data.history(np.flatnonzero(data.train), 50)
    assert not cold_rooms & set(hist[hist >= 0].tolist())
    assert not data.known[list(cold_rooms)].any()
    truth = json.loads((rooms / "truth.json").read_text())
    assert cold_rooms == {i for i, r in enumerate(truth["rooms"]) if r["cold"]} & set(data.room.tolist())


def test_history_is_the_latest_earlier_clicks(rooms):
    data = read_clicks(rooms)
    rows = np.flatnonzero(~data.train)[:30]
    hist = data.history(rows, 3)
    for row, h in zip(rows, hist):
        mine = (data.user == data.user[row]) & (data.time < data.time[row]) & (data.label > 0) & data.known[data.room]
        expect = data.room[mine][-3:]
        got = h[h >= 0]
        assert (h[: 3 - len(got)] == -1).all()
        np.testing.assert_array_equal(got, expect)


def test_negatives_are_drawn_when_the_release_has_none(rooms, tmp_path):
    src = rooms / "kuailive"
    dst = tmp_path / "kl"
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "negative.csv":
            (dst / f.name).write_bytes(f.read_bytes())
    data = read_clicks(dst, negatives=3, seed=1)
    n_click = int(data.label.sum())
    assert len(data.label) == 4 * n_click
    kl = read_kuailive(dst)
    start = dict(zip(kl.room["live_id"], kl.room["start_timestamp"]))
    neg = data.label == 0
    starts = np.array([start[v] for v in data.live_ids[data.room[neg]]])
    assert (starts <= data.time[neg]).all()  # drawn among rooms already live
    with pytest.raises(DataError, match="em3.negatives"):
        read_clicks(dst, negatives=0)


def test_bad_settings_and_folders_fail_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cold_fraction"):
        synthesize_rooms(tmp_path / "x", RoomsConfig(rooms=4, cold_fraction=0.01))
    with pytest.raises(DataError, match="not found"):
        read_clicks(tmp_path / "missing")
