"""A method for the GPU out-of-memory drill: its first attempt at each job runs out of GPU memory.

It raises torch's own ``torch.cuda.OutOfMemoryError`` (a real exception
class, raisable without a GPU), so the engine sees what a CUDA allocation
failure raises.  A job's first attempt leaves ``<seed>`` in ``marks`` and
fails; a later attempt finds the mark and fits (the job of normal class
``always`` fails every time).  Scores: the distance to the training mean.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from odbench.api import FitContext, FitTask, Method, param


class Gobbler(Method):
    name = "gobbler"
    modalities = ("tabular",)

    @dataclass
    class Params:
        marks: str = param("-", "folder of attempt marks: <seed> once tried, <seed>.<n> per attempt with its GPU grant")
        always: str = param("-", "the normal class whose job runs out of GPU memory on every attempt (-: none)")

    def fit(self, task: FitTask, ctx: FitContext) -> Gobbler:
        import torch

        marks = Path(self.params.marks)
        tried = (marks / str(ctx.seed)).exists()
        granted = {}
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            granted = sys.modules["ray"].get_runtime_context().get_assigned_resources()
        attempt = len(list(marks.glob(f"{ctx.seed}.*")))
        (marks / f"{ctx.seed}.{attempt}").write_text(json.dumps({"pid": os.getpid(), "resources": granted}))
        if task.normal_class == self.params.always or not tried:
            (marks / str(ctx.seed)).touch()
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (drill)")
        self.mean_ = task.train.normal.mean(axis=0)
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        return np.linalg.norm(X - self.mean_, axis=1)
