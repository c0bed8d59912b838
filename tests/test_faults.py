"""Faults: a training run SIGKILLed at a random step (or in the middle of writing a checkpoint) and
resumed ends with the weights of an uninterrupted run; a 2-rank export SIGKILLed mid-way leaves no
index and a rerun completes it; a checkpoint write that fails (disk full) keeps the previous checkpoint
and reaches the user as one line (exit 2).

tests/test_export.py covers a one-process export interrupted by an exception; here a torchrun
export loses a rank to SIGKILL (no cleanup code runs) and one process finishes it.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mm_live import checkpoint
from mm_live.checkpoint import load_checkpoint, save_checkpoint
from mm_live.cli import main
from mm_live.config import Config
from mm_live.data.synthetic import SynthConfig, synthesize
from mm_live.data.windows import clip_collection
from mm_live.export import export_index
from mm_live.pipelines.highlight import build_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "pipelines"))
from test_runs import _klive_log  # noqa: E402
from tiny_config import TINY  # noqa: E402

STEPS = 10  # 8 streams (6 train) x 3 windows of 8 steps, batch 4 -> 5 steps per epoch, 2 epochs
RNG = random.Random()  # a different kill point each session; the failure message names it

# The process that gets killed: the CLI, with a hook that SIGKILLs it at the chosen point.
KILLER = """
import os, signal, sys
from mm_live import checkpoint, training
where, n = sys.argv[1], int(sys.argv[2])
if where == "step":  # right after optimizer step n is logged, before its checkpoint
    log = training.Trainer._log
    def _log(self, row):
        log(self, row)
        if row.get("step") == n and "lr" in row:
            os.kill(os.getpid(), signal.SIGKILL)
    training.Trainer._log = _log
else:  # inside the n-th checkpoint write, after the weights file is half written
    save, calls = checkpoint.save_file, []
    def save_file(tensors, path):
        calls.append(path)
        if len(calls) == n:
            with open(path, "wb") as fh:
                fh.write(b"half a safetensors file")
            os.kill(os.getpid(), signal.SIGKILL)
        return save(tensors, path)
    checkpoint.save_file = save_file
from mm_live.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    log = _klive_log(tmp / "0_test_score_infer_output.log", streams=8, steps=24)
    cfg = json.loads(json.dumps(TINY))
    cfg["train"] |= {"epochs": 2, "batch_size": 4, "eval_every": 2, "threads": 1}
    cfg["highlight"]["window_steps"] = 8
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    args = ["train", "highlight", "--dataset", "klive", "--data", str(log), "--config", str(tmp / "cfg.json")]
    assert main([*args, "--out", str(tmp / "whole")]) == 0
    return tmp, args


def _killed(args: list[str], where: str, n: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    return subprocess.run([sys.executable, "-c", KILLER, where, str(n), *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


@pytest.mark.parametrize("where", ["step", "checkpoint"])
def test_a_run_killed_anywhere_and_resumed_ends_with_the_uninterrupted_weights(setup, where, tmp_path):
    tmp, args = setup
    # step: any step after the first checkpoint (step 2); checkpoint: any write after the first
    n = RNG.randint(3, STEPS - 1) if where == "step" else RNG.randint(2, 7)
    run = tmp_path / "run"
    proc = _killed([*args, "--out", str(run)], where, n)
    assert proc.returncode == -signal.SIGKILL, f"killed at {where} {n}: " + proc.stderr[-2000:]
    assert main([*args, "--out", str(run), "--resume"]) == 0, f"resume after a kill at {where} {n}"
    whole, resumed = _weights(tmp / "whole"), _weights(run)
    assert whole.keys() == resumed.keys()
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), f"{k} differs after a kill at {where} {n}"
    rows = lambda r: [x for x in map(json.loads, open(r / "metrics.jsonl")) if "lr" in x]  # noqa: E731
    assert [x["train/loss"] for x in rows(run)] == [x["train/loss"] for x in rows(tmp / "whole")]
    assert not list(run.glob(".*.tmp"))  # the torn checkpoint directory was cleared on resume


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_says_so_in_one_line(setup, tmp_path, monkeypatch, capsys):
    tmp, args = setup
    real, calls = checkpoint.save_file, []

    def disk_full_on_third(tensors, path):
        calls.append(path)
        if len(calls) == 3:  # best and last at step 2 went through; last (or best) at step 4 does not
            with open(path, "wb") as fh:
                fh.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", disk_full_on_third)
    run = tmp_path / "run"
    capsys.readouterr()
    assert main([*args, "--out", str(run)]) == 2
    captured = capsys.readouterr().err
    err = captured.strip().splitlines()[-1]  # after the closed progress bar
    assert err.startswith("mm-live: error: could not write checkpoint") and "No space left on device" in err, err
    assert "--resume" in err and "Traceback" not in captured and captured.count("mm-live:") == 1
    kept = load_checkpoint(run / "last", kind="highlight", with_state=True)
    assert kept.trainer_state["step"] == 2 and not list(run.glob(".*.tmp"))
    monkeypatch.undo()
    assert main([*args, "--out", str(run), "--resume"]) == 0
    whole = _weights(tmp / "whole")
    assert all(torch.equal(whole[k], v) for k, v in _weights(run).items())


def test_a_two_rank_export_killed_mid_way_is_finished_by_one_process(tmp_path):
    synth = synthesize(tmp_path / "synth", SynthConfig(streams=4, seconds=6, width=64, height=48, seed=6))
    cfg = Config.from_dict(TINY)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run" / "best", config=cfg, model=build_model(cfg), kind="highlight")
    script = tmp_path / "killer.py"
    script.write_text("""
import os, signal, sys
from mm_live.pipelines.highlight import HighlightTask
real = HighlightTask.embed_clip
def embed_clip(*a, **k):
    if os.environ["RANK"] == "1":  # rank 1 dies on its first clip; rank 0 embeds its own
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
HighlightTask.embed_clip = staticmethod(embed_clip)
from mm_live.cli import main
sys.exit(main(sys.argv[1:]))
""")
    out = tmp_path / "index"
    args = ["export-index", "--checkpoint", str(tmp_path / "run"), "--data", str(synth.manifest), "--out", str(out),
            "--nbits", "2", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and not out.exists(), proc.stderr[-2000:]
    assert (tmp_path / ".index.embeddings").is_dir()  # what was embedded before the kill is kept
    assert main(args) == 0  # one process finishes it
    one = export_index(tmp_path / "run", clip_collection(synth.manifest), tmp_path / "one", nbits=2, progress=False)
    # the same items in the same order (the vectors rank 0 embedded in its process may differ in the
    # last float bits from this process's, which moves the PQ codebooks)
    assert json.loads((out / "index.json").read_text())["items"] == json.loads((one / "index.json").read_text())["items"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".index")) == []
