"""Parameters: declared once, checked before anything runs, merged in one place, recorded as run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odbench.api import FitContext, ParamError
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
    assert ocsvm.params_ == ocsvm.resolve_params(task.info, {"nu": 0.2})
    assert ocsvm.params_["kernel"] == declared_defaults(ocsvm.Params)["kernel"]
    assert ocsvm.detector_.nu == 0.2 and ocsvm.detector_.kernel == ocsvm.params_["kernel"]


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
