"""Executors: anything with ``run(items, on_event)`` that yields one outcome per job as it finishes.

An item is a job (:class:`WorkItem`) or a seed group (``odbench.engine.grouping.GroupItem``,
several jobs trained together); ``run_item`` runs either and returns its outcomes.

:class:`SequentialExecutor` runs jobs in this process; :class:`LocalPoolExecutor`
in a process pool, one fresh process per job so peak memory is per job.

Each gives a job its share of the cores as torch threads
(``odbench.engine.devices.threads_per_job``): a lone job every core of this
process's CPU affinity, each of N workers about cores/N, or ``threads`` for
all when given (``--threads``: equal thread counts give equal bits whatever
the executor)."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
from collections.abc import Iterator, Sequence
from concurrent import futures
from typing import Any, Protocol

from odbench.engine.devices import threads_per_job
from odbench.engine.execute import EventCallback, JobEvent, Outcome, WorkItem
from odbench.engine.grouping import Item, run_item
from odbench.engine.loading import DataCache


class Executor(Protocol):
    """Runs work items, yielding each outcome as soon as its job finishes.

    ``on_event``, when given, hears every :class:`JobEvent` in this process,
    wherever the job runs.
    """

    def run(self, items: Sequence[Item], on_event: EventCallback | None = None) -> Iterator[Outcome]: ...


class SequentialExecutor:
    """Every job in this process, one after the other, sharing one bounded :class:`DataCache`.

    Pass the plan's cache to reuse what planning already read.  A job runs on
    every core (``threads``: on that many torch threads).
    """

    def __init__(self, cache: DataCache | None = None, threads: int | None = None) -> None:
        self.cache = cache or DataCache()
        self.threads = threads_per_job(1, threads)

    def run(self, items: Sequence[Item], on_event: EventCallback | None = None) -> Iterator[Outcome]:
        for item in items:
            yield from run_item(item, on_event, rss_scope="process", cache=self.cache, threads=self.threads)


def _pool_entry(item: Item, events: Any, threads: int) -> list[Outcome]:
    def forward(event: JobEvent) -> None:
        events.put(event)

    # a fresh process per item: the peak is this job's, or this group's
    scope = "job" if isinstance(item, WorkItem) else "group"
    return run_item(item, forward if events is not None else None, rss_scope=scope, threads=threads)


def _start_worker(threads: int, env: tuple[tuple[str, str], ...]) -> None:
    """Once per worker: the main process's data and plugin settings, and its share of the cores.

    The fork server may have started before those settings changed (a second
    suite in one process), so they are set here, before any job, never during one.
    """
    for name, value in env:
        os.environ[name] = value
    # math threads (torch, OpenMP, BLAS) capped at the worker's share of the cores
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:  # preloaded by the fork server: the variables come too late for it
        sys.modules["torch"].set_num_threads(threads)
    # Ctrl-C reaches every process of the terminal's group: a worker waiting for its job would print a
    # KeyboardInterrupt traceback. The main process alone decides, and stops the workers (_stop_workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_workers(pool: futures.ProcessPoolExecutor) -> None:
    """Terminate the pool's workers now (Ctrl-C or SIGTERM in the main process); their unfinished jobs write nothing.

    ``ProcessPoolExecutor`` has no public way to stop running calls; its ``_processes`` are the workers.
    """
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


class LocalPoolExecutor:
    """A local process pool; each job gets a fresh process (peak RSS is per job).

    Workers start from a fork server (spawn where there is none) because
    ``max_tasks_per_child`` rules out plain fork.  Per-epoch numbers travel
    back over a manager queue only when someone listens (a progress bar, MLflow).
    Each job runs on about cores/``workers`` torch threads (``threads``: that many).
    """

    def __init__(self, workers: int, threads: int | None = None) -> None:
        self.workers = workers
        self.threads = threads_per_job(workers, threads)

    def run(self, items: Sequence[Item], on_event: EventCallback | None = None) -> Iterator[Outcome]:
        if not items:
            return
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # warm the server once; a deep plugin's torch too when it is already loaded here
            context.set_forkserver_preload(["odbench.engine.worker_preload", *(["torch"] if "torch" in sys.modules else [])])
        manager = context.Manager() if on_event is not None else None
        events = manager.Queue() if manager is not None else None
        pool = futures.ProcessPoolExecutor(
            self.workers, mp_context=context, max_tasks_per_child=1, initializer=_start_worker, initargs=(self.threads, items[0].env)
        )
        try:
            pending = {pool.submit(_pool_entry, item, events, self.threads) for item in items}
            while pending:
                finished, pending = futures.wait(pending, timeout=0.2, return_when=futures.FIRST_COMPLETED)
                _drain(events, on_event)
                for future in finished:
                    yield from future.result()
        except BaseException:  # KeyboardInterrupt: Ctrl-C, or SIGTERM turned into one by the CLI
            _stop_workers(pool)
            raise
        finally:
            # Always wait: on Python 3.11, shutdown(wait=False) races the pool's manager
            # thread replacing a retired worker and can leave a worker that blocks exit.
            # After Ctrl-C or SIGTERM the workers have been terminated, so the wait is short.
            pool.shutdown(wait=True, cancel_futures=True)
            if manager is not None:
                manager.shutdown()


def _drain(events: Any, on_event: EventCallback | None) -> None:
    if events is None or on_event is None:
        return
    while True:
        try:
            on_event(events.get_nowait())
        except queue.Empty:
            return
