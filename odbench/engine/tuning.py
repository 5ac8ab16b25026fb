"""Hyperparameter search with Optuna, on the validation split only.

One study per job: its split, fixed parameters and code (``odbench.engine.identity``).  The objective
fits the method on ``task.for_fit()`` — a task *without* its test split, so
the search cannot read test labels even by accident — and returns the
protocol's headline metric on the validation split.  Deep methods report
per-epoch validation numbers through ``FitContext.on_epoch``; those feed
Optuna's pruner.  Studies live in an Optuna storage (SQLite by default), so
an interrupted search resumes and a re-run adds only the missing trials.

Several workers (processes, machines) may fill one study at once on a
database server (``postgresql://``): each stops when the study holds its
trial count, whoever ran the trials.  There trials send heartbeats, and a
trial whose worker died (no heartbeat for the grace period) is marked failed
and queued again (``RetryHeartbeatStaleTrialCallback``) for the next worker to
run.  The storage's tables are made once before workers start
(:func:`create_storage`), and a worker that meets another making them at the
same moment tries again, so an empty database loses no worker.  Each worker
has a number (``Search.worker``); its sampler's seed derives from it, so
workers propose different points and each one's stay reproducible.

Trials of a method that trains groups (``supports_seed_groups``, e.g. DROCC
on a table) are asked of Optuna several at a time (``group_size``; TPE's
constant liar keeps them apart, a grid hands out distinct points) and fitted
together by ``Method.fit_group``, since they share a split and differ only in
parameters it lets vary; each is told its own value, which equals its solo
trial's within float tolerance, and is pruned on its own.  A suite's
repetitions of one job fill their studies together, so their trials share
groups too, each on its own split and seed.  Trials that cannot
group run one by one, as ``study.optimize`` runs them.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import optuna

from odbench.core.contracts import FitContext, Method, Task
from odbench.core.errors import TrainingDiverged, UsageError
from odbench.core.metrics import evaluate
from odbench.core.params import declared_defaults
from odbench.engine.grouping import MAX_GROUP, group_varying, opted_in
from odbench.engine.identity import study_key, study_name
from odbench.engine.options import Search
from odbench.engine.plan import Plan
from odbench.engine.registry import Registry


class TuningError(UsageError):
    """The task cannot be tuned as asked (a user error)."""


#: URL schemes of database servers, where workers may share a study: heartbeats and retries are on
_SERVER_SCHEMES = ("postgresql", "postgres", "mysql")


def open_storage(url: str, heartbeat: int = 10) -> str | optuna.storages.BaseStorage:
    """Optuna storage for ``url``; a database server gets heartbeats and retries of dead workers' trials.

    ``postgresql://`` means psycopg 3 (odbench's driver; SQLAlchemy's default
    is psycopg2).  A trial with no heartbeat for ``3 * heartbeat`` seconds is
    failed and enqueued again, at most twice.  A SQLite file stays as given:
    one machine, and SQLite's locking does not suit a heartbeat thread.
    """
    scheme = url.split(":", 1)[0]
    if scheme.split("+", 1)[0] not in _SERVER_SCHEMES:
        return url
    if scheme in ("postgresql", "postgres"):
        url = "postgresql+psycopg:" + url.split(":", 1)[1]
    with warnings.catch_warnings():
        # Optuna marks heartbeats "experimental" since 2.8; said at every open, it would bury the run's own lines
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _rdb_storage(
            url,
            heartbeat_interval=heartbeat,
            grace_period=3 * heartbeat,
            # the callback and its keyword as Optuna 4.9 renamed them; RetryFailedTrialCallback goes in Optuna 6
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            engine_kwargs={"pool_pre_ping": True},
        )


def create_storage(url: str) -> None:
    """Make ``url``'s Optuna tables now, before workers start, so that they do not all make them at once.

    Workers that opened an empty database together raced to create the
    tables and one died of PostgreSQL's ``UniqueViolation``; made here, each
    worker finds them.  A storage that is not a database (``journal``
    files, in-memory) has nothing to make.
    """
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme in _SERVER_SCHEMES:
        open_storage(url).engine.dispose()  # type: ignore[union-attr]  # a server URL gives an RDBStorage
    elif scheme == "sqlite":
        _rdb_storage(url).engine.dispose()


#: how often opening a storage is tried while another process is making its tables
_CREATION_TRIES = 6


def _rdb_storage(url: str, **options: Any) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, tried again while another process makes the same tables; one line when it cannot open."""
    import sqlalchemy.exc

    for attempt in range(_CREATION_TRIES):
        try:
            return optuna.storages.RDBStorage(url, **options)
        except sqlalchemy.exc.DBAPIError as err:  # two creators at once: a unique key or "already exists"
            racing = isinstance(err, sqlalchemy.exc.IntegrityError) or "already exists" in str(err)
            if not racing or attempt == _CREATION_TRIES - 1:
                _cannot_open(url, err)
            time.sleep(0.2 * (attempt + 1))  # the other creator's transaction ends; the tables are then there
        except Exception as err:  # SQLAlchemy's errors: unreachable server, bad credentials, missing driver
            _cannot_open(url, err)
    raise AssertionError("unreachable")


