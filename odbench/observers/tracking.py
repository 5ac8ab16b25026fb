"""An MLflow mirror of the results store, written live while a suite runs (``odbench ui`` browses it).

The store is the source of truth; MLflow is a view that heals.  Each job is
one run nested under a parent run per suite invocation: it opens when the
job starts, receives each epoch as it ends, and closes with the job's record
(tags, parameters, metrics, artifacts; see :mod:`odbench.observers.mlflow_runs`)
and its real start and end times.  The parent gets summary metrics.

Every MLflow call happens on one background thread fed by a queue, so the
jobs never wait for MLflow: not while it builds its database, not while a
remote server is down.  That thread first gets the database ready
(:mod:`odbench.observers.mlflow_db`) and reconciles the mirror with the store
(:mod:`odbench.observers.mlflow_sync`), so whatever an earlier, interrupted run
did not mirror is mirrored now.  If MLflow fails, one warning says so, the
suite goes on, and the end of the suite says how many runs MLflow missed:
the next run or ``odbench sync-mlflow`` mirrors them.
"""

from __future__ import annotations

import fcntl
import queue
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from odbench.engine.store import Store, to_json_safe
from odbench.observers.mirror_stamp import (
    FileState,
    count_tracker_start,
    leave_stamp,
    only_own_changes,
    record_files,
    still_mirrored,
    take_stamp,
    trackers_started,
)
from odbench.observers.mlflow_db import (
    artifact_root,
    default_tracking_uri,
    ensure_database,
    is_remote,
    probe,
    quiet_mlflow,
)
from odbench.observers.mlflow_runs import (
    KIND,
    OWNER,
    complete_run,
    job_tags,
    log_epochs,
    millis,
    mlflow_name,
    owner_id,
    run_name,
)
from odbench.observers.mlflow_sync import forget_suite_end, mirror_lock, reconcile, record_suite_end
from odbench.observers.mlflow_view import VIEW_TAG, view_tag_value
from odbench.observers.progress import clock

#: the MLflow UI opens an experiment tagged so on its runs table (not the GenAI traces view)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_tags() -> dict[str, str]:
    """The tags odbench keeps on its experiment: its kind, and the runs table ``odbench ui`` opens."""
    return {**EXPERIMENT_KIND, VIEW_TAG: view_tag_value()}


#: seconds ``finish`` waits for the mirror to equal the store, after a normal end (``--mlflow-wait``) and after an
#: interrupt.  Generous: a 42-job suite on a busy 2-core machine took 5 minutes to catch up, and a run that ends
#: before its mirror leaves the rest to the next run or ``odbench sync-mlflow``.
DRAIN_S, DRAIN_INTERRUPTED_S = 600.0, 5.0

#: while ``finish`` waits, a progress line this often ("mirroring to MLflow: 21/42 runs")
PROGRESS_EVERY_S = 5.0

# SQLite refuses a write while another process writes: wait and retry, up to this many times
_LOCKED_RETRIES = 20

_STOP = object()


def connect(uri: str, results: Path, experiment: str) -> tuple[Any, str, str | None]:
    """A ready client and the experiment's id (created if new) with odbench's tags set; and a warning if any.

    Raises ``ConnectionError`` when a remote server does not answer.
    """
    quiet_mlflow()
    unreachable = probe(uri)
    if unreachable is not None:
        raise ConnectionError(unreachable)
    local = uri == default_tracking_uri(results)
    warning = ensure_database(uri, artifact_root(results) if local else None)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = str(found.experiment_id)
        for key, value in experiment_tags().items():
            if found.tags.get(key) != value:  # an experiment made before this odbench, or by hand
                client.set_experiment_tag(experiment_id, key, value)
    else:
        try:
            location = artifact_root(results) if local else None
            made = client.create_experiment(experiment, artifact_location=location, tags=experiment_tags())
            experiment_id = str(made)
        except Exception:  # another process created it first
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
            experiment_id = str(found.experiment_id)
    return client, experiment_id, warning


