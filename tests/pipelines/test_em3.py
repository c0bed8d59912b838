"""EM3 ranking on tiny configs: end-to-end gradients, the CIC loss by hand, the cold-start split,
the KuaiLive title route, and the CLI train + score round trip."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mm_live import runs
from mm_live.cli import main
from mm_live.config import Config
from mm_live.data.kuailive import REQUIRED
from mm_live.data.rooms import RoomsConfig, read_clicks, synthesize_rooms
from mm_live.errors import ConfigError
from mm_live.pipelines.em3 import (EM3Task, TargetAttention, build_model, cic_loss, content_source, make_batch,
                                   load_model, room_buckets, score_clip)
from tiny_config import TINY  # tests/pipelines/tiny_config.py

EM3_TINY = {**TINY, "media": {"frame_size": 32},
            "em3": {"d_id": 8, "d_hidden": 16, "history_len": 6, "segment_steps": 2, "n_items": 512},
            "train": {**TINY["train"], "batch_size": 32, "epochs": 1, "eval_every": 100}}
ROOMS = RoomsConfig(rooms=6, users=24, groups=2, impressions_per_user=12, seconds=5.0, width=32, height=32, fps=2,
                    cold_fraction=0.34, seed=2)


def tiny_cfg(**over) -> Config:
    return Config.from_dict(EM3_TINY).replace(**over)


@pytest.fixture(scope="module")
def rooms(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("em3") / "rooms"
    synthesize_rooms(out, ROOMS)
    return out


def _batch(rooms: Path, cfg: Config, model, n: int = 16):
    clicks = read_clicks(rooms, negatives=cfg.em3.negatives)
    buckets = room_buckets(clicks.live_ids, clicks.known, cfg.em3.n_items)
    rows = np.flatnonzero(clicks.train)[-n:]  # late rows: long histories
    return make_batch(rows, clicks, cfg, buckets, content_source(clicks, cfg, model)), clicks


def test_click_loss_trains_lora_and_qformer_and_leaves_the_frozen_backbone(rooms):
    torch.manual_seed(0)
    cfg = EM3Task().configure(tiny_cfg(**{"em3.cic_weight": 0.0, "em3.id_dropout": 0.0}), rooms)
    model = build_model(cfg).train()
    batch, _ = _batch(rooms, cfg, model)
    assert (batch.history >= 0).any()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert any(".base_layer." in n for n in frozen) and any(n.startswith("content.encoder.comment.") for n in frozen)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(2):
        opt.zero_grad()
        model.training_step(batch).loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        for prefix in ("content.encoder.frame.backbone", "content.encoder.comment.backbone"):
            lora = {n: g for n, g in grads.items() if n.startswith(prefix) and "lora_B" in n}
            assert lora and any(g is not None and g.abs().sum() > 0 for g in lora.values()), prefix
        for name in ("content.encoder.fusion.queries.weight", "content.encoder.fusion.head.weight",
                     "content.encoder.fusion.blocks.0.cross_attn.in_proj_weight"):
            assert grads[name] is not None and grads[name].abs().sum() > 0, name
        assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
        opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def test_history_items_are_shared_and_can_skip_autograd(rooms):
    torch.manual_seed(0)
    cfg = EM3Task().configure(tiny_cfg(**{"em3.history_grad": False}), rooms)
    model = build_model(cfg).train()
    batch, clicks = _batch(rooms, cfg, model, n=2)
    u = len(batch.inputs) // cfg.em3.segment_steps
    named = set(batch.target.tolist()) | set(batch.history[batch.history >= 0].tolist())
    assert named == set(range(u)) and u <= len(clicks.live_ids)  # each room once, however often named
    assert set(batch.target.tolist()) == set(range(batch.n_grad))
    assert batch.n_grad < u  # this batch has history-only rooms
    c = model.encode_rooms(batch)
    grad = torch.autograd.grad(c[: batch.n_grad].sum() + c[batch.n_grad :].sum(), model.content.encoder.fusion.head.weight)[0]
    only_targets = torch.autograd.grad(model.encode_rooms(batch)[: batch.n_grad].sum(), model.content.encoder.fusion.head.weight)[0]
    torch.testing.assert_close(grad, only_targets)  # the history-only rooms add no gradient


def _hand_cic(c, e, items, tau):
    """L = ½[CE(S, I) + CE(Sᵀ, I)] written out with loops; entries of the same item off the diagonal dropped."""
    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    c, e = [unit(v) for v in c], [unit(v) for v in e]
    b = len(c)
    s = [[sum(x * y for x, y in zip(c[i], e[j])) / tau for j in range(b)] for i in range(b)]
    keep = [[i == j or items[i] != items[j] for j in range(b)] for i in range(b)]
    rows = [-s[i][i] + math.log(sum(math.exp(s[i][j]) for j in range(b) if keep[i][j])) for i in range(b)]
    cols = [-s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(b) if keep[i][j])) for j in range(b)]
    return 0.5 * (sum(rows) / b + sum(cols) / b)


def test_cic_matches_a_hand_computed_3x3_example():
    c = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    e = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    got = cic_loss(torch.tensor(c), torch.tensor(e), torch.tensor([0, 1, 2]), 0.1)
    assert float(got) == pytest.approx(_hand_cic(c, e, [0, 1, 2], 0.1), rel=1e-5)
    assert float(got) == pytest.approx(2.02122, abs=1e-4)  # the same value, fixed: catches a change of formula
    # Symmetric: swapping the roles of content and IDs transposes S and leaves the loss unchanged.
    swapped = cic_loss(torch.tensor(e), torch.tensor(c), torch.tensor([0, 1, 2]), 0.1)
    torch.testing.assert_close(got, swapped)
    learnable = torch.tensor(math.log(0.1), requires_grad=True)
    cic_loss(torch.tensor(c), torch.tensor(e), torch.tensor([0, 1, 2]), learnable.exp()).backward()
    assert learnable.grad is not None and learnable.grad != 0


def test_cic_masks_duplicates_of_the_same_item():
    c = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]
    e = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    items = [7, 7, 3]
    got = float(cic_loss(torch.tensor(c), torch.tensor(e), torch.tensor(items), 0.5))
    assert got == pytest.approx(_hand_cic(c, e, items, 0.5), rel=1e-5)
    unmasked = float(cic_loss(torch.tensor(c), torch.tensor(e), torch.tensor([0, 1, 2]), 0.5))
    assert unmasked == pytest.approx(_hand_cic(c, e, [0, 1, 2], 0.5), rel=1e-5)
    assert got < unmasked - 0.3  # the duplicate no longer counts as a negative


def test_empty_history_gives_a_finite_interest():
    att = TargetAttention(4, 8)
    h, t = torch.randn(2, 3, 4), torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[False] * 3, [True, False, True]])
    out = att(h, mask, t)
    assert torch.equal(out[0], torch.zeros(4)) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(t.grad).all()


def test_cold_rooms_never_reach_a_training_batch(rooms):
    cfg = EM3Task().configure(tiny_cfg(**{"em3.item": "id"}), rooms)
    model = build_model(cfg)
    td = EM3Task().data(rooms, cfg, model, progress=False)
    clicks = read_clicks(rooms, negatives=cfg.em3.negatives)
    buckets = room_buckets(clicks.live_ids, clicks.known, cfg.em3.n_items)
    cold_rooms = set(clicks.room[clicks.cold].tolist())
    assert cold_rooms and not buckets[list(cold_rooms)].any()  # no ID embedding for a cold room
    rows = np.asarray(td.train.examples)  # what the trainer is fed
    assert len(rows) and not cold_rooms & set(clicks.room[rows].tolist())
    hist = clicks.history(rows, cfg.em3.history_len)
    assert (hist >= 0).any() and not cold_rooms & set(hist[hist >= 0].tolist())
    assert all(int(b) > 0 for batch in td.train.epoch(0, seed=0) for b in batch.target_id)  # every training ID is known
    metrics = td.evaluate(model)
    assert set(metrics) == {"auc", "gauc", "cold_auc", "cold_gauc"} and 0 <= metrics["cold_auc"] <= 1


def _kuailive_release(root: Path, seed: int = 0) -> Path:
    """A KuaiLive-shaped folder as the release ships it: no clips, no negative.csv, rooms point into the
    title matrix by live_name_id."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    n_rooms, base = 12, 1_746_057_600_000
    rows = {name: [] for name in REQUIRED}
    rows["room"] = [(900 + r, 50 + r % 3, 1, "chat", base, base + 10 * 86_400_000, 11 - r) for r in range(n_rooms)]
    for u in range(20):
        for t in np.sort(rng.integers(0, 10 * 86_400_000, size=8)):
            rows["click"].append((u, 900 + int(rng.integers(n_rooms)), 50, base + int(t), 5000))
    for name, cols in REQUIRED.items():
        header = cols + (("live_name_id",) if name == "room" else ())
        with open(root / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows[name] if name in ("room", "click") else [])
    np.save(root / "title_embeddings_pca128.npy", rng.standard_normal((n_rooms, 16)).astype(np.float32))
    return root


