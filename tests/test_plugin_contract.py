"""The contract every registered plugin keeps, checked on tiny data.

Parametrized over the registry, so a plugin dropped into methods/ or
datasets/ is covered without writing a test.  The checks themselves live in
``odbench.devkit.checks`` (``odbench check`` runs the same ones on a user's file).
"""

from __future__ import annotations

import pytest

from odbench.devkit.checks import check_dataset, check_method
from odbench.engine.registry import Registry

_REGISTRY = Registry()
# pyod:<Name> detectors have their own parametrized contract test (tests/test_pyod_zoo.py, tabular only)
METHODS = [p.name for p in _REGISTRY.all("method") if p.available and not p.name.startswith("pyod:")]
DATASETS = [p.name for p in _REGISTRY.all("dataset") if p.available and not p.cls.takes_argument]


def _failures(results) -> str:
    return "\n".join(f"{r.check}: {r.message} -- {r.hint}" for r in results if not r.passed)


@pytest.mark.parametrize("method_name", METHODS)
def test_method_contract(method_name: str) -> None:
    """Attributes; per modality: fit returns self, shape (n,), finite, direction, determinism, batch invariance."""
    results = check_method(_REGISTRY.method(method_name))
    assert not _failures(results), _failures(results)


@pytest.mark.parametrize("dataset_name", DATASETS)
def test_dataset_contract(dataset_name: str, tmp_path) -> None:
    """Attributes; where the data are here (bundled, or a data dir), they load and the default protocol applies."""
    results = check_dataset(_REGISTRY.dataset(dataset_name), tmp_path)
    assert not _failures(results), _failures(results)
