"""One-class SVM (Schölkopf et al., 1999) through pyod."""

from __future__ import annotations

from typing import Any

from odbench.api import DataInfo
from odbench.classical.pyod_adapter import PyodMethod


class OCSVM(PyodMethod):
    name = "ocsvm"
    test_params = {"nu": 0.1}

    @classmethod
    def default_params(cls, info: DataInfo) -> dict[str, Any]:
        return {"kernel": "rbf", "nu": 0.1, "gamma": "scale"}

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        return {
            "nu": trial.suggest_float("nu", 0.01, 0.5, log=True),
            "gamma": trial.suggest_float("gamma", 1e-4 / info.n_features, 10.0 / info.n_features, log=True),
        }

    def make_detector(self, params: dict[str, Any], seed: int):
        from pyod.models.ocsvm import OCSVM as PyodOCSVM

        return PyodOCSVM(**params)