def _retrying(call: Any, *args: Any, **kwargs: Any) -> Any:
    for attempt in range(_LOCKED_RETRIES):
        try:
            return call(*args, **kwargs)
        except Exception as err:
            if "database is locked" not in str(err) or attempt == _LOCKED_RETRIES - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


class Tracker:
    """Mirrors a suite to MLflow from a background thread; never raises, never blocks a job.

    ``uri`` defaults to a SQLite database in ``results`` (artifacts in
    ``results/mlartifacts``).  The parent run is created with the first job,
    so a suite that finds everything already done leaves no empty run behind.
    """

    wants_events = True  # runs open when their job starts and log epochs as they end

    def __init__(
        self, results: Path, uri: str | None = None, experiment: str = "odbench", suite: str = "suite",
        stream: Any = None, drain_s: float = DRAIN_S,
    ) -> None:  # fmt: skip
        self.results = Path(results)
        self.store = Store(self.results)
        self.uri = uri or default_tracking_uri(self.results)
        self.experiment = experiment
        self.suite = suite
        self.stream = stream or sys.stderr
        self.drain_s = drain_s
        self.enabled = True  # False once MLflow failed: the rest goes to the next sync
        self.logged = 0  # jobs mirrored by this tracker
        self.missed = 0  # jobs it could not mirror
        self.queued = 0  # jobs handed to it (log_job)
        self.catching_up: tuple[int, int] | None = None  # (done, total) of the catch-up with the store, while it runs
        self.client: Any = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock_handle: Any = None
        self._alone = False  # this process held the mirror lock alone when its suite started
        self._started = datetime.now(UTC).isoformat()  # records created later belong to live suites
        self._skip: frozenset[str] = frozenset()
        self._jobs: dict[str, Any] = {}  # key -> planned job, to name a run when it starts
        self._runs: dict[str, str] = {}  # key -> its open run
        self._epochs: dict[str, int] = {}  # key -> history rows logged live
        self._studies: dict[str, str] = {}  # study name -> its run
        self._summary: list[dict[str, Any]] = []  # records of this suite, for the parent's metrics
        # what the mirror stamp needs (odbench.observers.mirror_stamp): this tracker's start in the count of
        # trackers, the record files at its start, the files of the records it mirrored, and whether a stamp
        # vouched for the mirror at its start (then it reconciles nothing and connects only to mirror a job)
        self._start_count: int | None = None
        self._files_at_start: dict[str, FileState] = {}
        self._own_files: set[str] = set()
        self._trusted = False

    # -- called from the main process's main thread: queue and return ------------------------------

    def start(self, items: Sequence[Any]) -> None:
        """The suite is about to run ``items`` (work items: ``.key``, ``.job``).

        The mirror lock is tried here, before any job can be stored, not when
        MLflow answers: a suite whose jobs finish while its MLflow connection
        is still being made must already count as live for another process's
        reconciliation, or both would mirror its jobs.
        """
        self._started = datetime.now(UTC).isoformat()
        self._take_lock()
        if self._start_count is None:
            self._check_stamp()
        self._queue.put(("start", {item.key: item.job for item in items}))
        self._ensure_thread()

    def _take_lock(self) -> None:
        """Exclusive when no other process mirrors this store (then this one reconciles), else shared later."""
        if self._lock_handle is not None:
            return
        try:
            path = mirror_lock(self.store)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_handle = open(path, "a+")  # noqa: SIM115 -- held for the tracker's life
        except OSError:
            return  # a results folder that cannot hold the lock: reconcile nothing, mirror our own jobs
        try:
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._alone = True
        except BlockingIOError:
            self._alone = False  # the shared lock is taken by the background thread: waiting must not block jobs

    def _check_stamp(self) -> None:
        """Count this tracker's start, and trust the stamp of the last complete mirror if it still holds."""
        before = trackers_started(self.store)
        stamp = take_stamp(self.store) if self._alone else None
        count = count_tracker_start(self.store)
        # another tracker counted in between: it runs beside this one, so this one neither trusts nor stamps
        self._start_count = count if count == before + 1 else None
        self._files_at_start = record_files(self.store)
        self._trusted = (
            self._alone
            and self._start_count is not None
            and still_mirrored(stamp, self.uri, self.experiment, self._files_at_start, before)
        )

    def _leave_stamp(self) -> None:
        """After a complete mirror: stamp it when this tracker saw every change the store had while it ran."""
        if not (self._alone and self.enabled and self.missed == 0 and self._start_count is not None):
            return
        # the stamp holds this tracker's start count: one started meanwhile (it may have died with a run open)
        # has counted past it, so the stamp vouches for nothing and the next suite reconciles
        files = record_files(self.store)
        if only_own_changes(self._files_at_start, files, self._own_files):
            leave_stamp(self.store, self.uri, self.experiment, files, self._start_count)

    def event(self, event: Any) -> None:
        self._queue.put(("event", event))
        self._ensure_thread()

    def log_job(self, record: dict[str, Any], scores_path: Path | None) -> None:
        """The job ended (ok or failed) and its record is in the store."""
        self.queued += 1
        self._queue.put(("job", to_json_safe(record), scores_path))
        self._ensure_thread()

    def skipped(self, key: str) -> None:
        """The job ended without a record (it does not apply): its run is removed."""
        self._queue.put(("skip", key))
        self._ensure_thread()

    def log_trial(self, study: str, number: int, params: dict[str, Any], value: float | None, state: str) -> None:
        """One Optuna trial as an MLflow run, nested under its study's run."""
        self._queue.put(("trial", study, number, dict(params), value, state))
        self._ensure_thread()

    def progress(self) -> str:
        """What the mirror has done of what it was given: ``21/42 runs`` (and the catch-up with the store, while it runs)."""
        text = f"{self.logged + self.missed}/{self.queued} runs"
        if self.catching_up is not None:
            done, total = self.catching_up
            text += f"; catching up with the store: {done}/{total} stored jobs"
        return text

    def _sync_command(self) -> str:
        uri = f" --tracking-uri {self.uri}" if self.uri != default_tracking_uri(self.results) else ""
        experiment = f" --experiment {self.experiment}" if self.experiment != "odbench" else ""
        return f"odbench sync-mlflow --results {self.results}{uri}{experiment}"

    def finish(self, status: str = "FINISHED") -> None:
        """Close the parent run (``FINISHED``, ``FAILED`` or ``KILLED``) and wait until the mirror equals the store.

        The wait is bounded (``drain_s``, 5 s after an interrupt) and says
        every :data:`PROGRESS_EVERY_S` what it waits for.  The suite's end is
        recorded in the store first: if the wait runs out and the process
        exits, the sync that finishes the mirror closes the parent run as it
        ended (``odbench.observers.mlflow_sync.record_suite_end``).
        """
        if self._thread is None:
            return
        owner = owner_id()
        record_suite_end(self.store, owner, status)
        self._queue.put(("finish", status))
        self._queue.put(_STOP)
        wait = DRAIN_INTERRUPTED_S if status == "KILLED" else self.drain_s
        started = time.monotonic()
        while True:  # never silent for more than PROGRESS_EVERY_S
            left = wait - (time.monotonic() - started)
            self._thread.join(max(0.0, min(left, PROGRESS_EVERY_S)))
            if not self._thread.is_alive() or left <= PROGRESS_EVERY_S:
                break
            elapsed = clock(time.monotonic() - started)
            print(f"odbench: mirroring to MLflow: {self.progress()} ({elapsed})", file=self.stream, flush=True)
        if self._thread.is_alive():
            behind = self.queued - self.logged - self.missed
            catching = "" if self.catching_up is None else f" (and the catch-up of {self.catching_up[1]} stored jobs)"
            print(
                f"odbench: warning: MLflow is still behind after {wait:.0f} s: {behind} of this run's {self.queued} "
                f"jobs not mirrored yet{catching}; results are in the store; finish with `{self._sync_command()}` "
                "(or give --mlflow-wait more seconds)",
                file=self.stream,
            )
            return
        forget_suite_end(self.store, owner)  # the parent run is closed: nothing for a sync to finish
        self._leave_stamp()
        if self.missed:
            print(
                f"odbench: warning: MLflow missed {self.missed} runs of this run's {self.queued} jobs; results are in the "
                f"store; mirror them with `{self._sync_command()}`",
                file=self.stream,
            )

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Wait until everything queued so far is mirrored (or dropped); whether it was in time."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._queue.unfinished_tasks

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="odbench-mlflow", daemon=True)
            self._thread.start()

    # -- the background thread ---------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while True:
                message = self._queue.get()
                try:
                    if message is _STOP:
                        return
                    self._handle(message)
                finally:
                    self._queue.task_done()
        finally:
            if self._lock_handle is not None:
                self._lock_handle.close()  # drops the shared mirror lock

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "start":
            self._jobs.update(message[1])
            self._skip = self._skip | frozenset(message[1])
        if not self.enabled:
            if kind == "job":
                self.missed += 1
            return
        try:
            if self.client is None:
                if kind in ("start", "finish") and self._trusted:
                    return  # nothing to reconcile and no run open: MLflow is not even imported
                self._connect()
            if kind == "event":
                self._on_event(message[1])
            elif kind == "job":
                self._on_job(message[1], message[2])
            elif kind == "skip":
                run_id = self._runs.pop(message[1], None)
                if run_id is not None:
                    _retrying(self.client.delete_run, run_id)
            elif kind == "trial":
                self._on_trial(*message[1:])
            elif kind == "finish":
                self._on_finish(message[1])
        except Exception as err:  # MLflow is a view: never let it stop a suite
            if kind == "job":
                self.missed += 1
            self._disable(err)

    def _disable(self, err: BaseException) -> None:
        self.enabled = False
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(
            f"odbench: warning: MLflow logging stopped ({type(err).__name__}: {first[:200]}); "
            "the suite goes on and its results are in the store",
            file=self.stream,
        )

    def _connect(self) -> None:
        self.client, self.experiment_id, warning = connect(self.uri, self.results, self.experiment)
        if warning:
            print(f"odbench: warning: {warning}", file=self.stream)
        # Reconcile only when no other process mirrors this store (the lock taken at start);
        # then hold it shared, so a concurrent `odbench sync-mlflow` cannot mirror our jobs too.
        # Only records older than this suite are reconciled: later ones are live suites' to mirror.
        self._take_lock()
        handle = self._lock_handle
        if handle is None:
            return
        if self._alone and self._trusted:
            fcntl.flock(handle, fcntl.LOCK_SH)  # the stamp vouches for what a reconciliation would find
        elif self._alone:
            try:
                report = _retrying(
                    reconcile, self.client, self.experiment_id, self.store, self._skip, created_before=self._started,
                    on_progress=self._caught_up,
                )  # fmt: skip
            finally:
                self.catching_up = None
                fcntl.flock(handle, fcntl.LOCK_SH)
            if report.mirrored or report.adopted or report.closed:
                print(f"odbench: MLflow caught up with the store: {report.line()}", file=self.stream)
        else:
            fcntl.flock(handle, fcntl.LOCK_SH)

    def _caught_up(self, done: int, total: int) -> None:
        self.catching_up = (done, total)

    def _parent(self, start_ms: int | None = None) -> str:
        if self.parent_id is None:  # it starts with its first job
            tags = {KIND: "suite", OWNER: owner_id()}
            run = _retrying(self.client.create_run, self.experiment_id, start_time=start_ms, run_name=self.suite, tags=tags)
            self.parent_id = str(run.info.run_id)
        return self.parent_id

    def _open(self, key: str, job: Any, start_ms: int | None) -> str:
        tags = {**job_tags(job, key), "mlflow.parentRunId": self._parent(start_ms)}
        run = _retrying(self.client.create_run, self.experiment_id, start_time=start_ms, run_name=run_name(job), tags=tags)
        self._runs[key] = str(run.info.run_id)
        return self._runs[key]

    def _on_event(self, event: Any) -> None:
        job = self._jobs.get(event.key)
        if event.kind == "start" and job is not None:
            self._open(event.key, job, int(event.time * 1000))
            self._epochs[event.key] = 0
            return
        run_id = self._runs.get(event.key)
        if run_id is None:
            return
        if event.kind == "plan" and event.total_epochs is not None:
            _retrying(self.client.set_tag, run_id, f"epochs.{mlflow_name(event.phase)}", str(event.total_epochs))
        elif event.kind == "epoch":
            _retrying(log_epochs, self.client, run_id, [{"epoch": event.epoch, **event.metrics}], int(event.time * 1000))
            self._epochs[event.key] = self._epochs.get(event.key, 0) + 1

    def _on_job(self, record: dict[str, Any], scores_path: Path | None) -> None:
        key = record["key"]
        run_id = self._runs.pop(key, None)
        if run_id is None:  # no start event heard (an executor that sends none)
            run_id = self._open(key, record, millis(record.get("started")))
            self._runs.pop(key)
        _retrying(complete_run, self.client, run_id, record, scores_path, self._epochs.pop(key, 0))
        self.logged += 1
        self._own_files.add(self.store.record_path(key).name)
        self._summary.append(record)

    def _on_trial(self, study: str, number: int, params: dict[str, Any], value: float | None, state: str) -> None:
        from mlflow.entities import Metric, Param

        if study not in self._studies:
            tags = {"mlflow.parentRunId": self._parent(), KIND: "study", OWNER: owner_id(), "study": study}
            run = _retrying(self.client.create_run, self.experiment_id, run_name=f"study {study}", tags=tags)
            self._studies[study] = str(run.info.run_id)
        tags = {"mlflow.parentRunId": self._studies[study], KIND: "trial", "study": study, "state": state}
        run = _retrying(self.client.create_run, self.experiment_id, run_name=f"trial {number}", tags=tags)
        now = int(time.time() * 1000)
        metrics = [Metric("validation_value", float(value), now, 0)] if value is not None else []
        param_list = [Param(mlflow_name(k), str(v)[:6000]) for k, v in params.items()]
        _retrying(self.client.log_batch, run.info.run_id, metrics=metrics, params=param_list)
        _retrying(self.client.set_terminated, run.info.run_id, status="FINISHED" if state == "COMPLETE" else "KILLED")

    def _on_finish(self, status: str) -> None:
        for run_id in self._runs.values():  # jobs that started and never reported back
            _retrying(self.client.set_terminated, run_id, status="KILLED")
        self._runs.clear()
        for run_id in self._studies.values():
            _retrying(self.client.set_terminated, run_id, status=status)
        if self.parent_id is None:
            return
        metrics = summary_metrics(self._summary)
        for i in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
            _retrying(self.client.log_batch, self.parent_id, metrics=metrics[i : i + 1000])
        _retrying(self.client.set_terminated, self.parent_id, status=status)


