"""Progress from job events: the time-left arithmetic, log lines of a real deep suite, the epoch bar's total."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest

from odbench.engine.execute import JobEvent, WorkItem
from odbench.engine.plan import expand
from odbench.engine.registry import Registry
from odbench.engine.store import Store
from odbench.engine.suite import run_suite
from odbench.observers.progress import Eta, LineReporter, RichReporter, clock

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def test_time_left_from_epochs_then_from_finished_jobs() -> None:
    eta = Eta({"a": ("drocc", "digits"), "b": ("drocc", "digits"), "c": ("knn", "digits")})
    eta.start("a", 0.0)
    assert eta.left(0.5) is None, "nothing to estimate from before the first epoch"
    eta.plan("a", "train", 10, 0.0)
    eta.epoch("a", 1.0)
    eta.epoch("a", 2.0)
    # a: 8 epochs of 1 s left; b and c (no finished job yet) take a's projected 10 s
    assert eta.job_left("a", 2.0) == pytest.approx(8.0)
    assert eta.job_left("a", 2.5) == pytest.approx(7.5), "time since the last epoch counts"
    assert eta.left(2.0) == pytest.approx(8 + 10 + 10)
    eta.finish("a", 10.0)
    eta.start("b", 10.0)
    eta.plan("b", "train", 10, 10.0)
    eta.epoch("b", 12.0)  # b is slower: 2 s per epoch, 18 s left
    # c (knn): no knn job finished or running: the mean of every job, finished (a: 10 s) or projected (b: 20 s)
    assert eta.left(12.0) == pytest.approx(18 + 15)
    eta.finish("b", 30.0)
    assert eta.left(30.0) == pytest.approx(15.0), "a job not yet started takes its method's mean, else any job's"


def test_pretraining_keeps_the_method_history_and_workers_share_the_work() -> None:
    eta = Eta({"a": ("deepsvdd", "digits"), "b": ("deepsvdd", "digits"), "c": ("deepsvdd", "digits")})
    eta.start("a", 0.0)
    eta.finish("a", 100.0)
    eta.start("b", 100.0)
    eta.start("c", 100.0)  # two workers
    eta.plan("b", "pretrain", 10, 100.0)
    eta.epoch("b", 101.0)  # pretraining ends in 9 s, but the job took 100 s last time
    assert eta.job_left("b", 101.0) == pytest.approx(99.0)
    eta.plan("b", "train", 10, 110.0)
    eta.epoch("b", 112.0)
    assert eta.job_left("b", 112.0) == pytest.approx(18.0), "in the last phase its epochs decide"
    assert eta.left(112.0) == pytest.approx((18.0 + 88.0) / 2)
    assert clock(3725.4) == "1:02:05" and clock(None) == "?:??:??"


def _feed(eta: Eta, events: list[JobEvent]) -> None:
    """A job's events, as a reporter hands them to its ETA."""
    for event in events:
        if event.kind == "start":
            eta.start(event.key, event.time)
        elif event.kind == "plan":
            eta.plan(event.key, event.phase, event.total_epochs or 0, event.time, event.stages)
        elif event.kind == "epoch":
            eta.epoch(event.key, event.time)


def _drocc_events(key: str, start: float, ce_s: float, adversarial_s: float, until: int) -> tuple[list[JobEvent], float]:
    """DROCC on a table: 50 CE-only epochs, then 50 adversarial ones; its first ``until`` epochs; and when they end."""
    stages = (("ce-only", 50), ("adversarial", 50))
    events = [JobEvent(key, "start", start), JobEvent(key, "plan", start, phase="train", total_epochs=100, stages=stages)]
    now = start
    for epoch in range(until):
        now += ce_s if epoch < 50 else adversarial_s
        events.append(JobEvent(key, "epoch", now, epoch=epoch))
    return events, now


def test_each_stage_of_a_phase_runs_at_its_own_rate() -> None:
    # issue 27: "9 s left" at epoch 51 with 78 s to go: the cheap CE-only epochs priced the adversarial ones
    eta = Eta({"a": ("drocc", "thyroid"), "b": ("drocc", "thyroid")})
    events, now = _drocc_events("a", 0.0, ce_s=0.1, adversarial_s=1.5, until=51)
    _feed(eta, events)
    assert eta.job_left("a", now) == pytest.approx(49 * 1.5, rel=0.05), "the adversarial epochs at their own rate"
    assert eta.stage("a") == "adversarial"
    assert eta.job_left("a", now + 1.0) == pytest.approx(49 * 1.5 - 1.0, rel=0.05), "time since the last epoch counts"
    rest, end = _drocc_events("a", 0.0, ce_s=0.1, adversarial_s=1.5, until=100)
    _feed(eta, rest[2 + 51 :])
    eta.finish("a", end + 0.5)
    # b, in its CE-only epochs, has measured no adversarial epoch: a's rate prices them
    events, now = _drocc_events("b", 100.0, ce_s=0.1, adversarial_s=1.5, until=10)
    _feed(eta, events)
    assert eta.stage("b") == "ce-only"
    assert eta.job_left("b", now) == pytest.approx(40 * 0.1 + 50 * 1.5, rel=0.05)


