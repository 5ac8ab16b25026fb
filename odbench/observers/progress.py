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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from odbench.engine.execute import JobEvent, Outcome, WorkItem
from odbench.engine.store import FAILED, OK


@dataclass
class _Running:
    """What is known of a running job: when it started, its current training phase and its stages, its epochs."""

    started: float
    phase: str | None = None
    total: int | None = None  # epochs the current phase will run
    done: int = 0  # epochs of the current phase finished
    phase_started: float = 0.0
    last_epoch: float = 0.0
    stages: tuple[tuple[str, int], ...] = ()  # the current phase's (stage, epochs) in order; () = one stage
    #: (phase, stage) -> [seconds, epochs] this job measured
    measured: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)  # phase -> when its last epoch ended (earlier phases)

    def stage_of(self, epoch: int) -> str:
        """The stage of the current phase's ``epoch``-th epoch (from 0): its phase's name where it has none."""
        for name, count in self.stages:
            if epoch < count:
                return name
            epoch -= count
        return self.stages[-1][0] if self.stages else str(self.phase)

    def planned(self) -> list[tuple[str, int]]:
        """The current phase's stages with their epochs still to run."""
        stages = self.stages or ((str(self.phase), self.total or 0),)
        left, skip = [], self.done
        for name, count in stages:
            ran = min(skip, count)
            skip -= ran
            if count - ran > 0:
                left.append((name, count - ran))
        return left


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class _Durations:
    """Running sums of finished jobs' numbers by (method, dataset), by method and overall; ``what`` names the number."""

    def __init__(self) -> None:
        self.sums: dict[Any, list[float]] = {}  # group, or (what, group) -> [total, count]

    def add(self, method: str, dataset: str, seconds: float, what: Any = None, count: float = 1) -> None:
        for group in ((method, dataset), method, None):
            total = self.sums.setdefault(group if what is None else (what, group), [0.0, 0])
            total[0] += seconds
            total[1] += count

    def mean(self, group: Any, what: Any = None) -> float | None:
        total = self.sums.get(group if what is None else (what, group))
        return total[0] / total[1] if total and total[1] else None

    def expected(self, method: str, dataset: str, what: Any = None) -> float | None:
        """The mean of the closest group that has finished jobs: (method, dataset), else method."""
        found = self.mean((method, dataset), what)
        return found if found is not None else self.mean(method, what)