def _cannot_open(url: str, err: Exception) -> NoReturn:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise TuningError(f"cannot open the Optuna storage {url.split('@')[-1]}: {first[:300]}") from None


def worker_seed(seed: int, worker: int) -> int:
    """The sampler seed of tuning worker number ``worker`` in a study whose job has ``seed``.

    Worker 0 (a lone ``odbench tune``) keeps the job's seed; every other
    worker gets its own, derived from both, so two workers never propose
    the same sequence of points, and a rerun proposes the same ones again.
    """
    if worker == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**63, worker]).generate_state(1)[0])


def unretried_trials(url: str, worker: int, heartbeat: int = 10) -> list[str]:
    """Trials that tuning worker ``worker`` left unfinished in ``url``'s studies and that were not queued again.

    A worker that dies mid-trial leaves it running; on a database server
    its heartbeat stops, and after the grace period the trial is failed and
    queued again (a retry another worker runs).  This waits out that grace
    period for the dead worker's running trials (failing them here if no
    other worker did); on SQLite nothing beats, and a running trial stays
    lost.  A trial the method itself failed (``error`` set) is no loss.
    Each entry names the study and trial number.
    """
    storage = open_storage(url, heartbeat)
    beating = isinstance(storage, optuna.storages.RDBStorage) and storage.heartbeat_interval is not None
    deadline = time.monotonic() + 4 * heartbeat
    while True:
        lost, running = [], False
        for summary in optuna.study.get_all_study_summaries(storage, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            if beating:
                optuna.storages.fail_stale_trials(study)  # what a worker's next trial would have done
            trials = study.get_trials(deepcopy=False)
            queued = {_retried(t) for t in trials}
            for trial in trials:
                if trial.user_attrs.get("worker") != worker or "error" in trial.user_attrs or _retried(trial) is not None:
                    continue  # a retry's loss is its original's, counted with it
                if trial.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL) and trial.number not in queued:
                    lost.append(f"{summary.study_name} trial {trial.number}")
                    running |= trial.state == optuna.trial.TrialState.RUNNING
        if not (beating and running) or time.monotonic() > deadline:
            return lost
        time.sleep(heartbeat / 2)


