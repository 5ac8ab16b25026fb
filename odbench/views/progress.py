"""Progress display for a running suite.

On a terminal: a rich progress bar (jobs done / total, time left) and a line
with the latest per-epoch numbers of deep methods.  Elsewhere (logs, CI):
one short line per finished job, nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from odbench.engine.execute import JobEvent, Outcome, WorkItem
from odbench.engine.store import FAILED, OK


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


class LineReporter:
    """One line per finished job, e.g. ``[3/44] ok lof on digits/2 rep 0 auroc=0.991 (0.1 s)``."""

    wants_events = False

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = self.count = 0

    def start(self, items: Sequence[WorkItem], already_done: int) -> None:
        self.total, self.count = len(items), 0

    def event(self, event: JobEvent) -> None:
        pass  # too chatty for a log

    def finished(self, outcome: Outcome) -> None:
        self.count += 1
        print(
            f"[{self.count}/{self.total}] {outcome.status} {outcome.job.label} {_result_text(outcome)}",
            file=self.stream,
        )

    def close(self) -> None:
        self.stream.flush()


class RichReporter:
    """A live progress bar on a terminal (stderr)."""

    wants_events = True

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.labels: dict[str, str] = {}

    def start(self, items: Sequence[WorkItem], already_done: int) -> None:
        self.labels = {item.key: item.job.label for item in items}
        self.progress.start()
        title = "jobs" if not already_done else f"jobs ({already_done} already done)"
        self.jobs = self.progress.add_task(title, total=len(items))
        self.epochs = self.progress.add_task("", total=None, visible=False)

    def event(self, event: JobEvent) -> None:
        if event.kind != "epoch":
            return
        numbers = " ".join(f"{k}={v:.4g}" for k, v in list(event.metrics.items())[:4])
        label = self.labels.get(event.key, event.key)
        self.progress.update(self.epochs, description=f"  {label} epoch {event.epoch} {numbers}", visible=True)

    def finished(self, outcome: Outcome) -> None:
        if outcome.status == FAILED:
            self.console.print(f"[red]failed[/red] {outcome.job.label}: {outcome.note}"[:300], highlight=False)
        self.progress.update(self.epochs, visible=False)
        self.progress.advance(self.jobs)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(stream: TextIO | None = None) -> LineReporter | RichReporter:
    """A progress bar when ``stream`` (default stderr) is a terminal, else lines."""
    stream = stream or sys.stderr
    return RichReporter() if stream.isatty() else LineReporter(stream)
