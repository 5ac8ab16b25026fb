"""Shared storage on a real PostgreSQL server: tuning workers filling one study (one killed), and two
``odbench run`` processes logging to one PostgreSQL-backed MLflow server at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from odbench.engine.store import OK, Store
from odbench.engine.tuning import open_storage

DRILL = Path(__file__).parent / "drill_plugins"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _odbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "odbench.cli", *args]


def _fresh_database(server: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


def test_tuning_workers_fill_one_study_and_a_killed_workers_trial_is_retried(postgres_url, tmp_path):
    """`--tune-workers 2` on PostgreSQL: one worker is SIGKILLed mid-trial, the other still fills the study."""
    pids = tmp_path / "pids"
    pids.mkdir()
    storage = _fresh_database(postgres_url, f"optuna_{os.getpid()}_{time.time_ns()}")
    command = _odbench(
        "tune", "--plugin-dir", str(DRILL), "--methods", "sleepy", "--datasets", "counted", "--classes", "0",
        "--trials", "6", "--param", "sleepy.seconds=1", "--param", f"sleepy.pid_dir={pids}",
        "--storage", storage, "--tune-workers", "2", "--heartbeat", "1", "--results", str(tmp_path / "r"), "--no-mlflow",
    )  # fmt: skip
    main = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline, victim = time.monotonic() + 120, None
    while victim is None and time.monotonic() < deadline:
        started = sorted(pids.iterdir(), key=lambda p: int(p.name.split("-")[2]))
        if started:  # a worker is in its first trial: kill it there
            victim = int(started[0].name.split("-")[0])
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    _, err = main.communicate(timeout=240)

    assert victim is not None and victim != main.pid
    assert main.returncode == 0, err[-3000:]
    assert "tuning worker" in err and "killed by signal 9" in err and "queued again" in err
    (summary,) = optuna.study.get_all_study_summaries(open_storage(storage))
    study = optuna.load_study(study_name=summary.study_name, storage=open_storage(storage))
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 6
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1  # the killed worker's trial, failed by the heartbeat check
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed[0].number]
    # queued again; run unless the other worker had filled the study before the heartbeat check failed it
    assert len(retried) == 1 and retried[0].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING)
    assert len(Store(tmp_path / "r").records(OK)) == 1  # then the best parameters were evaluated once
    print(f"tuning worker killed in trial {failed[0].number}: study reached {states.count(optuna.trial.TrialState.COMPLETE)}/6, trial retried as {retried[0].number}")


def test_a_tuning_worker_killed_on_sqlite_is_a_warning_and_exit_1(tmp_path):
    """SQLite has no heartbeats: the killed worker's trial is never queued again, so the command says so and fails."""
    pids = tmp_path / "pids"
    pids.mkdir()
    command = _odbench(
        "tune", "--plugin-dir", str(DRILL), "--methods", "sleepy", "--datasets", "counted", "--classes", "0",
        "--trials", "3", "--param", "sleepy.seconds=1", "--param", f"sleepy.pid_dir={pids}",
        "--tune-workers", "2", "--results", str(tmp_path / "r"), "--no-mlflow",
    )  # fmt: skip
    main = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline, victim = time.monotonic() + 120, None
    while victim is None and time.monotonic() < deadline:
        started = list(pids.iterdir())
        if started:
            victim = int(started[0].name.split("-")[0])
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    _, err = main.communicate(timeout=240)

    assert victim is not None
    assert main.returncode == 1, err[-3000:]
    assert "killed by signal 9" in err and "left unfinished; the exit status will be 1" in err, err[-3000:]


