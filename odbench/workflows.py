"""Running and tuning suites as one call each, for notebooks and for the ``odbench`` command.

``odbench.run`` and ``odbench.tune`` (re-exported lazily by ``odbench``)
check every input before anything runs, run the jobs into the results
folder, mirror them to MLflow, and return one row per job they planned as a
``pandas.DataFrame``.  A mistake raises one of :data:`USER_ERRORS` (all
``ValueError`` or ``RuntimeError`` subclasses with a one-line message saying
what to change), before anything is computed; the command line prints that
message as ``odbench: error: ...``.  A job that fails is no exception: its
row says ``failed`` with the error.

Heavy libraries (pandas, torch, MLflow, Optuna) are imported when a function
runs, so ``import odbench`` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odbench.core.contracts import DataError
from odbench.core.download import ChecksumError, DataUnavailable
from odbench.core.params import ParamError
from odbench.engine.plan import Plan, UsageError
from odbench.engine.registry import Registry, RegistryError
from odbench.engine.store import OK, Store
from odbench.protocols import ProtocolError

if TYPE_CHECKING:
    import pandas as pd

    from odbench.engine.suite import Summary

#: what a bad argument raises (the command line turns each into one line and exit code 2)
USER_ERRORS = (RegistryError, ProtocolError, UsageError, ParamError, ChecksumError, DataUnavailable, DataError)

SKIPPED = "skipped"


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


def _names(value: str | Sequence[str], what: str) -> str | list[str]:
    """Comma-separated text or a list of names (wildcards allowed), as ``Registry.select`` takes them."""
    if isinstance(value, str):
        if not value.replace(",", "").strip():  # "" or "," names nothing: an error, never "all" or "the default"
            raise UsageError(f"{what} {value!r} names nothing; give comma-separated names, or leave it out for the default")
        return value
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        if not any(v.strip() for v in value):
            raise UsageError(f"{what} {list(value)!r} names nothing; give at least one name")
        return list(value)
    raise UsageError(f"{what} must be a name, comma-separated names or a list of names, got {value!r}")


def _classes(value: str | Sequence[str | int] | None) -> list[str] | None:
    """Normal classes as names or ids: ``"0,3"``, ``[0, 3]``, ``["cat"]``."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in items):
        raise UsageError(f"classes must be comma-separated text or a list of class names or ids, got {value!r}")
    chosen = [str(c).strip() for c in items if str(c).strip()]
    if not chosen:  # "--classes ," names nothing: an error, not "every class"
        raise UsageError(f"classes {value!r} names nothing; give class names or ids, or leave it out for every class")
    return chosen


