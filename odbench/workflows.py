"""Running, tuning and reproducing as one call each, for notebooks and for the ``odbench`` command.

``odbench.run``, ``odbench.tune`` and ``odbench.reproduce`` (re-exported
lazily by ``odbench``) take the option bundles of :mod:`odbench.engine.options`
(:class:`Suite`: what to run; :class:`Where`: where; :class:`Tracking`: the
MLflow mirror; :class:`Paths`: results, data and plugin folders), check every
input before anything runs, run the jobs into the results folder, mirror
them to MLflow, and return a ``pandas.DataFrame``.  A mistake raises one of
:data:`USER_ERRORS` (all ``ValueError`` or ``RuntimeError`` subclasses with a
one-line message saying what to change), before anything is computed; the
command line prints that message as ``odbench: error: ...``.  A job that
fails is no exception: its row says ``failed`` with the error.

All three set up alike (:func:`session`): the data folders searched for
this call only, the plugins, the device, and the process as it was when the
call returns.  Heavy libraries (pandas, torch, MLflow, Optuna) are imported
when a function runs, so ``import odbench`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odbench.core.contracts import DataError
from odbench.core.download import ChecksumError, DataUnavailable, environment_data_dirs, using_data_dirs
from odbench.core.params import ParamError
from odbench.engine.options import (
    EXECUTORS,
    Paths,
    Reproduction,
    Search,
    Suite,
    Tracking,
    Where,
    check_data_dirs,
    check_results_folder,
    default_results,
)
from odbench.engine.plan import Plan, UsageError, plan_keys
from odbench.engine.process_state import restored_process_state
from odbench.engine.registry import Registry, RegistryError
from odbench.engine.store import OK, Store
from odbench.protocols import ProtocolError

if TYPE_CHECKING:
    import pandas as pd

    from odbench.engine.experiments import Experiment
    from odbench.engine.suite import Summary

#: what a bad argument raises (the command line turns each into one line and exit code 2)
USER_ERRORS = (RegistryError, ProtocolError, UsageError, ParamError, ChecksumError, DataUnavailable, DataError)

SKIPPED = "skipped"

__all__ = [
    "DEFAULT_SUITE", "EXECUTORS", "USER_ERRORS", "Paths", "Reproduction", "Search", "Suite", "Tracking", "Where",
    "Reproduced", "check_data_dirs", "check_results_folder", "default_results", "reproduce", "run", "session", "tune",
]  # fmt: skip


@dataclass(frozen=True)
class DefaultSuite:
    """What ``odbench run`` runs with no arguments: the subject (DROCC), a deep baseline, classical detectors.

    ``budgets`` are the deep methods' settings in this suite only (a run that
    names its methods gets each method's own defaults): few epochs, few
    ascent steps, so the whole suite needs no download and stays under two
    minutes on 2 CPU cores.
    """

    methods: tuple[str, ...] = ("ocsvm", "iforest", "lof", "knn", "drocc", "deepsvdd")
    datasets: tuple[str, ...] = ("sine2d", "digits")
    budgets: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: {
            # 20 epochs (2 of plain cross-entropy first) of small batches: with one batch per epoch, 10 epochs
            # of the defaults' lr 1e-3 stayed below chance on digits (AUROC 0.24 - 0.34); these reach 0.86 - 1.0
            "drocc": {"epochs": 20, "only_ce_epochs": 2, "batch_size": 32, "lr": 0.01,
                      "ascent_num_steps": 5, "ascent_step_size": 0.01},
            "deepsvdd": {"epochs": 10, "pretrain_epochs": 10, "batch_size": 32},
        }  # fmt: skip
    )

    def describe(self) -> str:
        """``ocsvm, ..., drocc (epochs=20, ...), ... on sine2d, digits``."""
        names = [
            name + (f" ({', '.join(f'{k}={v}' for k, v in self.budgets[name].items())})" if name in self.budgets else "")
            for name in self.methods
        ]
        return f"{', '.join(names)} on {', '.join(self.datasets)}"


DEFAULT_SUITE = DefaultSuite()




def prepare_datasets(registry: Registry, datasets: Sequence[str]) -> None:
    """Download / verify every dataset now, so a missing file stops the call before any job."""
    from odbench.engine.loading import prepare

    quiet_downloads()
    for name in datasets:
        prepare(registry.dataset(name))


def available_datasets(registry: Registry, datasets: Sequence[str]) -> tuple[list[str], list[str]]:
    """The datasets ready here (downloaded and verified now), and a line for each that is not, saying why."""
    from odbench.engine.loading import prepare

    quiet_downloads()
    runnable, missing = [], []
    for name in datasets:
        try:
            prepare(registry.dataset(name))
            runnable.append(name)
        except (DataUnavailable, RegistryError) as err:  # the others still run; the caption says what is missing
            missing.append(f"{name} not run here: {' '.join(str(err).split())}")
    return runnable, missing


def quiet_downloads() -> None:
    """pooch logs each download attempt; a failed one must stay a single error line."""
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)


def require_ray() -> None:
    """A UsageError naming the install command when Ray cannot be imported here (the ``cluster`` extra brings it)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'odbench[cluster]' (or run without --executor ray)") from None


