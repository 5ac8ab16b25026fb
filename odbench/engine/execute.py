"""Running one job: build the task, fit without its test split, score, record.

Its record is written to the :class:`~odbench.engine.store.Store` atomically
by the process that ran it, or (``WorkItem.write`` false: a worker on another
machine) returned with its arrays for the caller to write; every
``Exception`` becomes a failed record.

A job runs on the torch threads its executor gives it (:func:`torch_threads`):
every core for a lone job, about cores/N under ``--jobs N``, a Ray task's
declared CPUs, or ``--threads`` for all.  Same seed, same bits holds at the
same thread count; the record's ``torch_threads`` says which."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from odbench.core.contracts import EVAL_SCORING, FitContext, FitTask, Method, Split, Task
from odbench.core.download import using_data_dirs
from odbench.core.metrics import evaluate, inversion_test
from odbench.core.seeding import split_and_fit_seeds
from odbench.data.sources import constant_features
from odbench.engine.devices import device_info, keep_freed_memory, make_deterministic, ran_on
from odbench.engine.loading import DataCache
from odbench.engine.plan import Job, job_code
from odbench.engine.registry import Registry
from odbench.engine.store import FAILED, OK, Store
from odbench.protocols import get_protocol
from odbench.protocols.scaling import standardize

SKIPPED = "skipped"


@dataclass(frozen=True)
class JobEvent:
    """News from a running job, sent while it runs (records come only when it ends).

    ``kind``: ``"start"`` (the job began), ``"plan"`` (a training phase will
    run ``total_epochs`` epochs; ``phase`` names it, ``stages`` lists its
    parts that run at different rates, e.g. DROCC's ``(("ce-only", 50),
    ("adversarial", 50))``, or is empty), ``"epoch"`` (epoch
    ``epoch`` ended with ``metrics``).  ``time`` is the worker's wall clock
    (``time.time()``), so a display or MLflow can show real start times.
    """

    key: str
    kind: str
    time: float
    epoch: int = -1
    metrics: dict[str, float] = field(default_factory=dict)
    phase: str = "train"
    total_epochs: int | None = None
    stages: tuple[tuple[str, int], ...] = ()


EventCallback = Callable[[JobEvent], None]


@dataclass(frozen=True)
class WorkItem:
    """What a worker needs to run one job without the main process's state."""

    job: Job
    key: str
    store_root: str
    device: str
    plugin_dirs: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    #: the folders searched for data files (the caller's ``--data-dir`` and ``$ODBENCH_DATA_DIR``), passed to the
    #: worker with the job rather than through its environment; None: the worker's own ``$ODBENCH_DATA_DIR``
    data_dirs: tuple[str, ...] | None = None
    #: False: the worker writes nothing; its outcome carries the arrays (a Ray worker on another machine)
    write: bool = True


@dataclass
class Outcome:
    """The result of one job: ``ok``, ``failed`` or ``skipped`` (with a note)."""

    job: Job
    key: str
    status: str
    record: dict[str, Any] | None = None
    note: str = ""
    #: ``Store.write``'s array arguments when the worker left the writing to the caller (``WorkItem.write``)
    arrays: dict[str, Any] | None = None

    def write_to(self, store: Store) -> None:
        """Write the record a worker returned instead of writing (nothing for a skipped job)."""
        if self.record is not None:
            store.write(self.record, **(self.arrays or {}))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB: Linux's ``VmHWM`` (which a warm worker resets
    before each job: ``process_state.reset_peak_rss``), else ``ru_maxrss``."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
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
        "seed": job.seed,
        "selection": job.selection,
        "scoring": job.scoring,
        "study": job.study,
        "device": item.device,
        "peak_rss_scope": rss_scope,
        "ran_on": ran_on(),  # host, pid, Ray node: not part of the key or the numbers
        "group_size": 1,  # jobs trained together with this one (odbench.engine.grouping), itself included
        "history": [],
        "metrics": {},
    }


def selected_epoch(method: Any) -> dict[str, Any]:
    """The epoch a deep method kept and what chose it (``val``, ``oracle``, ``last``); {} for others.

    Read off the fitted method's ``result_`` (``odbench.deep.training.TrainResult``),
    duck-typed so that a classical job never imports torch.
    """
    result = getattr(method, "result_", None)
    if result is None or not hasattr(result, "best_epoch"):
        return {}
    return {"selected_epoch": int(result.best_epoch), "selected_by": str(result.selected_by)}