def _retried(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the first trial that ``trial`` runs again, or ``None`` (a first run)."""
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8, and kept in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def _check_validation(task: Task) -> None:
    y = task.val.y
    if y is None or len(np.unique(y)) < 2:
        raise TuningError(
            f"the validation split of {task.dataset} ({task.protocol}) has no labelled anomalies, so nothing can be "
            "tuned on it; use a protocol whose validation split has both classes (e.g. --protocol-option val_anomaly_fraction=0.2)"
        )


def _check_search_names(method_cls: type[Method], task: Task, grid: dict[str, list[Any]] | None) -> None:
    """Every name the search may set is a declared parameter (a plugin bug, said before any trial)."""
    if grid is not None:
        names = set(grid)
    else:  # one suggestion from a throwaway in-memory study shows the names
        names = set(method_cls.search_space(optuna.create_study().ask(), task.info))
    known = set(declared_defaults(method_cls.Params))
    unknown = sorted(names - known)
    if unknown:
        raise TuningError(
            f"{method_cls.name}'s search space sets {', '.join(unknown)}, which it does not declare in its Params"
        )


def _grid_size(grid: dict[str, list[Any]]) -> int:
    return math.prod(len(v) for v in grid.values())


class _CompleteTrials:
    """What a pruner reads of its study, as of one moment: the complete trials and the direction."""

    def __init__(self, complete: list[optuna.trial.FrozenTrial], study: optuna.Study) -> None:
        self.complete, self.direction, self.directions = complete, study.direction, study.directions

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[optuna.trial.FrozenTrial]:
        if states is not None and tuple(states) != (optuna.trial.TrialState.COMPLETE,):
            raise NotImplementedError("a pruner that reads trials other than complete ones")
        return list(self.complete)


def _running(number: int, reported: dict[int, float]) -> optuna.trial.FrozenTrial:
    """A running trial as a pruner sees it: its number and the values it reported so far."""
    return optuna.trial.FrozenTrial(
        number=number, state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=None,
        datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
        intermediate_values=dict(reported), trial_id=-1,
    )  # fmt: skip


class _Trials:
    """What a trial needs besides its fit: its parameters, pruning callback and value, for one task and seed.

    The value is ``metric`` on the validation split, by default the
    protocol's headline metric; a smoother one (``auroc``) suits a
    validation split with only a handful of anomalies, where F1 takes a few
    coarse values.
    """

    def __init__(
        self,
        method_cls: type[Method],
        task: Task,
        seed: int,
        device: str,
        grid: dict[str, list[Any]] | None,
        fixed: dict[str, Any] | None,
        metric: str | None,
        worker: int = 0,
    ) -> None:
        self.method_cls, self.task, self.seed, self.device, self.worker = method_cls, task, seed, device, worker
        self.grid, self.fixed = grid, fixed or {}
        self.fit_task = task.for_fit()
        self.metric = metric or task.headline_metric

    def params(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's method parameters: the fixed ones and what the search suggests (raises ValueError when invalid)."""
        if self.grid is not None:
            suggested = {k: trial.suggest_categorical(k, v) for k, v in self.grid.items()}
        else:
            suggested = self.method_cls.search_space(trial, self.task.info)
        # what the search chose, as method parameters (search_space may map
        # Optuna's names to other parameters): the evaluation reuses this
        trial.set_user_attr("params", suggested)
        trial.set_user_attr("worker", self.worker)  # whose trial it is, should that worker die in it
        try:
            return self.method_cls.resolve_params(self.task.info, {**self.fixed, **suggested})
        except ValueError as err:  # e.g. CE-only epochs that fill every epoch: the trial fails, saying why
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise

    def context(self, trial: optuna.Trial) -> FitContext:
        """The fit's context: per-epoch validation numbers go to the trial, whose pruner may stop the fit.

        The pruner compares the trial with the study's trials that were
        complete when it started (read once, here).  ``trial.should_prune()``
        would read them from the storage at every epoch, together with every
        running trial's intermediate values: on SQLite that cost 9 ms per
        epoch for one trial, and grew with each trial running beside it (a
        group of 16 trials of 100 epochs spent most of its time there).  On
        one worker the complete trials cannot change while the trial runs;
        other workers' trials finished meanwhile count from the next trial on.
        """
        study = trial.study
        reference = _CompleteTrials(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)), study)
        reported: dict[int, float] = {}

        def on_epoch(epoch: int, numbers: dict[str, float]) -> None:
            value = numbers.get(f"val_{self.metric}")
            if value is not None and np.isfinite(value):
                trial.report(float(value), epoch)
                reported[epoch] = float(value)
                if study.pruner.prune(reference, _running(trial.number, reported)):  # type: ignore[arg-type]  # a view
                    raise optuna.TrialPruned()

        return FitContext(seed=self.seed, device=self.device, on_epoch=on_epoch)

    def fit(self, trial: optuna.Trial, params: dict[str, Any]) -> float:
        """One solo fit of ``params`` and its value."""
        try:
            method = self.method_cls(**params).fit(self.fit_task, self.context(trial))
        except (RuntimeError, ValueError) as err:  # recorded, so a study whose every trial fails can say why
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise
        return self.value(method)

    def value(self, method: Method) -> float:
        """The fitted method's validation metric; a trial with no finite value is pruned."""
        scores = method.anomaly_score(self.fit_task.val.X)
        value = evaluate((self.metric,), self.fit_task.val.y, scores)[self.metric]
        if not np.isfinite(value):
            raise optuna.TrialPruned(f"validation {self.metric} is not finite")
        return float(value)


