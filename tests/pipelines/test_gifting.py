"""Gifting pipeline: KuaiLive folders train, samples see only the graph of their past, the segment
embedding is streamer-conditioned, and train -> score round-trips through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mm_live.cli import main
from mm_live.config import Config
from mm_live.data.gifting import DAY_MS, GiftSynthConfig, synthesize_gifting
from mm_live.data.synthetic import BASE_EPOCH_MS
from mm_live.graph import METAPATHS, GiftEvents, build_graphs, metapath_tables, u2a_graph
from mm_live.graph_pretrain import LightGCNConfig, pretrain_lightgcn
from mm_live.pipelines.gifting import RoomBatches, graph_config, window_start
from mm_live.tasks import get_task
from tiny_config import TINY  # tests/pipelines/tiny_config.py

GIFTING = {"d_model": 16, "neighbours": 4, "pretrain_epochs": 2, "segment_steps": 2}


def tiny_cfg(**over) -> Config:
    d = json.loads(json.dumps(TINY))
    d["gifting"] = dict(GIFTING)
    d["train"] |= {"batch_size": 16, "eval_every": 1000, "epochs": 1}
    return Config.from_dict(d).replace(**{"task.name": "gifting", **over})


def _csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture(scope="module")
def kuailive(tmp_path_factory) -> Path:
    """A KuaiLive-layout folder written here: 6 streamers live daily for 6 days, 40 users, titles."""
    root = tmp_path_factory.mktemp("kl")
    rng = np.random.default_rng(0)
    rooms, clicks, gifts = [], [], []
    for a in range(6):
        for day in range(6):
            live, start = 1000 + 10 * a + day, BASE_EPOCH_MS + day * DAY_MS + a * 3_600_000
            rooms.append((live, 500 + a, start, start + 3_600_000))
            for u in rng.choice(40, 12, replace=False):
                t, w = start + int(rng.integers(0, 3_000_000)), int(rng.integers(60_000, 600_000))
                clicks.append((100 + u, live, 500 + a, t, w))
                if rng.uniform() < 0.1 + 0.3 * (u % 6 == a):  # users u ≡ a (mod 6) like streamer a
                    gifts.append((100 + u, live, 500 + a, t + int(rng.integers(0, w)), int(rng.choice([1, 5, 52]))))
    gifts.append((177, rooms[-1][0], rooms[-1][1], rooms[-1][2] + 10, 9))  # a gift no view covers
    _csv(root / "room.csv", ["live_id", "streamer_id", "start_timestamp", "end_timestamp"], rooms)
    _csv(root / "click.csv", ["user_id", "live_id", "streamer_id", "timestamp", "watch_live_time"], clicks)
    _csv(root / "gift.csv", ["user_id", "live_id", "streamer_id", "timestamp", "gift_price"], gifts)
    np.save(root / "title_embeddings.npy", rng.normal(size=(len(rooms), 8)).astype(np.float32))
    return root


def _task_data(root: Path, cfg: Config):
    task = get_task("gifting")
    cfg = task.configure(cfg, root)
    torch.manual_seed(0)
    model = task.build_model(cfg)
    return task, cfg, model, task.data(root, cfg, model, progress=False)


def _lightgcn(root: Path):
    """LightGCN (2 epochs, dim 16, seed 0) on the gifts before the held-out period."""
    d = get_task("gifting").read(root)
    ev = GiftEvents.from_arrays(d.gift_user, d.gift_streamer, d.gift_time, d.gift_value,
                                n_users=len(d.user_ids), n_streamers=len(d.streamer_ids))
    return pretrain_lightgcn(u2a_graph(ev.before(d.split_ms)), LightGCNConfig(dim=16, epochs=2, seed=0), progress=False).embeddings


def test_kuailive_folder_to_graph_to_one_training_step(kuailive):
    task, cfg, model, td = _task_data(kuailive, tiny_cfg())
    emb = _lightgcn(kuailive)  # the ranker starts from the graph pre-training on the training period
    assert torch.equal(model.user.weight, emb.user) and torch.equal(model.streamer.weight, emb.streamer)
    assert cfg.task.route == "features" and cfg.task.feature_dims == [8, 0]
    assert (cfg.gifting.n_users, cfg.gifting.n_streamers) == (41, 6)  # user 177 only gifted
    batch = next(td.train.epoch(0, 0))
    assert batch.features.shape == (16, 8) and set(batch.neighbours) == set(METAPATHS)
    assert all(v.shape == (16, 4) for v in batch.neighbours.values())
    out = model.training_step(batch)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    assert (batch.neighbours["UA"] >= 0).any()
    for p in (model.user.weight, model.streamer.weight, model.title[1].weight, model.attention.query["UA"].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    metrics = td.evaluate(model)
    assert {"auc", "gauc", "uauc", "sparse_auc", "sparse_gauc", "sparse_uauc"} <= set(metrics)
    assert 0.0 <= metrics["auc"] <= 1.0
    # the run's "now" tables hold every gift; the vocabularies are the raw ids
    assert model.user_ids.tolist()[:2] == [100, 101] and model.streamer_ids.tolist() == list(range(500, 506))
    assert (model.table_UA >= 0).any()


def test_samples_see_only_tables_built_before_their_window(kuailive):
    """For every sample, each metapath row equals the table built from the gifts strictly before the
    start of the sample's window; and later gifts (its own label included) are never in U->A."""
    task, cfg, model, td = _task_data(kuailive, tiny_cfg())
    d = task.read(kuailive)
    events = GiftEvents.from_arrays(d.gift_user, d.gift_streamer, d.gift_time, d.gift_value,
                                    n_users=len(d.user_ids), n_streamers=len(d.streamer_ids))
    samples = td.train.collate
    rows = np.arange(len(d.label))
    batch = samples(rows)
    starts = window_start(cfg, d.time)
    assert len(np.unique(starts)) == 6
    seen_later = 0
    for start in np.unique(starts):
        ref = metapath_tables(build_graphs(events, graph_config(cfg), cutoff_ms=int(start)), graph_config(cfg))
        sel = np.flatnonzero(starts == start)
        for mp in METAPATHS:
            nodes = d.user[sel] if mp.startswith("U") else d.streamer[sel]
            assert np.array_equal(batch.neighbours[mp][sel].numpy(), ref.ids[mp][nodes]), (mp, start)
        for i in sel:
            ua = set(batch.neighbours["UA"][i].tolist()) - {-1}
            before = set(d.gift_streamer[(d.gift_user == d.user[i]) & (d.gift_time < start)].tolist())
            later = set(d.gift_streamer[(d.gift_user == d.user[i]) & (d.gift_time >= start)].tolist())
            assert ua <= before
            seen_later += len(later - before) > 0
    assert seen_later > 20  # many samples' users gift a new streamer later: the check can fail