def settled_params(params: dict[str, Any], method: Method) -> dict[str, Any]:
    """``params`` with each ``"auto"`` the fitted method settled (a deep method's ``runtime.precision``) replaced by what ran.

    ``precision="auto"`` depends on the hardware; the record says what ran, so
    results of bf16 and fp32 never share a table cell (the job key keeps ``auto``).
    """
    ran = method.resolved_params()
    return {name: ran.get(name, value) if value == "auto" else value for name, value in params.items()}


def job_task(registry: Registry, job: Job, cache: DataCache) -> tuple[Task, int]:
    """The job's standardized task, cut by the split stream of its seed; and the fit stream's seed.

    Tuning builds its tasks here too, so a study sees exactly the split that
    its evaluation job is scored on.
    """
    split_seed, fit_seed = split_and_fit_seeds(job.seed)
    dataset = cache.dataset(registry, job.dataset)
    task = get_protocol(job.protocol).make_task(cache.load(dataset), dataset, job.normal_class, split_seed, **job.protocol_options)
    return standardize(task, dataset.channel_stats), fit_seed


#: the record's error type of a job stopped at ``--job-timeout``
TIMED_OUT = "JobTimeout"


def crashed(item: WorkItem, reason: str, kind: str = "WorkerCrashedError") -> Outcome:
    """The outcome of a job whose worker died: a failed record saying why (not cached: the next run retries)."""
    record = _base_record(item, "job")
    record.update(error={"type": kind, "message": reason, "traceback": ""}, created=datetime.now(UTC).isoformat())
    return Outcome(item.job, item.key, FAILED, record, note=f"{kind}: {reason}")


@dataclass
class Prepared:
    """A job ready to fit: its record so far, task, method class, parameters and context."""

    item: WorkItem
    record: dict[str, Any]
    task: Task
    cls: type[Method]
    params: dict[str, Any]
    ctx: FitContext
    fit_task: FitTask


def _events(
    item: WorkItem, history: list[dict[str, float]], on_event: EventCallback | None
) -> tuple[Callable[[int, dict[str, float]], None], Callable[[str, int, tuple[tuple[str, int], ...]], None]]:
    """The ``FitContext`` callbacks of one job: epochs into its history and out as events."""

    def report(epoch: int, metrics: dict[str, float]) -> None:
        numbers = {k: float(v) for k, v in metrics.items()}
        history.append({"epoch": int(epoch), **numbers})
        if on_event is not None:
            on_event(JobEvent(item.key, "epoch", time.time(), epoch=int(epoch), metrics=numbers))

    def plan(phase: str, epochs: int, stages: tuple[tuple[str, int], ...] = ()) -> None:
        if on_event is not None:
            parts = tuple((str(name), int(count)) for name, count in stages)
            on_event(JobEvent(item.key, "plan", time.time(), phase=phase, total_epochs=int(epochs), stages=parts))

    return report, plan


def import_before_the_clock(deep: bool) -> None:
    """Import what the first fit of a process would otherwise import inside its ``fit_seconds``.

    Measured once per process: scikit-learn's metrics (imported lazily by
    ``odbench.core.metrics``, for validation AUROC) about 1.6 s, and
    ``torch._dynamo``, which ``torch.optim``'s constructors import, about
    1.4 s.  Without this the first deep job of a process recorded ~3 s more
    fit time than the same job run later.
    """
    import sklearn.metrics  # noqa: F401

    if deep:
        import torch._dynamo  # noqa: F401


def prepare(item: WorkItem, on_event: EventCallback | None, rss_scope: str, cache: DataCache) -> Prepared | Outcome:
    """Everything before ``fit``: the record's identity, the task, the parameters, the seeded context.

    Returns an :class:`Outcome` instead when the job is skipped, or cannot
    be built (then its failed record is written).  The data are read from
    the item's data folders.
    """
    if item.data_dirs is None:
        return _prepare(item, on_event, rss_scope, cache)
    with using_data_dirs(item.data_dirs):
        return _prepare(item, on_event, rss_scope, cache)


