"""`odbench report` on a real tiny suite: the tidy table, one configuration per cell, every format, figures, HTML."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from odbench.cli import main
from odbench.engine.store import Store
from odbench.views.report import report
from odbench.views.results import results

CHROMIUM = Path("/usr/bin/chromium")
CLASSES = "0,1,2,3,4"


def _run(results_dir: Path, dataset: str, *argv: str) -> None:
    base = ["run", "--results", str(results_dir), "--device", "cpu", "--no-mlflow", "--datasets", dataset]
    assert main([*base, *argv]) in (0, 1)


DROCC = ["--param", "drocc.only_ce_epochs=1", "--param", "drocc.batch_size=64", "--param", "drocc.ascent_num_steps=2"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny store: 3 classical methods on 5 digits classes; DROCC on digits/0 (selected on validation)
    and on sine2d at 2 and 3 epochs, 2 seeds (sine2d's validation split has no anomalies: the last epoch is
    kept, so the two configurations give different numbers); DeepSVDD, pretrained, on digits/0, 2 seeds;
    one job that diverges."""
    root = tmp_path_factory.mktemp("suite") / "results"
    _run(root, "digits", "--methods", "knn,lof,iforest", "--classes", CLASSES)
    _run(root, "digits", "--methods", "drocc", "--classes", "0", "--param", "drocc.epochs=3", *DROCC)
    for epochs in (2, 3):
        _run(root, "sine2d", "--methods", "drocc", "--seeds", "2", "--param", f"drocc.epochs={epochs}", *DROCC)
    # DeepSVDD with autoencoder pretraining, 2 seeds: curves average over seeds, the history holds both phases
    _run(root, "digits", "--methods", "deepsvdd", "--classes", "0", "--seeds", "2", "--param", "deepsvdd.epochs=2",
         "--param", "deepsvdd.pretrain_epochs=3", "--param", "deepsvdd.batch_size=64")  # fmt: skip
    # a job that fails while it runs: its record says why
    _run(root, "digits", "--methods", "deepsvdd", "--classes", "1", "--param", "deepsvdd.lr=1e12",
         "--param", "deepsvdd.epochs=2", "--param", "deepsvdd.pretrain_epochs=0")  # fmt: skip
    return root


N_JOBS = 15 + 1 + 4 + 2 + 1


def test_tidy_table_has_a_row_per_job_with_parameters_config_and_selected_epoch(suite: Path) -> None:
    frame = results(suite)
    store = Store(suite)
    assert len(frame) == len(store.records()) == N_JOBS
    assert set(frame["status"]) == {"ok", "failed"}
    wave = frame[(frame["method"] == "drocc") & (frame["dataset"] == "sine2d")]
    assert sorted(wave["param.epochs"]) == [2, 2, 3, 3] and all(isinstance(v, int) for v in wave["param.epochs"])
    # rows of one configuration share a fingerprint; the two configurations differ
    assert wave.groupby("param.epochs")["config_fingerprint"].nunique().tolist() == [1, 1]
    assert wave["config_fingerprint"].nunique() == 2
    # the epoch the training loop kept reached the record
    assert (wave["selected_by"] == "last").all() and (wave["selected_epoch"] == wave["param.epochs"] - 1).all()
    (digit,) = [row for _, row in frame.iterrows() if row["method"] == "drocc" and row["dataset"] == "digits"]
    values = [h["val_auroc"] for h in store.read(digit["key"])["history"] if "val_auroc" in h]
    assert digit["selected_by"] == "val" and digit["selected_epoch"] == int(np.argmax(values))
    classical = frame[frame["method"] == "knn"]
    assert classical["selected_epoch"].isna().all() and classical["param.n_neighbors"].notna().all()
    failed = frame[frame["status"] == "failed"].iloc[0]
    assert failed["method"] == "deepsvdd" and failed["error"].startswith("TrainingDiverged")
    ok = frame[frame["status"] == "ok"]
    assert (ok["auroc_ci_low"] <= ok["auroc"] + 1e-12).all() and (ok["auroc"] <= ok["auroc_ci_high"] + 1e-12).all()
    assert (ok["auroc_ci_high"] - ok["auroc_ci_low"] > 0).any()


