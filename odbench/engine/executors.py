"""Executors: anything with ``run(items, on_event)`` that yields one outcome per job as it finishes.

An item is a job (:class:`WorkItem`) or a seed group (``odbench.engine.grouping.GroupItem``,
several jobs trained together); ``run_item`` runs either and returns its outcomes.

:class:`SequentialExecutor` runs jobs in this process; :class:`LocalPoolExecutor`
in warm worker processes that run job after job (``odbench run`` uses it for
``--jobs 1`` too, so that a signal stops a run whatever its job runs).

Each gives a job its share of the cores as torch threads
(``odbench.engine.devices.threads_per_job``): a lone job every core of this
process's CPU affinity, each of N workers about cores/N, or ``threads`` for
all when given (``--threads``: equal thread counts give equal bits whatever
the executor)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from odbench.engine.devices import threads_per_job
from odbench.engine.execute import TIMED_OUT, EventCallback, JobEvent, Outcome, WorkItem, crashed
from odbench.engine.grouping import Item, run_item
from odbench.engine.loading import DataCache
from odbench.engine.process_state import holds_more_than, reset_peak_rss, restored_process_state


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


#: a warm worker retires after this many items; its successor is a fork of the warm server, not a fresh import
MAX_ITEMS_PER_WORKER = 200


def idle_memory_bound_mb(workers: int) -> float:
    """The resident memory a worker may keep between jobs before it retires: half this machine's memory shared
    among the ``workers``, at least 2 GiB.  A fresh process per job gave every job's memory back to the system;
    a warm worker keeps what glibc did not return (freed heap blocks, a deep job's kept activations), so a
    worker that holds too much is replaced instead."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):  # no sysconf names here: the floor alone
        total = 0.0
    return max(2048.0, total / (2 * workers))


def _worker_main(conn: Connection, threads: int, env: tuple[tuple[str, str], ...], listening: bool, limits: tuple[int, float]) -> None:
    """A warm worker: runs the items it is sent, one at a time, until told to stop, its driver is gone or it retires.

    Each item runs inside :func:`restored_process_state` (environment, log levels, torch flags and malloc
    thresholds back as they were) on the executor's torch threads, with its own peak memory
    (:func:`reset_peak_rss`).  Seeds come with each job (``FitContext.seed``), as in a sequential run.
    """
    _start_worker(threads, env)
    max_items, max_idle_mb = limits
    cache = DataCache()  # the same dataset's arrays serve this worker's next jobs

    def forward(event: JobEvent) -> None:
        conn.send(("event", event))

    done = 0
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if item is None:
            return
        conn.send(("started",))  # its timeout counts from here, not from a new worker's start-up
        try:
            with restored_process_state():
                own_peak = reset_peak_rss()
                scope = ("job" if isinstance(item, WorkItem) else "group") if own_peak else "process"
                outcomes = run_item(item, forward if listening else None, rss_scope=scope, cache=cache, threads=threads)
        except KeyboardInterrupt:  # raised by the job itself (Ctrl-C is ignored here): it stops the run, as in-process
            conn.send(("interrupted",))
            return
        done += 1
        _release_gpu_cache()
        retire = done >= max_items or holds_more_than(max_idle_mb)
        conn.send(("done", outcomes, retire))
        if retire:
            return


def _release_gpu_cache() -> None:
    """Give the GPU memory torch's allocator keeps back to the device, as a process that ended would: the
    worker beside this one on the same GPU may need it (never imports torch or starts CUDA itself)."""
    torch: Any = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class _Worker:
    """The driver's handle on one warm worker process: its pipe, its process and the item it runs."""

    def __init__(self, context: Any, threads: int, env: tuple[tuple[str, str], ...], listening: bool, limits: tuple[int, float]) -> None:
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(theirs, threads, env, listening, limits), name="odbench-worker")
        self.process.start()
        theirs.close()
        self.item: Item | None = None
        self.retiring = False
        self.since: float | None = None  # when its item started (time.monotonic)

    def give(self, item: Item) -> None:
        self.item, self.since = item, None
        self.conn.send(item)

    def collect(self, on_event: EventCallback | None) -> list[Outcome] | None:
        """Read what the worker sent: events go to ``on_event``; its item's outcomes once it finished
        (:attr:`died`, and no outcomes, if it died); None while it still runs."""
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if message[0] == "event":
                    if on_event is not None:
                        on_event(message[1])
                    continue
                if message[0] == "interrupted":
                    raise KeyboardInterrupt
                if message[0] == "started":
                    self.since = time.monotonic()
                    continue
                _, outcomes, self.retiring = message
                self.item = None
                return list(outcomes)
        except (EOFError, OSError):
            pass  # it died while sending, or before: the sentinel says so below
        if self.process.is_alive() or self.item is None:
            return None
        self.process.join()
        code = self.process.exitcode
        why = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        hint = " (SIGKILL: out of memory?)" if code == -signal.SIGKILL else ""
        self.died = f"its worker process {why}{hint} while running it"
        return []

    died = ""  # why the process died while it ran its item, once it did

    def stop(self, now: bool) -> None:
        """End the process: at once (``now``: SIGTERM, whatever it runs, then SIGKILL), or after it finishes."""
        if not now and self.process.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()  # SIGTERM's default action: even a fit holding the GIL in C code ends now
            self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _members(item: Item) -> tuple[WorkItem, ...]:
    return (item,) if isinstance(item, WorkItem) else item.members


