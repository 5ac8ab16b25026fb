"""k-nearest-neighbour distance (Ramaswamy et al., 2000) through pyod, with pyod's defaults (5th neighbour)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odbench.api import DataInfo, PyodMethod, param


class KNN(PyodMethod):
    name = "knn"
    test_params = {"n_neighbors": 3}

    @dataclass
    class Params:
        n_neighbors: int = param(5, "k: the score is the distance to the k-th (or the k) nearest training points; pyod's 5, capped at n_train - 1", low=1)
        method: str = param("largest", "how the k distances make the score", choices=("largest", "mean", "median"))

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        return {
            "n_neighbors": trial.suggest_int("n_neighbors", 1, 50, log=True),
            "method": trial.suggest_categorical("method", ["largest", "mean", "median"]),
        }

    def make_detector(self, params: dict[str, Any], seed: int):
        from pyod.models.knn import KNN as PyodKNN

        params["n_neighbors"] = min(params["n_neighbors"], self.info_.n_train - 1)
        return PyodKNN(**params)
