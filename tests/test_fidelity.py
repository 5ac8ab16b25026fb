"""Fidelity to the paper, explained: the authors' scoring mode as a labelled variant, inverted scores flagged,
captions that say what selected the epoch, and unknown variants refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from odbench.api import DataInfo, Split
from odbench.cli import main
from odbench.core.contracts import BATCHNORM_TRAIN_MODE_PER_SOURCE
from odbench.core.metrics import inversion_test, recall_at_fpr_edgeml
from odbench.deep.scoring_modes import per_source_batches
from odbench.deep.training import Objective, TrainConfig, score_split
from odbench.engine.execute import validation_check
from odbench.engine.plan import UsageError, expand
from odbench.engine.registry import Registry
from odbench.engine.store import Store
from odbench.views.reproduce import comparison, gap_table, load_experiment, verdict_table, with_variant

# ----------------------------------------------------------------------------- the authors' scoring mode


class _Output(Objective):
    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x).reshape(len(x))


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))


def _split() -> Split:
    """30 ordinary points, then 10 'close negatives' shifted away from them (their batch statistics differ)."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(30, 4)), rng.normal(size=(10, 4)) + 3]).astype(np.float32)
    close = np.r_[np.zeros(30, bool), np.ones(10, bool)]
    return Split(X=X, y=close.astype(int), index=np.arange(40), close=close)


def test_per_source_batches_keep_ordinary_rows_in_order_and_close_negatives_apart() -> None:
    close = np.r_[np.zeros(7, bool), np.ones(5, bool)]
    batches = per_source_batches(close, batch_size=4, seed=1)
    assert [list(b) for b in batches[:2]] == [[0, 1, 2, 3], [4, 5, 6]]  # the authors' sequential loader
    generated = np.concatenate(batches[2:])
    assert sorted(generated) == [7, 8, 9, 10, 11] and list(generated) != [7, 8, 9, 10, 11]  # shuffled, alone
    assert all(set(b) <= set(range(7, 12)) for b in batches[2:])
    assert [len(b) for b in per_source_batches(np.zeros(7, bool), 3, 0)] == [3, 4]  # no batch of one for BatchNorm