def check_device(where: Where) -> str:
    """The device jobs run on here (``auto`` resolved; a CUDA device torch cannot see is a UsageError).

    On Ray the GPUs that count are the cluster's: they are checked when it is joined.
    """
    from odbench.engine.devices import resolve_device

    return where.device if where.executor == "ray" else resolve_device(where.device)


@dataclass
class Session:
    """One workflow call's set-up: the plugins, the results folder, where jobs run and who watches."""

    registry: Registry
    results: Path
    where: Where
    tracking: Tracking
    progress: bool = True

    def select(self, suite: Suite, default: bool = True) -> tuple[list[str], list[str]]:
        """The suite's methods and datasets by name (the default suite's where it names none and ``default``)."""
        if not default and (suite.methods is None or suite.datasets is None):
            raise UsageError("name the methods and the datasets to tune, e.g. Suite(methods='knn', datasets='digits')")
        methods = list(suite.methods if suite.methods is not None else DEFAULT_SUITE.methods)
        datasets = list(suite.datasets if suite.datasets is not None else DEFAULT_SUITE.datasets)
        return self.registry.select("method", methods), self.registry.select("dataset", datasets)

    def tracker(self, title: str) -> Any:
        """The MLflow mirror of this call (``None`` when it is off); ``title`` names its parent run."""
        if not self.tracking.mlflow:
            return None
        from odbench.observers.tracking import Tracker

        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        return Tracker(self.results, self.tracking.tracking_uri, self.tracking.experiment, suite=f"{title} ({stamp})",
                       drain_s=self.tracking.mlflow_wait)  # fmt: skip

    def execute(self, plan: Plan, tracker: Any) -> Summary:
        """Run ``plan`` into the store, mirrored to MLflow by ``tracker`` (:meth:`tracker`; None: not mirrored)."""
        return execute_plan(plan, self, tracker)


@contextmanager
def session(where: Where, tracking: Tracking, paths: Paths, progress: bool = True) -> Iterator[Session]:
    """The set-up every workflow shares, and the process as it was afterwards.

    Inside: data files are searched in ``paths.data_dirs`` then
    ``$ODBENCH_DATA_DIR``'s folders (for this call and every job it starts:
    the folders travel with the jobs, not through the environment), the
    plugins of ``paths.plugin_dirs`` are loaded.  Afterwards the process has
    its environment, log levels, torch flags and malloc settings back
    (``odbench.engine.process_state``).
    """
    if where.executor == "ray":
        require_ray()  # before any plugin is loaded or job planned
    with restored_process_state(), using_data_dirs([*(d.resolve() for d in paths.data_dirs), *environment_data_dirs()]):
        registry = Registry(list(paths.plugin_dirs))
        yield Session(registry, paths.results, where, tracking, progress)