Callbacks = list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]]
#: the trial states that count towards a study's trial count
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass
class _Search:
    """One study being filled: its trials' context, its trial count, and whether its trials may train in groups."""

    study: optuna.Study
    trials: _Trials
    target: int
    grouped: bool
    callbacks: Callbacks

    def finished(self) -> int:
        """Its complete and pruned trials, whoever ran them."""
        return sum(t.state in _FINISHED for t in self.study.get_trials(deepcopy=False))


def _open_search(
    method_cls: type[Method],
    task: Task,
    *,
    n_trials: int,
    storage: str | optuna.storages.BaseStorage,
    name: str,
    seed: int,
    device: str,
    use_grid: bool,
    fixed: dict[str, Any] | None,
    metric: str | None,
    callbacks: Callbacks | None,
    group_size: int,
    worker: int = 0,
) -> _Search:
    """The study ``name``, created or loaded, after every check that needs no trial (see :func:`tune`)."""
    _check_validation(task)
    grid = method_cls.param_grid(task.info) if use_grid else None
    if use_grid and grid is None:
        raise TuningError(f"method {method_cls.name!r} has no parameter grid; drop --grid to search its space")
    _check_search_names(method_cls, task, grid)
    grouped = group_size > 1 and opted_in(method_cls) and not isinstance(storage, optuna.storages.RDBStorage)
    sampler: optuna.samplers.BaseSampler
    if grid:
        sampler = (_AskedGrid if grouped else optuna.samplers.GridSampler)(grid, seed=worker_seed(seed, worker))
    else:  # the constant liar gives trials asked together different suggestions
        sampler = optuna.samplers.TPESampler(seed=worker_seed(seed, worker), constant_liar=True)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        load_if_exists=True,
    )
    trials = _Trials(method_cls, task, seed, device, grid, fixed, metric, worker)
    return _Search(study, trials, _grid_size(grid) if grid else n_trials, grouped, callbacks or [])


def _optimize_alone(search: _Search) -> None:
    """``study.optimize`` until the study holds its trial count; each trial one solo fit."""
    trials = search.trials
    done = search.finished()
    if done >= search.target:
        return
    # other workers may be filling the same study: stop when it holds the target, whoever ran the trials
    enough = optuna.study.MaxTrialsCallback(search.target, states=_FINISHED)
    search.study.optimize(
        lambda trial: trials.fit(trial, trials.params(trial)),
        n_trials=search.target - done,
        callbacks=[*search.callbacks, enough],
        catch=(RuntimeError, ValueError),
    )


def tune(
    method_cls: type[Method],
    task: Task,
    *,
    n_trials: int,
    storage: str | optuna.storages.BaseStorage,
    name: str,
    seed: int,
    device: str = "cpu",
    use_grid: bool = False,
    fixed: dict[str, Any] | None = None,
    metric: str | None = None,
    callbacks: Callbacks | None = None,
    group_size: int = 1,
    worker: int = 0,
) -> optuna.Study:
    """Run (or resume) the study ``name`` until it has ``n_trials`` finished trials.

    With ``use_grid`` the method's ``param_grid`` is searched exhaustively and
    ``n_trials`` is ignored.  ``group_size`` > 1: trials of a method that
    trains groups are fitted up to that many at once (see the module
    docstring), except on a database server, where Optuna's heartbeats need
    each trial in ``study.optimize``.  ``worker``: this process's number among
    those filling the study (:func:`worker_seed`).  Returns the study; ``study.best_params``
    holds the suggested values only (merge with defaults to rebuild the method).
    """
    search = _open_search(
        method_cls, task, n_trials=n_trials, storage=storage, name=name, seed=seed, device=device, use_grid=use_grid,
        fixed=fixed, metric=metric, callbacks=callbacks, group_size=group_size, worker=worker,
    )  # fmt: skip
    if search.grouped:
        _optimize_in_groups([search], group_size)
    else:
        _optimize_alone(search)
    return search.study


class _AskedGrid(optuna.samplers.GridSampler):
    """The grid, for trials asked and told outside ``study.optimize``.

    GridSampler ends an optimize loop by ``study.stop()`` once every point
    has started, which raises outside one; :func:`_optimize_in_groups`
    counts the points itself.
    """

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any, values: Any) -> None:
        return None


