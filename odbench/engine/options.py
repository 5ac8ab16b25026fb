"""The option bundles that ``odbench.run``, ``tune``, ``reproduce`` and the command line share.

* :class:`Suite`: what to run (methods x datasets x classes x seeds, protocol, parameters);
* :class:`Where`: where the jobs run (executor, worker processes, device, Ray, GPU share, seed groups);
* :class:`Tracking`: the MLflow mirror (on or off, tracking URI, experiment);
* :class:`Paths`: the results folder, the folders of data files and of plugins;

and the two that belong to one workflow each: :class:`Search` (``tune``'s
study settings) and :class:`Reproduction` (which of the paper's experiments,
on which budget).

Each is frozen and checked when it is made: a mistake raises one of the
one-line :class:`~odbench.engine.plan.UsageError`\\ s, before anything is
read or run.  Inputs are taken in the forms a notebook writes them
(``"knn,drocc"`` or ``["knn", "drocc"]``; ``{"drocc": {"epochs": 5}}`` or
``{"drocc.epochs": 5}``) and kept in one normal form (tuples, nested dicts).
What needs the plugins (unknown names) or the machine (a CUDA device) is
checked when a workflow starts, still before any job.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odbench.engine.devices import threads_per_job
from odbench.engine.experiments import BUDGETS
from odbench.engine.plan import MAX_REPETITIONS, SELECTIONS, UsageError

#: where jobs run: this machine (a pool of warm worker processes), or a Ray cluster
EXECUTORS = ("local", "ray")
#: the devices a job may ask for (``cuda:N`` too)
DEVICES = ("cpu", "cuda", "auto")


def _set(bundle: object, name: str, value: Any) -> None:
    """Store a normalised value in a frozen bundle (only from its ``__post_init__``)."""
    object.__setattr__(bundle, name, value)


def names(value: str | Sequence[str], what: str) -> tuple[str, ...]:
    """Comma-separated text or a list of names (wildcards allowed), as ``Registry.select`` takes them."""
    if isinstance(value, str):
        if not value.replace(",", "").strip():  # "" or "," names nothing: an error, never "all" or "the default"
            raise UsageError(f"{what} {value!r} names nothing; give comma-separated names, or leave it out for the default")
        return tuple(name.strip() for name in value.split(",") if name.strip())
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        if not any(v.strip() for v in value):
            raise UsageError(f"{what} {list(value)!r} names nothing; give at least one name")
        return tuple(value)
    raise UsageError(f"{what} must be a name, comma-separated names or a list of names, got {value!r}")


def classes(value: str | Sequence[str | int] | None) -> tuple[str, ...] | None:
    """Normal classes as names or ids: ``"0,3"``, ``[0, 3]``, ``["cat"]``."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in items):
        raise UsageError(f"classes must be comma-separated text or a list of class names or ids, got {value!r}")
    chosen = tuple(str(c).strip() for c in items if str(c).strip())
    if not chosen:  # "--classes ," names nothing: an error, not "every class"
        raise UsageError(f"classes {value!r} names nothing; give class names or ids, or leave it out for every class")
    return chosen