class Eta:
    """Seconds left of a suite, from the events of its jobs (times in seconds, ``time.time()``).

    Each phase of a job (``pretrain``, ``train``) and each stage of a phase
    (DROCC's ``ce-only`` epochs, then its far slower ``adversarial`` ones)
    runs at its own rate.  A running job in a phase with ``done`` of
    ``total`` epochs finished has, for each stage still to run, its epochs
    left times that stage's epoch time: as this job measured it, else as
    the finished jobs of its method on its dataset (else of its method)
    measured it, else the phase's mean epoch so far; less the time since its
    last epoch.  A job before its last phase (pretraining) adds what its
    kind's finished jobs took after that phase ended (the later phases, the
    scoring); without such jobs, it is expected to last at least as long as
    the finished jobs of its method on its dataset (else of its method,
    else of any method).  So does a job with no epoch yet (a classical one,
    or one before its first epoch).  A job not yet started is expected to
    last as long as the finished jobs of its (method, dataset), else of its
    method, else as the running jobs of its method are projected to, else
    as any job, finished or projected.  The work left is shared among as
    many workers as jobs were seen running at once.  ``None`` while nothing
    is known to estimate from.

    Thread-safe: a progress bar reads it from its refresh thread.
    """

    def __init__(self, groups: Mapping[str, tuple[str, str]]) -> None:
        """``groups``: each job key of the suite -> its (method, dataset)."""
        self.groups = dict(groups)
        self.pending: dict[tuple[str, str], set[str]] = {}  # jobs not started, by (method, dataset)
        for key, group in self.groups.items():
            self.pending.setdefault(group, set()).add(key)
        self.running: dict[str, _Running] = {}
        # whole jobs' seconds; ("epoch", phase, stage): seconds per epoch; ("after", phase): seconds after its last epoch
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

    def plan(self, key: str, phase: str, total: int, at: float, stages: Sequence[tuple[str, int]] = ()) -> None:
        """Phase ``phase`` of the job will run ``total`` epochs: in ``stages`` ((name, epochs) in order) if it has several."""
        with self._lock:
            job = self.running.get(key) or _Running(started=at)
            self.running[key] = job
            if job.phase is not None and job.done:
                job.ended[job.phase] = job.last_epoch
            job.phase, job.total, job.done, job.phase_started, job.last_epoch = phase, total, 0, at, at
            job.stages = tuple((str(name), int(count)) for name, count in stages if count > 0)

    def epoch(self, key: str, at: float) -> None:
        with self._lock:
            job = self.running.get(key)
            if job is not None and job.phase is not None:
                spent = job.measured.setdefault((job.phase, job.stage_of(job.done)), [0.0, 0])
                spent[0] += max(0.0, at - job.last_epoch)
                spent[1] += 1
                job.done += 1
                job.last_epoch = at

    def finish(self, key: str, at: float, seconds: float | None = None) -> None:
        """``seconds``: how long it took, when no start event was seen (else ``at`` minus its start)."""
        with self._lock:
            group = self._group(key)
            self.pending.get(group, set()).discard(key)
            job = self.running.pop(key, None)
            took = at - job.started if job is not None else seconds
            if took is not None:
                self.finished.add(*group, max(0.0, took))
            if job is None:
                return
            for (phase, stage), (spent, epochs) in job.measured.items():
                self.finished.add(*group, spent, what=("epoch", phase, stage), count=epochs)
            ended = dict(job.ended)
            if job.phase is not None and job.done:
                ended[job.phase] = job.last_epoch
            for phase, when in ended.items():
                self.finished.add(*group, max(0.0, at - when), what=("after", phase))

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

    def stage(self, key: str) -> str | None:
        """The stage of the running job's last epoch; ``None`` before its first, or in a phase of one stage."""
        with self._lock:
            job = self.running.get(key)
            if job is None or not job.stages or not job.done:
                return None
            return job.stage_of(job.done - 1)

    def job_left(self, key: str, now: float) -> float | None:
        """Seconds the running job ``key`` still needs, or ``None`` if nothing tells."""
        with self._lock:
            job = self.running.get(key)
            if job is None:
                return None
            group = self._group(key)
            history = self.finished.expected(*group)
            if history is None:
                history = self.finished.mean(None)
            from_history = None if history is None else max(0.0, history - (now - job.started))
            if job.total is None or job.done == 0 or job.phase is None:
                return from_history
            phase_mean = (job.last_epoch - job.phase_started) / job.done
            work = 0.0
            for stage, epochs in job.planned():
                spent, count = job.measured.get((job.phase, stage), (0.0, 0))
                rate = spent / count if count else self.finished.expected(*group, what=("epoch", job.phase, stage))
                work += epochs * (rate if rate is not None else phase_mean)
            from_epochs = max(0.0, work - (now - job.last_epoch))
            if job.phase == "train":
                return from_epochs
            after = self.finished.expected(*group, what=("after", job.phase))
            if after is not None:  # the later phases and the scoring, as its kind's finished jobs took them
                return from_epochs + after
            return from_epochs if from_history is None else max(from_epochs, from_history)

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
            self.eta.plan(key, event.phase, event.total_epochs, event.time, event.stages)
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
                stage = self.eta.stage(key)
                of += f" ({stage})" if stage else ""
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
            self.eta.plan(key, event.phase, event.total_epochs, event.time, event.stages)
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


class Ticker:
    """One line when a slow step starts, then one every ``every`` seconds until it ends, so no wait is silent.

    For the steps after the last job (the MLflow catch-up, the HTML report)::

        with Ticker("writing the HTML report", sys.stderr) as ticker:
            ticker.update("figure 3 of 12")  # the step's own news, shown by the next line

    prints ``odbench: writing the HTML report`` and, while it lasts,
    ``odbench: writing the HTML report: figure 3 of 12 (0:00:05)``.
    ``stream=None`` prints nothing.
    """

    def __init__(self, what: str, stream: TextIO | None, every: float = 5.0) -> None:
        self.what, self.stream, self.every = what, stream, every
        self.status = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    def update(self, status: str) -> None:
        self.status = status

    def say(self, text: str) -> None:
        if self.stream is not None:
            print(f"odbench: {text}", file=self.stream, flush=True)

    def __enter__(self) -> Ticker:
        self._started = time.monotonic()
        if self.stream is not None:
            self.say(self.what)
            self._thread = threading.Thread(target=self._beat, name="odbench-ticker", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            status = f": {self.status}" if self.status else ""
            self.say(f"{self.what}{status} ({clock(time.monotonic() - self._started)})")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def make_reporter(stream: TextIO | None = None) -> LineReporter | RichReporter:
    """A progress bar when ``stream`` (default stderr) is a terminal, else lines."""
    stream = stream or sys.stderr
    return RichReporter() if stream.isatty() else LineReporter(stream)
