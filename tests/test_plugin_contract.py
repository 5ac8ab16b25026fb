"""The contract every registered plugin keeps, checked on tiny data.

Parametrized over the registry, so a plugin dropped into methods/ or
datasets/ is covered without writing a test.
"""

from __future__ import annotations

import numpy as np
import pytest

from odbench.api import MODALITIES, Dataset, FitContext, LabeledData
from odbench.metrics import evaluate
from odbench.protocols import PROTOCOLS
from odbench.registry import Registry
from odbench.testing import obvious_outlier_task

_REGISTRY = Registry()
METHODS = [p.name for p in _REGISTRY.all("method") if p.available]
DATASETS = [p.name for p in _REGISTRY.all("dataset") if p.available]


def _cases() -> list[tuple[str, str]]:
    return [(m, mod) for m in METHODS for mod in _REGISTRY.method(m).modalities]


@pytest.mark.parametrize(("method_name", "modality"), _cases())
def test_method_contract(method_name: str, modality: str) -> None:
    cls = _REGISTRY.method(method_name)
    task = obvious_outlier_task(modality)
    params = {**cls.default_params(task.info), **cls.test_params}
    method = cls(**params)
    assert method.fit(task.for_fit(), FitContext(seed=0)) is method, "fit must return self"
    scores = method.anomaly_score(task.test.X)
    assert scores.shape == (len(task.test),)
    assert np.all(np.isfinite(scores))
    auroc = evaluate(("auroc",), task.test.y, scores)["auroc"]
    assert auroc > 0.9, f"{method_name} on {modality}: AUROC {auroc:.3f}; is the score sign inverted?"


@pytest.mark.parametrize("method_name", METHODS)
def test_method_attributes(method_name: str) -> None:
    cls = _REGISTRY.method(method_name)
    assert set(cls.modalities) <= set(MODALITIES)
    assert isinstance(cls.uses_negatives, bool)
    method = cls(a_param=1)  # __init__ stores, does not validate against data
    assert method.params == {"a_param": 1}


@pytest.mark.parametrize("method_name", [m for m in METHODS if _REGISTRY.method(m).deep])
def test_deep_scores_do_not_depend_on_batching(method_name: str) -> None:
    """A point's score is the same whatever else shares its batch (eval mode)."""
    cls = _REGISTRY.method(method_name)
    modality = cls.modalities[0]
    task = obvious_outlier_task(modality)
    method = cls(**{**cls.default_params(task.info), **cls.test_params}).fit(task.for_fit(), FitContext(seed=0))
    X = task.test.X
    whole = method.anomaly_score(X)
    order = np.random.default_rng(1).permutation(len(X))
    pieces = [method.anomaly_score(X[order[i : i + 5]]) for i in range(0, len(X), 5)]
    shuffled = np.empty_like(whole)
    shuffled[order] = np.concatenate(pieces)
    np.testing.assert_allclose(shuffled, whole, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dataset_name", DATASETS)
def test_dataset_attributes(dataset_name: str) -> None:
    plugin = _REGISTRY.get("dataset", dataset_name)
    cls = plugin.cls
    assert cls.modality in MODALITIES
    assert cls.default_protocol in PROTOCOLS
    assert issubclass(cls, Dataset)


@pytest.mark.parametrize("dataset_name", [d for d in DATASETS if _REGISTRY.get("dataset", d).cls.bundled])
def test_bundled_dataset_loads(dataset_name: str, tmp_path) -> None:
    dataset = _REGISTRY.dataset(dataset_name)
    dataset.prepare(tmp_path)
    data = dataset.load(tmp_path)
    assert isinstance(data, LabeledData)
    assert len(data.X) == len(data.y) > 0
    assert set(np.unique(data.y)) <= set(range(len(data.class_names)))
