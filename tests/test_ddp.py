"""torchrun on the CPU: every training pipeline under ``--nproc_per_node=2`` keeps identical parameters
on both ranks and computes what one process computes on the same global batches.

One ``torchrun`` launch (tests/_ddp_worker.py) trains every case through ``mm_live.runs.train``;
the one-process references run here. A 2-rank run with ``train.batch_size = B`` must equal, to float
tolerance, one process with ``batch_size = B/2`` and ``grad_accum × 2`` (the same micro-batches,
accumulated: exact for any loss, in-batch negatives and batch norm included), and one process with
``batch_size = B`` when the loss is a plain mean over examples (gifting's BCE without dropout).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mm_live import runs
from mm_live.config import Config
from mm_live.data.gifting import GiftSynthConfig, synthesize_gifting
from mm_live.data.rooms import RoomsConfig, synthesize_rooms
from mm_live.data.synthetic import SynthConfig, synthesize
from mm_live.data.windows import clip_collection
from mm_live.errors import ConfigError
from mm_live.export import export_index
from mm_live.pipelines.gifting import RoomBatches
from mm_live.tasks import get_task
from mm_live.training import LoaderBatches, Shard, ShuffledBatches, Trainer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "pipelines"))
from test_runs import _klive_log  # noqa: E402
from tiny_config import TINY  # noqa: E402

TOL = 1e-5


def _cfg(task: str, **over) -> dict:
    cfg = json.loads(json.dumps(TINY))
    cfg["task"] = {"name": task}
    cfg["train"] |= {"batch_size": 4, "epochs": 1, "eval_every": 2, "threads": 1}
    cfg["highlight"]["window_steps"] = 8
    for key, value in over.items():
        section, name = key.split(".")
        cfg.setdefault(section, {})[name] = value
    return cfg


def _plan(tmp: Path) -> list[dict]:
    log = _klive_log(tmp / "0_test_score_infer_output.log", streams=8, steps=24)
    clips = synthesize(tmp / "clips", SynthConfig(streams=4, seconds=6, width=64, height=48, seed=1)).manifest
    gifts = tmp / "gifts"
    synthesize_gifting(gifts, GiftSynthConfig(streamers=2, rooms_per_streamer=2, users=24, groups=2, days=2, seconds=5.0,
                                              views_per_room=12, width=32, height=32, seed=4))
    rooms = tmp / "rooms"
    synthesize_rooms(rooms, RoomsConfig(rooms=6, users=24, groups=2, impressions_per_user=12, seconds=5.0, width=32,
                                        height=32, fps=2, cold_fraction=0.34, seed=2))
    # one global batch per epoch (every training view, split 2 x 19): no short last batch, whose
    # uneven split would weight a plain mean differently from one process
    views = int(get_task("gifting").read(gifts / "kuailive").train.sum())
    assert views % 2 == 0, views
    gifting = {"gifting.d_model": 16, "gifting.neighbours": 4, "gifting.pretrain_epochs": 1, "gifting.dropout": 0.0,
               "train.batch_size": views, "train.epochs": 3}
    em3 = {"media.frame_size": 32, "em3.d_id": 8, "em3.d_hidden": 16, "em3.history_len": 6, "em3.segment_steps": 2,
           "em3.n_items": 512, "train.batch_size": 16}
    return [
        {"name": "highlight-features", "task": "highlight", "data": str(log), "config": _cfg("highlight", **{"train.epochs": 2}),
         "options": {"dataset": "klive"}},
        {"name": "highlight-features-resumed", "task": "highlight", "data": str(log),
         "config": _cfg("highlight", **{"train.epochs": 2}), "options": {"dataset": "klive"}, "stop_after": 3},
        {"name": "highlight-clips", "task": "highlight", "data": str(clips),
         "config": _cfg("highlight", **{"media.frame_size": 32, "train.batch_size": 2, "highlight.window_steps": 3})},
        {"name": "gifting-titles", "task": "gifting", "data": str(gifts / "kuailive"), "config": _cfg("gifting", **gifting)},
        {"name": "em3-clips", "task": "em3", "data": str(rooms), "config": _cfg("em3", **em3)},
        {"name": "index", "export": str(tmp / "highlight-clips"), "data": str(clips),
         "options": {"segment_seconds": 2.0, "nbits": 2}},
    ]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    plan = _plan(tmp)
    for case in plan:
        case["out"] = str(tmp / case["name"])
    (tmp / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(HERE / "_ddp_worker.py"), str(tmp / "plan.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:  # a hung collective must not outlive the test: end torchrun and its workers together
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-4000:]
    return {case["name"]: case for case in plan}


def _reference(case: dict, out: Path, **over) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Train ``case`` in this process (the one-process reference) -> (parameters, train losses)."""
    kept = {}

    class Keep(Trainer):
        def fit(self, *a, **k):
            kept["model"] = self.model
            return super().fit(*a, **k)

    cfg = Config.from_dict(case["config"]).replace(**over)
    real, runs.Trainer = runs.Trainer, Keep
    try:
        runs.train(case["task"], case["data"], out, config=cfg, device="cpu", progress=False, **case.get("options", {}))
    finally:
        runs.Trainer = real
    return {k: v.detach() for k, v in kept["model"].named_parameters()}, _losses(out)