def test_a_cell_never_averages_two_configurations(suite: Path) -> None:
    text = report(suite, methods="drocc", datasets="sine2d").text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| drocc")}
    assert list(rows) == ["drocc[epochs=2]", "drocc[epochs=3]"]
    frame = results(suite, ci=False)
    wave = frame[(frame["method"] == "drocc") & (frame["dataset"] == "sine2d")]
    metric = wave["headline_metric"].iloc[0]
    for epochs in (2, 3):
        mine = wave[wave["param.epochs"] == epochs][metric]
        assert f"{mine.mean():.3f} ± {mine.std(ddof=1):.3f}" in rows[f"drocc[epochs={epochs}]"]
    pooled = wave[metric]
    assert abs(pooled.mean() - wave[wave["param.epochs"] == 2][metric].mean()) > 5e-4, "the configurations must differ"
    assert f"{pooled.mean():.3f} ± " not in text
    assert "drocc: 2 configurations differ in epochs" in text


def test_every_format_names_the_failed_job(suite: Path) -> None:
    for fmt in ("markdown", "latex", "html"):
        text = report(suite, format=fmt).text
        assert "1 job(s) failed" in text or "1 failed job(s)" in text, fmt
        assert "deepsvdd on digits/1" in text and "TrainingDiverged" in text, fmt


def test_latex_is_booktabs_with_caption_and_pm(suite: Path) -> None:
    text = report(suite, format="latex").text
    assert (
        r"\toprule" in text
        and r"\midrule" in text
        and r"\bottomrule" in text
        and r"\caption{digits (one\_vs\_all)" in text
    )
    assert r"$\pm$" in text and "±" not in text and r"\hline" not in text and "–" not in text


def test_html_is_a_full_document(suite: Path) -> None:
    text = report(suite, format="html").text
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>") and "<meta charset" in text