def test_room_batches_cover_each_row_once_in_a_seeded_order():
    rooms = np.repeat(np.arange(10), 7)
    rows = np.arange(60)  # the last room's views are held out
    src = RoomBatches(rows, rooms, batch_size=14, collate=lambda r: r)
    epoch = list(src.epoch(3, seed=1))
    assert len(epoch) == len(src) == 5 and all(len(np.unique(rooms[b])) <= 2 for b in epoch)
    assert sorted(np.concatenate(epoch).tolist()) == rows.tolist()
    assert [b.tolist() for b in src.epoch(3, seed=1, skip=2)] == [b.tolist() for b in epoch[2:]]
    assert [b.tolist() for b in src.epoch(4, seed=1)] != [b.tolist() for b in epoch]


def test_ablation_switches_drop_their_parts(kuailive):
    _, _, model, td = _task_data(kuailive, tiny_cfg(**{"gifting.expansion": False, "gifting.content": False,
                                                        "gifting.pretrain_epochs": 0}))
    assert model.attention is None and model.title is None and model.encoder is None
    batch = next(td.train.epoch(0, 0))
    assert batch.neighbours == {} and batch.features is None
    assert torch.isfinite(model.training_step(batch).loss)
    assert not torch.allclose(model.user.weight, _lightgcn(kuailive).user)  # not pre-trained
    # a new user/streamer (-1) gets the mean embedding
    assert torch.allclose(model.node("user", torch.tensor([-1]))[0], model.user.weight.mean(0))


@pytest.fixture(scope="module")
def clip_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gift") / "ds"
    synthesize_gifting(out, GiftSynthConfig(streamers=2, rooms_per_streamer=2, users=24, groups=2, days=2, seconds=6.0,
                                            views_per_room=12, seed=4))
    return out