def _prepare(item: WorkItem, on_event: EventCallback | None, rss_scope: str, cache: DataCache) -> Prepared | Outcome:
    job = item.job
    record = _base_record(item, rss_scope)
    record["started"] = datetime.now(UTC).isoformat()
    if on_event is not None:
        on_event(JobEvent(item.key, "start", time.time()))
    if item.device.startswith("cuda"):  # a seed promises identical numbers: no autotuned or racing kernels
        make_deterministic()
    report, plan = _events(item, record["history"], on_event)
    try:
        registry = cache.registry(item.plugin_dirs)
        cls = registry.method(job.method)
        record["plugin_hashes"] = {
            "method": registry.get("method", job.method).file_hash,
            "dataset": registry.get("dataset", job.dataset).file_hash,
        }
        code = job_code(registry, job)
        record.update(code_fingerprint=code["code"], code_modules=code["modules"], versions=code["versions"])
        task, fit_seed = job_task(registry, job, cache)
        record["fit_seed"] = fit_seed
        threads = _apply_job_threads()
        if threads is not None:
            record["torch_threads"] = threads  # what the executor gave this job (torch_threads)
        record["device_info"] = device_info(item.device)
        if cls.uses_negatives and not task.info.has_negatives:
            note = f"skipping {job.method} on {job.dataset}: it needs labelled negatives and {job.protocol} has none"
            return Outcome(job, item.key, SKIPPED, note=note)
        params = cls.resolve_params(task.info, job.params)
        record["params"] = params  # what runs: the one merge of defaults and the user's values
        deep = bool(getattr(cls, "deep", False))
        import_before_the_clock(deep)
        if deep:
            keep_freed_memory()  # activations reuse freed heap blocks instead of page-faulting fresh ones
        ctx = FitContext(
            seed=fit_seed, device=item.device, on_epoch=report, selection=job.selection, on_plan=plan, scoring=job.scoring
        )
        # only an explicitly requested oracle run may see the test split while fitting
        fit_task = task.for_fit(oracle=job.selection == "oracle")
        return Prepared(item, record, task, cls, params, ctx, fit_task)
    except Exception as err:
        return failed(item, record, err)


