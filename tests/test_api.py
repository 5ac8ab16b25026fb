"""The Python API: odbench.run / tune / reproduce take option bundles, return tidy rows, refuse bad input up front, import lazily."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import odbench
from odbench.cli import main
from odbench.core.params import ParamError
from odbench.engine.plan import UsageError
from odbench.engine.registry import RegistryError
from odbench.protocols import ProtocolError

REPO = Path(__file__).resolve().parents[1]


QUIET = dict(tracking=odbench.Tracking(mlflow=False), progress=False)


def test_run_returns_one_row_per_planned_job_and_resumes(tmp_path: Path) -> None:
    options = dict(classes=[0, "3"], params={"drocc": {"epochs": 3, "only_ce_epochs": 1}, "knn.n_neighbors": 4})
    paths = odbench.Paths(results=tmp_path)
    frame = odbench.run(odbench.Suite(["knn", "drocc"], "digits", **options), paths=paths, **QUIET)
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}
    assert list(frame["method"]) == ["knn", "knn", "drocc", "drocc"], "rows in plan order"
    assert list(frame["normal_class"]) == ["0", "3", "0", "3"]
    assert np.all((frame["auroc"] >= 0) & (frame["auroc"] <= 1)), "a metric column per metric"
    drocc = frame[frame["method"] == "drocc"]
    assert set(drocc["param.epochs"]) == {3} and set(drocc["param.radius"]) == {4.0}, "resolved parameters, defaults merged"
    assert set(frame.loc[frame["method"] == "knn", "param.n_neighbors"]) == {4}
    assert frame.attrs["summary"].ok == 4 and frame.attrs["results"] == str(tmp_path)

    again = odbench.run(odbench.Suite("knn,drocc", ["digits"], **options), paths=paths, **QUIET)
    assert again.attrs["summary"].already_done == 4 and again.attrs["summary"].ok == 0
    assert list(again["key"]) == list(frame["key"]) and np.allclose(again["auroc"], frame["auroc"]), "read back, not rerun"


@pytest.mark.parametrize(
    ("suite", "where", "error", "fragment"),
    [
        (dict(methods="knnn"), {}, RegistryError, "unknown method 'knnn'"),
        (dict(methods=["knn"], seeds=0), {}, UsageError, "seeds must be a positive integer"),
        (dict(methods=["knn"], classes=[11]), {}, ProtocolError, "unknown class '11'"),
        (dict(methods="knn", params={"knn": {"bogus": 1}}), {}, ParamError, "bogus"),
        (dict(methods="knn", params={"knn": 3}), {}, UsageError, "params takes"),
        (dict(methods=3), {}, UsageError, "methods must be"),
        (dict(methods="knn", classes=","), {}, UsageError, "names nothing"),
        (dict(methods="knn", selection="test"), {}, UsageError, "unknown selection 'test'"),
        (dict(methods="knn"), dict(device="tpu"), UsageError, "unknown device 'tpu'"),
        (dict(methods="knn"), dict(jobs=0), UsageError, "jobs must be a positive integer"),
        (dict(methods="knn"), dict(threads=0), UsageError, "threads must be a positive integer"),
        (dict(methods="knn"), dict(gpu_per_job=0.5), UsageError, "applies to Ray only"),
        (dict(methods="knn"), dict(executor="slurm"), UsageError, "unknown executor 'slurm'"),
    ],
)
def test_bad_input_raises_before_anything_is_written(suite: dict, where: dict, error: type, fragment: str, tmp_path: Path) -> None:
    with pytest.raises(error, match=fragment):  # the bundles check what they hold when made, the call the rest
        odbench.run(odbench.Suite(datasets="digits", **suite), odbench.Where(**where), paths=odbench.Paths(tmp_path / "r"), **QUIET)
    assert not (tmp_path / "r").exists()


def test_paths_refuse_a_missing_data_folder_and_a_results_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no_such_dir does not exist"):
        odbench.Paths(results=tmp_path / "r", data_dirs=[tmp_path / "no_such_dir"])
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        odbench.Paths(results=tmp_path / "file")


def test_tune_returns_the_evaluated_best_parameters(tmp_path: Path) -> None:
    paths = odbench.Paths(results=tmp_path)
    frame = odbench.tune(odbench.Suite("knn", "digits", classes=[3]), odbench.Search(trials=2), paths=paths, **QUIET)
    (study,) = frame.attrs["studies"]
    assert len(frame) == 1 and frame["status"].iloc[0] == "ok" and frame["study"].iloc[0] == study.study
    assert study.trials == 2 and study.best_value is not None
    with pytest.raises(UsageError, match="unknown metric 'auc'"):
        odbench.Search(metric="auc")
    with pytest.raises(UsageError, match="tune selects on validation data only"):
        odbench.tune(odbench.Suite("knn", "digits", selection="oracle"), paths=paths, **QUIET)


def test_workflows_take_at_most_six_parameters() -> None:
    import inspect

    from odbench import workflows
    from odbench.engine.tuning import tune_suite

    for function in (workflows.run, workflows.tune, workflows.reproduce, tune_suite):
        assert len(inspect.signature(function).parameters) <= 6, function.__name__


def test_import_is_lazy_and_version_is_printed(capsys: pytest.CaptureFixture) -> None:
    code = (
        "import sys, odbench; heavy = [m for m in ('pandas', 'torch', 'mlflow', 'odbench.workflows') if m in sys.modules]; "
        "assert not heavy, heavy; odbench.run; assert 'odbench.workflows' in sys.modules; print(odbench.__version__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == odbench.__version__
    from odbench.views.report import report
    from odbench.views.results import results

    assert odbench.results is results and odbench.report is report
    with pytest.raises(AttributeError, match="no attribute 'rnu'"):
        odbench.rnu  # noqa: B018
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"odbench {odbench.__version__}"


@pytest.mark.slow
def test_default_suite_runs_drocc_and_a_deep_baseline_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert {"drocc", "deepsvdd", "knn"} <= set(odbench.DEFAULT_SUITE.methods)
    assert odbench.DEFAULT_SUITE.datasets == ("sine2d", "digits")
    # the default methods on one dataset: the deep ones on their small budgets
    assert main(["run", "--datasets", "sine2d", "--no-mlflow", "--results", str(tmp_path), "--param", "drocc.lr=0.02"]) == 0
    captured = capsys.readouterr()
    assert "running the default suite's methods: ocsvm, iforest, lof, knn, drocc (epochs=20" in captured.err
    assert f"HTML report (tables, ROC/PR curves, rankings): {tmp_path / 'report.html'}" in captured.err
    html = (tmp_path / "report.html").read_text()
    assert "drocc" in html and "deepsvdd" in html and "<img" in html, "the default run writes its HTML report"
    assert "| drocc " in captured.out and "| deepsvdd " in captured.out
    paths = odbench.Paths(results=tmp_path)
    frame = odbench.run(odbench.Suite(datasets="sine2d", params={"drocc.lr": 0.02}), paths=paths, **QUIET)
    assert frame.attrs["summary"].already_done == 6, "the CLI is a layer over odbench.run: the same jobs"
    drocc = frame[frame["method"] == "drocc"].iloc[0]
    assert drocc["param.epochs"] == 20 and drocc["param.lr"] == 0.02, "the budget, under what the caller set"
    deepsvdd = frame[frame["method"] == "deepsvdd"].iloc[0]
    assert deepsvdd["param.epochs"] == odbench.DEFAULT_SUITE.budgets["deepsvdd"]["epochs"]
    named = odbench.run(odbench.Suite("drocc", "sine2d", params={"drocc.epochs": 1, "drocc.only_ce_epochs": 0}),
                        paths=paths, **QUIET)  # fmt: skip
    assert named["param.lr"].iloc[0] == 1e-3, "a run that names its methods gets their own defaults"