def execute_plan(plan: Plan, session: Session, tracker: Any) -> Summary:
    """Run ``plan`` into the session's store; progress on stderr.

    ``executor="ray"``: every job a Ray task on the cluster at ``ray_address``
    (default: a local Ray started here), ``jobs`` CPUs when more than one.
    """
    from odbench.engine.devices import resolve_device
    from odbench.engine.executors import Executor, LocalPoolExecutor
    from odbench.engine.suite import run_suite
    from odbench.observers.progress import make_reporter

    where, progress = session.where, session.progress
    if progress:
        for note in plan.notes:
            print(f"odbench: {note}", file=sys.stderr)
    runner: Executor
    if where.executor == "ray":
        from odbench.engine.ray_executor import RayExecutor

        ray = RayExecutor(where.ray_address, num_cpus=None if where.jobs == 1 else where.jobs,
                          gpu_per_job=where.gpu_per_job, cache=plan.cache, threads=where.threads,
                          max_retries=2 if where.retries is None else where.retries, job_timeout=where.job_timeout)  # fmt: skip
        device = ray.resolve_device(where.device)  # the cluster's GPUs, not this machine's
        runner = ray
    else:
        # --jobs 1 too runs in a (warm) worker process: a signal stops the run whatever the job runs
        runner = LocalPoolExecutor(where.jobs, where.threads, max_retries=2 if where.retries is None else where.retries,
                                   job_timeout=where.job_timeout)  # fmt: skip
        device = resolve_device(where.device)
    if progress and device == "cpu" and any(job.params.get("precision") == "bf16" for job in plan.jobs):
        from odbench.deep.precision import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            print("odbench: note: precision=bf16 on a CPU without native bfloat16 (no avx512_bf16 or amx_bf16 flag): "
                  "expect it about 10x slower than fp32", file=sys.stderr)  # fmt: skip
    return run_suite(
        plan, session.registry, Store(session.results), executor=runner, device=device,
        reporter=make_reporter(sys.stderr) if progress else None, tracker=tracker, seed_groups=where.seed_groups,
    )  # fmt: skip


def _frame(plan: Plan, registry: Registry, results: Path, summary: Summary) -> pd.DataFrame:
    """The tidy rows (``odbench.views.results``) of the jobs of ``plan``, in plan order, plus ``study``.

    A job with no record ran but was skipped (e.g. a method that needs
    labelled negatives on a protocol without them): status ``skipped``.
    """
    import pandas as pd

    from odbench.views.results import results as tidy

    everything = tidy(Store(results), ci=False)
    # one dict per row, by key: a pandas lookup per job costs a millisecond, seconds for a large suite
    by_key = {row["key"]: row for row in everything.to_dict("records")}
    rows, seen = [], set()
    keys = summary.keys if len(summary.keys) == len(plan.jobs) else plan_keys(registry, plan.jobs, plan.cache)
    for job, key in zip(plan.jobs, keys, strict=True):
        if key in seen:
            continue
        seen.add(key)
        if key in by_key:
            row = dict(by_key[key])
        else:
            row = {"key": key, "status": SKIPPED, "method": job.method, "dataset": job.dataset, "protocol": job.protocol,
                   "normal_class": job.normal_class, "repetition": job.repetition, "seed": job.seed,
                   "selection": job.selection}  # fmt: skip
        row["study"] = job.study
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*everything.columns, "study"])
    if not frame.empty:  # the parameters of the methods this call ran, not of every method in the folder
        frame = frame[[c for c in frame.columns if not c.startswith(("param.", "protocol.")) or frame[c].notna().any()]]
    frame.attrs.update(results=str(results), summary=summary, notes=list(summary.notes))
    return frame


