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


class _FirstDrawOnly(_Distance):
    """Works when fitted with seed 0, scores at random otherwise: a plugin one draw cannot judge."""

    name = "first_draw_only"

    def fit(self, task, ctx):
        self.seed_ = ctx.seed
        return super().fit(task, ctx)

    def anomaly_score(self, X):
        if self.seed_ == 0:
            return super().anomaly_score(X)
        return np.random.default_rng([self.seed_, len(X)]).random(len(X))


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


def _without_adversarial_term(name: str, modality: str):
    """The real DROCC plugin ``name`` with mu = 0: the loss keeps only its cross-entropy term."""
    from odbench.engine.registry import Registry

    base = Registry().method(name)
    return type(f"{base.__name__}NoAdversary", (base,), {
        "modalities": (modality,), "test_params": {**base.test_params, "mu": 0.0},
    })  # fmt: skip


def test_the_direction_check_tells_drocc_from_drocc_without_its_adversarial_term() -> None:
    """Protects the check's power: a DROCC whose adversarial term is gone must fail it.

    A DROCC-OE with mu = 0 is a classifier of the few training negatives; on
    the seed-0 draw alone it reached AUROC 0.894, a hair under the old floor
    of 0.9, while the working plugin's own draws ranged from 0.57 to 1.0.
    With the median over three draws and a floor of 0.95 the broken one
    fails and the working one passes (tests/test_plugin_contract.py).
    """
    for name in ("drocc_oe", "drocc"):
        assert "score direction [tabular]" in _failed(_without_adversarial_term(name, "tabular")), name


def test_the_direction_check_judges_more_than_one_draw() -> None:
    """Protects the median over several seeds: a plugin right on the seed-0 draw only must fail."""
    assert "score direction [tabular]" in _failed(_FirstDrawOnly)
