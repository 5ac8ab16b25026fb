"""The one adapter from pyod detectors to odbench's Method contract.

pyod's ``decision_function`` already returns higher = more anomalous (its
wrappers flip scikit-learn's sign), so no sign is touched here.  Inputs of
any modality are flattened to vectors; uint8 images are scaled with the
task's channel statistics first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from odbench.core.contracts import DataInfo, FitContext, FitTask, Method
from odbench.protocols.scaling import as_float


class PyodMethod(Method):
    """Subclasses implement ``make_detector(params, seed)``; that is all."""

    def make_detector(self, params: dict[str, Any], seed: int) -> Any:
        raise NotImplementedError

    def _vectors(self, X: np.ndarray) -> np.ndarray:
        info = self.info_
        return as_float(X, info.channel_mean, info.channel_std, info.modality).reshape(len(X), -1)

    def fit(self, task: FitTask, ctx: FitContext) -> PyodMethod:
        self.info_: DataInfo = task.info
        self.params_ = self.resolve_params(task.info, self.params)  # what ran
        self.detector_ = self.make_detector(dict(self.params_), ctx.seed)
        self.detector_.fit(self._vectors(task.train.normal))
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.detector_.decision_function(self._vectors(X)), dtype=np.float64)
