"""Parameters: declared once, checked before anything runs, merged in one place, recorded as run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from odbench.api import DataInfo, FitContext, Method, ParamError, param
from odbench.cli import main
from odbench.core.params import declared_defaults, specs
from odbench.devkit.testing import obvious_outlier_task
from odbench.engine.registry import Registry


@pytest.mark.parametrize(
    ("method", "assignment", "fragment"),
    [
        ("drocc", "raduis=3", "method 'drocc' has no parameter 'raduis'; its parameters: epochs, batch_size"),
        ("knn", "nosuch_key=3", "method 'knn' has no parameter 'nosuch_key'; its parameters: n_neighbors, method"),
        ("knn", "n_neighbors=abc", "knn.n_neighbors must be an integer, got 'abc'"),
        ("knn", "n_neighbors=2.5", "knn.n_neighbors must be an integer, got 2.5"),
        ("knn", "n_neighbors=", "knn.n_neighbors must be an integer, got ''"),
        ("knn", "n_neighbors=0", "knn.n_neighbors must be at least 1, got 0"),
        ("knn", "method=mode", "knn.method must be one of 'largest', 'mean', 'median', got 'mode'"),
        ("drocc", "epochs=-1", "drocc.epochs must be at least 1, got -1"),
        ("drocc", "lr=abc", "drocc.lr must be a number, got 'abc'"),
        ("drocc", "only_ce_epochs=200", "drocc.only_ce_epochs (200) must be below drocc.epochs (100)"),
        ("drocc", "lr_steps=[[0.5,0.1]]", "drocc schedules its rate with drocc.lr_milestones, not lr_steps"),
    ],
)
def test_a_bad_parameter_is_one_line_exit_2_and_nothing_runs(
    method: str, assignment: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Unknown names and values of the wrong type or range are user errors, before any job (the store stays empty)."""
    results = tmp_path / "results"
    argv = ["run", "--results", str(results), "--no-mlflow", "--methods", method, "--datasets", "sine2d"]
    assert main([*argv, "--param", f"{method}.{assignment}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("odbench: error: ") and fragment in lines[0], lines
    assert not results.exists()


def test_values_typed_on_a_command_line_become_their_declared_types(registry: Registry) -> None:
    knn, drocc = registry.method("knn"), registry.method("drocc")
    assert knn.check_params({"n_neighbors": "3"}) == {"n_neighbors": 3}
    assert drocc.check_params({"lr": "1e-4", "radius": None, "lr_milestones": [[0.5, 0.1]]}) == {
        "lr": 1e-4, "radius": None, "lr_milestones": ((0.5, 0.1),),
    }  # fmt: skip
    with pytest.raises(ParamError, match="must be true or false"):
        drocc.check_params({"adversarial_bn_update": "yes"})


def test_every_bundled_method_declares_what_its_defaults_and_test_params_set(registry: Registry) -> None:
    """The declaration is the single list of names: defaults, data defaults and test settings all stay inside it."""
    for plugin in registry.all("method"):
        cls = plugin.cls
        if cls is None:  # a pyod:NAME detector that cannot run here, listed with its reason
            continue
        declared = set(specs(cls.Params))
        info = obvious_outlier_task(cls.modalities[0]).info
        assert set(cls.default_params(info)) == declared, cls.name
        assert set(cls.test_params) <= declared, cls.name
        assert all(spec.help for spec in specs(cls.Params).values()), cls.name


def test_a_method_fitted_directly_runs_with_the_engine_s_merged_parameters(registry: Registry) -> None:
    """PyodMethod.fit merges the defaults itself (it used to pass only the user's values to pyod)."""
    task = obvious_outlier_task("tabular")
    ocsvm = registry.method("ocsvm")(nu=0.2).fit(task.for_fit(), FitContext(seed=0))
    assert dataclasses.asdict(ocsvm.params) == ocsvm.resolve_params(task.info, {"nu": 0.2})
    assert ocsvm.params.kernel == declared_defaults(ocsvm.Params)["kernel"]
    assert ocsvm.detector_.nu == 0.2 and ocsvm.detector_.kernel == ocsvm.params.kernel


def test_the_record_keeps_the_parameters_that_ran(tmp_path: Path) -> None:
    results = tmp_path / "results"
    argv = ["run", "--results", str(results), "--no-mlflow", "--methods", "drocc", "--datasets", "sine2d",
            "--param", "drocc.epochs=3", "--param", "drocc.only_ce_epochs=1", "--param", "drocc.ascent_num_steps=2"]  # fmt: skip
    assert main(argv) == 0
    (path,) = (results / "jobs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["user_params"] == {"epochs": 3, "only_ce_epochs": 1, "ascent_num_steps": 2}
    assert record["params"]["epochs"] == 3 and record["params"]["radius"] == pytest.approx(2**0.5 / 2)
    assert set(record["params"]) == set(specs(Registry().method("drocc").Params))


def test_list_params_shows_each_parameter_with_default_and_meaning(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--params", "drocc"]) == 0
    out = capsys.readouterr().out
    assert "radius" in out and "(from the data)" in out and "mu, weight of the adversarial loss" in out


def test_drocc_refuses_a_schedule_it_would_ignore(registry: Registry) -> None:
    task = obvious_outlier_task("tabular")
    with pytest.raises(ParamError, match="lr_milestones, not lr_steps"):
        registry.method("drocc")(lr_steps=[[0.5, 0.1]]).fit(task.for_fit(), FitContext(seed=0))


# ---------------------------------------------------------------- resolved before fit, typed, runtime apart


@dataclass
class _Chunks:
    chunk: int = param(64, "rows per chunk (cannot change a score)", low=1, keyed=False)
    dtype: str = param("float32", "the arithmetic (changes the numbers)")


class _Shifted(Method):
    """Distance to the mean plus a shift; its fit body never resolves anything itself."""

    name = "shifted"

    @dataclass
    class Params:
        Runtime: ClassVar[type] = _Chunks
        shift: float | None = param(None, "added to every score; None: half the input dimension")
        scale: float = param(1.0, "multiplies every distance", low=0)

    @classmethod
    def data_defaults(cls, info: DataInfo) -> dict[str, float]:
        return {"shift": info.n_features / 2}

    def fit(self, task, ctx):
        self.seen_ = self.params  # what the body saw
        self.mean_ = task.train.normal.mean(0)
        return self

    def anomaly_score(self, X):
        return self.params.scale * np.linalg.norm(X - self.mean_, axis=1) + self.params.shift


class _Wrapped(_Shifted):
    """A subclass whose fit calls super().fit: one resolution for the whole call."""

    name = "wrapped"

    def fit(self, task, ctx):
        self.outer_saw_ = self.params
        return super().fit(task, ctx)


def test_fit_s_body_reads_the_resolved_parameters_as_its_params_dataclass() -> None:
    """Protects the base class's resolution before fit: a plugin that never merges defaults still gets them."""
    task = obvious_outlier_task("tabular")
    method = _Shifted(scale=2, chunk=8)
    assert method.given_params == {"scale": 2, "chunk": 8}  # __init__ only stores
    method.fit(task.for_fit(), FitContext(seed=0))
    assert isinstance(method.seen_, _Shifted.Params)
    assert dataclasses.asdict(method.seen_) == {"shift": task.info.n_features / 2, "scale": 2.0}
    assert dataclasses.asdict(method.runtime) == {"chunk": 8, "dtype": "float32"}
    assert method.resolved_params() == method.resolve_params(task.info, {"scale": 2, "chunk": 8})


def test_a_fit_calling_super_fit_resolves_once() -> None:
    task = obvious_outlier_task("tabular")
    method = _Wrapped(scale=3).fit(task.for_fit(), FitContext(seed=0))
    assert method.outer_saw_ is method.seen_ and method.params.scale == 3.0


def test_runtime_settings_are_set_and_recorded_as_parameters_but_live_apart(registry: Registry) -> None:
    """DROCC's engineering settings are not among the parameters its plugin reads, yet the user sets them alike."""
    drocc = registry.method("drocc")
    own = {f.name for f in dataclasses.fields(drocc.Params)}
    runtime = {name for name, spec in specs(drocc.Params).items() if spec.runtime}
    assert runtime == {"precision", "memory_format", "eval_every", "eval_batch_size"} and not own & runtime
    info = DataInfo(dataset="t", modality="tabular", shape=(4,), n_train=100)
    method = drocc(precision="fp32", eval_batch_size=7).prepare(info)
    assert method.runtime.precision == "fp32" and method.runtime.eval_batch_size == 7
    assert not hasattr(method.params, "precision")
    assert set(method.resolved_params()) == set(specs(drocc.Params))  # what the record states


def test_the_job_key_keeps_the_user_s_values_and_keyed_runtime_settings_only(registry: Registry) -> None:
    """Protects ``key_params``: a setting declared keyed=False leaves the key; every other value stays in it."""
    drocc = registry.method("drocc")
    key = drocc.key_params({"mu": 0.5, "precision": "bf16", "eval_batch_size": 7})
    assert key["mu"] == 0.5 and key["precision"] == "bf16" and key["memory_format"] == "auto"
    assert "eval_batch_size" not in key and key["radius"] is None  # data defaults: code and data are in the key
    assert _Shifted.key_params({"chunk": 1}) == {"shift": None, "scale": 1.0, "dtype": "float32"}
    assert _Shifted.key_params({"dtype": "float64"})["dtype"] == "float64"
