"""Warm-up as a share of the run: a short run (few windows, small data) is not all warm-up."""

from __future__ import annotations

import pytest
import torch

from mm_live.config import Config
from mm_live.errors import ConfigError
from mm_live.training import ShuffledBatches, StepOutput, Trainer, warmup_steps


def test_warmup_is_a_fraction_of_the_run_unless_a_count_is_given():
    tc = Config().train
    assert tc.warmup_steps is None
    assert warmup_steps(tc, 60) == round(tc.warmup_fraction * 60)
    assert warmup_steps(Config.from_dict({"train": {"warmup_fraction": 0.25}}).train, 40) == 10
    assert warmup_steps(Config.from_dict({"train": {"warmup_steps": 3}}).train, 1000) == 3
    with pytest.raises(ConfigError, match="warmup_fraction"):
        Config.from_dict({"train": {"warmup_fraction": 1.5}})


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch):
        return StepOutput((self.w - 1.0).square().sum(), {})


def test_trainer_schedule_uses_the_fraction(tmp_path):
    cfg = Config.from_dict({"train": {"epochs": 5, "batch_size": 1, "lr": 0.1, "warmup_fraction": 0.2, "eval_every": 1000}})
    trainer = Trainer(_Tiny(), cfg, tmp_path, kind="tiny", train_data=ShuffledBatches(list(range(4)), 1, lambda xs: xs),
                      progress=False)
    assert trainer.total_steps == 20  # 4 batches x 5 epochs; warm-up = 4 steps
    lrs = []
    for _ in range(6):
        lrs.append(trainer.scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.scheduler.step()
    assert lrs[:5] == pytest.approx([0.1 * (s + 1) / 5 for s in range(5)])  # linear up to the peak at step 4
    assert lrs[5] < lrs[4]  # then cosine decay


def test_task_train_defaults_sit_under_the_config_file_and_the_overrides(tmp_path):
    """Highlight's small-data defaults (batch 2) do not leak into gifting/EM3 (batch 8), and a value
    the config file or the CLI sets wins over the task's default."""
    import json

    from mm_live.runs import resolve_config

    assert resolve_config(None, "highlight").train.batch_size == 2
    assert resolve_config(None, "highlight").train.lr == 1e-3
    assert resolve_config(None, "gifting").train.batch_size == Config().train.batch_size == 8
    assert resolve_config(None, "em3").train.lr == Config().train.lr
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"train": {"batch_size": 4}, "media": {"step_seconds": 2.0}}))
    cfg = resolve_config(f, "highlight")
    assert (cfg.train.batch_size, cfg.train.lr, cfg.media.step_seconds) == (4, 1e-3, 2.0)
    assert resolve_config(f, "highlight", {"train.lr": 0.5}).train.lr == 0.5
    assert resolve_config(f, "gifting").train.lr == Config().train.lr
