"""Jobs: expansion of a suite, execution on an executor, resume.

A suite is methods x datasets x normal classes x repetitions.  Each
:class:`Job` is executed in three steps — build the task (protocol, seed,
standardization), fit on the task without its test split, score the test
split — and its record is written to the :class:`~odbench.store.Store`
atomically by the process that ran it.  Jobs whose key is already done in
the store are skipped, so running a command again resumes it.

Executors are interchangeable: anything with ``run(items, on_epoch)`` that
yields one :class:`Outcome` per item as it finishes.  Two exist here:
:class:`SequentialExecutor` (in this process) and :class:`LocalPoolExecutor`
(a process pool, one fresh process per job so peak memory is per job).
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import queue
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import odbench
from odbench.api import Dataset, FitContext, LabeledData
from odbench.download import dataset_root
from odbench.metrics import evaluate
from odbench.preprocess import standardize
from odbench.protocols import ProtocolError, get_protocol
from odbench.registry import Registry, RegistryError
from odbench.seeding import derive_seed
from odbench.store import FAILED, OK, Store, job_key

SKIPPED = "skipped"
SELECTIONS = ("val", "oracle")
#: environment variables a worker process must see as the main process does
_FORWARDED_ENV = ("ODBENCH_DATA_DIR", "ODBENCH_CACHE", "ODBENCH_PLUGIN_PATH", "ODBENCH_TRUST_LOCAL_FILES")

EpochCallback = Callable[[str, int, dict[str, float]], None]  # (job key, epoch, metrics)


class UsageError(ValueError):
    """A suite that cannot be run as asked (bad class, option, device)."""


@dataclass(frozen=True)
class Job:
    """One (method, dataset, normal class, repetition) cell of a suite.

    ``params`` are the user's parameters only; the method's data-dependent
    defaults are merged in when the task is built.  ``normal_class`` is
    ``None`` for protocols with a single task (``contamination``).
    """

    method: str
    dataset: str
    protocol: str
    normal_class: str | None
    repetition: int
    base_seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    protocol_options: dict[str, Any] = field(default_factory=dict)
    selection: str = "val"
    #: the Optuna study whose best parameters these are (``odbench tune``); not part of the key
    study: str | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        cls = "" if self.normal_class is None else f"/{self.normal_class}"
        return f"{self.method} on {self.dataset}{cls} rep {self.repetition}"

    def key(self, registry: Registry) -> str:
        """The store key: a hash of the job and both plugin files."""
        return job_key(
            method=self.method,
            params=self.params,
            dataset=self.dataset,
            protocol=self.protocol,
            protocol_options=self.protocol_options,
            normal_class=self.normal_class,
            repetition=self.repetition,
            base_seed=self.base_seed,
            selection=self.selection,
            method_hash=registry.get("method", self.method).file_hash,
            # a user's data file is part of the identity too (csv:, npz:, folder:)
            dataset_hash=registry.get("dataset", self.dataset).file_hash + dataset_instance(registry, self.dataset).fingerprint(),
        )


@dataclass
class Plan:
    """The jobs of a suite and notes on the pairs left out (and why)."""

    jobs: list[Job]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WorkItem:
    """What a worker needs to run one job without the main process's state."""

    job: Job
    key: str
    store_root: str
    device: str
    plugin_dirs: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class Outcome:
    """The result of one job: ``ok``, ``failed`` or ``skipped`` (with a note)."""

    job: Job
    key: str
    status: str
    record: dict[str, Any] | None = None
    note: str = ""


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped, "
            f"{self.already_done} already done ({self.seconds:.1f} s)"
        )


# ---------------------------------------------------------------- data ---

_DATA: dict[tuple[str, str, str], tuple[Dataset, LabeledData]] = {}
_INSTANCES: dict[tuple[str, tuple[str, ...]], Dataset] = {}
_REGISTRIES: dict[tuple[str, ...], Registry] = {}


def prepare(dataset: Dataset) -> Path:
    """Download/verify the dataset's files once; returns its cache folder."""
    root = dataset_root(dataset.name)
    dataset.prepare(root)
    return root


