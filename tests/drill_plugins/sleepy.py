"""A method for the fault drills: it leaves a file named after its process, then takes its time.

A drill waits for the file, kills that process mid-job and checks what the
engine does.  The file holds the resources Ray granted the job, its node and the GPUs
it may see, so the packing and node-loss tests can read how jobs were placed.  Scores are
the distance to the training mean (a real detector, so the job's record is
an ordinary one).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odbench.api import DataInfo, FitContext, FitTask, Method, param


class Sleepy(Method):
    name = "sleepy"
    modalities = ("tabular",)

    @dataclass
    class Params:
        seconds: float = param(1.0, "how long fit takes, over two reported epochs", low=0)
        pid_dir: str = param("-", "folder where fit leaves <pid>-<seed>-<time> as it starts (-: none)")
        shift: float = param(0.0, "added to every score: a parameter for the search to set", low=-1, high=1)
        fail: bool = param(False, "raise in fit: a job that fails")

    @classmethod
    def search_space(cls, trial: Any, info: DataInfo) -> dict[str, Any]:
        return {"shift": trial.suggest_float("shift", -1, 1)}

    def fit(self, task: FitTask, ctx: FitContext) -> Sleepy:
        if self.params.pid_dir != "-":
            placed = {"visible_gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": ctx.device}
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():  # a Ray task: what Ray granted it
                context = sys.modules["ray"].get_runtime_context()
                placed.update(resources=context.get_assigned_resources(), node_id=context.get_node_id())
            Path(self.params.pid_dir, f"{os.getpid()}-{ctx.seed}-{time.time_ns()}").write_text(json.dumps(placed))
        if self.params.fail:
            raise RuntimeError("asked to fail")
        ctx.plan(2)
        for epoch in range(2):
            time.sleep(self.params.seconds / 2)
            ctx.report(epoch, {"loss": 1.0 / (epoch + 1)})
        self.mean_ = task.train.normal.mean(axis=0)
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        return np.linalg.norm(X - self.mean_, axis=1) + self.params.shift
