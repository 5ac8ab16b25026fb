"""Progress display for a running suite, fed by the jobs' own events.

On a terminal: a rich bar of jobs (done / total, elapsed, time left) and one
bar per running deep job (epochs done / planned, its latest numbers, its time
left).  Elsewhere (logs, CI, a notebook): timestamped lines — each job's
start, its epochs every ``every_epochs`` epochs or ``every_seconds`` seconds,
a heartbeat while a job says nothing, and its end — so a long job is never
silent.

Time left comes from :class:`Eta`: epochs done and their measured duration
for running jobs, finished jobs' durations for jobs not yet started.  (A
moving speed window, rich's default, shows nothing once a single job runs
longer than the window.)
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from odbench.engine.execute import JobEvent, Outcome, WorkItem
from odbench.engine.store import FAILED, OK


@dataclass
class _Running:
    """What is known of a running job: when it started, its current training phase, its epochs."""

    started: float
    phase: str | None = None
    total: int | None = None  # epochs the current phase will run
    done: int = 0  # epochs of the current phase finished
    phase_started: float = 0.0
    last_epoch: float = 0.0


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class _Durations:
    """Running sums of finished jobs' durations, by (method, dataset), by method and overall."""

    def __init__(self) -> None:
        self.sums: dict[Any, list[float]] = {}  # group -> [seconds, count]

    def add(self, method: str, dataset: str, seconds: float) -> None:
        for group in ((method, dataset), method, None):
            total = self.sums.setdefault(group, [0.0, 0])
            total[0] += seconds
            total[1] += 1

    def mean(self, group: Any) -> float | None:
        total = self.sums.get(group)
        return total[0] / total[1] if total else None

    def expected(self, method: str, dataset: str) -> float | None:
        """The mean of the closest group that has finished jobs: (method, dataset), else method."""
        found = self.mean((method, dataset))
        return found if found is not None else self.mean(method)


class Eta:
    """Seconds left of a suite, from the events of its jobs (times in seconds, ``time.time()``).

    A running job in a training phase with ``done`` of ``total`` epochs
    finished has ``(total - done) * epoch_time`` left, less the time since
    its last epoch, where ``epoch_time`` is the phase's time so far (from its
    ``plan`` event to its latest epoch) over ``done``.  A job with no epoch
    yet (a classical one, or one before its first epoch), and one still in a
    phase before ``train`` (pretraining), is also expected to last as long as
    the finished jobs of its method on its dataset (else of its method, else
    of any method).  A job not yet started is expected to last as long as the
    finished jobs of its (method, dataset), else of its method, else as the
    running jobs of its method are projected to, else as any job, finished
    or projected.  The work left is shared among as many workers as jobs were
    seen running at once.  ``None`` while nothing is known to estimate from.

    Thread-safe: a progress bar reads it from its refresh thread.
    """

    def __init__(self, groups: Mapping[str, tuple[str, str]]) -> None:
        """``groups``: each job key of the suite -> its (method, dataset)."""
        self.groups = dict(groups)
        self.pending: dict[tuple[str, str], set[str]] = {}  # jobs not started, by (method, dataset)
        for key, group in self.groups.items():
            self.pending.setdefault(group, set()).add(key)
        self.running: dict[str, _Running] = {}
        self.finished = _Durations()
        self.parallel = 1
        self._lock = threading.RLock()

    def _group(self, key: str) -> tuple[str, str]:
        return self.groups.get(key, ("", ""))

    def start(self, key: str, at: float) -> None:
        with self._lock:
            self.pending.get(self._group(key), set()).discard(key)
            self.running[key] = _Running(started=at)
            self.parallel = max(self.parallel, len(self.running))

    def plan(self, key: str, phase: str, total: int, at: float) -> None:
        with self._lock:
            job = self.running.get(key) or _Running(started=at)
            self.running[key] = job
            job.phase, job.total, job.done, job.phase_started, job.last_epoch = phase, total, 0, at, at

    def epoch(self, key: str, at: float) -> None:
        with self._lock:
            job = self.running.get(key)
            if job is not None and job.phase is not None:
                job.done += 1
                job.last_epoch = at

    def finish(self, key: str, at: float, seconds: float | None = None) -> None:
        """``seconds``: how long it took, when no start event was seen (else ``at`` minus its start)."""
        with self._lock:
            self.pending.get(self._group(key), set()).discard(key)
            job = self.running.pop(key, None)
            took = at - job.started if job is not None else seconds
            if took is not None:
                self.finished.add(*self._group(key), max(0.0, took))

    def elapsed(self, key: str, now: float) -> float | None:
        """Seconds since the running job ``key`` started."""
        with self._lock:
            job = self.running.get(key)
            return None if job is None else now - job.started

    def epochs(self, key: str) -> tuple[str | None, int, int | None]:
        """The running job's (phase, epochs done, epochs planned)."""
        with self._lock:
            job = self.running.get(key)
            return (job.phase, job.done, job.total) if job is not None else (None, 0, None)

    def job_left(self, key: str, now: float) -> float | None:
        """Seconds the running job ``key`` still needs, or ``None`` if nothing tells."""
        with self._lock:
            job = self.running.get(key)
            if job is None:
                return None
            history = self.finished.expected(*self._group(key))
            if history is None:
                history = self.finished.mean(None)
            from_history = None if history is None else max(0.0, history - (now - job.started))
            if job.total is None or job.done == 0:
                return from_history
            epoch_time = (job.last_epoch - job.phase_started) / job.done
            from_epochs = max(0.0, (job.total - job.done) * epoch_time - (now - job.last_epoch))
            if job.phase == "train" or from_history is None:
                return from_epochs
            return max(from_epochs, from_history)  # a later phase (training after pretraining) is still to come

    def left(self, now: float) -> float | None:
        """Seconds until the whole suite is done, or ``None`` while nothing tells."""
        with self._lock:
            work = 0.0
            projected: dict[str, list[float]] = {}  # method -> projected durations of its running jobs
            for key, job in self.running.items():
                left = self.job_left(key, now)
                if left is None:
                    return None
                work += left
                projected.setdefault(self._group(key)[0], []).append(now - job.started + left)
            every = [s for p in projected.values() for s in p]
            seconds, count = self.finished.sums.get(None, [0.0, 0])
            anything = (seconds + sum(every)) / (count + len(every)) if count or every else None
            for (method, dataset), keys in self.pending.items():
                if not keys:
                    continue
                expected = self.finished.expected(method, dataset)
                if expected is None:
                    expected = _mean(projected.get(method, [])) if method in projected else anything
                if expected is None:
                    return None
                work += expected * len(keys)
            return work / self.parallel