def test_a_job_before_its_last_phase_adds_what_its_kind_took_after_it() -> None:
    eta = Eta({"a": ("deepsvdd", "digits"), "b": ("deepsvdd", "digits")})
    for key, start, pretrain_s in (("a", 0.0, 0.2), ("b", 100.0, 0.4)):  # b pretrains on a busier machine
        _feed(eta, [JobEvent(key, "start", start), JobEvent(key, "plan", start, phase="pretrain", total_epochs=10)])
        for epoch in range(10 if key == "a" else 5):
            eta.epoch(key, start + (epoch + 1) * pretrain_s)
        if key == "a":  # then 20 training epochs of 1 s and 1 s of scoring
            eta.plan("a", "train", 20, 2.0)
            for epoch in range(20):
                eta.epoch("a", 3.0 + epoch)
            eta.finish("a", 23.0)
    # b: 5 pretraining epochs of 0.4 s left, then what followed a's pretraining (21 s)
    assert eta.job_left("b", 102.0) == pytest.approx(5 * 0.4 + 21.0)


def _plan(epochs: int, classes: list[str]) -> tuple[Registry, object]:
    registry = Registry([])
    params = {"drocc": {"epochs": epochs, "only_ce_epochs": 1, "ascent_num_steps": 2, "batch_size": 64, "hidden": 16}}
    return registry, expand(registry, ["drocc"], ["digits"], classes=classes, params=params)


@pytest.mark.slow
def test_log_lines_of_a_real_deep_suite(tmp_path: Path) -> None:
    registry, plan = _plan(12, ["0", "1"])
    stream = io.StringIO()
    reporter = LineReporter(stream=stream, every_epochs=5, every_seconds=3600)
    summary = run_suite(plan, registry, Store(tmp_path), reporter=reporter)
    assert summary.ok == 2
    lines = stream.getvalue().splitlines()
    assert all(re.match(STAMP + " ", line) for line in lines), lines
    texts = [line[20:] for line in lines]
    assert texts[0] == "[1/2] start drocc on digits/0 rep 0"
    epochs = [t for t in texts if t.startswith("[1/2] drocc on digits/0 rep 0: train epoch")]
    # the first epoch, then every 5: 1, 6, 11 of 12, each with the job's and the suite's time left
    assert [re.search(r"epoch (\d+)/12 ", t).group(1) for t in epochs] == ["1", "6", "11"], epochs
    # DROCC plans its CE-only epoch and its adversarial ones as stages of its training: each line names its stage
    assert [re.search(r"epoch \d+/12 \(([a-z-]+)\)", t).group(1) for t in epochs] == ["ce-only", "adversarial", "adversarial"]
    assert all(re.search(r"; job \d:\d\d:\d\d left, suite \d:\d\d:\d\d left$", t) for t in epochs), epochs
    assert "loss=" in epochs[0] and "epoch=" not in epochs[0], "the epoch index is shown once"
    assert re.match(r"\[1/2\] ok drocc on digits/0 rep 0 auroc=\d\.\d{3} \(\d+\.\d s\); suite \d:\d\d:\d\d left$", texts[4])
    assert texts[5] == "[2/2] start drocc on digits/1 rep 0"
    assert texts[-1].startswith("[2/2] ok drocc on digits/1 rep 0 auroc=")


def test_a_silent_job_gets_a_heartbeat_line(tmp_path: Path) -> None:
    registry, plan = _plan(12, ["0"])
    (job,) = plan.jobs
    key = job.key(registry, plan.cache)
    stream = io.StringIO()
    reporter = LineReporter(stream=stream, every_epochs=5, every_seconds=0.1)
    reporter.start([WorkItem(job, key, str(tmp_path), "cpu")], already_done=0)
    reporter.event(JobEvent(key, "start", time.time()))
    time.sleep(0.5)  # a long epoch, or a classical fit: no event at all
    reporter.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("[1/1] start drocc on digits/0 rep 0")
    beats = [line for line in lines[1:] if "drocc on digits/0 rep 0: running for 0:00:0" in line]
    assert beats and all(re.match(STAMP + r" \[1/1\] ", line) for line in beats), lines
    assert len(beats) <= 5, "one line per silent period, not one per tick"


@pytest.mark.slow
def test_epoch_bar_knows_its_total(tmp_path: Path) -> None:
    from rich.console import Console

    registry, plan = _plan(6, ["0"])
    reporter = RichReporter(console=Console(file=io.StringIO(), force_terminal=True, width=200))
    seen: list[tuple[str, float | None, float]] = []
    hear = reporter.event

    def event(event: JobEvent) -> None:
        hear(event)
        seen.extend((t.description, t.total, t.completed) for t in reporter.progress.tasks if t.id in reporter.bars.values())

    reporter.event = event  # type: ignore[method-assign]
    run_suite(plan, registry, Store(tmp_path), reporter=reporter)
    assert seen and all(total == 6 for _, total, _ in seen), seen
    assert max(done for _, _, done in seen) == 6
    description = seen[-1][0]
    assert description.count("epoch") == 1 and "loss=" in description, description
    assert not reporter.bars, "a finished job's bar is gone"