def _method_params(params: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{"drocc": {"epochs": 5}}`` or ``{"drocc.epochs": 5}`` (both may mix) as a dict per method."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in (params or {}).items():
        if isinstance(value, Mapping):
            out.setdefault(name, {}).update(value)
            continue
        method, dot, key = str(name).partition(".")
        if not dot or not method or not key:
            raise UsageError(f"params takes {{METHOD: {{KEY: VALUE}}}} or {{'METHOD.KEY': VALUE}}, got {name!r}: {value!r}")
        out.setdefault(method, {})[key] = value
    return out


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_data_dirs(dirs: Sequence[Path | str]) -> None:
    """Every extra data folder exists: a mistyped one would otherwise be ignored in silence."""
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise UsageError(f"data folder {folder} {'is not a folder' if folder.exists() else 'does not exist'}")


@contextmanager
def _data_dirs(dirs: Sequence[Path | str]) -> Iterator[None]:
    """Extra data folders for this call: the download module and every worker read ``$ODBENCH_DATA_DIR``."""
    check_data_dirs(dirs)
    before = os.environ.get("ODBENCH_DATA_DIR")
    if dirs:
        os.environ["ODBENCH_DATA_DIR"] = os.pathsep.join(
            [*(str(Path(d).resolve()) for d in dirs), *filter(None, [before])]
        )
    try:
        yield
    finally:
        if dirs:
            if before is None:
                os.environ.pop("ODBENCH_DATA_DIR", None)
            else:
                os.environ["ODBENCH_DATA_DIR"] = before


def default_results() -> Path:
    """``./odbench_results``, or ``$ODBENCH_RESULTS``."""
    return Path(os.environ.get("ODBENCH_RESULTS", "odbench_results"))


def check_results_folder(path: Path | str) -> Path:
    """``path`` if a results folder can be written there; checked before anything is computed, nothing made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"results folder {path} is a file; give a folder (it is created if missing)")
    existing = path.absolute()
    while not existing.exists():  # the nearest folder that exists: the results folder will be made in it
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"results folder {path} cannot be made: {existing} is a file")
    try:  # permissions, read-only mounts and pseudo file systems all answer a real attempt
        os.rmdir(tempfile.mkdtemp(prefix=".odbench-write-check-", dir=existing))
    except OSError as err:
        raise UsageError(f"results folder {path} is not writable ({err.strerror} in {existing}); choose another") from None
    return path


def prepare_datasets(registry: Registry, datasets: Sequence[str]) -> None:
    """Download / verify every dataset now, so a missing file stops the call before any job."""
    import pooch

    from odbench.engine.loading import prepare

    pooch.get_logger().setLevel(logging.WARNING)  # a failed download stays a single error line
    for name in datasets:
        prepare(registry.dataset(name))


def make_tracker(results: Path, mlflow: bool, tracking_uri: str | None, experiment: str, suite: str) -> Any:
    """The MLflow mirror of one call (``None`` with ``mlflow=False``); ``suite`` names its parent run."""
    if not mlflow:
        return None
    from odbench.observers.tracking import Tracker

    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return Tracker(results, tracking_uri, experiment, suite=f"{suite} ({stamp})")


EXECUTORS = ("local", "ray")  # where the jobs run: this machine (in-process or a pool), or a Ray cluster


def check_where(executor: str, ray_address: str | None, gpu_per_job: float | None, device: str) -> None:
    """The executor options fit together and the device exists, before anything runs.

    On Ray the GPUs that count are the cluster's: they are checked when it is joined.
    """
    from odbench.engine.devices import resolve_device

    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor != "ray":
        for flag, value in (("ray_address (--ray-address)", ray_address), ("gpu_per_job (--gpu-per-job)", gpu_per_job)):
            if value is not None:
                raise UsageError(f"{flag} applies to Ray only; add --executor ray")
        resolve_device(device)
    elif gpu_per_job is not None and device == "cpu":
        raise UsageError("--gpu-per-job needs --device cuda (or auto on a cluster with GPUs)")


def execute_plan(
    plan: Plan, registry: Registry, results: Path, *, jobs: int, device: str, progress: bool, tracker: Any,
    seed_groups: bool = True, executor: str = "local", ray_address: str | None = None, gpu_per_job: float | None = None,
) -> Summary:
    """Run ``plan`` into the store at ``results``; progress on stderr.

    ``executor="ray"``: every job a Ray task on the cluster at ``ray_address``
    (default: a local Ray started here), ``jobs`` CPUs when more than one.
    """
    from odbench.engine.devices import resolve_device
    from odbench.engine.executors import Executor, LocalPoolExecutor, SequentialExecutor
    from odbench.engine.suite import run_suite
    from odbench.observers.progress import make_reporter

    if progress:
        for note in plan.notes:
            print(f"odbench: {note}", file=sys.stderr)
    runner: Executor
    if executor == "ray":
        from odbench.engine.ray_executor import RayExecutor

        ray = RayExecutor(ray_address, num_cpus=None if jobs == 1 else jobs, gpu_per_job=gpu_per_job, cache=plan.cache)
        device = ray.resolve_device(device)  # the cluster's GPUs, not this machine's
        runner = ray
    else:
        runner = SequentialExecutor(plan.cache) if jobs == 1 else LocalPoolExecutor(jobs)
        device = resolve_device(device)
    if progress and device == "cpu" and any(job.params.get("precision") == "bf16" for job in plan.jobs):
        from odbench.deep.precision import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            print("odbench: note: precision=bf16 on a CPU without native bfloat16 (no avx512_bf16 or amx_bf16 flag): "
                  "expect it about 10x slower than fp32", file=sys.stderr)  # fmt: skip
    return run_suite(
        plan, registry, Store(results), executor=runner, device=device,
        reporter=make_reporter(sys.stderr) if progress else None, tracker=tracker, seed_groups=seed_groups,
    )  # fmt: skip


def _frame(plan: Plan, registry: Registry, results: Path, summary: Summary) -> pd.DataFrame:
    """The tidy rows (``odbench.views.results``) of the jobs of ``plan``, in plan order, plus ``study``.

    A job with no record ran but was skipped (e.g. a method that needs
    labelled negatives on a protocol without them): status ``skipped``.
    """
    import pandas as pd

    from odbench.views.results import results as tidy

    everything = tidy(Store(results), ci=False)
    by_key = everything.set_index("key", drop=False) if not everything.empty else everything
    rows, seen = [], set()
    for job in plan.jobs:
        key = job.key(registry, plan.cache)
        if key in seen:
            continue
        seen.add(key)
        if key in by_key.index:
            row = by_key.loc[key].to_dict()
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


def run(
    methods: str | Sequence[str] | None = None,
    datasets: str | Sequence[str] | None = None,
    *,
    protocol: str | None = None,
    classes: str | Sequence[str | int] | None = None,
    seeds: int = 1,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    protocol_options: Mapping[str, Any] | None = None,
    selection: str = "val",
    jobs: int = 1,
    device: str = "auto",
    results: Path | str | None = None,
    data_dirs: Sequence[Path | str] = (),
    plugin_dirs: Sequence[Path | str] = (),
    mlflow: bool = True,
    tracking_uri: str | None = None,
    experiment: str = "odbench",
    progress: bool = True,
    html: Path | str | None = None,
    seed_groups: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
    gpu_per_job: float | None = None,
) -> pd.DataFrame:
    """Run methods x datasets x normal classes x ``seeds`` repetitions; one row per job.

    ``methods`` / ``datasets``: names, wildcards (``"deep*"``), as a list or
    comma-separated text; without ``methods`` the default suite's methods
    run, with its small deep budgets (:data:`DEFAULT_SUITE`), and without
    ``datasets`` its datasets.  ``classes``: normal classes by name or id
    (default all).  ``params``: ``{"drocc": {"epochs": 5}}`` or
    ``{"drocc.epochs": 5}``.  ``results``: the results folder (default
    ``./odbench_results`` or ``$ODBENCH_RESULTS``); jobs already done there
    are not run again.  ``mlflow=False`` skips the MLflow mirror;
    ``progress=False`` prints nothing.  ``html``: also write the HTML report
    (tables, figures) of these methods and datasets there, when a job finished.
    ``seed_groups=False``: train each repetition on its own (by default the
    repetitions of a method that allows it train together).  ``executor="ray"``
    runs every job as a Ray task (``ray_address``: a cluster, default a local
    Ray; ``gpu_per_job``: each job's GPU share with ``device="cuda"``).

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
    from odbench.engine.plan import expand

    seeds, jobs = _positive(seeds, "seeds"), _positive(jobs, "jobs")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"seed must be an integer, got {seed!r}")
    given = _method_params(params)
    with _data_dirs(data_dirs):
        registry = Registry([Path(d) for d in plugin_dirs])
        chosen = registry.select("method", _names(methods, "methods") if methods is not None else list(DEFAULT_SUITE.methods))
        names = registry.select("dataset", _names(datasets, "datasets") if datasets is not None else list(DEFAULT_SUITE.datasets))
        if methods is None:  # the default suite's budgets, under what the caller set
            budgets = {m: dict(b) for m, b in DEFAULT_SUITE.budgets.items() if m in chosen}
            given = {m: {**budgets.get(m, {}), **given.get(m, {})} for m in {*budgets, *given}}
        check_where(executor, ray_address, gpu_per_job, device)  # a bad device fails before anything runs
        folder = check_results_folder(results if results is not None else default_results())
        prepare_datasets(registry, names)
        plan = expand(
            registry, chosen, names, protocol=protocol, classes=_classes(classes), repetitions=seeds, base_seed=seed,
            params=given, protocol_options=dict(protocol_options or {}), selection=selection,
        )  # fmt: skip
        tracker = make_tracker(folder, mlflow, tracking_uri, experiment, f"suite: {','.join(chosen)} on {','.join(names)}")
        summary = execute_plan(plan, registry, folder, jobs=jobs, device=device, progress=progress, tracker=tracker,
                               seed_groups=seed_groups, executor=executor, ray_address=ray_address, gpu_per_job=gpu_per_job)
        frame = _frame(plan, registry, folder, summary)
        if html is not None and (frame["status"] == OK).any():
            from odbench.views.report import report

            report(folder, html=html, methods=chosen, datasets=names, registry=registry)
            frame.attrs["html"] = str(html)
        return frame


def tune(
    methods: str | Sequence[str],
    datasets: str | Sequence[str],
    *,
    trials: int = 20,
    grid: bool = False,
    metric: str | None = None,
    storage: str | None = None,
    protocol: str | None = None,
    classes: str | Sequence[str | int] | None = None,
    seeds: int = 1,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    protocol_options: Mapping[str, Any] | None = None,
    jobs: int = 1,
    device: str = "auto",
    results: Path | str | None = None,
    data_dirs: Sequence[Path | str] = (),
    plugin_dirs: Sequence[Path | str] = (),
    mlflow: bool = True,
    tracking_uri: str | None = None,
    experiment: str = "odbench",
    progress: bool = True,
    seed_groups: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
    gpu_per_job: float | None = None,
    heartbeat: int = 10,
    trials_only: bool = False,
) -> pd.DataFrame:
    """One Optuna study per job on its validation split, then its best parameters evaluated on test.

    ``trials`` per study (``grid=True``: each method's grid, exhaustively);
    ``metric``: the validation metric to maximize (default the protocol's
    headline metric); ``storage``: an Optuna storage URL (default
    ``sqlite:///<results>/optuna.db``); ``params`` are fixed, the search
    leaves them alone.  ``heartbeat``: seconds between a trial's heartbeats on
    a database server (a worker that stops beating has its trial retried);
    ``trials_only=True``: fill the studies and evaluate nothing (a tuning
    worker).  ``seed_groups``: a grouping method's trials (DROCC on a table)
    are fitted several at once, and its evaluation jobs grouped as in
    :func:`run`.  Other arguments as in :func:`run`; the trials run in this
    process, the evaluation jobs on ``executor``.

    Returns the rows of the evaluation jobs, as :func:`run` does (``study``
    names the study of each); ``frame.attrs["studies"]`` lists every study
    (``odbench.engine.tuning.StudyResult``: best value, trials, and why none
    finished when none did).
    """
    from odbench.core.metrics import METRICS
    from odbench.engine.devices import resolve_device

    trials, seeds, jobs = _positive(trials, "trials"), _positive(seeds, "seeds"), _positive(jobs, "jobs")
    if metric is not None and metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}; known: {', '.join(sorted(METRICS))}")
    fixed = _method_params(params)
    with _data_dirs(data_dirs):
        registry = Registry([Path(d) for d in plugin_dirs])
        chosen = registry.select("method", _names(methods, "methods"))
        names = registry.select("dataset", _names(datasets, "datasets"))
        check_where(executor, ray_address, gpu_per_job, device)
        device = resolve_device(device)  # the trials run in this process
        folder = check_results_folder(results if results is not None else default_results())
        prepare_datasets(registry, names)
        folder.mkdir(parents=True, exist_ok=True)
        tracker = make_tracker(folder, mlflow, tracking_uri, experiment, f"tune: {','.join(chosen)} on {','.join(names)}")

        import optuna

        from odbench.engine.tuning import tune_suite

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported once, below, without its traceback

        def on_trial(study: str, trial: Any) -> None:
            if progress:
                value = "pruned" if trial.value is None else f"{trial.value:.4f}"
                print(f"odbench: {study} trial {trial.number}: {value}", file=sys.stderr)
            if tracker is not None:
                tracker.log_trial(study, trial.number, trial.user_attrs.get("params", trial.params), trial.value, trial.state.name)

        studies = tune_suite(
            registry, chosen, names, n_trials=trials, storage=storage or f"sqlite:///{folder.resolve() / 'optuna.db'}",
            protocol=protocol, classes=_classes(classes), repetitions=seeds, protocol_options=dict(protocol_options or {}),
            fixed=fixed, base_seed=seed, device=device, use_grid=grid, metric=metric, on_trial=on_trial,
            heartbeat=heartbeat, group_trials=seed_groups,
        )  # fmt: skip
        plan = Plan(jobs=[])
        if trials_only:
            from odbench.engine.suite import Summary

            frame = _frame(plan, registry, folder, Summary())
            frame.attrs["studies"] = studies
            return frame
        for study in studies:
            if study.job is None:
                why = f" (every trial failed; the last: {study.error})" if study.error else ""
                plan.notes.append(f"study {study.study}: no trial finished{why}; nothing to evaluate")
                continue
            if progress:
                print(f"odbench: {study.study}: best validation value {study.best_value:.4f} with {study.job.params}", file=sys.stderr)
            plan.jobs.append(study.job)
        summary = execute_plan(plan, registry, folder, jobs=jobs, device=device, progress=progress, tracker=tracker,
                               seed_groups=seed_groups, executor=executor, ray_address=ray_address, gpu_per_job=gpu_per_job)
        frame = _frame(plan, registry, folder, summary)
        frame.attrs["studies"] = studies
        return frame