def test_segment_embedding_is_streamer_conditioned_and_causal(clip_data):
    task, cfg, model, td = _task_data(clip_data, tiny_cfg())
    assert cfg.task.route == "clips" and cfg.fusion.streamer_dim == 16
    steps, d = td.train.collate.steps, task.read(clip_data)
    key_step = steps.keys & 0xFFFFFFFF
    # a sample's segment is its own step and the one before (clamped at the clip start), nothing later
    assert np.array_equal(key_step[steps.index[:, 1]], steps.step)
    assert np.array_equal(key_step[steps.index[:, 0]], np.maximum(steps.step - 1, 0))
    assert (steps.step == (d.time - d.room_start[d.room]) // 1000).all()
    model.eval()
    with torch.no_grad():
        inputs = steps.bank[:3]
        a = model.step_embeddings(inputs, torch.zeros(3, dtype=torch.long))
        b = model.step_embeddings(inputs, torch.ones(3, dtype=torch.long))
    assert a.shape == (3, 16) and not torch.allclose(a, b, atol=1e-4)


def test_train_and_score_round_trip_through_the_cli(clip_data, kuailive, tmp_path, capsys):
    cfg_path = tmp_path / "tiny.json"
    cfg_path.write_text(json.dumps(tiny_cfg().to_dict()))
    run = tmp_path / "run"
    assert main(["train", "gifting", "--data", str(clip_data), "--out", str(run), "--config", str(cfg_path),
                 "--epochs", "1", "--seed", "1"]) == 0
    saved = json.loads((run / "best" / "config.json").read_text())
    assert saved["task"]["name"] == "gifting" and saved["gifting"]["n_users"] > 0
    clip = clip_data / "synth" / "streams" / "s0000.mp4"
    comments = clip_data / "synth" / "streams" / "s0000.comments.jsonl"
    user = json.loads((clip_data / "truth.json").read_text())["users"]
    known_user = next(iter(user))
    base = ["score", str(clip), "--comments", str(comments), "--checkpoint", str(run)]
    capsys.readouterr()
    assert main([*base, "--user", known_user, "--streamer", "50000", "--out", str(tmp_path / "s")]) == 0
    data = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert data["task"] == "gifting" and data["score"] == "P(gift)" and len(data["scores"]) == 6
    assert all(0.0 < s < 1.0 for s in data["scores"]) and data["user"] == {"id": known_user, "cold_start": False}
    assert (tmp_path / "s" / "scores.csv").is_file() and (tmp_path / "s" / "highlights.png").is_file()
    # an unknown user is refused in one line that says what cold start would use; "new" asks for it
    capsys.readouterr()
    assert main([*base, "--user", "999999", "--streamer", "50000", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "user 999999 is not among the" in err and "--user new" in err and "mean user embedding" in err
    assert len(err.splitlines()) == 1
    assert main([*base, "--user", known_user, "--streamer", "123", "--out", str(tmp_path / "x")]) == 2
    assert "streamer 123 is not among the 2 streamers" in capsys.readouterr().err
    assert main([*base, "--user", "new", "--streamer", "new", "--out", str(tmp_path / "n")]) == 0
    cold = json.loads((tmp_path / "n" / "scores.json").read_text())
    assert cold["user"]["cold_start"] and cold["streamer"]["cold_start"] and cold["scores"] != data["scores"]
    assert main([*base, "--user", known_user, "--out", str(tmp_path / "y")]) == 2
    assert "pass --streamer ID" in capsys.readouterr().err
    # a run trained on title embeddings cannot score a clip
    feat = tmp_path / "feat"
    assert main(["train", "gifting", "--data", str(kuailive), "--out", str(feat), "--config", str(cfg_path), "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["score", str(clip), "--checkpoint", str(feat), "--user", "100", "--streamer", "500", "--out", str(tmp_path / "z")]) == 2
    assert "trained on title embeddings" in capsys.readouterr().err


def test_scoring_a_clip_gives_the_training_path_logits(clip_data):
    """P(gift) at step s of a scored clip equals the model's output for a view at step s of that room
    (with the run's "now" neighbour tables): scoring and training prepare the same segment."""
    from mm_live.pipelines.gifting import _score_steps
    from mm_live.scoring import ClipSource

    task, cfg, model, td = _task_data(clip_data, tiny_cfg())
    d, samples = task.read(clip_data), td.train.collate
    rows = np.flatnonzero(d.room == 0)[:5]
    batch = samples(rows)
    for mp in METAPATHS:
        node = d.user[rows] if mp.startswith("U") else d.streamer[rows]
        batch.neighbours[mp] = getattr(model, f"table_{mp}")[torch.from_numpy(node)].long()
    model.eval()
    with torch.no_grad():
        expected = torch.sigmoid(model(batch)).numpy()
    source = ClipSource.open(clip_data / "synth" / "streams" / "s0000.mp4", clip_data / "synth" / "streams" / "s0000.comments.jsonl")
    got = []
    with torch.inference_mode():
        for i in rows:
            p, _, _ = _score_steps(model, cfg, source, int(d.user[i]), int(d.streamer[i]), torch.device("cpu"))
            got.append(p[samples.steps.step[i]])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
