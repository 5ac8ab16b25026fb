"""Isolation Forest (Liu et al., 2008) through pyod, with pyod's defaults (100 trees, 256-point subsamples)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odbench.api import DataInfo, PyodMethod, param


class IsolationForest(PyodMethod):
    name = "iforest"
    test_params = {"n_estimators": 50}

    @dataclass
    class Params:
        n_estimators: int = param(100, "trees in the forest", low=1)
        max_samples: int | float | str = param("auto", "points per tree: a count (capped at n_train), a fraction, or 'auto' (min(256, n)), pyod's default")
        max_features: float = param(1.0, "fraction of the features each tree draws from", low=0, high=1)

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 500, log=True),
            "max_samples": trial.suggest_int("max_samples", 64, 1024, log=True),
            "max_features": trial.suggest_float("max_features", 0.3, 1.0),
        }

    def make_detector(self, params: dict[str, Any], seed: int):
        from pyod.models.iforest import IForest

        if isinstance(params.get("max_samples"), int):  # a tuned value may exceed the data
            params["max_samples"] = min(params["max_samples"], self.info_.n_train)
        return IForest(**params, random_state=seed)