def test_csv_writes_the_tidy_and_the_aggregated_table(
    suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["report", "--results", str(suite), "--format", "csv", "--output", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert len(tidy) == N_JOBS and {"param.epochs", "config_fingerprint", "selected_epoch", "auroc_ci_low"} <= set(
        tidy.columns
    )
    assert "failed" in set(tidy["status"]) and "1 job(s) failed" in captured.err
    text = (tmp_path / "summary.csv").read_text()
    assert "±" not in text and not any(line.startswith("#") for line in text.splitlines())
    summary = pd.read_csv(StringIO(text))
    assert summary.equals(pd.read_csv(StringIO(captured.out)))  # stdout is the same aggregated CSV
    for column in ("mean", "std", "n"):
        assert pd.api.types.is_numeric_dtype(summary[column]), column
    drocc = summary[(summary["method"] == "drocc") & (summary["metric"] == "auroc") & (summary["dataset"] == "sine2d")]
    assert sorted(drocc["column"]) == ["drocc[epochs=2]", "drocc[epochs=3]"] and list(drocc["n"]) == [2, 2]
    mine = tidy[(tidy["method"] == "drocc") & (tidy["param.epochs"] == 2) & (tidy["dataset"] == "sine2d")]["auroc"]
    assert drocc[drocc["column"] == "drocc[epochs=2]"]["mean"].iloc[0] == pytest.approx(mine.mean())
    assert summary.loc[summary["method"] == "deepsvdd", "n_failed"].sum() == 1


def test_bad_report_options_are_one_line(suite: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "--results", str(suite), "--metric", "nope"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("odbench: error: no results for metric 'nope'; known: aupr, auroc")
    assert main(["report", "--results", str(suite), "--methods", "xyz*"]) == 2
    assert "no jobs match" in capsys.readouterr().err


@pytest.mark.slow
def test_plots_and_html_report(suite: Path, tmp_path: Path) -> None:
    from odbench.views.reproduce import gap_table, load_experiment, save_gap

    # what `odbench reproduce` leaves beside the store: the report shows it
    honest = pd.DataFrame(
        [
            {
                "column": "drocc",
                "dataset": "thyroid",
                "normal_class": "",
                "value": 0.7,
                "oracle": False,
                "ceiling": np.nan,
            }
        ]
    )
    save_gap(
        suite,
        gap_table(load_experiment("table2"), honest, honest.assign(value=0.75, oracle=True), "quick"),
        load_experiment("table2"),
        "quick",
    )
    out = tmp_path / "report.html"
    made = report(suite, html=out, plots=tmp_path / "plots")
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    for stem in ("critical_difference", "digits_one_vs_all_roc_pr", "digits_one_vs_all_histograms",
                 "digits_one_vs_all_training", "digits_one_vs_all_seeds", "sine2d_contamination_training"):  # fmt: skip
        assert f"{stem}.png" in names and f"{stem}.pdf" in names
        assert (tmp_path / "plots" / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    assert out in made.files
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 1 + 4 + 4 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert not re.search(r'(src|href)="(?!data:)', text), "self-contained: nothing loaded from elsewhere"
    # the ranking: 3 classical methods on 5 classes (DROCC and DeepSVDD are on one class only, so they are left out)
    assert "Friedman test over 5 tasks and 3 methods" in text
    assert "left out (results on fewer than half of the tasks): deepsvdd, drocc" in text
    assert "1 failed job(s)" in text
    assert "Honest vs oracle vs paper: table2, budget quick" in text and re.search(r"<td>\s*\+0\.050\s*</td>", text)

    if not CHROMIUM.exists():
        pytest.skip("headless Chromium (/usr/bin/chromium) is not installed")
    shot = tmp_path / "shot.png"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
               f"--screenshot={shot}", "--window-size=1400,3000", out.as_uri()]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 3000)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    # a rendered report, not a blank page: much of it is drawn, in many colours
    drawn = (pixels.mean(axis=2) < 245).mean()
    colours = len(np.unique(pixels.reshape(-1, 3)[::7], axis=0))
    assert drawn > 0.05 and colours > 200, (drawn, colours)
    shutil.copy(shot, suite.parent / "report_screenshot.png")  # for a person to look at after the run


# -- what the per-dataset figures show: means over a column's jobs, pooled ranks, every training phase --------------


def _figure(suite: Path, name: str, store: Store | None = None) -> Any:
    """The report's figure ``name`` as `odbench report --html` draws it (the others closed unused)."""
    import matplotlib.pyplot as plt

    from odbench.views.html_report import figures

    found = None
    for drawn in figures(results(suite, ci=False), store or Store(suite)):
        if drawn.name == name:
            found = drawn.figure
        else:
            plt.close(drawn.figure)
    assert found is not None, name
    return found


def _ok(suite: Path, method: str, dataset: str, **params: Any) -> pd.DataFrame:
    frame = results(suite, ci=False)
    rows = frame[(frame["status"] == "ok") & (frame["method"] == method) & (frame["dataset"] == dataset)]
    for name, value in params.items():
        rows = rows[rows[f"param.{name}"] == value]
    return rows.sort_values(["normal_class", "repetition"])


def _arrays(store: Store, key: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = store.scores(key)
    return arrays["labels"], arrays["scores"]


def test_curves_on_the_grid_are_the_job_s_own_curves() -> None:
    """The per-job curves the report averages: the ROC's area is the job's AUROC; precision is interpolated."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from odbench.views.curves import pr_on_grid, roc_on_grid

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(300), np.ones(100)]
    scores = np.round(np.r_[rng.normal(0, 1, 300), rng.normal(1.5, 1, 100)], 1)  # ties: vertical ROC steps
    grid = np.linspace(0, 1, 4001)
    assert np.trapezoid(roc_on_grid(labels, scores, grid), grid) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-4
    )
    # a hand-made curve: the top of a vertical step at fpr 0.5, linear between points
    y, s = np.array([0, 1, 1, 0]), np.array([1.0, 2.0, 2.0, 2.0])  # thresholds 2 (fpr 0.5, tpr 1), 1 (fpr 1)
    np.testing.assert_allclose(roc_on_grid(y, s, np.array([0.0, 0.25, 0.5, 1.0])), [0.0, 0.5, 1.0, 1.0])
    precision = pr_on_grid(labels, scores, grid)
    assert np.all(np.diff(precision) <= 1e-12), "interpolated precision never rises with recall"
    assert np.trapezoid(precision, grid) >= average_precision_score(labels, scores) - 1e-3


def test_roc_and_pr_curves_are_the_vertical_mean_of_each_columns_jobs(suite: Path) -> None:
    from odbench.views.curves import CURVE_GRID, pr_on_grid, roc_on_grid

    store = Store(suite)
    grid = np.linspace(0, 1, CURVE_GRID)
    cases = [
        ("digits_one_vs_all_roc_pr", "knn", _ok(suite, "knn", "digits"), "mean of 1 seed x 5 classes"),
        ("digits_one_vs_all_roc_pr", "deepsvdd", _ok(suite, "deepsvdd", "digits"), "mean of 2 seeds x 1 class"),
        # two configurations on one dataset: two curves, each the mean of its own 2 seeds only
        ("sine2d_contamination_roc_pr", "drocc[epochs=2]", _ok(suite, "drocc", "sine2d", epochs=2), "mean of 2 seeds"),
        ("sine2d_contamination_roc_pr", "drocc[epochs=3]", _ok(suite, "drocc", "sine2d", epochs=3), "mean of 2 seeds"),
    ]
    import matplotlib.pyplot as plt

    figs = {name: _figure(suite, name, store) for name in dict.fromkeys(c[0] for c in cases)}
    for figure, column, rows, over in cases:
        roc_ax, pr_ax = figs[figure].axes[:2]
        (roc,) = [line for line in roc_ax.lines if line.get_label().startswith(f"{column} (")]
        (pr,) = [line for line in pr_ax.lines if line.get_label() == column]
        assert over in roc.get_label(), roc.get_label()
        jobs = [_arrays(store, key) for key in rows["key"]]
        assert len(jobs) >= 2
        rocs = np.array([roc_on_grid(y, s, grid) for y, s in jobs])
        prs = np.array([pr_on_grid(y, s, grid) for y, s in jobs])
        np.testing.assert_allclose(roc.get_xdata(), grid)
        np.testing.assert_allclose(roc.get_ydata(), rocs.mean(axis=0), atol=1e-12)
        np.testing.assert_allclose(pr.get_ydata(), prs.mean(axis=0), atol=1e-12)
        assert not np.allclose(rocs[0], rocs.mean(axis=0)), "the jobs' curves differ: one job is not their mean"
    # pooling both configurations would draw another curve
    both = _ok(suite, "drocc", "sine2d")
    pooled = np.mean([roc_on_grid(*_arrays(store, key), grid) for key in both["key"]], axis=0)
    (line,) = [
        line
        for line in figs["sine2d_contamination_roc_pr"].axes[0].lines
        if line.get_label().startswith("drocc[epochs=2] (")
    ]
    assert not np.allclose(line.get_ydata(), pooled)
    # a light ±1 std band per averaged column, on both panels
    for ax in figs["digits_one_vs_all_roc_pr"].axes[:2]:
        assert len(ax.collections) == 4  # knn, lof, iforest, deepsvdd: DROCC's one digits job has no spread
    for fig in figs.values():
        plt.close(fig)


def test_histograms_pool_every_job_after_ranking_each_on_its_own(suite: Path) -> None:
    import matplotlib.pyplot as plt
    from scipy.stats import rankdata

    from odbench.views.plots import RANK_BINS

    store = Store(suite)
    fig = _figure(suite, "digits_one_vs_all_histograms", store)
    (ax,) = [ax for ax in fig.axes if ax.get_title().startswith("knn:")]
    assert ax.get_title() == "knn: 1 seed x 5 classes" and "percentile rank" in ax.get_xlabel()
    jobs = [_arrays(store, key) for key in _ok(suite, "knn", "digits")["key"]]
    ranks = [(rankdata(s) - 0.5) / len(s) for _, s in jobs]  # each job's own scale gone
    bars = np.array([patch.get_height() for patch in ax.patches])
    normal, anomalous = bars[: len(RANK_BINS) - 1], bars[len(RANK_BINS) - 1 :]
    for drawn, label in ((normal, 0), (anomalous, 1)):
        pooled = np.concatenate([r[y == label] for (y, _), r in zip(jobs, ranks)])
        np.testing.assert_allclose(drawn, np.histogram(pooled, RANK_BINS, density=True)[0])
        first = np.histogram(ranks[0][jobs[0][0] == label], RANK_BINS, density=True)[0]
        assert not np.allclose(drawn, first), "one job alone draws another histogram"
    plt.close(fig)


def _training_axes(fig: Any, column: str) -> dict[str, Any]:
    """The training figure's panels of ``column``, by phase (``pretraining``, ``training``)."""
    found = {}
    for ax in fig.axes:
        title = ax.get_title()
        if title.startswith(f"{column}, class 0, rep 0: "):
            found[title.split(": ", 1)[1].split(" (")[0]] = ax
    return found


def test_training_curves_show_pretraining_then_training_with_the_kept_epoch(suite: Path, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    store = Store(suite)
    job = _ok(suite, "deepsvdd", "digits").iloc[0]
    history = store.read(job["key"])["history"]
    # the record keeps both phases, pretraining first (its rows under pretrain_* keys)
    assert [("pretrain_loss" in row, "loss" in row) for row in history] == [(True, False)] * 3 + [(False, True)] * 2
    fig = _figure(suite, "digits_one_vs_all_training", store)
    panels = _training_axes(fig, "deepsvdd")
    assert list(panels) == ["pretraining", "training"]
    assert "(pretraining then training, left to right)" in [text.get_text() for text in fig.texts][0]
    pre, main_ax = panels["pretraining"], panels["training"]
    assert pre.get_position().x0 < main_ax.get_position().x0, "pretraining is drawn before (left of) training"
    (loss,) = [line for line in pre.lines if line.get_label() == "pretraining loss"]
    np.testing.assert_allclose(loss.get_ydata(), [row["pretrain_loss"] for row in history[:3]])
    np.testing.assert_allclose(loss.get_xdata(), [0, 1, 2])
    (loss,) = [line for line in main_ax.lines if line.get_label() == "training loss"]
    np.testing.assert_allclose(loss.get_ydata(), [row["loss"] for row in history[3:]])
    (kept,) = [line for line in main_ax.lines if line.get_label().startswith("kept: epoch")]
    assert (
        kept.get_xdata()[0] == job["selected_epoch"]
        and f"kept: epoch {int(job['selected_epoch'])} (val)" == kept.get_label()
    )
    # DROCC has one phase: its training panel only
    assert list(_training_axes(fig, "drocc")) == ["training"]
    plt.close(fig)

    # a record stored before pretraining was drawn (or with pretrain_epochs=0) holds the main phase only
    old = tmp_path / "results"
    shutil.copytree(suite, old)
    path = Store(old).record_path(job["key"])
    record = json.loads(path.read_text())
    record["history"] = [row for row in record["history"] if "pretrain_loss" not in row]
    path.write_text(json.dumps(record, indent=1, sort_keys=True))
    fig = _figure(old, "digits_one_vs_all_training")
    assert list(_training_axes(fig, "deepsvdd")) == ["training"]
    plt.close(fig)
