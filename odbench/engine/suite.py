"""Running a planned suite: skip what the store has, execute the rest, mirror and report.

Jobs whose key is already done in the store are skipped, so running a command
again resumes it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from odbench.core.download import data_dirs
from odbench.engine.execute import JobEvent, Outcome, WorkItem
from odbench.engine.executors import Executor, SequentialExecutor
from odbench.engine.grouping import group_items
from odbench.engine.plan import Plan, plan_keys
from odbench.engine.registry import Registry
from odbench.engine.store import FAILED, OK, Store

#: settings a worker reads from its environment, copied from this process's (the data folders travel with each job)
_FORWARDED_ENV = ("ODBENCH_CACHE", "ODBENCH_PLUGIN_PATH", "ODBENCH_TRUST_LOCAL_FILES")


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: the key of each planned job, in plan order (what callers look the jobs up by, made once)
    keys: list[str] = field(default_factory=list, repr=False)

    def line(self) -> str:
        return (
            f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped, "
            f"{self.already_done} already done ({self.seconds:.1f} s)"
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

    Each job is mirrored to ``tracker`` from this process, as it starts and ends;
    the tracker does its work off this thread and is drained (bounded) at the end.  On
    ``KeyboardInterrupt`` the tracker is closed and :class:`Interrupted`
    raised with the summary so far; jobs already written stay in the store.  ``seed_groups``: jobs that
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
    if reporter is not None:
        reporter.start(list(items.values()), summary.already_done)
    if tracker is not None:
        tracker.start(list(items.values()))  # mirrors in the background: the jobs do not wait for it
    status = "FAILED"
    outcomes: Iterator[Outcome] | None = None
    try:
        listeners = [x for x in (reporter, tracker) if x is not None and x.wants_events]

        def on_event(event: JobEvent) -> None:
            for listener in listeners:
                listener.event(event)

        work = group_items(list(items.values()), registry) if seed_groups else list(items.values())
        outcomes = executor.run(work, on_event if listeners else None)
        for outcome in outcomes:
            if outcome.status == OK:
                summary.ok += 1
            elif outcome.status == FAILED:
                summary.failed += 1
            else:
                summary.skipped += 1
                summary.notes.append(outcome.note)
            if tracker is not None and outcome.record is not None:
                tracker.log_job(outcome.record, store.scores_path(outcome.key) if outcome.status == OK else None)
            elif tracker is not None:
                tracker.skipped(outcome.key)
            if reporter is not None:
                reporter.finished(outcome)
        status = "FINISHED" if summary.failed == 0 else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        _close(outcomes)  # the workers stop before the store is counted
        raise Interrupted(summary, sum(store.done(key) for key in items), len(items)) from None
    finally:
        _close(outcomes)
        summary.seconds = time.perf_counter() - started
        if reporter is not None:
            reporter.close()
        if tracker is not None:
            tracker.finish(status)
    return summary


def _close(outcomes: Iterator[Outcome] | None) -> None:
    """Close an executor's generator: an interrupt between two outcomes leaves it suspended, its workers
    running (and storing jobs) until it is collected; closing it stops them (``LocalPoolExecutor``)."""
    close = getattr(outcomes, "close", None)
    if close is not None:
        close()