def _expand(session: Session, suite: Suite, methods: list[str], datasets: list[str], params: Mapping[str, Any]) -> Plan:
    """The suite's jobs (``odbench.engine.plan.expand``) with ``params`` for its methods."""
    from odbench.engine.plan import expand

    return expand(
        session.registry, methods, datasets, protocol=suite.protocol, classes=suite.classes, repetitions=suite.seeds,
        base_seed=suite.seed, params={m: dict(p) for m, p in params.items()},
        protocol_options=dict(suite.protocol_options), selection=suite.selection,
    )  # fmt: skip


def run(
    suite: Suite | None = None,
    where: Where | None = None,
    tracking: Tracking | None = None,
    paths: Paths | None = None,
    *,
    progress: bool = True,
    html: Path | str | None = None,
) -> pd.DataFrame:
    """Run methods x datasets x normal classes x ``seeds`` repetitions; one row per job.

    ``suite`` (:class:`Suite`): what to run; without methods the default
    suite's methods run, with its small deep budgets (:data:`DEFAULT_SUITE`),
    and without datasets its datasets.  ``where`` (:class:`Where`): executor,
    worker processes, device, seed groups.  ``tracking`` (:class:`Tracking`):
    the MLflow mirror.  ``paths`` (:class:`Paths`): the results folder (jobs
    already done there are not run again), data and plugin folders.
    ``progress=False`` prints nothing.  ``html``: also write the HTML report
    (tables, figures) of these methods and datasets there, when a job finished.

    Returns a ``pandas.DataFrame`` with one row per planned job: the tidy
    table's columns (``odbench.views.results``: ``key, status, method,
    dataset, protocol, normal_class, repetition, seed, selection,
    selected_epoch, config_fingerprint``, one column per metric, timings,
    ``error``, ``param.<name>`` for each resolved parameter; without the
    bootstrap intervals, which ``odbench.results(path)`` adds) and
    ``study``; ``status`` is ``ok``, ``failed`` or ``skipped``.  ``frame.attrs`` holds ``results`` (the folder)
    and ``summary`` (counts of ok / failed / skipped / already done).
    Raises one of :data:`USER_ERRORS` on bad input, before anything runs.
    """
    suite, where, tracking, paths = suite or Suite(), where or Where(), tracking or Tracking(), paths or Paths()
    with session(where, tracking, paths, progress) as here:
        methods, datasets = here.select(suite)
        given = dict(suite.params)
        if suite.methods is None:  # the default suite's budgets, under what the caller set
            budgets = {m: dict(b) for m, b in DEFAULT_SUITE.budgets.items() if m in methods}
            given = {m: {**budgets.get(m, {}), **given.get(m, {})} for m in {*budgets, *given}}
        check_device(where)  # a bad device fails before anything runs
        if where.executor != "ray":
            from odbench.engine.executors import start_fork_server

            start_fork_server()  # the workers' imports overlap the planning
        prepare_datasets(here.registry, datasets)
        plan = _expand(here, suite, methods, datasets, given)
        summary = here.execute(plan, here.tracker(f"suite: {','.join(methods)} on {','.join(datasets)}"))
        frame = _frame(plan, here.registry, here.results, summary)
        if html is not None and (frame["status"] == OK).any():
            from odbench.observers.progress import Ticker
            from odbench.views.report import report

            with Ticker("writing the HTML report", sys.stderr if progress else None) as ticker:
                report(here.results, html=html, methods=methods, datasets=datasets, registry=here.registry,
                       progress=ticker.update)  # fmt: skip
            frame.attrs["html"] = str(html)
        return frame


