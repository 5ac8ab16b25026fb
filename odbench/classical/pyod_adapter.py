"""The one adapter from pyod detectors to odbench's Method contract.

pyod's ``decision_function`` already returns higher = more anomalous (its
wrappers flip scikit-learn's sign), so no sign is touched here.  Inputs of
any modality are flattened to vectors; uint8 images are scaled with the
task's channel statistics first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from odbench.core.contracts import DataInfo, FitContext, FitTask, Method
from odbench.data.inputs import as_float


class PyodMethod(Method):
    """Subclasses implement ``make_detector(params, seed)``; that is all."""

    uses_gpu = False  # pyod computes on the CPU: no GPU share for its jobs

    def make_detector(self, params: dict[str, Any], seed: int) -> Any:
        raise NotImplementedError

    def _vectors(self, X: np.ndarray) -> np.ndarray:
        info = self.info_
        return as_float(X, info.channel_mean, info.channel_std, info.modality).reshape(len(X), -1)

    def fit(self, task: FitTask, ctx: FitContext) -> PyodMethod:
        self.info_: DataInfo = task.info
        self.detector_ = self.make_detector(dataclasses.asdict(self.params), ctx.seed)  # resolved before fit runs
        self.detector_.fit(self._vectors(task.train.normal))
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.detector_.decision_function(self._vectors(X)), dtype=np.float64)
