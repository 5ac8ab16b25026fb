"""One-class SVM (Schölkopf et al., 1999) through pyod."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odbench.api import DataInfo, param
from odbench.classical.pyod_adapter import PyodMethod


class OCSVM(PyodMethod):
    name = "ocsvm"
    test_params = {"nu": 0.1}

    @dataclass
    class Params:
        kernel: str = param("rbf", "the SVM's kernel", choices=("linear", "poly", "rbf", "sigmoid"))
        nu: float = param(0.1, "upper bound on the fraction of training points outside the boundary", low=0, high=1)
        gamma: float | str = param("scale", "kernel width: a number, 'scale' or 'auto' (scikit-learn's meanings)")

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        return {
            "nu": trial.suggest_float("nu", 0.01, 0.5, log=True),
            "gamma": trial.suggest_float("gamma", 1e-4 / info.n_features, 10.0 / info.n_features, log=True),
        }

    def make_detector(self, params: dict[str, Any], seed: int):
        from pyod.models.ocsvm import OCSVM as PyodOCSVM

        return PyodOCSVM(**params)