def test_two_tuning_workers_on_an_empty_database_both_live_and_propose_different_points(postgres_url, tmp_path):
    """The issue's rows: on an empty PostgreSQL one of two workers died making Optuna's tables (exit 0 all the
    same), and workers seeded alike proposed the same points (`--trials 4`: 3 distinct of 5)."""
    storage = _fresh_database(postgres_url, f"optuna_{os.getpid()}_{time.time_ns()}")
    command = _odbench(
        "tune", "--plugin-dir", str(DRILL), "--methods", "sleepy", "--datasets", "counted", "--classes", "0",
        "--trials", "4", "--param", "sleepy.seconds=0.2", "--storage", storage, "--tune-workers", "2",
        "--results", str(tmp_path / "r"), "--no-mlflow",
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    (summary,) = optuna.study.get_all_study_summaries(open_storage(storage))
    trials = optuna.load_study(study_name=summary.study_name, storage=open_storage(storage)).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 4
    assert {t.user_attrs["worker"] for t in complete} == {1, 2}  # both workers lived and ran trials
    shifts = [t.params["shift"] for t in complete]
    assert len(set(shifts)) == len(shifts), shifts  # no point proposed twice


def _open_together(url: str, start: threading.Barrier, errors: list[Exception]) -> None:
    """One opener of an empty database: waits for the others, then makes the tables, collecting what it raised."""
    from odbench.engine.tuning import create_storage

    start.wait()
    try:
        create_storage(url)
    except Exception as err:  # noqa: BLE001 - collected, so the test names it
        errors.append(err)


def test_workers_opening_an_empty_database_at_once_all_open_it(postgres_url):
    """Workers on other machines make the tables themselves: a creator that meets another tries again."""
    for _attempt in range(3):  # the race is the server's: a few empty databases, 6 openers each
        url = _fresh_database(postgres_url, f"optuna_race_{os.getpid()}_{time.time_ns()}")
        start, errors = threading.Barrier(6), []
        openers = [threading.Thread(target=_open_together, args=(url, start, errors)) for _ in range(6)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
        assert errors == [], errors
        assert optuna.study.get_all_study_summaries(open_storage(url)) == []  # the tables are there, empty


def test_opening_a_server_storage_gives_no_future_warning(postgres_url):
    """RetryFailedTrialCallback and ``failed_trial_callback`` warn that they go in Optuna 6; heartbeats are "experimental"."""
    import warnings

    url = _fresh_database(postgres_url, f"optuna_warn_{os.getpid()}_{time.time_ns()}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        storage = open_storage(url, heartbeat=5)
    assert isinstance(storage.heartbeat_stale_trial_callback, optuna.storages.RetryHeartbeatStaleTrialCallback)


def test_two_runs_at_once_into_one_mlflow_server(mlflow_uri, tmp_path):
    """Two `odbench run` processes, one results folder, one PostgreSQL-backed MLflow experiment, at the same time."""
    from mlflow.tracking import MlflowClient

    experiment = f"concurrent-{tmp_path.name}"
    results = tmp_path / "r"

    def run(method: str) -> subprocess.Popen[str]:
        command = _odbench(
            "run", "--methods", method, "--datasets", "counted", "--classes", "0,1", "--plugin-dir", str(DRILL),
            "--results", str(results), "--tracking-uri", mlflow_uri, "--experiment", experiment, "--device", "cpu",
        )  # fmt: skip
        return subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)

    first, second = run("knn"), run("iforest")
    errors = [p.communicate(timeout=300)[1] for p in (first, second)]
    for process, err in zip((first, second), errors):
        assert process.returncode == 0, err[-3000:]
        assert "warning" not in err, err[-2000:]

    records = Store(results).records(OK)
    assert sorted(r["method"] for r in records) == ["iforest"] * 2 + ["knn"] * 2
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("odbench.kind") == "suite"]
    jobs = [r for r in runs if "job_key" in r.data.tags]
    assert len(parents) == 2
    assert sorted(r.data.tags["job_key"] for r in jobs) == sorted(r["key"] for r in records)  # each job once
    for parent in parents:  # each process's jobs under its own suite run, complete
        children = [r for r in jobs if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len({r.data.tags["method"] for r in children}) == 1 and len(children) == 2
        assert all(r.data.metrics.get("auroc") is not None for r in children)
    assert {r.info.status for r in runs} == {"FINISHED"}
