"""A method for the stop drills: its fit is one long C call that never checks for signals.

A long third-party fit (pyod's kNN on a large table, a BLAS call) looks like
this to Python: a signal handler of the process that runs it waits until the
call returns (measured: more than 30 s for pyod's kNN on shuttle).  The
stand-in is numpy's direct convolution, quadratic in its length, sized to
last about ``seconds`` (measured: a SIGINT 2.5 s into a 175 s call was
handled when the call ended).  A regular expression that backtracks or a
pure-Python loop would not do: both check for signals as they run.  Scores
are the distance to the training mean, so a job that finishes writes an
ordinary record.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from odbench.api import FitContext, FitTask, Method, param


def stall(seconds: float) -> None:
    """One C call of about ``seconds`` (to within a factor of a few on a busy machine)."""
    length, took = 4000, 0.0
    while took < 0.2:  # a calibration long enough to time
        length *= 2
        start = time.perf_counter()
        np.convolve(np.ones(length), np.ones(length))
        took = time.perf_counter() - start
    longer = int(length * (seconds / took) ** 0.5)
    np.convolve(np.ones(longer), np.ones(longer))


class Stubborn(Method):
    name = "stubborn"
    modalities = ("tabular",)

    @dataclass
    class Params:
        seconds: float = param(1.0, "how long fit spends in one C call", low=0)
        pid_dir: str = param("-", "folder where fit leaves <pid>-<seed>.json as it starts (-: none)")

    def fit(self, task: FitTask, ctx: FitContext) -> Stubborn:
        if self.params.pid_dir != "-":
            Path(self.params.pid_dir, f"{os.getpid()}-{ctx.seed}.json").write_text(json.dumps({"started": time.time()}))
        stall(self.params.seconds)
        self.mean_ = task.train.normal.mean(axis=0)
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        return np.linalg.norm(X - self.mean_, axis=1)
