"""Optuna tuning: validation data only, resumable, grid mode exact."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import pytest

from odbench.api import FitContext, Method, param
from odbench.engine.options import Search
from odbench.engine.plan import expand
from odbench.engine.registry import Registry
from odbench.engine.tuning import TuningError, tune
from odbench.protocols import get_protocol
from odbench.protocols.scaling import standardize

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def digits_task():
    registry = Registry()
    dataset = registry.dataset("digits")
    data = dataset.load(Path("."))
    return standardize(get_protocol("one_vs_all").make_task(data, dataset, "3", seed=0)), registry


def test_resume_adds_only_missing_trials(digits_task, tmp_path) -> None:
    task, registry = digits_task
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    name = "knn-resume"
    study = tune(registry.method("knn"), task, n_trials=2, storage=storage, name=name, seed=0)
    assert len(study.trials) == 2
    study = tune(registry.method("knn"), task, n_trials=3, storage=storage, name=name, seed=0)
    assert len(study.trials) == 3  # one more, not three
    study = tune(registry.method("knn"), task, n_trials=3, storage=storage, name=name, seed=0)
    assert len(study.trials) == 3  # nothing missing, nothing run


def test_objective_never_reads_test_labels(digits_task, tmp_path) -> None:
    """Scrambling the test labels changes nothing (tune fits on a FitTask, which has no test split)."""
    task, registry = digits_task
    scrambled = replace(task, test=replace(task.test, y=np.random.default_rng(0).permutation(task.test.y)))
    values = []
    for i, t in enumerate((task, scrambled)):
        study = tune(registry.method("knn"), t, n_trials=2, storage=f"sqlite:///{tmp_path / f'{i}.db'}", name="s", seed=0)
        values.append([tr.value for tr in study.trials])
    assert values[0] == values[1]


class _Gridded(Method):
    name = "gridded"

    @dataclass
    class Params:
        a: int = param(1, "a scale of the score")
        b: str = param("x", "an unused choice")

    @classmethod
    def param_grid(cls, info):
        return {"a": [1, 2, 3], "b": ["x", "y"]}

    def fit(self, task, ctx):
        self.mean_ = task.train.normal.mean(0)
        return self

    def anomaly_score(self, X):
        return np.linalg.norm(X - self.mean_, axis=1) * self.params.a


def test_grid_covers_exactly_the_grid(digits_task, tmp_path) -> None:
    task, _ = digits_task
    study = tune(_Gridded, task, n_trials=1, storage=f"sqlite:///{tmp_path / 'g.db'}", name="g", seed=0, use_grid=True)
    seen = sorted((t.params["a"], t.params["b"]) for t in study.trials)
    assert seen == sorted((a, b) for a in (1, 2, 3) for b in ("x", "y"))


def test_validation_without_anomalies_is_a_clear_error(digits_task, tmp_path) -> None:
    task, registry = digits_task
    normal_only = replace(task, val=replace(task.val, y=np.zeros(len(task.val), int)))
    with pytest.raises(TuningError, match="no labelled anomalies"):
        tune(registry.method("knn"), normal_only, n_trials=1, storage=f"sqlite:///{tmp_path / 'x.db'}", name="x", seed=0)


def test_cli_tune_evaluates_the_best_parameters_and_logs_trials(tmp_path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from odbench.cli import main
    from odbench.engine.store import Store

    results = tmp_path / "results"
    argv = ["tune", "--methods", "knn", "--datasets", "digits", "--classes", "3", "--trials", "2", "--results", str(results)]
    assert main(argv) == 0
    (record,) = Store(results).records()
    assert record["study"].startswith("knn|digits|one_vs_all|3|r0|")
    assert record["status"] == "ok" and "n_neighbors" in record["user_params"]
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("odbench").experiment_id])
    kinds = {run.info.run_id: run.data.tags.get("odbench.kind") for run in runs}
    study_runs = [r for r in runs if r.data.tags.get("odbench.kind") == "study"]
    trials = [r for r in runs if r.data.tags.get("odbench.kind") == "trial"]
    assert len(study_runs) == 1 and len(trials) == 2
    assert all(kinds[t.data.tags["mlflow.parentRunId"]] == "study" for t in trials)
    # a second call resumes the study: nothing new to try, the evaluation is already done
    assert main(argv) == 0
    assert "already done" in capsys.readouterr().err
    (name,) = optuna.get_all_study_names(f"sqlite:///{results / 'optuna.db'}")
    assert len(optuna.load_study(study_name=name, storage=f"sqlite:///{results / 'optuna.db'}").trials) == 2


def test_another_validation_metric_can_be_maximized(digits_task, tmp_path) -> None:
    from odbench.core.metrics import evaluate

    task, registry = digits_task
    study = tune(registry.method("knn"), task, n_trials=1, storage=f"sqlite:///{tmp_path / 'm.db'}", name="m", seed=0, metric="aupr")
    params = {**registry.method("knn").default_params(task.info), **study.trials[0].user_attrs["params"]}
    fitted = registry.method("knn")(**params).fit(task.for_fit(), FitContext(seed=0))
    assert study.trials[0].value == evaluate(("aupr",), task.val.y, fitted.anomaly_score(task.val.X))["aupr"]


def test_a_tune_whose_every_trial_fails_exits_non_zero_saying_why(tmp_path, capsys) -> None:
    """A method whose every fit fails (what planning cannot foresee): the command says why and exits 1.

    (Combinations planning can check, such as DROCC's CE-only epochs above its epochs, fail before any
    trial: tests/test_bad_inputs.py.)
    """
    from odbench.cli import main

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "never_fits.py").write_text(
        "from dataclasses import dataclass\n"
        "from odbench.api import Method, param\n\n"
        "class NeverFits(Method):\n"
        "    name = 'never_fits'\n"
        "    @dataclass\n"
        "    class Params:\n"
        "        k: int = param(1, 'a knob', low=1)\n"
        "    @classmethod\n"
        "    def search_space(cls, trial, info):\n"
        "        return {'k': trial.suggest_int('k', 1, 3)}\n"
        "    def fit(self, task, ctx):\n"
        "        raise ValueError('this data defeats me')\n"
    )
    argv = ["tune", "--plugin-dir", str(plugins), "--methods", "never_fits", "--datasets", "digits", "--classes", "3",
            "--trials", "2", "--results", str(tmp_path / "r"), "--no-mlflow"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "every trial failed; the last: ValueError: this data defeats me" in err
    assert "Traceback" not in err


class _Undeclared(_Gridded):
    name = "undeclared"

    @classmethod
    def search_space(cls, trial, info):
        return {"a": trial.suggest_int("a", 1, 3), "typo": trial.suggest_float("typo", 0.1, 1.0)}


def test_a_search_space_may_set_only_declared_parameters(digits_task, tmp_path) -> None:
    """A plugin bug, said before any trial runs: the search names a parameter the method does not declare."""
    task, _ = digits_task
    with pytest.raises(TuningError, match="sets typo, which it does not declare"):
        tune(_Undeclared, task, n_trials=2, storage=f"sqlite:///{tmp_path / 'u.db'}", name="u", seed=0)


class _GroupedGrid(_Gridded):
    """A grid method that trains groups: each member alone, so the grouping itself is what is tested."""

    name = "grouped_grid"
    supports_seed_groups = True
    group_varying = frozenset({"a"})  # trials of other b never share a group
    groups: list[list[tuple[int, str]]] = []

    @classmethod
    def fit_group(cls, params, tasks, ctxs):
        cls.groups.append([(p["a"], p["b"]) for p in params])
        return [cls(**p).fit(t, c) for p, t, c in zip(params, tasks, ctxs, strict=True)]


@pytest.mark.parametrize("group_size", [1, 2, 4])
def test_a_grid_asked_in_groups_covers_exactly_the_grid(digits_task, tmp_path, group_size: int) -> None:
    task, _ = digits_task
    _GroupedGrid.groups = []
    study = tune(_GroupedGrid, task, n_trials=1, storage=f"sqlite:///{tmp_path / 'g.db'}", name="g", seed=0,
                 use_grid=True, group_size=group_size)  # fmt: skip
    seen = sorted((t.params["a"], t.params["b"]) for t in study.trials)
    assert seen == sorted((a, b) for a in (1, 2, 3) for b in ("x", "y"))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    fitted = [p for group in _GroupedGrid.groups for p in group]
    assert len(fitted) == len(set(fitted))  # no point twice
    assert all(len(group) > 1 and len({b for _, b in group}) == 1 for group in _GroupedGrid.groups)
    if group_size == 1:
        assert _GroupedGrid.groups == []
    else:
        assert max(len(g) for g in _GroupedGrid.groups) == min(group_size, 3)


def test_drocc_trials_asked_together_are_told_their_solo_values(tmp_path, monkeypatch) -> None:
    """Four TPE trials of DROCC fitted as one group: each trial's value is its solo fit's, and no solo fit ran."""
    from odbench.engine.execute import job_task
    from odbench.engine.plan import expand

    registry = Registry()
    fixed = {"epochs": 4, "only_ce_epochs": 1, "ascent_num_steps": 3, "batch_size": 64, "hidden": 16}
    plan = expand(registry, ["drocc"], ["sine2d"], params={"drocc": fixed}, protocol_options={"val_anomaly_fraction": 0.3})
    task, seed = job_task(registry, plan.jobs[0], plan.cache)
    cls = registry.method("drocc")
    solo_fits = []
    original_fit = cls.fit
    monkeypatch.setattr(cls, "fit", lambda self, t, c: solo_fits.append(1) or original_fit(self, t, c))
    study = tune(cls, task, n_trials=4, storage=f"sqlite:///{tmp_path / 'd.db'}", name="d", seed=seed, fixed=fixed,
                 group_size=4)  # fmt: skip
    assert solo_fits == [] and len(study.trials) == 4
    suggested = [t.user_attrs["params"] for t in study.trials]
    assert len({tuple(sorted(p.items())) for p in suggested}) == 4  # four settings, not one four times
    from odbench.core.metrics import evaluate

    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        params = cls.resolve_params(task.info, {**fixed, **trial.user_attrs["params"]})
        alone = original_fit(cls(**params), task.for_fit(), FitContext(seed=seed))
        metric = task.headline_metric
        value = evaluate((metric,), task.val.y, alone.anomaly_score(task.val.X))[metric]
        assert trial.value == pytest.approx(value, abs=1e-6)


class _GroupNeverFits(_GroupedGrid):
    name = "group_never_fits"
    supports_seed_groups = True  # read off the class itself, as the runner reads it
    group_varying = frozenset({"a"})

    @classmethod
    def search_space(cls, trial, info):
        return {"a": trial.suggest_int("a", 1, 3)}

    def fit(self, task, ctx):  # a trial left alone (the last of an odd count) fails too
        raise ValueError("this data defeats me")

    @classmethod
    def fit_group(cls, params, tasks, ctxs):
        return [ValueError("this data defeats me") for _ in params]


def test_grouped_trials_that_all_fail_end_the_study_after_its_trial_count(digits_task, tmp_path) -> None:
    task, _ = digits_task
    study = tune(_GroupNeverFits, task, n_trials=5, storage=f"sqlite:///{tmp_path / 'f.db'}", name="f", seed=0,
                 group_size=2)  # fmt: skip
    assert len(study.trials) == 5 and all(t.state == optuna.trial.TrialState.FAIL for t in study.trials)
    assert all(t.user_attrs["error"] == "ValueError: this data defeats me" for t in study.trials)


def test_cli_tune_in_groups_gives_the_trials_and_evaluations_of_solo_tuning(tmp_path) -> None:
    """TPE's first trials are random draws, so a grouped and a solo tune propose the same points: same values.

    The two repetitions' studies fill together: their six trials are one group.
    """
    from odbench.cli import main
    from odbench.engine.store import Store

    quick = {"epochs": 4, "only_ce_epochs": 1, "ascent_num_steps": 3, "batch_size": 64, "hidden": 16}
    argv = ["tune", "--methods", "drocc", "--datasets", "sine2d", "--trials", "3", "--seeds", "2", "--no-mlflow",
            "--protocol-option", "val_anomaly_fraction=0.3", *(f"--param=drocc.{k}={v}" for k, v in quick.items())]  # fmt: skip
    studies = {}
    for how, extra in (("grouped", []), ("solo", ["--no-seed-groups"])):
        assert main([*argv, "--results", str(tmp_path / how), *extra]) == 0
        url = f"sqlite:///{tmp_path / how / 'optuna.db'}"
        studies[how] = {n: optuna.load_study(study_name=n, storage=url).trials for n in optuna.get_all_study_names(url)}
    assert studies["grouped"].keys() == studies["solo"].keys() and len(studies["solo"]) == 2
    for name, solo in studies["solo"].items():
        grouped = studies["grouped"][name]
        assert [t.params for t in grouped] == [t.params for t in solo]
        assert [t.user_attrs["group_size"] for t in grouped] == [6, 6, 6] and "group_size" not in solo[0].user_attrs
        np.testing.assert_allclose([t.value for t in grouped], [t.value for t in solo], rtol=0, atol=1e-6)
    records = {how: {r["key"]: r for r in Store(tmp_path / how).records()} for how in studies}
    assert records["grouped"].keys() == records["solo"].keys() and len(records["solo"]) == 2
    for key, solo_record in records["solo"].items():
        record = records["grouped"][key]
        assert record["group_size"] == 2 and solo_record["group_size"] == 1  # the two tuned repetitions, together
        assert record["params"] == solo_record["params"]
        for metric, value in solo_record["metrics"].items():
            assert abs(record["metrics"][metric] - value) < 1e-6


class _FirstDiverges(_GroupedGrid):
    """A group whose first member diverged: that trial must be fitted again alone, as its solo run."""

    name = "first_diverges"
    supports_seed_groups = True
    group_varying = frozenset({"a", "b"})  # six points, two groups of three
    solo: list[int] = []

    def fit(self, task, ctx):
        type(self).solo.append(self.params.a)
        return super().fit(task, ctx)

    @classmethod
    def fit_group(cls, params, tasks, ctxs):
        from odbench.deep.training import TrainingDiverged

        return [TrainingDiverged("member 0 diverged")] + [_Gridded(**p).fit(t, c) for p, t, c in zip(params[1:], tasks[1:], ctxs[1:], strict=True)]


def test_a_trial_that_diverged_in_its_group_is_fitted_alone(digits_task, tmp_path) -> None:
    task, _ = digits_task
    _FirstDiverges.solo = []
    study = tune(_FirstDiverges, task, n_trials=1, storage=f"sqlite:///{tmp_path / 'v.db'}", name="v", seed=0,
                 use_grid=True, group_size=3)  # fmt: skip
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) and len(study.trials) == 6
    firsts = [t for t in study.trials if t.user_attrs["group_size"] == 1]
    assert len(firsts) == 2 and sorted(_FirstDiverges.solo) == sorted(t.params["a"] for t in firsts)


def test_trials_on_a_database_server_run_one_by_one(digits_task, tmp_path) -> None:
    """An RDBStorage (heartbeats live in study.optimize) keeps the solo loop, even for a grouping method."""
    task, _ = digits_task
    _GroupedGrid.groups = []
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    study = tune(_GroupedGrid, task, n_trials=1, storage=storage, name="s", seed=0, use_grid=True, group_size=4)
    assert len(study.trials) == 6 and _GroupedGrid.groups == []


class _Curves(Method):
    """A method whose validation AUROC at each of its 8 epochs is its ``quality``: the pruner stops the poorer ones."""

    name = "curves"
    modalities = ("tabular",)

    @dataclass
    class Params:
        quality: float = param(0.5, "every epoch's reported validation AUROC", low=0, high=1)

    @classmethod
    def search_space(cls, trial, info):
        return {"quality": trial.suggest_float("quality", 0, 1)}

    def fit(self, task, ctx):
        for epoch in range(8):
            ctx.report(epoch, {"val_auroc": self.params.quality})
        return self

    def anomaly_score(self, X):
        return -X[:, 0] * self.params.quality


def test_trials_are_pruned_as_optuna_prunes_them(digits_task, tmp_path) -> None:
    """Our pruning check (the complete trials read once per trial) stops the trials Optuna's should_prune stops."""
    task, _ = digits_task
    # 10 trials: TPE's random start-up, so both loops draw the same points whatever the trials' values
    study = tune(_Curves, task, n_trials=10, storage=f"sqlite:///{tmp_path / 'p.db'}", name="p", seed=3, metric="auroc")

    def objective(trial: optuna.Trial) -> float:  # Optuna's own loop over the same curves
        quality = trial.suggest_float("quality", 0, 1)
        for epoch in range(8):
            trial.report(quality, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return quality

    sampler = optuna.samplers.TPESampler(seed=3, constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    theirs = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    theirs.optimize(objective, n_trials=10)
    ours = [(t.state, t.params["quality"], t.intermediate_values) for t in study.trials]
    assert ours == [(t.state, t.params["quality"], t.intermediate_values) for t in theirs.trials]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(max(t.intermediate_values) == 2 for t in pruned)  # stopped at the first step allowed


def test_only_a_jobs_repetitions_fill_their_studies_together(tmp_path) -> None:
    """Two normal classes x two repetitions: each class's two studies share groups, the classes never do."""
    from odbench.engine.tuning import tune_suite

    quick = {"epochs": 3, "only_ce_epochs": 1, "ascent_num_steps": 2, "batch_size": 64, "hidden": 8}
    registry = Registry()
    plan = expand(registry, ["drocc"], ["digits"], classes=["3", "5"], repetitions=2, params={"drocc": quick})
    results = tune_suite(registry, plan, Search(trials=2, storage=f"sqlite:///{tmp_path / 'o.db'}"))
    assert len(results) == 4 and all(r.job is not None for r in results)
    for result in results:
        trials = optuna.load_study(study_name=result.study, storage=f"sqlite:///{tmp_path / 'o.db'}").trials
        assert [t.user_attrs["group_size"] for t in trials] == [4, 4]  # its class's 2 studies x 2 trials


def test_every_study_is_checked_before_any_trial_runs(tmp_path) -> None:
    """The second dataset's validation split has no anomalies: the error comes before the first study's trials."""
    from odbench.engine.tuning import tune_suite

    storage = f"sqlite:///{tmp_path / 'c.db'}"
    with pytest.raises(TuningError, match="no labelled anomalies"):
        tune_suite(Registry(), expand(Registry(), ["knn"], ["digits", "sine2d"]), Search(trials=2, storage=storage))
    studies = optuna.get_all_study_names(storage)
    assert studies and all(not optuna.load_study(study_name=n, storage=storage).trials for n in studies)


def test_each_workers_sampler_proposes_its_own_reproducible_points(digits_task, tmp_path) -> None:
    """Workers share a job's seed; their samplers' seeds derive from their numbers: points differ, reruns repeat."""
    from odbench.engine.tuning import worker_seed

    task, registry = digits_task

    def points(worker: int, run: int) -> list[dict]:
        study = tune(registry.method("knn"), task, n_trials=3, storage=f"sqlite:///{tmp_path / f'{worker}-{run}.db'}",
                     name="w", seed=7, worker=worker)  # fmt: skip
        return [t.params for t in study.trials]

    assert worker_seed(7, 0) == 7  # a lone tune proposes what it always did
    assert len({worker_seed(7, w) for w in range(50)}) == 50
    assert points(1, 0) == points(1, 1)
    assert points(1, 0) != points(2, 0) and points(1, 0) != points(0, 0)


def test_each_trial_names_its_worker(digits_task, tmp_path) -> None:
    """A dead worker's trials are found by this attribute (``unretried_trials``)."""
    from odbench.engine.tuning import unretried_trials

    task, registry = digits_task
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = tune(registry.method("knn"), task, n_trials=2, storage=storage, name="w", seed=0, worker=3)
    assert [t.user_attrs["worker"] for t in study.trials] == [3, 3]
    trial = study.ask()  # as worker 3 left it when it died mid-trial
    trial.set_user_attr("worker", 3)
    assert unretried_trials(storage, 3) == [f"w trial {trial.number}"]
    assert unretried_trials(storage, 4) == []
