"""A job's torch threads follow its executor: a lone job every core of the process's affinity, N workers a share each.

Same seed, same bits holds at equal thread counts (``--threads`` fixes the count across executors); the
``--jobs`` comparison at equal threads is ``tests/test_signals.py``'s.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from odbench.engine.devices import THREADS_VARIABLE, available_cores, threads_per_job
from odbench.engine.executors import LocalPoolExecutor, SequentialExecutor
from odbench.engine.plan import UsageError, expand
from odbench.engine.registry import Registry
from odbench.engine.store import OK, Store
from odbench.engine.suite import run_suite

TINY = {"drocc": {"epochs": 2, "only_ce_epochs": 1, "ascent_num_steps": 1, "hidden": 8}}


def _threads_of_a_lone_job(registry: Registry, results: Path) -> int:
    plan = expand(registry, ["drocc"], ["sine2d"], params=TINY)
    summary = run_suite(plan, registry, Store(results), executor=SequentialExecutor(plan.cache))
    assert summary.ok == 1, summary.line()
    (record,) = Store(results).records(OK)
    return int(record["torch_threads"])


def test_a_lone_job_gets_every_core_of_its_affinity(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_VARIABLE)  # the suite's conftest runs every job on one thread
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: a lone job and a pinned one look the same")
    assert _threads_of_a_lone_job(registry, tmp_path / "all") == len(cores) == available_cores()
    # the affinity, not the machine's core count, is what the process may use
    os.sched_setaffinity(0, cores[:1])
    try:
        assert available_cores() == 1
        assert _threads_of_a_lone_job(registry, tmp_path / "one") == 1
    finally:
        os.sched_setaffinity(0, cores)


def test_workers_share_the_cores_and_threads_or_the_variable_fix_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_VARIABLE)
    cores = available_cores()
    assert SequentialExecutor().threads == cores
    assert LocalPoolExecutor(2).threads == max(1, cores // 2) and LocalPoolExecutor(cores + 1).threads == 1
    assert SequentialExecutor(threads=3).threads == LocalPoolExecutor(4, threads=3).threads == 3
    monkeypatch.setenv(THREADS_VARIABLE, "2")
    assert threads_per_job(1) == threads_per_job(8) == 2 and threads_per_job(8, fixed=1) == 1
    monkeypatch.setenv(THREADS_VARIABLE, "two")
    with pytest.raises(UsageError, match=THREADS_VARIABLE):
        threads_per_job(1)


def test_a_bad_thread_variable_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from odbench.cli import main

    monkeypatch.setenv(THREADS_VARIABLE, "0")
    assert main(["run", "--no-mlflow", "--methods", "knn", "--datasets", "digits", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and THREADS_VARIABLE in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "r").exists()
