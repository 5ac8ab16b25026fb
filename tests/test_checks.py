"""The plugin checks must fail, with the right hint, on broken plugins."""

from __future__ import annotations

import numpy as np

from odbench.api import Method
from odbench.devkit.checks import check_method


class _Distance(Method):
    """Distance to the training mean: a correct, tiny detector to break."""

    name = "distance"
    modalities = ("tabular",)

    def fit(self, task, ctx):
        self.mean_ = task.train.normal.reshape(len(task.train.normal), -1).mean(0)
        return self

    def anomaly_score(self, X):
        return np.linalg.norm(X.reshape(len(X), -1) - self.mean_, axis=1)


class _Inverted(_Distance):
    name = "inverted"

    def anomaly_score(self, X):
        return -super().anomaly_score(X)


class _WrongShape(_Distance):
    name = "wrong_shape"

    def anomaly_score(self, X):
        return super().anomaly_score(X)[:, None]


class _Random(_Distance):
    name = "random_noise"

    def anomaly_score(self, X):
        return super().anomaly_score(X) + np.random.default_rng().normal(0, 1e-3, len(X))


class _ForgetsSelf(_Distance):
    name = "forgets_self"

    def fit(self, task, ctx):
        super().fit(task, ctx)


def _failed(cls) -> dict[str, str]:
    return {r.check: r.hint for r in check_method(cls) if not r.passed}


def test_a_correct_plugin_passes() -> None:
    assert _failed(_Distance) == {}


def test_inverted_scores_are_named() -> None:
    failed = _failed(_Inverted)
    assert "inverted" in failed["score direction [tabular]"]


def test_wrong_shape_is_named() -> None:
    assert "score shape [tabular]" in _failed(_WrongShape)


def test_nondeterminism_is_named() -> None:
    assert "ctx.seed" in _failed(_Random)["determinism [tabular]"]


def test_fit_must_return_self() -> None:
    assert "fit and score [tabular]" in _failed(_ForgetsSelf)
