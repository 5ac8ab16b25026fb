"""`odbench reproduce`: experiments as data, the paper's numbers beside ours."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

import odbench
from odbench.api import DataInfo
from odbench.cli import main
from odbench.engine.registry import Registry
from odbench.views.reproduce import available, comparison, load_experiment, paper_values, render


def test_every_experiment_file_loads_and_names_real_plugins() -> None:
    registry = Registry()
    for name in available():
        experiment = load_experiment(name)
        assert experiment.budgets.keys() >= {"quick", "full"}
        for column in experiment.columns:
            if column.method:
                registry.method(column.method)  # raises on a misspelt method
        for dataset in experiment.datasets:
            registry.get("dataset", dataset)
        paper = paper_values(experiment)
        assert len(paper) > 0, f"{name}: no paper numbers for {experiment.paper_table}"
        assert set(paper["dataset"]) <= set(experiment.datasets), f"{name}: paper rows name datasets we do not run"
        assert set(paper["column"]) <= {c.name for c in experiment.columns}, f"{name}: a paper column is missing"


def test_comparison_marks_cells_outside_tolerance() -> None:
    experiment = load_experiment("table2")
    ours = pd.DataFrame(
        [
            {"column": "drocc", "dataset": "thyroid", "normal_class": "", "value": v, "oracle": False, "ceiling": np.nan}
            for v in (0.70, 0.72)
        ]
        + [{"column": "ocsvm", "dataset": "thyroid", "normal_class": "", "value": 0.40, "oracle": True, "ceiling": np.nan}]
    )
    table, caption = comparison(experiment, ours, "quick")
    assert table.loc["drocc", "thyroid"] == "**0.71 ± 0.01**"  # our best on thyroid
    assert table.loc["drocc", "thyroid (paper)"] == "0.78 ± 0.03"
    assert table.loc["drocc", "thyroid Δ"] == "-0.07 ✗"  # |0.71 - 0.78| > 0.05
    assert table.loc["ocsvm", "thyroid Δ"] == "+0.01" and table.loc["ocsvm", "thyroid"].endswith("†")
    assert table.loc["dcn", "thyroid (paper)"] == "0.33 ± 0.03"  # paper-only column kept
    assert any("Budget 'quick'" in line for line in caption) and any("oracle" in line for line in caption)
    latex = render(table, caption, "latex")
    assert r"\textbf{0.71 $\pm$ 0.01}" in latex and "±" not in latex and r"e2e\_ae" in latex and r"\toprule" in latex
    assert "**" not in render(table, caption, "csv") and "<b>0.71 ± 0.01</b>" in render(table, caption, "html")


def test_table2_variant_uses_the_authors_split_and_f1() -> None:
    from odbench.engine.plan import UsageError
    from odbench.views.reproduce import with_variant

    edgeml = with_variant(load_experiment("table2"), "edgeml")
    assert edgeml.protocol == "contamination_edgeml" and edgeml.metric == "f1@p20"
    with pytest.raises(UsageError, match="no variant 'nope'; known: edgeml"):
        with_variant(load_experiment("table2"), "nope")
    _, caption = comparison(edgeml, pd.DataFrame(columns=["column", "dataset", "normal_class", "value", "oracle", "ceiling"]), "full")
    assert "Variant 'edgeml'" in caption[1]


def test_from_store_without_a_store_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["reproduce", "table2", "--from-store", "--results", str(tmp_path / "nowhere"), "--no-mlflow"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--from-store: no results store at" in line and not (tmp_path / "nowhere").exists()


def test_a_variant_gives_its_columns_their_own_reasons() -> None:
    from odbench.views.reproduce import with_variant

    columns = {c.name: c for c in with_variant(load_experiment("table2"), "edgeml").columns}
    assert "not comparable here" in columns["ocsvm"].why["metric"]
    assert "same convention" in columns["drocc"].why["metric"]
    assert "not comparable" not in str({c.name: c.why for c in load_experiment("table2").columns})


def test_drocc_grid_is_the_papers() -> None:
    drocc = Registry().method("drocc")
    grid = drocc.param_grid(DataInfo("x", "tabular", (16,), 100))
    assert grid["mu"] == [0.5, 1.0] and grid["ascent_step_size"] == [0.1, 0.01]
    assert grid["lr"] == [1e-2, 1e-4] and grid["optimizer"] == ["adam", "sgd"]
    assert grid["radius"] == [1.0, 2.0, 4.0]  # around sqrt(16) / 2
    assert math.prod(len(v) for v in grid.values()) == 48


def test_unknown_experiment_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["reproduce", "table9"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "unknown experiment 'table9'; known: ocln-mnist, table1" in line


def _fixture_files(folder: Path) -> None:
    """Small files in the real formats of Table 2's datasets (not the real data)."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(300, 6)), rng.normal(4.0, 1.0, size=(20, 6))])
    np.savez(folder / "38_thyroid.npz", X=X, y=np.r_[np.zeros(300), np.ones(20)])
    X = np.concatenate([rng.normal(size=(120, 274)), rng.normal(3.0, 1.0, size=(15, 274))])
    scipy.io.savemat(folder / "arrhythmia.mat", {"X": X, "y": np.r_[np.zeros(120), np.ones(15)][:, None]})
    rows = [f"M,{','.join(f'{v:.3f}' for v in rng.random(7))},{rings}" for rings in [8, 9, 10] * 60 + [3, 21] * 10]
    (folder / "abalone.data").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_reproduce_table2_quick_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch, request) -> None:
    """On the real files when ../shared/data is there; otherwise on format fixtures (checksums waived explicitly)."""
    from tests.conftest import SHARED_DATA

    if SHARED_DATA.is_dir():
        data = SHARED_DATA
    else:
        data = tmp_path / "fixtures"
        data.mkdir()
        _fixture_files(data)
        monkeypatch.setenv("ODBENCH_TRUST_LOCAL_FILES", "1")  # fixtures cannot match the pinned hashes
    results = tmp_path / "results"
    argv = ["reproduce", "table2", "--budget", "quick", "--data-dir", str(data), "--results", str(results), "--no-mlflow"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "### Table 2: F1 on Thyroid, Arrhythmia and Abalone" in out
    for column in ("ocsvm", "lof", "e2e_ae", "deepsvdd", "drocc", "dagmm", "goad"):
        assert f"| {column}" in out
    assert "Budget 'quick'" in out
    # contamination has no validation split: the records say every deep job kept its last epoch, and so does the caption
    assert "*Epoch selected by last epoch (no validation split holding both classes): e2e_ae, deepsvdd, drocc, dagmm, goad" in out
    assert "| last " in out  # the gap table's 'selected by'
    # resumable like any suite: a second run finds everything done
    assert main(argv) == 0
    assert "already done" in capsys.readouterr().err
    # --from-store runs nothing; --verdict writes the tidy rows and how they were made
    verdict = tmp_path / "verdict"
    assert main([*argv, "--from-store", "--verdict", str(verdict)]) == 0
    assert "nothing was run" in capsys.readouterr().err
    rows = pd.read_csv(verdict / "table2.csv", keep_default_na=False)
    assert {"experiment", "variant", "budget", "selection", "method", "dataset", "metric", "ours_mean", "ours_std", "n",
            "paper", "delta", "why"} <= set(rows.columns)  # fmt: skip
    drocc = rows[(rows["method"] == "drocc") & (rows["dataset"] == "thyroid")].iloc[0]
    assert drocc["selection"] == "last" and drocc["n"] == load_experiment("table2").budgets["quick"].repetitions and float(drocc["paper"]) == pytest.approx(0.78)
    md = (verdict / "table2.md").read_text()
    assert "### Table 2" in md and "- command: `odbench reproduce table2" in md and "- machine: " in md
    # the command is a layer over odbench.reproduce: the same gap table, as a DataFrame
    gaps = odbench.reproduce(odbench.Reproduction("table2", from_store=True), tracking=odbench.Tracking(mlflow=False),
                             paths=odbench.Paths(results, data_dirs=[data]), progress=False)  # fmt: skip
    made = gaps.attrs["reproduced"]
    saved = pd.read_csv(made.gap_path, dtype={"normal_class": str, "variant": str}, keep_default_na=False)
    assert len(gaps) == len(saved) > 0 and list(gaps["column"]) == list(saved["column"])
    assert np.allclose(gaps["honest_mean"], pd.to_numeric(saved["honest_mean"]), equal_nan=True)
    assert made.summary is None and len(made.ours) == made.planned, "read, not run"
    assert len(pd.concat([gaps, gaps])) == 2 * len(gaps), "frames of two calls join (pandas compares their attrs)"


@pytest.mark.parametrize(
    ("asked", "fragment"),
    [
        (dict(name="table9"), "unknown experiment 'table9'"),
        (dict(name="figure1"), "figure1 is a figure, not a table"),
        (dict(name="table2", variant="nope"), "has no variant 'nope'"),
        (dict(name="table2", columns="nope"), "no column 'nope' that odbench runs"),
        (dict(name="table2", from_store=True), "--from-store: no results store"),
    ],
)
def test_reproduce_refuses_bad_input_before_anything_runs(tmp_path: Path, asked: dict, fragment: str) -> None:
    from odbench.engine.plan import UsageError

    with pytest.raises(UsageError, match=fragment):
        odbench.reproduce(odbench.Reproduction(**asked), paths=odbench.Paths(tmp_path / "r"), progress=False)
    assert not (tmp_path / "r").exists()
    with pytest.raises(UsageError, match="unknown budget 'huge'"):
        odbench.Reproduction("table2", budget="huge")


def test_reproduce_runs_chosen_columns_on_fewer_seeds_with_the_selection_asked(registry) -> None:
    """--columns, --repetitions and --selection oracle reach the plan: the full schedule, one seed, marked oracle."""
    from odbench.engine.experiments import plan_jobs
    from odbench.engine.plan import UsageError

    experiment = load_experiment("table2")
    repro = plan_jobs(experiment, "full", registry, ["thyroid"], repetitions=1, selection="oracle", columns=["drocc"])
    assert [(job.method, job.repetition, job.selection) for job in repro.plan.jobs] == [("drocc", 0, "oracle")]
    assert repro.plan.jobs[0].params["epochs"] == 100  # the full budget's schedule, untouched
    with pytest.raises(UsageError, match="no column 'nope' that odbench runs"):
        plan_jobs(experiment, "full", registry, ["thyroid"], columns=["nope"])