def dataset_instance(registry: Registry, dataset_id: str) -> Dataset:
    """One instance per dataset id and process: a source that learns its
    modality or default protocol while loading (``csv:``, ``npz:``) keeps
    what it learned, since ``load`` below runs once per process."""
    key = (dataset_id, tuple(str(d) for d in registry.plugin_dirs))
    if key not in _INSTANCES:
        _INSTANCES[key] = registry.dataset(dataset_id)
    return _INSTANCES[key]


def load(dataset: Dataset) -> LabeledData:
    """The dataset's arrays, loaded once per process (and data folder, and file content).

    A user source (``takes_argument``) learns its modality and default
    protocol from its file while loading, so each such instance loads for
    itself; built-in datasets share one copy of their arrays.
    """
    cache_key = (dataset.id, os.environ.get("ODBENCH_DATA_DIR", ""), dataset.fingerprint())
    cached = _DATA.get(cache_key)
    if cached is None or (dataset.takes_argument and cached[0] is not dataset):
        _DATA[cache_key] = (dataset, dataset.load(prepare(dataset)))
    return _DATA[cache_key][1]


def _registry(plugin_dirs: tuple[str, ...]) -> Registry:
    if plugin_dirs not in _REGISTRIES:
        _REGISTRIES[plugin_dirs] = Registry([Path(d) for d in plugin_dirs])
    return _REGISTRIES[plugin_dirs]


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda[:n]`` or ``auto`` (the first GPU if torch sees one)."""
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} asked for, but torch sees no CUDA device; use --device cpu or auto")
        return device
    raise UsageError(f"unknown device {device!r}; use cpu, cuda or auto")


# ------------------------------------------------------------ planning ---


def _check_options(protocol_name: str, options: dict[str, Any]) -> None:
    build = get_protocol(protocol_name).build
    known = [p.name for p in inspect.signature(build).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    known.append("max_train")  # every protocol's (Protocol.make_task)
    for name in options:
        if name not in known:
            raise UsageError(f"protocol {protocol_name!r} has no option {name!r}; known: {', '.join(known)}")


def expand(
    registry: Registry,
    methods: Sequence[str],
    datasets: Sequence[str],
    *,
    protocol: str | None = None,
    classes: Sequence[str] | None = None,
    repetitions: int = 1,
    base_seed: int = 0,
    params: dict[str, dict[str, Any]] | None = None,
    protocol_options: dict[str, Any] | None = None,
    selection: str = "val",
) -> Plan:
    """Every job of methods x datasets x normal classes x repetitions.

    ``protocol`` overrides each dataset's default.  ``classes`` restricts the
    normal classes of per-class protocols (default: all classes); a class a
    dataset lacks is a :class:`ProtocolError`.  ``params`` maps a method name
    to its user parameters.  Pairs a method cannot run (modality) are left
    out with a note.  Raises before anything runs on any user mistake.
    """
    if repetitions < 1:
        raise UsageError(f"repetitions must be at least 1 (got {repetitions})")
    if selection not in SELECTIONS:
        raise UsageError(f"unknown selection {selection!r}; known: {', '.join(SELECTIONS)}")
    params = params or {}
    options = dict(protocol_options or {})
    for name in params:
        if name not in methods:
            registry.get("method", name)  # an unknown name says what exists
            raise UsageError(f"--param given for method {name!r}, which is not in this suite")
    plan = Plan(jobs=[])
    for dataset_id in datasets:
        dataset = dataset_instance(registry, dataset_id)
        if dataset.takes_argument:
            load(dataset)  # a user's data decide their classes and default protocol when read
        proto = get_protocol(protocol or dataset.default_protocol)
        _check_options(proto.name, options)
        normal_classes: list[str | None] = [None]
        if proto.per_class:
            known = list(dataset.classes) or list(load(dataset).class_names)
            normal_classes = list(proto.normal_classes(dataset, tuple(known)))
            if classes:
                unknown = [c for c in classes if c not in known]
                if unknown:
                    raise ProtocolError(
                        f"unknown class {unknown[0]!r} for dataset {dataset.id!r}; known: {', '.join(known)}"
                    )
                normal_classes = [c for c in known if c in classes]
            elif getattr(dataset, "default_classes", None):  # e.g. Speech Commands: the keyword 'marvin'
                normal_classes = [c for c in normal_classes if c in dataset.default_classes]
        elif classes:
            plan.notes.append(f"--classes does not apply to {dataset.id} ({proto.name} has a single task)")
        if proto.name != dataset.default_protocol:
            # an unusual pairing: build one task now so a mismatch fails before anything runs
            try:
                proto.make_task(load(dataset), dataset, normal_classes[0], base_seed, **options)
            except NotImplementedError as err:  # e.g. no close-negative generator for ocln
                raise ProtocolError(f"protocol {proto.name!r} cannot run on {dataset.id!r}: {err}") from None
        for method in methods:
            cls = registry.method(method)
            if dataset.modality not in cls.modalities:
                plan.notes.append(
                    f"skipping {method} on {dataset.id}: it accepts {', '.join(cls.modalities)}, not {dataset.modality}"
                )
                continue
            plan.jobs += [
                Job(method, dataset.id, proto.name, c, r, base_seed, dict(params.get(method, {})), options, selection)
                for c in normal_classes
                for r in range(repetitions)
            ]
    return plan


# ----------------------------------------------------------- execution ---


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0], "odbench": odbench.__version__}
    for short, dist in (("torch", "torch"), ("sklearn", "scikit-learn"), ("pyod", "pyod"), ("numpy", "numpy")):
        try:
            found[short] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[short] = None
    return found


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _base_record(item: WorkItem, rss_scope: str) -> dict[str, Any]:
    job = item.job
    return {
        "key": item.key,
        "status": FAILED,
        "method": job.method,
        "params": dict(job.params),
        "user_params": dict(job.params),
        "dataset": job.dataset,
        "protocol": job.protocol,
        "protocol_options": dict(job.protocol_options),
        "normal_class": job.normal_class,
        "repetition": job.repetition,
        "base_seed": job.base_seed,
        "seed": derive_seed(job.base_seed, job.dataset, job.protocol, job.normal_class, job.repetition),
        "selection": job.selection,
        "study": job.study,
        "device": item.device,
        "versions": _versions(),
        "peak_rss_scope": rss_scope,
        "history": [],
        "metrics": {},
    }


def execute(item: WorkItem, on_epoch: EpochCallback | None = None, rss_scope: str = "process") -> Outcome:
    """Run one job and write its record; every ``Exception`` becomes a failed record.

    ``rss_scope`` says what ``peak_rss_mb`` measures: ``"job"`` when this
    process ran only this job (process pool), ``"process"`` when it is the
    peak of a process that may have run earlier jobs too (sequential).
    ``KeyboardInterrupt`` is not caught: finished jobs stay in the store.
    """
    for name, value in item.env:
        os.environ[name] = value
    job, store = item.job, Store(item.store_root)
    record = _base_record(item, rss_scope)
    history: list[dict[str, float]] = record["history"]

    def report(epoch: int, metrics: dict[str, float]) -> None:
        history.append({"epoch": int(epoch), **{k: float(v) for k, v in metrics.items()}})
        if on_epoch is not None:
            on_epoch(item.key, int(epoch), metrics)

    try:
        registry = _registry(item.plugin_dirs)
        cls = registry.method(job.method)
        dataset = dataset_instance(registry, job.dataset)
        record["plugin_hashes"] = {
            "method": registry.get("method", job.method).file_hash,
            "dataset": registry.get("dataset", job.dataset).file_hash,
        }
        task = get_protocol(job.protocol).make_task(
            load(dataset), dataset, job.normal_class, record["seed"], **job.protocol_options
        )
        task = standardize(task, dataset.channel_stats)
        if cls.uses_negatives and not task.info.has_negatives:
            note = f"skipping {job.method} on {job.dataset}: it needs labelled negatives and {job.protocol} has none"
            return Outcome(job, item.key, SKIPPED, note=note)
        params = {**cls.default_params(task.info), **job.params}
        record["params"] = params
        ctx = FitContext(seed=record["seed"], device=item.device, on_epoch=report, selection=job.selection)
        if "torch" in sys.modules:  # seed torch too when a deep plugin brought it in
            sys.modules["torch"].manual_seed(record["seed"])
        # only an explicitly requested oracle run may see the test split while fitting
        fit_task = task if job.selection == "oracle" else task.for_fit()
        start = time.perf_counter()
        method = cls(**params).fit(fit_task, ctx)
        record["fit_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = np.asarray(method.anomaly_score(task.test.X), dtype=np.float64)
        record["score_seconds"] = time.perf_counter() - start
        if scores.shape != (len(task.test),):
            raise ValueError(f"anomaly_score returned shape {scores.shape}, expected ({len(task.test)},)")
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"anomaly_score returned {int((~np.isfinite(scores)).sum())} non-finite scores")
        record.update(
            status=OK,
            metrics=evaluate(task.metrics, task.test.y, scores),
            metric_names=list(task.metrics),
            headline_metric=task.headline_metric,
            selection=ctx.selection,  # a method may declare its own selection as oracle
            peak_rss_mb=peak_rss_mb(),
            split={
                "train": len(task.train),
                "val": len(task.val),
                "val_anomalies": int(np.sum(task.val.y == 1)) if task.val.y is not None else 0,
                "test": len(task.test),
                "test_anomalies": int(np.sum(task.test.y == 1)),
                **task.notes,
            },
            created=datetime.now(timezone.utc).isoformat(),
        )
        extra = {"test_close": task.test.close} if task.test.close is not None else None
        index = {"train": task.train.index, "val": task.val.index, "test": task.test.index}
        store.write(record, scores, task.test.y, index, extra)
        return Outcome(job, item.key, OK, record)
    except Exception as err:
        record.update(
            status=FAILED,
            error={"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()},
            peak_rss_mb=peak_rss_mb(),
            created=datetime.now(timezone.utc).isoformat(),
        )
        store.write(record)
        return Outcome(job, item.key, FAILED, record, note=f"{type(err).__name__}: {err}")


class Executor(Protocol):
    """Runs work items, yielding each outcome as soon as its job finishes."""

    def run(self, items: Sequence[WorkItem], on_epoch: EpochCallback | None = None) -> Iterator[Outcome]: ...


class SequentialExecutor:
    """Every job in this process, one after the other."""

    def run(self, items: Sequence[WorkItem], on_epoch: EpochCallback | None = None) -> Iterator[Outcome]:
        for item in items:
            yield execute(item, on_epoch, rss_scope="process")


def _pool_entry(item: WorkItem, epochs: Any) -> Outcome:
    def forward(key: str, epoch: int, metrics: dict[str, float]) -> None:
        epochs.put((key, epoch, {k: float(v) for k, v in metrics.items()}))

    return execute(item, forward if epochs is not None else None, rss_scope="job")


def _limit_threads(threads: int) -> None:
    """Cap a worker's math threads (torch, OpenMP, BLAS) at its share of the cores."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:  # preloaded by the fork server: the variables come too late for it
        sys.modules["torch"].set_num_threads(threads)