def summary_metrics(records: list[dict[str, Any]]) -> list[Any]:
    """A suite's counts (``jobs_ok``, ``jobs_failed``) and mean headline metric per dataset and method.

    Named ``<metric>_mean/<dataset>/<method>`` (e.g. ``auroc_mean/digits/knn``),
    with ``.../n`` the number of jobs averaged.
    """
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    ok = [r for r in records if r.get("status") == "ok"]
    metrics = [Metric("jobs_ok", float(len(ok)), now, 0), Metric("jobs_failed", float(len(records) - len(ok)), now, 0)]
    groups: dict[tuple[str, str, str], list[float]] = {}
    for record in ok:
        name = record.get("headline_metric")
        value = record.get("metrics", {}).get(name) if name else None
        if value is not None:
            groups.setdefault((str(name), record["dataset"], record["method"]), []).append(float(value))
    for (name, dataset, method), values in sorted(groups.items()):
        base = f"{mlflow_name(name)}_mean/{mlflow_name(dataset)}/{mlflow_name(method)}"
        metrics += [Metric(base, sum(values) / len(values), now, 0), Metric(f"{base}/n", float(len(values)), now, 0)]
    return metrics


__all__ = ["Tracker", "connect", "summary_metrics", "quiet_mlflow", "default_tracking_uri", "artifact_root", "is_remote"]