def test_train_mode_scoring_depends_on_the_batch_and_eval_mode_does_not() -> None:
    model, objective, split = _bn_net(), _Output(), _split()
    info, device = DataInfo("t", "tabular", (4,), 40), torch.device("cpu")
    config = TrainConfig(batch_size=16, eval_batch_size=16)
    running = model[1].running_mean.clone()

    # eval mode: a point's score does not depend on its batch or on the order of the rows
    plain = score_split(objective, model, split, info, device, config)
    small = score_split(objective, model, split, info, device, TrainConfig(batch_size=16, eval_batch_size=3))
    order = np.random.default_rng(1).permutation(40)
    shuffled = score_split(objective, model, Split(split.X[order], split.y[order], order, split.close[order]), info, device, config)
    np.testing.assert_allclose(plain, small, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(shuffled, plain[order], rtol=1e-6, atol=1e-6)

    # the authors' mode: close negatives normalized against themselves score otherwise than in mixed batches
    authors = score_split(objective, model, split, info, device, config, BATCHNORM_TRAIN_MODE_PER_SOURCE, seed=0)
    one_source = Split(split.X, split.y, split.index, None)
    mixed = score_split(objective, model, one_source, info, device, config, BATCHNORM_TRAIN_MODE_PER_SOURCE, seed=0)
    assert np.abs(authors[30:] - mixed[30:]).max() > 0.1, "a close negative's score depends on its batch"
    assert np.abs(authors - plain).max() > 0.1, "train mode is not eval mode"
    # and it leaves the network as it found it: running statistics and eval mode untouched
    torch.testing.assert_close(model[1].running_mean, running)
    assert not model.training


def test_edgeml_recall_counts_as_cal_precision_recall() -> None:
    """Their rule: threshold = sorted normality of negatives at int((1 - fpr) n), positives strictly above."""
    normality_neg = np.arange(100, dtype=float)  # 0 .. 99
    normality_pos = np.array([96.5, 97.0, 97.5, 50.0])
    y = np.r_[np.ones(100, int), np.zeros(4, int)]
    scores = -np.r_[normality_neg, normality_pos]  # anomaly scores: higher = more anomalous
    # int(0.97 * 100) = 97: threshold 97, strictly above it: 97.5 only
    assert recall_at_fpr_edgeml(y, scores, 0.03) == pytest.approx(0.25)


def test_a_scoring_mode_is_part_of_the_key_the_record_and_the_configuration(tmp_path: Path) -> None:
    """sine10d's ocln task: the mode is recorded and names another configuration; a model without a net refuses it."""
    from odbench.core.contracts import FitContext
    from odbench.engine.execute import read_test_scores
    from odbench.engine.suite import run_suite
    from odbench.views.results import results

    registry = Registry()
    params = {"bce": {"epochs": 2}}
    eval_plan = expand(registry, ["bce"], ["sine10d"], params=params)
    authors = expand(registry, ["bce"], ["sine10d"], params=params, scoring=BATCHNORM_TRAIN_MODE_PER_SOURCE)
    assert eval_plan.jobs[0].key(registry) != authors.jobs[0].key(registry)
    with pytest.raises(UsageError, match="unknown scoring 'nope'"):
        expand(registry, ["bce"], ["sine10d"], scoring="nope")
    with pytest.raises(UsageError, match="knn has no network"):  # refused before anything runs
        expand(registry, ["knn"], ["sine10d"], scoring=BATCHNORM_TRAIN_MODE_PER_SOURCE)
    store = Store(tmp_path)
    run_suite(authors, registry, store)
    run_suite(eval_plan, registry, store)
    records = {r["scoring"]: r for r in store.records()}
    assert records[BATCHNORM_TRAIN_MODE_PER_SOURCE]["status"] == "ok" and records["eval"]["status"] == "ok"
    frame = results(store, ci=False)
    assert frame["config_fingerprint"].nunique() == 2, "the two scorings never share a table cell"
    # and a classical detector that reached scoring anyway (the Python API) refuses it in one sentence
    knn = registry.method("knn")(n_neighbors=2)
    task = get_protocol_task(registry)
    knn.fit(task.for_fit(), FitContext(seed=0))
    with pytest.raises(ValueError, match="knn has none"):
        read_test_scores(knn, task.test, FitContext(seed=0, scoring=BATCHNORM_TRAIN_MODE_PER_SOURCE))


def get_protocol_task(registry: Registry):
    from odbench.engine.execute import job_task
    from odbench.engine.loading import DataCache

    (job,) = expand(registry, ["knn"], ["sine10d"]).jobs
    return job_task(registry, job, DataCache())[0]


def test_the_command_line_has_no_way_to_the_authors_scoring_but_a_variant() -> None:
    assert main(["run", "--scoring", BATCHNORM_TRAIN_MODE_PER_SOURCE]) == 2  # no such option
    edgeml = with_variant(load_experiment("ocln-mnist"), "edgeml")
    assert edgeml.scoring == BATCHNORM_TRAIN_MODE_PER_SOURCE and edgeml.selection == "oracle"
    assert load_experiment("ocln-mnist").scoring == "eval"
    assert edgeml.protocol == "ocln_edgeml" and edgeml.metric == "recall@fpr3_edgeml"


def test_an_unknown_variant_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["reproduce", "ocln-mnist", "--variant", "nope"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "experiment 'ocln-mnist' has no variant 'nope'; known: edgeml" in line


# ----------------------------------------------------------------------------- inverted scores


class _Fitted:
    """A fitted detector whose score is the distance to the origin, or its negation (inverted)."""

    name = "probe"

    def __init__(self, sign: float) -> None:
        self.sign = sign

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        return self.sign * np.linalg.norm(X, axis=1)


def test_the_inversion_flag_fires_on_an_inverted_scorer_only() -> None:
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(40, 3)), rng.normal(size=(20, 3)) * 4])
    val = Split(X=X, y=np.r_[np.zeros(40, int), np.ones(20, int)], index=np.arange(60))
    sound, inverted = validation_check(_Fitted(1.0), val), validation_check(_Fitted(-1.0), val)  # type: ignore[arg-type]
    assert not sound["inverted"] and sound["auroc"] > 0.8
    assert inverted["inverted"] and inverted["auroc"] < 0.2 and inverted["p_value"] < 0.01
    assert "Mann-Whitney" in str(inverted["test"])
    # chance is not inversion: scores that know nothing
    noise = inversion_test(val.y, rng.normal(size=60))
    assert not noise["inverted"]
    # no validation anomalies: nothing to test
    assert validation_check(_Fitted(-1.0), Split(X=X[:40], y=np.zeros(40, int), index=np.arange(40))) == {}  # type: ignore[arg-type]


