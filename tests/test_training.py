import json

import pytest
import torch
from torch import nn

from mm_live.checkpoint import load_checkpoint, load_weights, save_checkpoint
from mm_live.config import Config
from mm_live.errors import CheckpointError
from mm_live.training import ShuffledBatches, StepOutput, Trainer, warmup_cosine


class Toy(nn.Module):
    """Linear regression with dropout, so the global RNG matters for exact resume."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))

    def training_step(self, batch):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
        return StepOutput(loss, {"mse": float(loss.detach())})


def _data(n=40):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.01 * torch.randn(n, generator=g)
    return [(x[i], y[i]) for i in range(n)]


def _collate(items):
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def _cfg(**train):
    base = {"epochs": 4, "batch_size": 8, "lr": 0.05, "warmup_steps": 2, "eval_every": 3, "grad_accum": 2, "seed": 7}
    return Config.from_dict({"train": {**base, **train}})


def _trainer(out, cfg=None):
    torch.manual_seed(0)
    model = Toy()
    data = _data()
    src = ShuffledBatches(data, 8, _collate)
    evalx, evaly = _collate(data)

    @torch.no_grad()
    def evaluate(m):
        return {"mse": float(nn.functional.mse_loss(m.net(evalx).squeeze(-1), evaly))}

    return model, Trainer(model, cfg or _cfg(), out, kind="toy", train_data=src, evaluate=evaluate, metric="mse", mode="min", progress=False)


def test_trains_and_writes_best_last_and_log(tmp_path):
    model, tr = _trainer(tmp_path / "run")
    before = tr.evaluate(model)["mse"]
    res = tr.fit()
    assert res.steps == tr.total_steps == 4 * 3  # 5 batches / accum 2 -> 3 optimizer steps per epoch
    assert res.best_metric < 0.5 * before
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "lr" in r] == list(range(1, 13))
    assert [r["step"] for r in rows if "eval" in r] == [3, 6, 9, 12]
    best = load_checkpoint(tmp_path / "run" / "best", kind="toy")
    assert best.meta["step"] == res.best_step and best.config == tr.config
    assert load_checkpoint(tmp_path / "run" / "last", kind="toy", with_state=True).trainer_state["step"] == 12


def test_exact_resume_matches_uninterrupted_run(tmp_path):
    full, tr = _trainer(tmp_path / "full")
    tr.fit()
    _, tr1 = _trainer(tmp_path / "cut")
    tr1.fit(stop_after=4)  # stops mid-epoch 1 (steps 4 of 12), after a grad-accum boundary
    resumed, tr2 = _trainer(tmp_path / "cut")
    res = tr2.fit(resume=True)
    assert res.steps == 12
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    full_log = [json.loads(ln) for ln in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    cut_log = [json.loads(ln) for ln in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    # the interrupted run evaluated once more (at its stop); training rows are identical
    assert [r["train/loss"] for r in full_log if "lr" in r] == [r["train/loss"] for r in cut_log if "lr" in r]


def test_resume_with_other_config_is_refused(tmp_path):
    _, tr = _trainer(tmp_path / "run")
    tr.fit(stop_after=3)
    _, tr2 = _trainer(tmp_path / "run", cfg=_cfg(lr=0.01))
    with pytest.raises(CheckpointError, match=r"other settings \(train.lr\)"):
        tr2.fit(resume=True)


def test_warmup_cosine():
    assert warmup_cosine(0, warmup=3, total=10) == pytest.approx(0.25)
    assert warmup_cosine(3, warmup=3, total=10) == pytest.approx(1.0)
    assert warmup_cosine(10, warmup=3, total=10) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(0, warmup=0, total=10) == pytest.approx(1.0)


def test_checkpoint_errors(tmp_path):
    cfg = Config()
    model = Toy()
    path = save_checkpoint(tmp_path / "ck", config=cfg, model=model, kind="toy")
    with pytest.raises(CheckpointError, match="holds a 'toy' model, not a 'highlight' model"):
        load_checkpoint(path, kind="highlight")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="cannot resume training"):
        load_checkpoint(path, with_state=True)
    other = nn.Sequential(nn.Linear(4, 8))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_weights(other, load_checkpoint(path))
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp leftovers


@pytest.mark.parametrize("fail_at, premade, kept", [(2, False, False), (8, False, True), (2, True, True)])
def test_failed_run_leaves_no_half_made_directory(tmp_path, fail_at, premade, kept):
    """A bad input found mid-run (e.g. a clip corrupted in the middle) before the first checkpoint
    removes the run directory this run created; after a checkpoint, or in a folder the user made, it stays."""
    from mm_live.errors import DataError

    out = tmp_path / "run"
    if premade:
        out.mkdir()
    model, trainer = _trainer(out)
    calls = {"n": 0}
    step = model.training_step

    def failing(batch):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise DataError("clip.mp4: corrupt in the middle; re-export it")
        return step(batch)

    model.training_step = failing
    with pytest.raises(DataError):
        trainer.fit()
    assert out.exists() == kept
    if kept and not premade:
        assert (out / "last").is_dir()  # checkpoint of step 3 (micro-batch 6) is kept for --resume