def clock(seconds: float | None) -> str:
    """``H:MM:SS``, or ``?:??:??`` when unknown."""
    if seconds is None:
        return "?:??:??"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _numbers(metrics: Mapping[str, float], limit: int = 3) -> str:
    """The epoch's losses and validation numbers (the epoch index, timings and learning rate are shown elsewhere)."""
    shown = [(k, v) for k, v in metrics.items() if not k.endswith(("epoch", "epoch_seconds", "lr"))]
    return " ".join(f"{k}={v:.4g}" for k, v in shown[:limit])


def _result_text(outcome: Outcome) -> str:
    if outcome.status == OK and outcome.record is not None:
        record = outcome.record
        name = record["headline_metric"]
        value = record["metrics"].get(name)
        shown = "nan" if value is None or value != value else f"{value:.3f}"
        return f"{name}={shown} ({record['fit_seconds'] + record['score_seconds']:.1f} s)"
    if outcome.status == FAILED:
        return f"FAILED: {outcome.note}"[:200]
    return outcome.note


def _groups(items: Sequence[WorkItem]) -> dict[str, tuple[str, str]]:
    return {item.key: (item.job.method, item.job.dataset) for item in items}


class LineReporter:
    """Timestamped lines for logs, e.g.::

        2026-12-02 01:10:03 [3/44] start drocc on digits/3 rep 0
        2026-12-02 01:10:04 [3/44] drocc on digits/3 rep 0: train epoch 10/20 loss=1.43 val_auroc=0.951; job 0:00:01 left, suite 0:00:40 left
        2026-12-02 01:10:05 [3/44] ok drocc on digits/3 rep 0 auroc=0.957 (1.6 s); suite 0:00:38 left

    An epoch line comes after a phase's first epoch, then every
    ``every_epochs`` epochs or ``every_seconds`` seconds, whichever is first;
    a job that says nothing for ``every_seconds`` (a long epoch, a classical
    fit) gets a ``running for`` line.  ``0`` switches either off.
    """

    wants_events = True

    def __init__(
        self,
        stream: TextIO | None = None,
        every_epochs: int = 10,
        every_seconds: float = 60.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.every_epochs, self.every_seconds = every_epochs, every_seconds
        self.total = self.count = 0
        self.eta = Eta({})
        self.labels: dict[str, str] = {}
        self.numbers: dict[str, int] = {}  # running job -> its [n/total] number, in start order
        self.said: dict[str, tuple[float, int]] = {}  # running job -> (time, epochs done) of its last line
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def start(self, items: Sequence[WorkItem], already_done: int) -> None:
        self.total, self.count = len(items), 0
        self.eta = Eta(_groups(items))
        self.labels = {item.key: item.job.label for item in items}
        if self.every_seconds > 0 and items:
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="odbench-progress", daemon=True)
            self._heartbeat.start()

    def _say(self, text: str) -> None:
        stamp = datetime.fromtimestamp(time.time()).strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            print(f"{stamp} {text}", file=self.stream, flush=True)

    def _suite_left(self) -> str:
        return f"suite {clock(self.eta.left(time.time()))} left"

    def event(self, event: JobEvent) -> None:
        key, label = event.key, self.labels.get(event.key, event.key)
        if event.kind == "start":
            self.eta.start(key, event.time)
            self.numbers.setdefault(key, len(self.numbers) + 1)  # a job run again (a lost worker) keeps its number
            self.said[key] = (time.time(), 0)
            self._say(f"[{self.numbers[key]}/{self.total}] start {label}")
        elif event.kind == "plan" and event.total_epochs is not None:
            self.eta.plan(key, event.phase, event.total_epochs, event.time)
            self.said[key] = (self.said.get(key, (time.time(), 0))[0], 0)
        elif event.kind == "epoch":
            self.eta.epoch(key, event.time)
            phase, done, planned = self.eta.epochs(key)
            said_at, said_done = self.said.get(key, (0.0, 0))
            due = (
                done == 1
                or (self.every_epochs > 0 and done - said_done >= self.every_epochs)
                or (self.every_seconds > 0 and time.time() - said_at >= self.every_seconds)
            )
            if due:
                self.said[key] = (time.time(), done)
                of = f"/{planned}" if planned else ""
                job_left = clock(self.eta.job_left(key, time.time()))
                number = self.numbers.get(key, "?")
                self._say(
                    f"[{number}/{self.total}] {label}: {phase or 'train'} epoch {done}{of} {_numbers(event.metrics)}; "
                    f"job {job_left} left, {self._suite_left()}"
                )

    def _beat(self) -> None:
        """A line for every running job that said nothing for ``every_seconds``."""
        while not self._stop.wait(min(self.every_seconds, 1.0)):
            now = time.time()
            for key, (said_at, done) in list(self.said.items()):
                if now - said_at < self.every_seconds:
                    continue
                self.said[key] = (now, done)
                phase, done, planned = self.eta.epochs(key)
                where = f" ({phase} epoch {done}/{planned})" if planned else ""
                running = clock(self.eta.elapsed(key, now))
                number = self.numbers.get(key, "?")
                self._say(f"[{number}/{self.total}] {self.labels.get(key, key)}: running for {running}{where}; {self._suite_left()}")

    def finished(self, outcome: Outcome) -> None:
        self.count += 1
        key = outcome.key
        record = outcome.record or {}
        seconds = (record.get("fit_seconds") or 0.0) + (record.get("score_seconds") or 0.0)
        self.eta.finish(key, time.time(), seconds)
        self.said.pop(key, None)
        left = f"; {self._suite_left()}" if self.count < self.total else ""
        self._say(f"[{self.count}/{self.total}] {outcome.status} {outcome.job.label} {_result_text(outcome)}{left}")

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        self.stream.flush()