INVERTED_PLUGIN = '''
from odbench.api import DataInfo
from odbench.classical.pyod_adapter import PyodMethod
from dataclasses import dataclass


class InvertedKNN(PyodMethod):
    """kNN distance with its sign flipped: a deliberately inverted scorer."""

    name = "inverted_knn"

    @dataclass
    class Params:
        pass

    def make_detector(self, params, seed):
        from pyod.models.knn import KNN

        return KNN(n_neighbors=3)

    def anomaly_score(self, X):
        return -super().anomaly_score(X)
'''


def test_an_inverted_job_is_flagged_in_its_record_its_cell_and_the_notes(tmp_path: Path, capsys) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "inverted_knn.py").write_text(INVERTED_PLUGIN)
    results = tmp_path / "results"
    argv = ["run", "--methods", "inverted_knn,knn", "--datasets", "digits", "--classes", "0", "--plugin-dir", str(plugins),
            "--results", str(results), "--no-mlflow"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    records = {r["method"]: r for r in Store(results).records()}
    assert records["inverted_knn"]["validation_check"]["inverted"] is True
    assert records["knn"]["validation_check"]["inverted"] is False
    row = next(line for line in out.splitlines() if line.startswith("| 0 "))
    assert row.count("⇅") == 1, row  # the inverted column's cell only
    assert "inverted_knn on digits/0 rep 0 (validation AUROC 0.0" in out


# ----------------------------------------------------------------------------- captions and gap tables


def _rows(column: str, selected_by: str, values: list[float], inverted: bool = False) -> list[dict]:
    return [
        {"column": column, "dataset": "thyroid", "normal_class": "", "value": v, "oracle": selected_by == "oracle",
         "ceiling": np.nan, "selected_by": selected_by, "scoring": "eval", "inverted": inverted}
        for v in values
    ]  # fmt: skip


def test_captions_and_gap_tables_say_what_selected_the_epoch() -> None:
    experiment = load_experiment("table2")
    ours = pd.DataFrame(_rows("drocc", "last", [0.6, 0.7]) + _rows("deepsvdd", "val", [0.5]) + _rows("ocsvm", "", [0.4]))
    _, caption = comparison(experiment, ours, "full")
    line = next(c for c in caption if c.startswith("Epoch selected by"))
    assert "last epoch (no validation split holding both classes): drocc" in line and "validation: deepsvdd" in line
    assert "ocsvm" not in line
    gaps = gap_table(experiment, ours, pd.DataFrame(), "full")
    drocc = gaps[gaps["column"] == "drocc"].iloc[0]
    assert drocc["honest_selected_by"] == "last" and "epoch: last epoch" in drocc["why"]
    assert "f1@p20" in drocc["why"], "the paper's DROCC column used the authors' F1 convention: said in why"
    verdict = verdict_table(experiment, ours, "full")
    assert list(verdict.loc[verdict["method"] == "drocc", "selection"]) == ["last"]
    assert verdict.loc[verdict["method"] == "drocc", "ours_mean"].item() == pytest.approx(0.65)
    assert verdict.loc[verdict["method"] == "drocc", "paper"].item() == pytest.approx(0.78)


def test_a_single_task_row_finds_the_papers_number_whatever_class_the_paper_names() -> None:
    """Table 3's paper CSV calls its Epileptic Seizure row 'seizure'; our single task has no class."""
    experiment = load_experiment("table3")
    ours = pd.DataFrame(_rows("knn", "", [0.9]))
    ours["dataset"] = "epileptic_seizure"
    gaps = gap_table(experiment, ours, pd.DataFrame(), "full")
    assert gaps["paper_mean"].item() == pytest.approx(91.75)


def test_columns_with_identical_scores_are_said_to_be_identical_and_why() -> None:
    def rows(column: str, hashes: list[str], moved: float) -> list[dict]:
        return [
            {**_rows(column, "oracle", [98.0])[0], "dataset": "mnist", "normal_class": "0", "repetition": r,
             "scores_sha256": h, "projection_moved": moved}
            for r, h in enumerate(hashes)
        ]  # fmt: skip

    experiment = load_experiment("ocln-mnist")
    same = pd.DataFrame(rows("drocc_oe", ["a", "b"], 0.0) + rows("drocc_lf", ["a", "b"], 1e-5) + rows("bce", ["c", "d"], np.nan))
    _, caption = comparison(experiment, same, "full")
    (line,) = [c for c in caption if "bit-identical" in c]
    assert line.startswith("drocc_lf and drocc_oe gave bit-identical test scores on all 2 task(s)") and "0.0010%" in line
    differ = pd.DataFrame(rows("drocc_oe", ["a", "b"], 0.0) + rows("drocc_lf", ["a", "x"], 0.3))
    assert not [c for c in comparison(experiment, differ, "full")[1] if "bit-identical" in c]


def test_a_variant_plans_its_scoring_and_selection_and_the_default_does_not(registry: Registry) -> None:
    from dataclasses import replace

    from odbench.engine.experiments import plan_jobs

    def on_generated_data(experiment):  # the variant's settings on sine10d (ocln), not MNIST's files
        return replace(experiment, datasets=["sine10d"], protocol="ocln", protocol_options={}, paper_datasets={})

    edgeml = on_generated_data(with_variant(load_experiment("ocln-mnist"), "edgeml"))
    jobs = plan_jobs(edgeml, "quick", registry, ["sine10d"]).plan.jobs
    assert {(job.scoring, job.selection) for job in jobs} == {(BATCHNORM_TRAIN_MODE_PER_SOURCE, "oracle")}
    honest = plan_jobs(on_generated_data(load_experiment("ocln-mnist")), "quick", registry, ["sine10d"]).plan.jobs
    assert {(job.scoring, job.selection) for job in honest} == {("eval", "val")}
    # the command line's --selection wins over the variant's own
    asked = plan_jobs(edgeml, "quick", registry, ["sine10d"], selection="val").plan.jobs
    assert {job.selection for job in asked} == {"val"}


@pytest.mark.parametrize(("radius", "side"), [(1e-3, "above_gamma_r"), (1e3, "below_r")])
def test_records_count_how_often_the_projection_moved_an_offset(tmp_path: Path, radius: float, side: str) -> None:
    """A tiny annulus pulls every offset in, a huge one pushes every offset out; DROCC-LF also keeps sigma's spread."""
    from odbench.engine.suite import run_suite

    registry = Registry()
    small = {"epochs": 3, "only_ce_epochs": 1, "ascent_num_steps": 4, "project_every": 2, "radius": radius}
    plan = expand(registry, ["drocc_oe", "drocc_lf"], ["sine10d"], params={"drocc_oe": small, "drocc_lf": small})
    store = Store(tmp_path)
    run_suite(plan, registry, store)
    for record in store.records():
        projection = record["diagnostics"]["projection"]
        other = "below_r" if side == "above_gamma_r" else "above_gamma_r"
        assert projection["total"] > 0 and projection[side] > projection["total"] / 2 and projection[other] == 0
        assert projection["moved_share"] == pytest.approx((projection[side]) / projection["total"])
        assert projection["distance"] == ("mahalanobis" if record["method"] == "drocc_lf" else "euclidean")
        if record["method"] == "drocc_lf":
            sigma = record["diagnostics"]["sigma"]
            assert 0 <= sigma["min"] <= sigma["median"] <= sigma["max"] and sigma["cv"] >= 0