def _start_worker(threads: int, env: tuple[tuple[str, str], ...]) -> None:
    """Once per worker: the main process's data and plugin settings, and its share of the cores.

    The fork server may have started before those settings changed (a second
    suite in one process), so they are set here, before any job, never during one:
    ``env`` is the main process's whole environment when the run started, as a
    process it started itself would have inherited.
    """
    for name in [n for n in os.environ if n not in dict(env)]:
        del os.environ[name]
    for name, value in env:
        os.environ[name] = value
    # math threads (torch, OpenMP, BLAS) capped at the worker's share of the cores
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:  # preloaded by the fork server: the variables come too late for it
        sys.modules["torch"].set_num_threads(threads)
    # Ctrl-C reaches every process of the terminal's group: a worker waiting for its job would print a
    # KeyboardInterrupt traceback. The main process alone decides, and stops the workers (LocalPoolExecutor.run).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def pool_context() -> Any:
    """The pool's multiprocessing context: a fork server (spawn where there is none), never a plain fork of the
    main process, whose threads (the MLflow mirror, torch's pool) a fork would copy mid-flight."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        # warm the server once; a deep plugin's torch too when it is already loaded here
        context.set_forkserver_preload(["odbench.engine.worker_preload", *(["torch"] if "torch" in sys.modules else [])])
    return context


def start_fork_server() -> None:
    """Start the pool's fork server now: its imports (``worker_preload``) then run while this process plans,
    instead of before the first job."""
    if pool_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class LocalPoolExecutor:
    """Warm worker processes on this machine, each running one item at a time, as Ray's workers do.

    A worker runs job after job (per-job state put back: :func:`_worker_main`) and retires after
    ``max_items`` items, or when it holds more than ``max_idle_mb`` MiB between jobs
    (:func:`idle_memory_bound_mb`); a worker that dies fails only its own item's jobs.  Each job's
    ``peak_rss_mb`` is its own (``peak_rss_scope`` ``job``) where Linux lets a process reset its peak.
    Per-epoch events travel back over the worker's pipe only when someone listens (a progress bar, MLflow).
    Each job runs on about cores/``workers`` torch threads (``threads``: that many).

    The main process only waits on the workers' pipes, so Ctrl-C or SIGTERM stops a run at once,
    whatever a worker runs (a long C-level fit that holds its GIL included): its workers are
    killed and their unfinished jobs write nothing (records are written whole or not at all).
    """

    def __init__(self, workers: int, threads: int | None = None, max_items: int = MAX_ITEMS_PER_WORKER,
                 max_idle_mb: float | None = None, max_retries: int = 2, job_timeout: float | None = None) -> None:  # fmt: skip
        self.workers = workers
        self.max_retries = max_retries
        self.job_timeout = job_timeout
        self.threads = threads_per_job(workers, threads)
        self.max_items = max_items
        self.max_idle_mb = idle_memory_bound_mb(workers) if max_idle_mb is None else max_idle_mb
        #: worker processes started by the last run (a test reads it)
        self.started = 0

    def run(self, items: Sequence[Item], on_event: EventCallback | None = None) -> Iterator[Outcome]:
        if not items:
            return
        context = pool_context()
        limits = (self.max_items, self.max_idle_mb)
        # the items' forwarded settings over this process's environment as it is now
        environment = tuple({**os.environ, **dict(_members(items[0])[0].env)}.items())
        todo: deque[tuple[Item, int]] = deque((item, 0) for item in items)  # (item, times it was retried)
        retried: dict[int, int] = {}  # id(item) -> retries so far
        idle: list[_Worker] = []
        busy: list[_Worker] = []
        self.started = 0
        stop_now = True
        try:
            while todo or busy:
                while todo and (idle or len(idle) + len(busy) < self.workers):
                    if not idle:
                        idle.append(_Worker(context, self.threads, environment, on_event is not None, limits))
                        self.started += 1
                    worker = idle.pop()
                    item, retries = todo.popleft()
                    retried[id(item)] = retries
                    worker.give(item)
                    busy.append(worker)
                # signals interrupt this wait: the main process never runs a job itself
                wait([handle for worker in busy for handle in (worker.conn, worker.process.sentinel)], self._next_deadline(busy))
                for worker in list(busy):
                    outcomes = worker.collect(on_event)
                    overdue = "" if outcomes is not None else self._overdue(worker)
                    if outcomes is None and not overdue:
                        continue
                    busy.remove(worker)
                    if overdue or worker.died or worker.retiring or not worker.process.is_alive():
                        worker.stop(now=bool(overdue))
                    else:
                        idle.append(worker)
                    if overdue or worker.died:
                        item, worker.item = worker.item, None
                        assert item is not None
                        outcomes = self._lost(item, overdue or worker.died, bool(overdue), retried.pop(id(item), 0), todo)
                    yield from outcomes or []
            stop_now = False
        finally:  # an exception, Ctrl-C, SIGTERM (a KeyboardInterrupt from the CLI) or an abandoned run: kill
            for worker in idle + busy:
                worker.stop(now=stop_now and worker in busy)
            if stop_now:
                stop_fork_server()

    def _next_deadline(self, busy: list[_Worker]) -> float | None:
        """Seconds until the first running item passes its timeout (None: wait for the workers alone)."""
        if self.job_timeout is None or not busy:
            return None
        now, bound = time.monotonic(), self.job_timeout
        ends = [w.since + bound * len(_members(w.item)) - now for w in busy if w.item is not None and w.since is not None]
        # a worker whose job has not said it started yet: look again within a second
        return max(0.0, min(ends) if len(ends) == len(busy) else min([*ends, 1.0]))

    def _overdue(self, worker: _Worker) -> str:
        """Why ``worker``'s item is stopped (it ran past ``job_timeout`` per member), or ``""``."""
        if self.job_timeout is None or worker.item is None or worker.since is None:
            return ""
        bound = self.job_timeout * len(_members(worker.item))
        if time.monotonic() - worker.since < bound:
            return ""
        return f"stopped after {bound:g} s (--job-timeout {self.job_timeout:g} s per job)"

    def _lost(self, item: Item, why: str, timed_out: bool, retries: int, todo: deque[tuple[Item, int]]) -> list[Outcome]:
        """An item whose worker died runs again in a fresh worker, up to ``max_retries`` times (said on stderr);
        one past its timeout, or out of retries, is recorded failed with the reason (not cached: the next run
        retries it)."""
        names = ", ".join(member.job.label for member in _members(item))
        if not timed_out and retries < self.max_retries:
            print(f"odbench: {why}; retrying {names} (retry {retries + 1} of {self.max_retries})", file=sys.stderr, flush=True)
            todo.appendleft((item, retries + 1))
            return []
        kind = TIMED_OUT if timed_out else "WorkerCrashedError"
        tried = "" if timed_out else f" ({f'after {retries} retries' if retries else 'not retried: --retries 0' if not self.max_retries else 'no retry'})"
        return [crashed(member, why + tried, kind) for member in _members(item)]


def stop_fork_server() -> None:
    """Kill the fork server (after an interrupted run, and when the ``odbench`` command exits): left alone, it
    outlives its main process by seconds (finishing its preload, finalising the interpreter that preloaded torch;
    measured about 7 s on a busy 2-core machine), holding the pipes of whoever reads the command's output.  The
    next pool starts a new one.  ``ForkServer._stop`` is multiprocessing's own way to stop it (it reaps the process
    and forgets it); it would wait for that slow exit, hence the signal first."""
    from multiprocessing import forkserver

    server: Any = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if server is None or pid is None or not hasattr(server, "_stop"):
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ChildProcessError):
        server._stop()

