"""One-class SVM (Schölkopf et al., 1999) through pyod.

Defaults are pyod's own (``pyod.models.ocsvm.OCSVM``): an RBF kernel,
``nu = 0.5`` (at most half the training points outside the boundary, at
least half support vectors) and ``gamma = "auto"`` (1 / d), the settings of
PyOD's published benchmark.  (scikit-learn's ``gamma="scale"`` divides
1 / d by the variance of the training inputs, about 1 after z-scoring; so
the two differ mostly under min-max scaling, where it is far below 1.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odbench.api import DataInfo, PyodMethod, param


class OCSVM(PyodMethod):
    name = "ocsvm"
    test_params = {"nu": 0.1}

    @dataclass
    class Params:
        kernel: str = param("rbf", "the SVM's kernel", choices=("linear", "poly", "rbf", "sigmoid"))
        nu: float = param(0.5, "upper bound on the fraction of training points outside the boundary", low=0, high=1)
        gamma: float | str = param("auto", "kernel width: a number, 'scale' or 'auto' (scikit-learn's meanings)")

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        return {
            "nu": trial.suggest_float("nu", 0.01, 0.5, log=True),
            "gamma": trial.suggest_float("gamma", 1e-4 / info.n_features, 10.0 / info.n_features, log=True),
        }

    def make_detector(self, params: dict[str, Any], seed: int):
        from pyod.models.ocsvm import OCSVM as PyodOCSVM

        return PyodOCSVM(**params)