def method_params(params: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
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


#: trials per study, at most (each is a fit)
MAX_TRIALS = 100_000
#: seconds between heartbeats, at most (a dead worker's trial waits 3x this to run again)
MAX_HEARTBEAT = 3600
#: a tuning worker's number, at most
MAX_WORKER = 1_000_000
#: jobs at once on a Ray cluster given by address, at most (its own resources bound it further)
MAX_CLUSTER_JOBS = 4096
#: most reruns of a lost job (``--retries``), and the longest job bound (``--job-timeout``, a week in seconds)
MAX_RETRIES, MAX_JOB_TIMEOUT = 100, 7 * 24 * 3600


def machine_jobs() -> int:
    """How many worker processes this machine can hold: 8 per CPU core, and 256 MiB of memory each."""
    cores = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no such figure here: the cores alone
        return 8 * cores
    return max(1, min(8 * cores, memory // 2**28))


def positive(value: Any, what: str, most: int | None = None) -> int:
    """``value`` if it is an integer from 1 to ``most``; checked before anything grows with it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{what} must be a positive integer, got {value!r}")
    if most is not None and value > most:
        raise UsageError(f"{what} must be at most {most}, got {value}")
    return value


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{what} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class Suite:
    """What to run: methods x datasets x normal classes x ``seeds`` repetitions.

    ``methods`` / ``datasets``: names or wildcards (``"deep*"``), as a list or
    comma-separated text; ``None``: the default suite's (``odbench.DEFAULT_SUITE``,
    its deep methods on small budgets).  ``classes``: normal classes by name
    or id (default all).  ``params``: ``{"drocc": {"epochs": 5}}`` or
    ``{"drocc.epochs": 5}``.  ``seed``: the base seed.  ``selection``:
    ``val`` (honest) or ``oracle`` (on test, labelled as such); ``tune``
    always selects on validation.
    """

    methods: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None
    protocol: str | None = None
    protocol_options: Mapping[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None
    seeds: int = 1
    seed: int = 0
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    selection: str = "val"

    def __post_init__(self) -> None:
        if self.methods is not None:
            _set(self, "methods", names(self.methods, "methods"))
        if self.datasets is not None:
            _set(self, "datasets", names(self.datasets, "datasets"))
        positive(self.seeds, "seeds", MAX_REPETITIONS)
        _integer(self.seed, "seed")
        _set(self, "classes", classes(self.classes))
        _set(self, "params", method_params(self.params))
        if not isinstance(self.protocol_options, Mapping):
            raise UsageError(f"protocol_options must be a mapping of option names to values, got {self.protocol_options!r}")
        _set(self, "protocol_options", dict(self.protocol_options))
        if self.selection not in SELECTIONS:
            raise UsageError(f"unknown selection {self.selection!r}; known: {', '.join(SELECTIONS)}")


@dataclass(frozen=True)
class Where:
    """Where the jobs run.

    ``executor="local"``: ``jobs`` warm worker processes on this machine
    (one for ``jobs=1``: a signal stops the run whatever its job runs);
    ``"ray"``: every job a Ray task on the cluster at ``ray_address`` (default a local Ray of ``jobs`` CPUs), ``gpu_per_job``
    its GPU share with ``device="cuda"``.  ``device``: ``cpu``, ``cuda[:n]``
    or ``auto`` (a GPU when there is one).  ``seed_groups=False``: each
    repetition trains on its own (by default the repetitions, and tuning
    trials, of a method that allows it train together).  ``threads``: every
    job's torch threads (default: its share of the cores, every core for a
    lone job; a Ray job 1); equal thread counts give equal bits.  ``retries``
    (default 2): how often a job whose worker (or Ray node) was lost runs again.  ``job_timeout`` (seconds):
    a job running longer is stopped and recorded failed.
    """

    executor: str = "local"
    jobs: int = 1
    device: str = "auto"
    ray_address: str | None = None
    gpu_per_job: float | None = None
    seed_groups: bool = True
    threads: int | None = None
    retries: int | None = None
    job_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.threads is not None:
            positive(self.threads, "threads")
        if self.retries is not None and not 0 <= _integer(self.retries, "retries") <= MAX_RETRIES:
            raise UsageError(f"retries must be from 0 to {MAX_RETRIES}, got {self.retries}")
        if self.job_timeout is not None and (
            isinstance(self.job_timeout, bool) or not isinstance(self.job_timeout, (int, float)) or not 0 < self.job_timeout <= MAX_JOB_TIMEOUT
        ):
            raise UsageError(f"job_timeout must be seconds above 0 and at most {MAX_JOB_TIMEOUT} (a week), got {self.job_timeout!r}")
        threads_per_job(1, self.threads)  # a bad $ODBENCH_THREADS is refused now, before anything runs
        if self.executor not in EXECUTORS:
            raise UsageError(f"unknown executor {self.executor!r}; choose one of {', '.join(EXECUTORS)}")
        # a process pool, or a local Ray of that many CPUs, lives on this machine; a cluster holds more
        on_cluster = self.executor == "ray" and self.ray_address is not None
        most = MAX_CLUSTER_JOBS if on_cluster else machine_jobs()
        if positive(self.jobs, "jobs") > most:
            held = "on a cluster" if on_cluster else "as worker processes on this machine (8 per CPU core, 256 MiB of memory each)"
            raise UsageError(f"jobs must be at most {most} {held}, got {self.jobs}")
        if not isinstance(self.device, str) or (self.device not in DEVICES and not self.device.startswith("cuda:")):
            raise UsageError(f"unknown device {self.device!r}; use cpu, cuda or auto")
        if self.executor != "ray":
            ray_only = (
                ("ray_address (--ray-address)", self.ray_address), ("gpu_per_job (--gpu-per-job)", self.gpu_per_job),
            )  # fmt: skip
            for flag, value in ray_only:
                if value is not None:
                    raise UsageError(f"{flag} applies to Ray only; add --executor ray")
        elif self.gpu_per_job is not None and self.device == "cpu":
            raise UsageError("--gpu-per-job needs --device cuda (or auto on a cluster with GPUs)")


@dataclass(frozen=True)
class Tracking:
    """The MLflow mirror of a call: ``mlflow=False`` turns it off; ``tracking_uri`` defaults to
    ``sqlite:///<results>/mlflow.db``; runs go to ``experiment``.  At its end a call waits up to
    ``mlflow_wait`` seconds until the mirror equals the store (``odbench.observers.tracking.DRAIN_S``)."""

    mlflow: bool = True
    tracking_uri: str | None = None
    experiment: str = "odbench"
    mlflow_wait: float = 600.0

    def __post_init__(self) -> None:
        if not isinstance(self.experiment, str) or not self.experiment.strip():
            raise UsageError(f"the MLflow experiment needs a name, got {self.experiment!r}")
        if not isinstance(self.mlflow_wait, (int, float)) or not 0 <= self.mlflow_wait < float("inf"):
            raise UsageError(f"mlflow_wait is a number of seconds, 0 or more, got {self.mlflow_wait!r}")


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


def check_data_dirs(dirs: Sequence[Path | str]) -> None:
    """Every extra data folder exists: a mistyped one would otherwise be ignored in silence."""
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise UsageError(f"data folder {folder} {'is not a folder' if folder.exists() else 'does not exist'}")


@dataclass(frozen=True)
class Paths:
    """Where things are: the ``results`` folder (default ``./odbench_results`` or ``$ODBENCH_RESULTS``;
    jobs done there are not run again), ``data_dirs`` searched for dataset files before the cache (then
    ``$ODBENCH_DATA_DIR``'s), and ``plugin_dirs`` with extra method and dataset plugins.

    The results folder must be writable (nothing is created yet) and every data folder must exist.
    """

    results: Path = field(default_factory=default_results)
    data_dirs: tuple[Path, ...] = ()
    plugin_dirs: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.results is None:  # as a caller writes "no choice"
            _set(self, "results", default_results())
        _set(self, "results", check_results_folder(self.results))
        for name in ("data_dirs", "plugin_dirs"):
            value = getattr(self, name)
            if isinstance(value, (str, Path)):  # one folder given bare
                value = (value,)
            _set(self, name, tuple(Path(d) for d in value))
        check_data_dirs(self.data_dirs)


@dataclass(frozen=True)
class Search:
    """``tune``'s studies: ``trials`` per study (``grid=True``: each method's grid, exhaustively);
    ``metric``: the validation metric to maximize (default the protocol's headline metric);
    ``storage``: an Optuna storage URL (default ``sqlite:///<results>/optuna.db``); ``heartbeat``:
    seconds between a trial's heartbeats on a database server (a worker that stops beating has its
    trial retried); ``trials_only=True``: fill the studies and evaluate nothing (a tuning worker);
    ``worker``: this process's number among those filling the studies (0 alone), from which its
    sampler's seed derives, so that workers propose different points."""

    trials: int = 20
    grid: bool = False
    metric: str | None = None
    storage: str | None = None
    heartbeat: int = 10
    trials_only: bool = False
    worker: int = 0

    def __post_init__(self) -> None:
        from odbench.core.metrics import METRICS

        positive(self.trials, "trials", MAX_TRIALS)
        positive(self.heartbeat, "heartbeat", MAX_HEARTBEAT)
        if not 0 <= _integer(self.worker, "worker") <= MAX_WORKER:
            raise UsageError(f"worker must be from 0 to {MAX_WORKER} (this process's number among the tuning workers), got {self.worker}")
        if self.metric is not None and self.metric not in METRICS:
            raise UsageError(f"unknown metric {self.metric!r}; known: {', '.join(sorted(METRICS))}")


@dataclass(frozen=True)
class Reproduction:
    """One of the paper's experiments (``table1`` ... ``table5``, ``ocln-mnist``) on a ``budget``.

    ``variant``: a named alternative (the authors' protocol); ``repetitions``
    instead of the budget's; ``columns``: the paper's columns to run (default
    every one odbench has); ``selection``: ``val`` (honest; the default) or
    ``oracle`` (a variant may name its own); ``seed``: the base seed;
    ``from_store=True``: run nothing, read what the results folder holds.
    """

    name: str
    budget: str = "quick"
    variant: str | None = None
    repetitions: int | None = None
    columns: tuple[str, ...] | None = None
    selection: str | None = None
    seed: int = 0
    from_store: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"name an experiment, e.g. table2; got {self.name!r}")
        if self.budget not in BUDGETS:
            raise UsageError(f"unknown budget {self.budget!r}; known: {', '.join(BUDGETS)}")
        if self.repetitions is not None:
            positive(self.repetitions, "repetitions", MAX_REPETITIONS)
        if self.columns is not None:
            _set(self, "columns", names(self.columns, "columns"))
        if self.selection is not None and self.selection not in SELECTIONS:
            raise UsageError(f"unknown selection {self.selection!r}; known: {', '.join(SELECTIONS)}")
        _integer(self.seed, "seed")