#: the torch threads the running job was given (:func:`torch_threads`); None outside a job: torch's own setting
_job_threads: int | None = None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block's jobs on ``threads`` torch threads (None: leave torch's setting); the caller's comes back afterwards.

    The executor decides the count (``odbench.engine.devices.threads_per_job``).  Thread count changes how
    reductions split, so scores are bit-identical for the same job at the same count, not across counts
    (measured on an AVX2 EPYC: a DROCC MNIST LeNet job's scores moved by up to 0.02 between 1 and 2 threads;
    a DROCC Thyroid MLP job's did not).  The record says the count (``torch_threads``).
    """
    global _job_threads
    torch, outer = sys.modules.get("torch"), _job_threads
    before = torch.get_num_threads() if torch is not None else None
    _job_threads = threads
    _apply_job_threads()
    try:
        yield
    finally:
        _job_threads = outer
        torch = sys.modules.get("torch")  # a deep plugin may have imported it during the block
        if torch is not None and threads is not None:
            torch.set_num_threads(before if before is not None else threads)


def _apply_job_threads() -> int | None:
    """Give torch the job's threads now, once its plugin has loaded (and maybe imported torch); the count it runs on."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if _job_threads is not None and torch.get_num_threads() != _job_threads:
        torch.set_num_threads(_job_threads)
    return int(torch.get_num_threads())


def seed_torch(seed: int) -> None:
    """Seed torch's global generator too when a deep plugin brought torch in (its initial weights)."""
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def read_test_scores(method: Method, test: Split, ctx: FitContext) -> np.ndarray:
    """The test split's anomaly scores, read as the job's scoring mode says (eval mode unless a variant set another)."""
    if ctx.scoring == EVAL_SCORING:
        return np.asarray(method.anomaly_score(test.X), dtype=np.float64)
    score_as = getattr(method, "score_as", None)  # duck-typed: a classical job never imports torch
    if score_as is None:
        raise ValueError(f"scoring {ctx.scoring!r} reads a network's BatchNorm; {method.name} has none")
    return np.asarray(score_as(test, ctx.scoring, ctx.seed), dtype=np.float64)


def validation_check(method: Method, val: Split) -> dict[str, Any]:
    """The fitted model's validation AUROC and whether it is significantly below 0.5 (inverted scores).

    Always eval mode, on the validation split only (no test label is read);
    ``{}`` when validation lacks either class (no test is possible: e.g.
    ``contamination``, which has no validation split).
    """
    if val.y is None or len(np.unique(val.y)) < 2:
        return {}
    scores = np.asarray(method.anomaly_score(val.X), dtype=np.float64)
    return inversion_test(val.y, scores) if np.all(np.isfinite(scores)) else {}


def diagnostics(method: Method) -> dict[str, Any]:
    """What a method reports about its own fit (``diagnostics_``: e.g. how often DROCC's projection moved an offset)."""
    found = getattr(method, "diagnostics_", None)
    return dict(found) if isinstance(found, dict) else {}


def finish(job: Prepared, method: Method, fit_seconds: float, **extra_record: Any) -> Outcome:
    """Score the fitted ``method`` on the test split, write the record; every ``Exception`` becomes a failed record."""
    item, record, task, ctx = job.item, job.record, job.task, job.ctx
    try:
        record["fit_seconds"] = fit_seconds
        record.update(extra_record)
        start = time.perf_counter()
        scores = read_test_scores(method, task.test, ctx)
        record["score_seconds"] = time.perf_counter() - start
        record.update(selected_epoch(method))
        record["validation_check"] = validation_check(method, task.val)
        if constant := constant_features(task.train.X, task.val.X, task.test.X):
            record["constant_features"] = constant  # flagged beside its table: features no method can use
        if found := diagnostics(method):
            record["diagnostics"] = found
        record["params"] = settled_params(record["params"], method)
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
            created=datetime.now(UTC).isoformat(),
        )
        extra = {"test_close": task.test.close} if task.test.close is not None else None
        index = {"train": task.train.index, "val": task.val.index, "test": task.test.index}
        arrays: dict[str, Any] = {"scores": scores, "labels": task.test.y, "split_index": index, "extra": extra}
        if not item.write:
            return Outcome(item.job, item.key, OK, record, arrays=arrays)
        Store(item.store_root).write(record, **arrays)
        return Outcome(item.job, item.key, OK, record)
    except Exception as err:
        return failed(item, record, err)


def failed(item: WorkItem, record: dict[str, Any], err: Exception) -> Outcome:
    """``record`` as failed by ``err``, written unless the caller writes (``WorkItem.write``)."""
    record.update(
        status=FAILED,
        error={"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()},
        peak_rss_mb=peak_rss_mb(),
        created=datetime.now(UTC).isoformat(),
    )
    if item.write:
        Store(item.store_root).write(record)
    return Outcome(item.job, item.key, FAILED, record, note=f"{type(err).__name__}: {err}")


def execute(
    item: WorkItem, on_event: EventCallback | None = None, rss_scope: str = "process", cache: DataCache | None = None
) -> Outcome:
    """Run one job and write its record; every ``Exception`` becomes a failed record.

    ``rss_scope`` says what ``peak_rss_mb`` measures: ``"job"`` when this
    process ran only this job (process pool), ``"process"`` when it is the
    peak of a process that may have run earlier jobs too (sequential).
    ``cache``: the caller's, when it runs jobs one after another.
    ``on_event`` hears the job start, its training phases and each epoch.
    ``KeyboardInterrupt`` is not caught: finished jobs stay in the store.
    """
    job = prepare(item, on_event, rss_scope, cache or DataCache())
    if isinstance(job, Outcome):
        return job
    return fit_solo(job)


def fit_solo(job: Prepared) -> Outcome:
    """Fit one prepared job on its own, score it and write its record."""
    try:
        seed_torch(job.ctx.seed)
        start = time.perf_counter()
        method = job.cls(**job.params).fit(job.fit_task, job.ctx)
        fit_seconds = time.perf_counter() - start
    except Exception as err:
        return failed(job.item, job.record, err)
    return finish(job, method, fit_seconds)