def _losses(run: Path | str) -> list[float]:
    return [r["train/loss"] for r in map(json.loads, open(Path(run) / "metrics.jsonl")) if "lr" in r]


def _params(case: dict, rank: int) -> dict[str, torch.Tensor]:
    return load_file(str(Path(case["out"]) / f"params_rank{rank}.safetensors"))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=TOL, rtol=TOL, msg=k)


@pytest.mark.parametrize("name", ["highlight-features", "highlight-features-resumed", "highlight-clips", "gifting-titles", "em3-clips"])
def test_both_ranks_hold_identical_parameters(ddp_runs, name):
    a, b = _params(ddp_runs[name], 0), _params(ddp_runs[name], 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (Path(ddp_runs[name]["out"]) / "best" / "params_rank1.safetensors").exists()


@pytest.mark.parametrize("name", ["highlight-features", "highlight-clips", "gifting-titles", "em3-clips"])
def test_two_ranks_equal_one_process_accumulating_the_same_micro_batches(ddp_runs, name, tmp_path):
    case = ddp_runs[name]
    tc = Config.from_dict(case["config"]).train
    params, losses = _reference(case, tmp_path / "ref", **{"train.batch_size": tc.batch_size // 2,
                                                            "train.grad_accum": 2 * tc.grad_accum})
    _assert_close(_params(case, 0), params)
    np.testing.assert_allclose(_losses(case["out"]), losses, atol=TOL, rtol=TOL)
    assert len(losses) >= 3
    # what rank 0 wrote is the run: its last checkpoint holds these weights
    last = load_file(str(Path(case["out"]) / "last" / "model.safetensors"))
    _assert_close({k: last[k] for k in params}, params)


def test_a_plain_mean_loss_equals_one_process_with_the_same_global_batch(ddp_runs, tmp_path):
    case = ddp_runs["gifting-titles"]
    params, losses = _reference(case, tmp_path / "ref")
    _assert_close(_params(case, 0), params)
    np.testing.assert_allclose(_losses(case["out"]), losses, atol=TOL, rtol=TOL)


def test_a_two_rank_run_stopped_and_resumed_ends_like_the_uninterrupted_one(ddp_runs):
    whole, resumed = ddp_runs["highlight-features"], ddp_runs["highlight-features-resumed"]
    _assert_close(_params(resumed, 0), _params(whole, 0))
    assert _losses(resumed["out"]) == _losses(whole["out"])


def test_two_rank_export_writes_the_index_one_process_writes(ddp_runs, tmp_path):
    case = ddp_runs["index"]
    out = Path(case["out"])
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".index")) == []  # staging removed
    one = export_index(case["export"], clip_collection(case["data"]), tmp_path / "one", device="cpu", progress=False,
                       **case["options"])
    assert json.loads((out / "index.json").read_text()) == json.loads((one / "index.json").read_text())
    assert (out / "index.faiss").read_bytes() == (one / "index.faiss").read_bytes()


def test_each_rank_takes_a_contiguous_slice_of_every_global_batch():
    src = ShuffledBatches(list(range(10)), 4, lambda xs: xs)
    whole = [b for b in src.epoch(0, seed=3)]
    shards = [list(src.sharded(r, 2).epoch(0, seed=3)) for r in range(2)]
    for g, batch in enumerate(whole[:2]):
        assert shards[0][g].batch + shards[1][g].batch == batch and shards[0][g].weight == shards[1][g].weight == 1
    # the last global batch has 2 examples: rank 0 takes both, rank 1 joins with weight 0
    assert shards[0][2] == Shard(whole[2], 1.0) and shards[1][2].weight == 0.0
    assert [s.batch for s in src.sharded(1, 2).epoch(0, seed=3, skip=1)] == [s.batch for s in shards[1][1:]]
    with pytest.raises(ConfigError, match="batch_size=4 does not split over 3 processes"):
        LoaderBatches(list(range(10)), 4, list).sharded(0, 3)
    # gifting's room batches (all views of k rooms, of varying size): equal slices, in order
    rooms = np.repeat(np.arange(6), [3, 1, 4, 2, 5, 1])
    src = RoomBatches(np.arange(len(rooms)), rooms, batch_size=5, collate=lambda r: r.tolist())
    for whole, a, b in zip(src.epoch(1, seed=2), src.sharded(0, 2).epoch(1, seed=2), src.sharded(1, 2).epoch(1, seed=2)):
        assert a.batch + b.batch == whole and len(a.batch) - len(b.batch) in (0, 1)