class LocalPoolExecutor:
    """A local process pool; each job gets a fresh process (peak RSS is per job).

    Workers start from a fork server (spawn where there is none) because
    ``max_tasks_per_child`` rules out plain fork.  Per-epoch numbers travel
    back over a manager queue only when someone listens (a progress bar).
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, items: Sequence[WorkItem], on_epoch: EpochCallback | None = None) -> Iterator[Outcome]:
        if not items:
            return
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # warm the server once; a deep plugin's torch too when it is already loaded here
            context.set_forkserver_preload(["odbench.worker_preload", *(["torch"] if "torch" in sys.modules else [])])
        manager = context.Manager() if on_epoch is not None else None
        epochs = manager.Queue() if manager is not None else None
        # N workers share the cores: more math threads than cores makes every
        # worker spin-wait on the others (measured: a 10 s test took 6 min)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        pool = futures.ProcessPoolExecutor(
            self.workers, mp_context=context, max_tasks_per_child=1, initializer=_limit_threads, initargs=(threads,)
        )
        try:
            pending = {pool.submit(_pool_entry, item, epochs) for item in items}
            while pending:
                finished, pending = futures.wait(pending, timeout=0.2, return_when=futures.FIRST_COMPLETED)
                _drain(epochs, on_epoch)
                for future in finished:
                    yield future.result()
        finally:
            # Always wait: on Python 3.11, shutdown(wait=False) races the pool's manager
            # thread replacing a retired worker and can leave a worker that blocks exit.
            # After Ctrl-C the workers have had SIGINT too, so the wait is short.
            pool.shutdown(wait=True, cancel_futures=True)
            if manager is not None:
                manager.shutdown()


def _drain(epochs: Any, on_epoch: EpochCallback | None) -> None:
    if epochs is None or on_epoch is None:
        return
    while True:
        try:
            on_epoch(*epochs.get_nowait())
        except queue.Empty:
            return


class Reporter(Protocol):
    """Progress display; see ``odbench.progress``."""

    wants_epochs: bool  # False: per-epoch numbers need not travel from workers

    def start(self, items: Sequence[WorkItem], already_done: int) -> None: ...
    def epoch(self, key: str, epoch: int, metrics: dict[str, float]) -> None: ...
    def finished(self, outcome: Outcome) -> None: ...
    def close(self) -> None: ...


class Tracker(Protocol):
    """A mirror of the store (MLflow); see ``odbench.tracking``."""

    def log_job(self, record: dict[str, Any], scores_path: Path | None) -> None: ...
    def finish(self, status: str) -> None: ...


def run_suite(
    plan: Plan,
    registry: Registry,
    store: Store,
    *,
    executor: Executor | None = None,
    device: str = "cpu",
    reporter: Reporter | None = None,
    tracker: Tracker | None = None,
) -> Summary:
    """Run every job of ``plan`` not yet done in ``store``; failures are recorded, not raised.

    Each finished job is mirrored to ``tracker`` from this process.  On
    ``KeyboardInterrupt`` the tracker is closed and the interrupt re-raised;
    jobs already written stay in the store.
    """
    executor = executor or SequentialExecutor()
    summary = Summary(notes=list(plan.notes))
    started = time.perf_counter()
    env = tuple((name, os.environ[name]) for name in _FORWARDED_ENV if name in os.environ)
    dirs = tuple(str(d.resolve()) for d in registry.plugin_dirs)  # workers rebuild the same registry
    items: dict[str, WorkItem] = {}
    for job in plan.jobs:
        key = job.key(registry)
        if store.done(key):
            summary.already_done += 1
        elif key not in items:
            items[key] = WorkItem(job, key, str(store.root), device, dirs, env)
    if reporter is not None:
        reporter.start(list(items.values()), summary.already_done)
    status = "FAILED"
    try:
        on_epoch = reporter.epoch if reporter is not None and reporter.wants_epochs else None
        for outcome in executor.run(list(items.values()), on_epoch):
            if outcome.status == OK:
                summary.ok += 1
            elif outcome.status == FAILED:
                summary.failed += 1
            else:
                summary.skipped += 1
                summary.notes.append(outcome.note)
            if tracker is not None and outcome.record is not None:
                tracker.log_job(outcome.record, store.scores_path(outcome.key) if outcome.status == OK else None)
            if reporter is not None:
                reporter.finished(outcome)
        status = "FINISHED" if summary.failed == 0 else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        summary.seconds = time.perf_counter() - started
        if reporter is not None:
            reporter.close()
        if tracker is not None:
            tracker.finish(status)
    return summary


__all__ = [
    "Job", "Plan", "WorkItem", "Outcome", "Summary", "UsageError", "RegistryError", "ProtocolError",
    "expand", "execute", "run_suite", "prepare", "load", "resolve_device",
    "SequentialExecutor", "LocalPoolExecutor",
]  # fmt: skip
