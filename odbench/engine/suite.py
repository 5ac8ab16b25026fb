"""Running a planned suite: skip what the store has, execute the rest, mirror and report.

Jobs whose key is already done in the store are skipped, so running a command
again resumes it.  The rest are claimed first (``odbench.engine.claims``), so
that two runs sharing a results folder, on any executors, split the work
instead of computing a job twice."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from odbench.core.download import data_dirs
from odbench.engine.claims import LIVE, Claims
from odbench.engine.execute import JobEvent, Outcome, WorkItem
from odbench.engine.executors import Executor, SequentialExecutor
from odbench.engine.grouping import group_items
from odbench.engine.plan import Plan, plan_keys, validate_jobs
from odbench.engine.registry import Registry
from odbench.engine.store import FAILED, OK, Store

#: the status a reporter hears for a job that another run sharing the results folder computed
ELSEWHERE = "done by another run"

#: settings a worker reads from its environment, copied from this process's (the data folders travel with each job)
_FORWARDED_ENV = ("ODBENCH_CACHE", "ODBENCH_PLUGIN_PATH", "ODBENCH_TRUST_LOCAL_FILES")


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    #: jobs of this suite that another run sharing the results folder computed while this one waited
    elsewhere: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: the key of each planned job, in plan order (what callers look the jobs up by, made once)
    keys: list[str] = field(default_factory=list, repr=False)

    def line(self) -> str:
        elsewhere = f", {self.elsewhere} done by another run" if self.elsewhere else ""
        return (
            f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped, "
            f"{self.already_done} already done{elsewhere} ({self.seconds:.1f} s)"
        )


class Interrupted(KeyboardInterrupt):
    """A suite stopped by Ctrl-C (or SIGTERM, which the CLI turns into one); ``summary`` counts what it finished."""

    def __init__(self, summary: Summary, kept: int, planned: int) -> None:
        super().__init__("interrupted")
        self.summary = summary
        self.kept = kept  # jobs of this run in the store, outcomes not yet reported included
        self.planned = planned  # jobs this run was to execute


class Reporter(Protocol):
    """Progress display; see ``odbench.observers.progress``."""

    wants_events: bool  # False: job events (start, epochs) need not travel from workers

    def start(self, items: Sequence[WorkItem], already_done: int) -> None: ...
    def event(self, event: JobEvent) -> None: ...
    def finished(self, outcome: Outcome) -> None: ...
    def close(self) -> None: ...


class Tracker(Protocol):
    """A mirror of the store (MLflow); see ``odbench.observers.tracking``."""

    wants_events: bool  # True: it mirrors running jobs live (start, epochs)

    def start(self, items: Sequence[WorkItem]) -> None: ...
    def event(self, event: JobEvent) -> None: ...
    def log_job(self, record: dict[str, Any], scores_path: Path | None) -> None: ...
    def skipped(self, key: str) -> None: ...
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
    seed_groups: bool = True,
) -> Summary:
    """Run every job of ``plan`` not yet done in ``store``; failures are recorded, not raised.

    Each job is claimed in the store before it is handed to the executor
    (``odbench.engine.claims``); a job another live run holds is waited for
    and counted as done by it (or failed in it), never computed here too; a
    dead run's claim is taken over and its job run here.  Each job is mirrored
    to ``tracker`` from this process, as it starts and ends (a job another run
    computed is that run's to mirror); the tracker does its work off this
    thread and is drained (bounded) at the end.  On ``KeyboardInterrupt`` the
    tracker is closed, the claims released and :class:`Interrupted` raised with
    the summary so far; jobs already written stay in the store.  ``seed_groups``: jobs that
    differ only in their repetition train together where their method allows (``odbench.engine.grouping``).
    """
    executor = executor or SequentialExecutor(plan.cache)
    summary = Summary(notes=list(plan.notes))
    started = time.perf_counter()
    env = tuple((name, os.environ[name]) for name in _FORWARDED_ENV if name in os.environ)
    dirs = tuple(str(d.resolve()) for d in registry.plugin_dirs)  # workers rebuild the same registry
    data = tuple(str(d) for d in data_dirs())  # and search the same data folders
    store.remove_stale_temp_files()  # left by a kill inside a write's rename window
    items: dict[str, WorkItem] = {}
    summary.keys = plan_keys(registry, plan.jobs, plan.cache)
    for job, key in zip(plan.jobs, summary.keys, strict=True):  # store.done quarantines a damaged record: it runs again
        if store.done(key):
            summary.already_done += 1
        elif key not in items:
            items[key] = WorkItem(job, key, str(store.root), device, dirs, env, data_dirs=data)
    store.save_index()  # what this start verified is trusted at the next
    validate_jobs(registry, [item.job for item in items.values()], plan.cache)  # before any job is claimed
    claims = Claims(store.root)
    status = "FAILED"
    outcomes: Iterator[Outcome] | None = None
    try:
        mine, theirs = _claim(items, claims, store, summary)
        if reporter is not None:
            reporter.start(list(items.values()), summary.already_done)
        if tracker is not None:
            tracker.start(list(items.values()))  # mirrors in the background: the jobs do not wait for it
        listeners = [x for x in (reporter, tracker) if x is not None and x.wants_events]

        def on_event(event: JobEvent) -> None:
            for listener in listeners:
                listener.event(event)

        batch = list(mine.values())
        while batch or theirs:
            work = group_items(batch, registry) if seed_groups else batch
            outcomes = executor.run(work, on_event if listeners else None) if work else iter(())
            for outcome in outcomes:
                _count(summary, outcome)
                if tracker is not None and outcome.record is not None:
                    tracker.log_job(outcome.record, store.scores_path(outcome.key) if outcome.status == OK else None)
                elif tracker is not None:
                    tracker.skipped(outcome.key)
                claims.release(outcome.key)  # its record is written (or it has none: skipped)
                if reporter is not None:
                    reporter.finished(outcome)
            _close(outcomes)
            # what other runs hold: done by them, or taken over from a dead one and run in the next batch
            batch = _settle(theirs, claims, store, summary, reporter) if theirs else []
        status = "FINISHED" if summary.failed == 0 else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        _close(outcomes)  # the workers stop before the store is counted
        claims.release_all()
        raise Interrupted(summary, sum(store.done(key) for key in items), len(items)) from None
    finally:
        _close(outcomes)
        claims.release_all()
        summary.seconds = time.perf_counter() - started
        if reporter is not None:
            reporter.close()
        if tracker is not None:
            tracker.finish(status)
    return summary


#: seconds between two looks at the jobs another run is computing
POLL_S = 0.5


def _count(summary: Summary, outcome: Outcome) -> None:
    if outcome.status == OK:
        summary.ok += 1
    elif outcome.status == FAILED:
        summary.failed += 1
    else:
        summary.skipped += 1
        summary.notes.append(outcome.note)


def _claim(
    items: dict[str, WorkItem], claims: Claims, store: Store, summary: Summary
) -> tuple[dict[str, WorkItem], dict[str, tuple[WorkItem, str | None]]]:
    """This run's jobs (claimed), and the jobs other live runs hold, each with the ``created`` of its record now."""
    mine: dict[str, WorkItem] = {}
    theirs: dict[str, tuple[WorkItem, str | None]] = {}
    for key, item in list(items.items()):
        if claims.claim(key):
            if store.done(key):  # another run wrote it and let go between our look and our claim
                claims.release(key)
                del items[key]
                summary.already_done += 1
            else:
                mine[key] = item
        else:
            theirs[key] = (item, _created(store, key))
    return mine, theirs


def _created(store: Store, key: str) -> str | None:
    record = store.read(key)
    return None if record is None else str(record.get("created"))


def _settle(
    theirs: dict[str, tuple[WorkItem, str | None]], claims: Claims, store: Store, summary: Summary, reporter: Reporter | None
) -> list[WorkItem]:
    """Wait until some job another run held is settled; return those this run must compute now.

    A job whose record is now done counts as done by another run (reported,
    not mirrored: the other run mirrors it).  A released claim with a new
    failed record counts as failed there.  A claim its owner let go without
    a record (a skipped job, an interrupted run), or whose owner died, is
    claimed by this run and its job returned to compute.
    """
    while True:
        taken: list[WorkItem] = []
        settled = 0
        for key, (item, before) in list(theirs.items()):
            outcome: Outcome | None = None
            if store.done(key):
                outcome = Outcome(item.job, key, ELSEWHERE, store.read(key), note=_metric(store.read(key)))
                summary.elsewhere += 1
            elif claims.state(claims.holder(key)) == LIVE:
                continue
            elif (record := store.read(key)) is not None and record.get("status") == FAILED and str(record.get("created")) != before:
                error = record.get("error") or {}
                outcome = Outcome(item.job, key, FAILED, record, note=f"failed in another run: {error.get('type')}: {error.get('message')}")
                summary.failed += 1
            elif claims.claim(key):
                if store.done(key):
                    claims.release(key)
                    continue  # written just now: the next look reports it
                taken.append(item)
            else:
                continue  # another waiting run took it first: wait for that one
            del theirs[key]
            settled += 1
            if outcome is not None and reporter is not None:
                reporter.finished(outcome)
        if taken or settled or not theirs:
            return taken
        time.sleep(POLL_S)


def _metric(record: dict[str, Any] | None) -> str:
    """``auroc=0.912`` of a record (what a line reporter shows for a job done by another run)."""
    name = (record or {}).get("headline_metric")
    value = (record or {}).get("metrics", {}).get(name) if name else None
    return f"{name}={value:.3f}" if isinstance(value, (int, float)) else ""


def _close(outcomes: Iterator[Outcome] | None) -> None:
    """Close an executor's generator: an interrupt between two outcomes leaves it suspended, its workers
    running (and storing jobs) until it is collected; closing it stops them (``LocalPoolExecutor``)."""
    close = getattr(outcomes, "close", None)
    if close is not None:
        close()