class RichReporter:
    """A live progress bar on a terminal (stderr): jobs, and one epoch bar per running deep job."""

    wants_events = True

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        self.console = console or Console(stderr=True)
        self.eta = Eta({})
        reporter = self

        class TimeLeft(ProgressColumn):
            """The suite's time left on the jobs bar; a job's own on its epoch bar."""

            def render(self, task: Any) -> Text:
                key = task.fields.get("job")
                now = time.time()
                left = reporter.eta.job_left(key, now) if key else reporter.eta.left(now)
                return Text(f"{clock(left)} left", style="progress.remaining")

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeLeft(),
            console=self.console,
            transient=False,
        )
        self.labels: dict[str, str] = {}
        self.bars: dict[str, Any] = {}  # running job -> its epoch bar

    def start(self, items: Sequence[WorkItem], already_done: int) -> None:
        self.labels = {item.key: item.job.label for item in items}
        self.eta = Eta(_groups(items))
        self.progress.start()
        title = "jobs" if not already_done else f"jobs ({already_done} already done)"
        self.jobs = self.progress.add_task(title, total=len(items))

    def event(self, event: JobEvent) -> None:
        key, label = event.key, self.labels.get(event.key, event.key)
        if event.kind == "start":
            self.eta.start(key, event.time)
        elif event.kind == "plan" and event.total_epochs is not None:
            self.eta.plan(key, event.phase, event.total_epochs, event.time)
            description = f"  {label} {event.phase} epochs"
            if key in self.bars:
                self.progress.reset(self.bars[key], total=event.total_epochs, description=description)
            else:
                self.bars[key] = self.progress.add_task(description, total=event.total_epochs, job=key)
        elif event.kind == "epoch":
            self.eta.epoch(key, event.time)
            phase, done, _ = self.eta.epochs(key)
            if key in self.bars:
                numbers = _numbers(event.metrics)
                self.progress.update(self.bars[key], completed=done, description=f"  {label} {phase} epochs {numbers}")

    def finished(self, outcome: Outcome) -> None:
        record = outcome.record or {}
        self.eta.finish(outcome.key, time.time(), (record.get("fit_seconds") or 0.0) + (record.get("score_seconds") or 0.0))
        if outcome.status == FAILED:
            self.console.print(f"[red]failed[/red] {outcome.job.label}: {outcome.note}"[:300], highlight=False)
        bar = self.bars.pop(outcome.key, None)
        if bar is not None:
            self.progress.remove_task(bar)
        self.progress.advance(self.jobs)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(stream: TextIO | None = None) -> LineReporter | RichReporter:
    """A progress bar when ``stream`` (default stderr) is a terminal, else lines."""
    stream = stream or sys.stderr
    return RichReporter() if stream.isatty() else LineReporter(stream)