def test_kuailive_titles_route_trains_a_step_with_a_finite_loss(tmp_path):
    data = _kuailive_release(tmp_path / "KuaiLive")
    cfg = EM3Task().configure(tiny_cfg(), data)
    assert cfg.task.route == "features" and cfg.task.feature_dims == [16, 0]
    res = runs.train("em3", data, tmp_path / "run", config=tiny_cfg(), progress=False, max_steps=1)
    assert res.steps == 1
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(log[0]["train/loss"]) and "train/cic" in log[0]
    assert 0 <= log[-1]["eval"]["auc"] <= 1
    with pytest.raises(ConfigError, match="title embeddings"):
        load_model(tmp_path / "run")  # no encoders to score a clip with


def test_cli_train_and_score_round_trip(rooms, tmp_path):
    cfg_path = tmp_path / "tiny.json"
    cfg_path.write_text(json.dumps(EM3_TINY))
    run = tmp_path / "run"
    assert main(["train", "em3", "--data", str(rooms), "--out", str(run), "--config", str(cfg_path), "--seed", "1"]) == 0
    saved = json.loads((run / "best" / "config.json").read_text())
    assert saved["task"]["name"] == "em3" and saved["task"]["route"] == "clips" and saved["em3"]["data"] == str(rooms.resolve())
    clip = rooms / "synth" / "streams" / "s0000.mp4"
    user = str(read_clicks(rooms).user[0])
    results = {}
    for extra, name in (([], "anyone"), (["--user", user], "user")):
        out = tmp_path / name
        assert main(["score", str(clip), "--checkpoint", str(run), "--out", str(out), *extra]) == 0
        res = results[name] = json.loads((out / "scores.json").read_text())
        assert len(res["embedding"]) == Config.from_dict(EM3_TINY).fusion.d_emb
        assert math.isclose(float(np.linalg.norm(res["embedding"])), 1.0, rel_tol=1e-4)
        assert len(res["scores"]) == 5 and all(0 < p < 1 for p in res["scores"]) and 0 < res["p_click"] < 1
        assert res["task"] == "em3"
    assert results["anyone"]["history_clicks"] == 0 and 0 < results["user"]["history_clicks"] <= 6
    assert results["user"]["embedding"] == results["anyone"]["embedding"]  # content does not depend on the user
    assert results["user"]["scores"] != results["anyone"]["scores"]  # the user's history changes P(click)
    with pytest.raises(ConfigError, match="--user 999999"):
        score_clip(clip, run, user_id="999999")
