"""Local Outlier Factor (Breunig et al., 2000) through pyod, in novelty mode, with pyod's default 20 neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odbench.api import DataInfo, PyodMethod, param


class LOF(PyodMethod):
    name = "lof"
    test_params = {"n_neighbors": 10}

    @dataclass
    class Params:
        n_neighbors: int = param(20, "neighbours that define a point's local density; pyod's 20, capped at n_train - 1", low=1)

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        return {"n_neighbors": trial.suggest_int("n_neighbors", 5, 100, log=True)}

    def make_detector(self, params: dict[str, Any], seed: int):
        from pyod.models.lof import LOF as PyodLOF

        # pyod's LOF fits scikit-learn's with novelty=True: test points are
        # scored against the training set, not against each other
        params["n_neighbors"] = min(params["n_neighbors"], self.info_.n_train - 1)
        return PyodLOF(**params)
