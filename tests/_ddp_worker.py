"""Run by tests/test_ddp.py under ``torchrun``: train each case of a JSON plan through
``mm_live.runs.train`` (or export an index) in one process group, and save this rank's final parameters next to the run
(``params_rank<r>.safetensors``) so the test can compare the ranks with each other and with a
one-process run."""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from mm_live import distributed, runs, training  # noqa: E402
from mm_live.config import Config  # noqa: E402
from mm_live.data.windows import clip_collection  # noqa: E402
from mm_live.export import export_index  # noqa: E402


class KeepModel(training.Trainer):
    last: torch.nn.Module | None = None
    stop_after: int | None = None  # stop there, as a killed run would have (its last/ is written)

    def fit(self, resume: bool = False, stop_after: int | None = None):
        KeepModel.last = self.model
        return super().fit(resume=resume, stop_after=KeepModel.stop_after)


def main(plan_path: str) -> None:
    torch.set_num_threads(1)
    runs.Trainer = KeepModel  # the real runs.train, with a handle on this rank's model
    with distributed.session("cpu") as d:
        for case in json.loads(open(plan_path, encoding="utf-8").read()):
            if "export" in case:  # export-index of a run trained above, each rank embedding its clips
                export_index(case["export"], clip_collection(case["data"]), case["out"], device="cpu", progress=False,
                             **case["options"])
                continue
            KeepModel.stop_after = case.get("stop_after")
            runs.train(case["task"], case["data"], case["out"], config=Config.from_dict(case["config"]),
                       device="cpu", progress=False, **case.get("options", {}))
            if KeepModel.stop_after is not None:
                KeepModel.stop_after = None
                runs.train(case["task"], case["data"], case["out"], config=Config.from_dict(case["config"]),
                           device="cpu", progress=False, resume=True, **case.get("options", {}))
            params = {k: v.detach().contiguous().clone() for k, v in KeepModel.last.named_parameters()}
            save_file(params, os.path.join(case["out"], f"params_rank{d.rank}.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
