"""The one adapter from pyod detectors to odbench's Method contract.

pyod's ``decision_function`` already returns higher = more anomalous (its
wrappers flip scikit-learn's sign), so no sign is touched here; the contract
check confirms it per detector.  Inputs of any modality are flattened to
vectors; uint8 images are scaled with the task's channel statistics first.

A plugin subclasses :class:`PyodMethod`, declares ``Params`` and implements
``make_detector(params, seed)``; ``fit`` and ``anomaly_score`` are here.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from typing import Any, ClassVar

import numpy as np

from odbench.classical.ecdf_alone import scores_alone
from odbench.core.contracts import DataInfo, FitContext, FitTask, Method
from odbench.data.inputs import as_float


def seed_global_generators(seed: int) -> None:
    """Seed the global generators pyod draws from where a detector takes no ``random_state``.

    Several pyod detectors (GAN-based ones, ALAD, AnoGAN) initialise and
    shuffle with numpy's, Python's and torch's global generators; without
    this two fits with one seed would differ.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:  # only when a detector brought torch in: a classical job never loads it
        sys.modules["torch"].manual_seed(seed)


class PyodMethod(Method):
    """A pyod detector as an odbench method: subclasses implement ``make_detector(params, seed)``.

    ``params`` are the resolved parameters (defaults, data defaults, the
    user's values); the detector it returns is fitted on the training
    split's normal rows and scores with ``decision_function``.
    """

    #: True where pyod scores a batch against itself (ECOD's and COPOD's ECDFs take in the test batch): each
    #: point is then scored alone against the training data, so a score never depends on its batch
    point_by_point: ClassVar[bool] = False

    uses_gpu = False  # pyod computes on the CPU: no GPU share for its jobs

    def make_detector(self, params: dict[str, Any], seed: int) -> Any:
        raise NotImplementedError

    def _vectors(self, X: np.ndarray) -> np.ndarray:
        info = self.info_
        return as_float(X, info.channel_mean, info.channel_std, info.modality).reshape(len(X), -1)

    def fit(self, task: FitTask, ctx: FitContext) -> PyodMethod:
        self.info_: DataInfo = task.info
        self.device_ = ctx.device  # for detectors that train a network (pyod's deep ones take ``device=``)
        seed_global_generators(ctx.seed)
        self.detector_ = self.make_detector(dataclasses.asdict(self.params), ctx.seed)  # resolved before fit runs
        self.detector_.fit(self._vectors(task.train.normal))
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        vectors = self._vectors(X)
        if self.point_by_point:
            if not len(vectors):
                return np.empty(0)
            fast = scores_alone(self.detector_, vectors)  # ECOD, COPOD: the same numbers from one sort
            if fast is not None:
                return fast
            return np.concatenate([np.ravel(self.detector_.decision_function(row[None])) for row in vectors]).astype(
                np.float64
            )
        return np.asarray(self.detector_.decision_function(vectors), dtype=np.float64)