#: a trial asked and ready to fit: its study, the trial, and its method parameters
_Member = tuple[_Search, optuna.Trial, dict[str, Any]]


def _optimize_in_groups(searches: list[_Search], group_size: int) -> None:
    """``study.optimize`` for each of ``searches``, with their trials fitted in groups of up to ``group_size``.

    The searches must be of one method, on tasks that train together (one
    training-split size): trials of one study or of several (the
    repetitions of one tuning suite) then share a group when they agree in
    every parameter the method does not let vary.  Each study asks up to
    ``group_size`` trials per round and, as ``study.optimize(n_trials=target
    - done)``, that many trials at most, failed ones included, and no more
    once it holds its target.
    """
    varying = group_varying(searches[0].trials.method_cls)
    budgets = [s.target - s.finished() for s in searches]
    while any(b > 0 for b in budgets):
        ready: list[_Member] = []
        for i, search in enumerate(searches):
            count = min(group_size, budgets[i], search.target - search.finished())
            asked = [search.study.ask() for _ in range(max(count, 0))]
            budgets[i] = budgets[i] - len(asked) if asked else 0  # a study that holds its target asks no more
            for trial in asked:
                try:
                    ready.append((search, trial, search.trials.params(trial)))
                except ValueError:
                    _tell(search.study, trial, None, optuna.trial.TrialState.FAIL, search.callbacks)
        compatible: dict[str, list[_Member]] = {}
        for member in ready:
            shared = {k: v for k, v in member[2].items() if k not in varying}
            compatible.setdefault(json.dumps(shared, sort_keys=True, default=repr), []).append(member)
        for members in compatible.values():
            for first in range(0, len(members), group_size):
                group = members[first : first + group_size]
                for (search, trial, params), outcome in zip(group, _fit_members(group), strict=True):
                    trial.set_user_attr("group_size", 1 if outcome is None else len(group))  # None: it ran alone
                    _settle(search, trial, params, outcome)


def _fit_members(members: list[_Member]) -> list[Method | Exception | None]:
    """Each member's fitted method or the exception that stopped it; ``None`` where it is to run alone."""
    if len(members) == 1:
        return [None]
    method_cls = members[0][0].trials.method_cls
    try:
        fitted = method_cls.fit_group(
            [params for _, _, params in members],
            [search.trials.fit_task for search, _, _ in members],
            [search.trials.context(trial) for search, trial, _ in members],
        )
    except TrainingDiverged:  # the stacked step overflowed: each solo run says where it stops
        return [None] * len(members)
    except (RuntimeError, ValueError) as err:
        return [err] * len(members)
    if fitted is None:
        return [None] * len(members)
    # a member that diverged in the group runs alone, so its trial says what its solo run says
    return [None if isinstance(f, TrainingDiverged) else f for f in fitted]


def _settle(search: _Search, trial: optuna.Trial, params: dict[str, Any], outcome: Method | Exception | None) -> None:
    """Tell ``trial``'s state and value as ``study.optimize`` would have after its solo objective."""
    study, trials, callbacks = search.study, search.trials, search.callbacks
    try:
        if outcome is None:
            value = trials.fit(trial, params)
        elif isinstance(outcome, Exception):
            raise outcome
        else:
            value = trials.value(outcome)
    except optuna.TrialPruned:
        _tell(study, trial, None, optuna.trial.TrialState.PRUNED, callbacks)
    except (RuntimeError, ValueError) as err:  # as optimize's catch: the trial fails, the study goes on
        if "error" not in trial.user_attrs:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
        _tell(study, trial, None, optuna.trial.TrialState.FAIL, callbacks)
    except BaseException:
        _tell(study, trial, None, optuna.trial.TrialState.FAIL, [])
        raise
    else:
        _tell(study, trial, value, optuna.trial.TrialState.COMPLETE, callbacks)


def _tell(
    study: optuna.Study, trial: optuna.Trial, value: float | None, state: optuna.trial.TrialState, callbacks: Callbacks
) -> None:
    frozen = study.tell(trial, value, state=state)
    for callback in callbacks:
        callback(study, frozen)


