"""``pyod:<Name>``: every pyod detector by name, its contract, its parameters, its listing.

The contract test is parametrized over the whole table
(``odbench.classical.pyod_catalogue``): a detector that runs here goes
through the generic checks on tiny tabular data (pyod flattens every
modality the same way, which the bundled wrappers' contract tests cover),
plus batch invariance, which the generic check asks of deep methods only;
one that cannot is skipped with its reason, so ``pytest -rs`` prints the
excluded list.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from odbench.classical.pyod_catalogue import CATALOGUE, PREFIX, unavailable
from odbench.cli import main
from odbench.core.contracts import FitContext
from odbench.core.params import ParamError, specs
from odbench.devkit.checks import batch_invariance, method_scores
from odbench.devkit.testing import obvious_outlier_task
from odbench.engine.registry import Registry, RegistryError

_REGISTRY = Registry()


def _fitted(name: str, seed: int = 0, **params):
    cls = _REGISTRY.method(name)
    task = obvious_outlier_task("tabular", seed=seed)
    method = cls(**{**cls.test_params, **params})
    with contextlib.redirect_stdout(io.StringIO()):  # a few pyod detectors print per epoch
        method.fit(task.for_fit(), FitContext(seed=seed))
    return method, task


@pytest.mark.parametrize("entry", CATALOGUE, ids=[e.method_name for e in CATALOGUE])
def test_pyod_detector_contract(entry) -> None:
    """Fit, shape, finite, direction (higher = more anomalous), determinism, and a score independent of its batch."""
    why = unavailable(entry)
    if why is not None:
        pytest.skip(f"{entry.method_name}: {why}")
    cls = _REGISTRY.method(entry.method_name)
    with contextlib.redirect_stdout(io.StringIO()):
        results = method_scores(cls, "tabular")
        if not cls.deep:  # the generic check already does it for deep ones
            method, task = _fitted(entry.method_name)
            results.append(batch_invariance(method, task.test.X, "[tabular]"))
    failures = [f"{r.check}: {r.message} -- {r.hint}" for r in results if not r.passed]
    assert not failures, "\n".join(failures)


def test_at_least_40_detectors_each_runnable_or_with_its_reason(capsys) -> None:
    assert main(["list", "--methods", "pyod"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith(PREFIX)]
    notes = dict(re.match(r"\s+\[(\d+)\] (.*)", line).groups() for line in out if re.match(r"\s+\[\d+\] ", line))
    assert len(rows) >= 40
    for row in rows:
        available = row.split()[1:3]
        assert available[0] == "yes" or (available[0] == "no" and len(notes[available[1].strip("[]")]) > 20), row
    runnable = [r for r in rows if r.split()[1] == "yes"]
    assert len(runnable) >= 20


def test_listing_imports_no_pyod_module() -> None:
    """``odbench list`` reads the table: importing pyod alone costs seconds, a deep detector's module torch too."""
    code = (
        "import sys, contextlib, io\n"
        "from odbench.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['list'])\n"
        "print(sorted(m for m in sys.modules if m == 'pyod' or m.startswith('pyod.')))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}).stdout  # fmt: skip
    assert out.strip() == "[]"


def test_parameters_come_from_the_detectors_signature_and_docstring() -> None:
    from pyod.models.iforest import IForest

    cls = _REGISTRY.method("pyod:IForest")
    declared = specs(cls.Params)
    assert declared["n_estimators"].default == 100 and declared["n_estimators"].annotation is int
    assert "base estimators" in declared["n_estimators"].help  # pyod's docstring line
    # odbench sets the seed, the device, the chatter; contamination only thresholds pyod's labels
    assert not {"random_state", "contamination", "verbose"} & set(declared)
    assert set(declared) < set(IForest().get_params())
    # the docstring's "int or float" widens the type of a string default
    assert cls.check_params({"max_samples": 256, "n_jobs": "1"}) == {"max_samples": 256, "n_jobs": 1}
    with pytest.raises(ParamError, match="has no parameter 'n_estimator'"):
        cls.check_params({"n_estimator": 10})
    with pytest.raises(ParamError, match="n_estimators must be an integer"):
        cls.check_params({"n_estimators": "many"})


def test_a_user_parameter_reaches_pyod_and_the_seed_is_odbenchs() -> None:
    method, _ = _fitted("pyod:IForest", seed=7, n_estimators=12)
    assert len(method.detector_.estimators_) == 12
    assert method.detector_.random_state == 7


def test_device_is_odbenchs_where_pyod_takes_one_and_where_it_picks_its_own() -> None:
    """AutoEncoder takes ``device=``; LUNAR picks CUDA itself whenever torch sees one, and is overridden."""
    import torch

    for name in ("pyod:AutoEncoder", "pyod:LUNAR"):
        cls = _REGISTRY.method(name)
        method = cls()
        method.device_ = "meta"  # a device no detector would choose itself
        detector = method.make_detector(cls.resolve_params(obvious_outlier_task().info, {}), seed=0)
        assert torch.device(detector.device) == torch.device("meta"), name
        networks = [part for part in vars(detector).values() if isinstance(part, torch.nn.Module)]
        assert all(p.device.type == "meta" for net in networks for p in net.parameters()), name
    assert networks  # LUNAR's constructor builds its network: it moves too


def test_a_test_batch_never_changes_ecods_scores() -> None:
    """pyod's ECOD takes the test batch into its ECDFs; the adapter scores it one point at a time."""
    method, task = _fitted("pyod:ECOD")
    assert batch_invariance(method, task.test.X).passed
    method.point_by_point = False  # pyod's own batch scoring
    assert not batch_invariance(method, task.test.X).passed


def test_a_fitted_zoo_method_pickles_to_a_worker() -> None:
    method, task = _fitted("pyod:ECOD")
    again = pickle.loads(pickle.dumps(method))
    assert type(again) is type(method)
    np.testing.assert_allclose(again.anomaly_score(task.test.X), method.anomaly_score(task.test.X))


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("pyod:ECD", "unknown pyod detector 'pyod:ECD'; closest: pyod:ECOD"),
        ("pyod:XGBOD", "is unavailable: supervised: trains on labelled anomalies"),
        ("pyod:SOS", "depends on the batching"),
    ],
)
def test_a_name_that_cannot_run_is_one_line_and_exit_2(name: str, fragment: str, tmp_path: Path, capsys) -> None:
    argv = ["run", "--results", str(tmp_path), "--no-mlflow", "--methods", f"knn,{name}", "--datasets", "sine2d"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    if name == "pyod:XGBOD" and "xgboost" not in sys.modules:
        assert "pip install xgboost" in lines[0]


def test_wildcards_select_the_runnable_zoo_and_every_adbench_set() -> None:
    methods = _REGISTRY.select("method", "pyod:*")
    assert "pyod:ECOD" in methods and "pyod:XGBOD" not in methods and "pyod:SOS" not in methods
    assert all(_REGISTRY.get("method", m).available for m in methods)
    sets = _REGISTRY.select("dataset", "adbench:*")
    assert "adbench:thyroid" in sets and len(sets) > 40
    assert _REGISTRY.select("dataset", "adbench:*thyroid") == ["adbench:annthyroid", "adbench:thyroid"]
    with pytest.raises(RegistryError, match="no dataset matches 'adbench:nothing\\*'"):
        _REGISTRY.select("dataset", "adbench:nothing*")


def test_a_detector_that_raises_in_fit_is_a_failed_job_and_the_suite_goes_on(tmp_path: Path, capsys) -> None:
    argv = ["run", "--results", str(tmp_path), "--no-mlflow", "--methods", "pyod:KNN,pyod:ECOD", "--datasets", "sine2d",
            "--param", "pyod:KNN.n_neighbors=100000"]  # fmt: skip
    assert main(argv) == 1  # some jobs failed
    from odbench.engine.store import Store

    records = {r["method"]: r for r in Store(tmp_path).records()}
    assert records["pyod:ECOD"]["status"] == "ok"
    assert records["pyod:KNN"]["status"] == "failed"
    assert "n_neighbors" in records["pyod:KNN"]["error"]["message"]


@pytest.mark.parametrize("detector", ["ECOD", "COPOD"])
def test_one_sort_gives_pyods_own_scores_of_each_point_alone(detector: str) -> None:
    """The vectorised path equals pyod's decision_function on batches of one: ties, a constant feature, new extremes."""
    import importlib

    from odbench.classical.ecdf_alone import scores_alone

    pyod_class = getattr(importlib.import_module(f"pyod.models.{detector.lower()}"), detector)
    rng = np.random.default_rng(0)
    train = np.c_[rng.random((300, 3)), rng.integers(0, 4, (300, 2)), np.zeros(300)]
    test = np.c_[1.5 * rng.random((40, 3)) - 0.2, rng.integers(-1, 5, (40, 2)), np.zeros(40)]
    fitted = pyod_class().fit(train)
    alone = np.array([fitted.decision_function(row[None])[0] for row in test])
    np.testing.assert_allclose(scores_alone(fitted, test), alone, rtol=1e-9, atol=1e-9)