def tune(
    suite: Suite,
    search: Search | None = None,
    where: Where | None = None,
    tracking: Tracking | None = None,
    paths: Paths | None = None,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """One Optuna study per job on its validation split, then its best parameters evaluated on test.

    ``suite`` names its methods and datasets; its ``params`` are fixed, the
    search leaves them alone.  ``search`` (:class:`Search`): trials, grid,
    metric, Optuna storage (default ``sqlite:///<results>/optuna.db``),
    heartbeat, ``trials_only`` (fill the studies, evaluate nothing: a tuning
    worker).  ``where.seed_groups``: a grouping method's trials (DROCC on a
    table) are fitted several at once, and its evaluation jobs grouped as in
    :func:`run`.  Other bundles as in :func:`run`; the trials run in this
    process, the evaluation jobs on ``where``'s executor.

    Returns the rows of the evaluation jobs, as :func:`run` does (``study``
    names the study of each); ``frame.attrs["studies"]`` lists every study
    (``odbench.engine.tuning.StudyResult``: best value, trials, and why none
    finished when none did).
    """
    from odbench.engine.devices import resolve_device

    search, where, tracking, paths = search or Search(), where or Where(), tracking or Tracking(), paths or Paths()
    if suite.selection != "val":
        raise UsageError(f"tune selects on validation data only; drop selection={suite.selection!r}")
    with session(where, tracking, paths, progress) as here:
        methods, datasets = here.select(suite, default=False)
        device = resolve_device(where.device)  # the trials run in this process, whatever runs the evaluation
        prepare_datasets(here.registry, datasets)
        plan = _expand(here, suite, methods, datasets, suite.params)  # names, classes and options checked
        from odbench.engine.plan import validate_jobs

        validate_jobs(here.registry, plan.jobs, plan.cache)  # every study trains: its fixed parameters checked now
        if search.grid:  # a method with no grid at all is refused before the results folder is made
            from odbench.core.contracts import Method

            inherited = getattr(Method.param_grid, "__func__", None)  # the base's "no grid", not overridden
            gridless = [m for m in methods if getattr(here.registry.method(m).param_grid, "__func__", None) is inherited]
            if gridless:
                raise UsageError(f"method {gridless[0]!r} has no parameter grid; drop --grid to search its space")
        here.results.mkdir(parents=True, exist_ok=True)
        tracker = here.tracker(f"tune: {','.join(methods)} on {','.join(datasets)}")

        import optuna

        from odbench.engine.tuning import tune_suite

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported once, below, without its traceback

        def on_trial(study: str, trial: Any) -> None:
            if progress:
                value = "pruned" if trial.value is None else f"{trial.value:.4f}"
                print(f"odbench: {study} trial {trial.number}: {value}", file=sys.stderr)
            if tracker is not None:
                tracker.log_trial(study, trial.number, trial.user_attrs.get("params", trial.params), trial.value, trial.state.name)

        storage = search.storage or f"sqlite:///{here.results.resolve() / 'optuna.db'}"
        studies = tune_suite(here.registry, plan, replace(search, storage=storage), device, on_trial, where.seed_groups)
        evaluation = Plan(jobs=[])
        if search.trials_only:
            from odbench.engine.suite import Summary

            frame = _frame(evaluation, here.registry, here.results, Summary())
            frame.attrs["studies"] = studies
            return frame
        for study in studies:
            if study.job is None:
                why = f" (every trial failed; the last: {study.error})" if study.error else ""
                evaluation.notes.append(f"study {study.study}: no trial finished{why}; nothing to evaluate")
                continue
            if progress:
                print(f"odbench: {study.study}: best validation value {study.best_value:.4f} with {study.job.params}", file=sys.stderr)
            evaluation.jobs.append(study.job)
        summary = here.execute(evaluation, tracker)
        frame = _frame(evaluation, here.registry, here.results, summary)
        frame.attrs["studies"] = studies
        return frame


def reproduce(
    experiment: Reproduction | str,
    where: Where | None = None,
    tracking: Tracking | None = None,
    paths: Paths | None = None,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """One of the paper's experiments: run what odbench has of it, and its gap table beside the paper's numbers.

    ``experiment`` (:class:`Reproduction`, or just its name): the experiment,
    budget, variant, repetitions, columns, selection, seed, and whether to
    run nothing (``from_store``) and read what ``paths.results`` holds.
    Datasets that are not available here are left out, and the caption says
    so; none available is a UsageError.

    Returns the gap table (``odbench.views.reproduce.gap_table``): one row
    per cell, honest (validation-selected) and oracle (test-selected) mean,
    std and n, the paper's number, both gaps and why they differ; it is also
    saved in ``<results>/reproduce/``.  ``frame.attrs["reproduced"]``
    (:class:`Reproduced`) holds the paper-layout table and its caption, our
    rows, the summary and where the gap table went.
    """
    from odbench.engine.experiments import check_columns, load_experiment, plan_jobs, with_variant
    from odbench.views.reproduce import collect, comparison, gap_table, save_gap

    asked = Reproduction(experiment) if isinstance(experiment, str) else experiment
    where, tracking, paths = where or Where(), tracking or Tracking(), paths or Paths()
    if asked.name == "figure1":
        raise UsageError("figure1 is a figure, not a table: draw it with `odbench reproduce figure1`")
    spec = with_variant(load_experiment(asked.name), asked.variant)
    columns = list(asked.columns) if asked.columns is not None else None
    check_columns(spec, columns)
    if asked.from_store and not (paths.results / "jobs").is_dir():
        raise UsageError(
            f"--from-store: no results store at {paths.results}; give the --results folder the jobs "
            "ran into, or drop --from-store to run them"
        )
    with session(where, tracking, paths, progress) as here:
        check_device(where)
        runnable, missing = available_datasets(here.registry, spec.datasets)
        if not runnable:
            raise UsageError(f"no dataset of {asked.name} is available here: " + "; ".join(missing))
        selection = asked.selection or spec.selection or "val"

        def planned(selection: str) -> Any:
            return plan_jobs(spec, asked.budget, here.registry, runnable, base_seed=asked.seed,
                             repetitions=asked.repetitions, selection=selection, columns=columns)  # fmt: skip

        repro = planned(selection)
        summary = None
        if not asked.from_store:
            summary = here.execute(repro.plan, here.tracker(f"reproduce {asked.name} ({asked.budget})"))
            if progress:
                print(f"odbench: {len(repro.plan.jobs)} jobs: {summary.line()}; results in {here.results}", file=sys.stderr)
        store = Store(here.results)
        ours = collect(repro, here.registry, store, spec.metric, spec.scale)
        if asked.from_store and progress:
            print(f"odbench: {len(ours)} of {len(repro.plan.jobs)} planned jobs are in {store.root}; nothing was run", file=sys.stderr)
        table, caption = comparison(spec, ours, asked.budget)
        budgeted = spec.budgets[asked.budget].repetitions
        if asked.repetitions and asked.repetitions != budgeted:
            caption.append(f"{asked.repetitions} repetition(s), not the budget's {budgeted}.")
        # the same cells under the other selection, where the store has them (nothing is run for it)
        theirs = collect(planned("oracle" if selection == "val" else "val"), here.registry, store, spec.metric, spec.scale)
        honest, oracle = (ours, theirs) if selection == "val" else (theirs, ours)
        gaps = gap_table(spec, honest, oracle, asked.budget)
        saved = save_gap(here.results, gaps, spec, asked.budget)
        gaps.attrs.update(results=str(here.results), reproduced=Reproduced(
            table, caption + missing, ours, spec, summary, len(repro.plan.jobs), saved))  # fmt: skip
        return gaps


@dataclass(frozen=True, eq=False)
class Reproduced:
    """What :func:`reproduce` made besides its gap table: ``frame.attrs["reproduced"]``.

    ``table`` and ``caption``: the paper-layout table (cells as text) and its
    caption lines, as ``odbench.views.reproduce.render`` takes them; ``ours``:
    one row per job read from the store; ``summary``: the run's counts (None
    with ``from_store``); ``planned``: the plan's job count; ``gap_path``:
    where the gap table was saved.  Compared by identity, so that pandas can
    compare the attributes of frames it joins.
    """

    table: pd.DataFrame
    caption: list[str]
    ours: pd.DataFrame
    experiment: Experiment
    summary: Summary | None
    planned: int
    gap_path: Path