@dataclass(frozen=True)
class StudyResult:
    """One study and the job that evaluates its best parameters on test."""

    study: str
    job: Any  # odbench.engine.Job with the best parameters, or None when no trial finished
    best_value: float | None
    trials: int
    #: why the last trial failed, when none finished
    error: str | None = None


def tune_suite(
    registry: Registry,
    plan: Plan,
    search: Search,
    device: str = "cpu",
    on_trial: Callable[[str, optuna.trial.FrozenTrial], None] | None = None,
    group_trials: bool = True,
) -> list[StudyResult]:
    """One study per job of ``plan``: (method, dataset, protocol, normal class, repetition).

    Each repetition has its own split, so each gets its own study on *its*
    validation data: reusing one repetition's choice on another's test set
    would leak, since a test point of one split can be a validation point
    of another.  ``plan`` comes from the runner's ``expand``, which checked
    names, classes and options; a job's parameters are fixed, the search
    leaves them alone.  ``search``: trials, grid, metric, the storage URL
    (required here), heartbeat (:func:`open_storage`) and this worker's
    number (its sampler's seed, :func:`worker_seed`).  ``on_trial``
    hears every finished trial with its study's name.  ``group_trials``:
    fit a grouping method's trials together (:func:`tune`).
    """
    from dataclasses import replace

    from odbench.engine.execute import job_task

    if search.storage is None:
        raise TuningError("tune_suite needs an Optuna storage URL (Search.storage)")
    n_trials, use_grid, metric, worker = search.trials, search.grid, search.metric, search.worker
    opened = open_storage(search.storage, search.heartbeat)
    callbacks = [lambda study, trial: on_trial(study.study_name, trial)] if on_trial else None
    group_size = MAX_GROUP if group_trials else 1
    opened_searches: list[tuple[Any, str, _Search]] = []
    for job in plan.jobs:  # every study is checked and opened before any trial runs
        cls = registry.method(job.method)
        task, seed = job_task(registry, job, plan.cache)  # the split the evaluation job is scored on
        if cls.uses_negatives and not task.info.has_negatives:
            continue
        # the study's identity is its job's (split, fixed parameters, code) plus what it maximizes
        identity = study_key(job.key(registry, plan.cache), metric=metric, grid=use_grid)
        name = study_name(identity, method=job.method, dataset=job.dataset, protocol=job.protocol,
                          normal_class=job.normal_class, repetition=job.repetition)  # fmt: skip
        search = _open_search(
            cls, task, n_trials=n_trials, storage=opened, name=name, seed=seed, device=device, use_grid=use_grid,
            fixed=job.params, metric=metric, callbacks=callbacks, group_size=group_size, worker=worker,
        )  # fmt: skip
        opened_searches.append((job, name, search))
    # the repetitions of one job fill their studies together, as the runner's seed groups train them
    together: dict[str, list[_Search]] = {}
    for job, name, search in opened_searches:
        together.setdefault(_repetitions_of(job, search) if search.grouped else name, []).append(search)
    for searches in together.values():
        if searches[0].grouped:
            _optimize_in_groups(searches, group_size)
        else:
            _optimize_alone(searches[0])
    results = []
    for job, name, search in opened_searches:
        study = search.study
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = study.best_trial if complete else None
        evaluation = None
        if best is not None:
            chosen = dict(best.user_attrs.get("params", best.params))
            evaluation = replace(job, params={**job.params, **chosen}, study=name)
        failed = [t.user_attrs["error"] for t in study.trials if "error" in t.user_attrs]
        error = failed[-1] if best is None and failed else None
        results.append(StudyResult(name, evaluation, best.value if best else None, len(study.trials), error))
    return results


def _repetitions_of(job: Any, search: _Search) -> str:
    """Everything of a study's job but its repetition (and so its split and seed), and its training split's size.

    Studies that agree in it have trials that may train in one group; a
    split of another size would need another batch schedule.
    """
    varying = group_varying(search.trials.method_cls)
    train = search.trials.task.train
    fields = [
        job.method, job.dataset, job.protocol, job.normal_class, job.base_seed, job.protocol_options, job.selection,
        {k: v for k, v in job.params.items() if k not in varying}, len(train), len(train.normal),
    ]  # fmt: skip
    return json.dumps(fields, sort_keys=True, default=repr)
