"""Fault drills for the MLflow mirror: kill -9 at random moments, and a tracking server stopped mid-suite.

After each drill MLflow must equal the store: every stored job mirrored by
exactly one finished/failed run carrying its key and record, no run left
RUNNING.  ``ODBENCH_KILL_CYCLES`` runs more kill cycles (the default keeps the
test near 30 s).  The kill moments come from a seed: :data:`KILL_SEED` by
default, so every run of the suite drills the same moments (both cycles kill
after the third job is stored); ``ODBENCH_KILL_SEED=N`` replays seed N (a
failure names its seed) and ``ODBENCH_KILL_SEED=random`` draws a new one.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

# the session's MLflow schema template (autouse), and the mirror's equality check
from test_tracking import _schema_template, mirror_gaps, mlflow_schema, subprocess_env  # noqa: F401

from odbench.engine.store import Store
from odbench.observers.mlflow_db import default_tracking_uri, ensure_database
from odbench.observers.mlflow_runs import KEY
from odbench.observers.mlflow_sync import all_runs, sync
from odbench.observers.tracking import connect

REPO = Path(__file__).resolve().parents[1]
#: the drill's default seed: its two cycles are killed just after the third of six jobs reached the store
KILL_SEED = 0


def kill_seed(environ: Mapping[str, str]) -> int:
    """The seed of the kill moments: ``ODBENCH_KILL_SEED`` (a number, or ``random``), else :data:`KILL_SEED`."""
    given = environ.get("ODBENCH_KILL_SEED", "").strip()
    if given == "random":
        return random.SystemRandom().randrange(10**6)
    if not given:
        return KILL_SEED
    try:
        return int(given)
    except ValueError:
        raise ValueError(f"ODBENCH_KILL_SEED must be a number or 'random', got {given!r}") from None


def _suite(results: Path, seed: int, jobs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "odbench.cli", "run", "--methods", "knn,lof", "--datasets", "digits",
            "--classes", "0,1,2", "--seed", str(seed), "--jobs", str(jobs), "--device", "cpu",
            "--results", str(results), *extra]  # fmt: skip


def _kill_group(process: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the suite and its pool workers
    except ProcessLookupError:
        pass
    process.wait()


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_mlflow_equal_to_the_store(tmp_path: Path) -> None:
    cycles = int(os.environ.get("ODBENCH_KILL_CYCLES", "2"))
    seed = kill_seed(os.environ)
    rng = random.Random(seed)
    results = tmp_path / "results"
    store = Store(results)
    client = experiment_id = None
    outcomes = []
    for cycle in range(cycles):
        jobs = 1 + cycle % 2
        # a random moment: while starting up, or just after the n-th job of this cycle reached the store
        after_jobs, delay = rng.randrange(0, 6), rng.uniform(0.0, 1.0)
        before = len(store.records())
        started = time.monotonic()
        suite = subprocess.Popen(_suite(results, cycle, jobs), env=subprocess_env(), start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        while suite.poll() is None and after_jobs and len(store.records()) < before + after_jobs:
            time.sleep(0.05)
        time.sleep(delay if after_jobs else rng.uniform(0.5, 4.0))
        moment = time.monotonic() - started
        _kill_group(suite)
        if not store.records():
            outcomes.append(f"cycle {cycle}: killed at {moment:.1f} s before any job was stored")
            continue
        if client is None:
            client, experiment_id, _ = connect(default_tracking_uri(results), results, "odbench")
        report = sync(store, client, experiment_id, wait=True)
        gaps = mirror_gaps(client, experiment_id, store)
        outcomes.append(f"cycle {cycle} (--jobs {jobs}, killed at {moment:.1f} s, {report.line() if report else ''}): {gaps or 'equal'}")
    # the next ordinary run heals the mirror by itself (reconciliation at its start)
    final = subprocess.run(_suite(results, 0, 1), env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    client, experiment_id, _ = connect(default_tracking_uri(results), results, "odbench")
    final_gaps = mirror_gaps(client, experiment_id, store)
    report = "\n".join(outcomes)
    print(report)
    assert all(line.endswith(": equal") or "before any job" in line for line in outcomes), f"seed {seed}\n{report}"
    assert final_gaps == [], f"seed {seed}: after a clean run: {final_gaps}"
    assert len(store.records()) >= 6


def test_the_kill_drill_is_deterministic_unless_asked_for_random_moments() -> None:
    assert kill_seed({}) == KILL_SEED == kill_seed({"ODBENCH_KILL_SEED": ""})
    assert kill_seed({"ODBENCH_KILL_SEED": "1234"}) == 1234
    drawn = {kill_seed({"ODBENCH_KILL_SEED": "random"}) for _ in range(5)}
    assert len(drawn) > 1
    with pytest.raises(ValueError, match="a number or 'random'"):
        kill_seed({"ODBENCH_KILL_SEED": "often"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_mlflow_server(db: Path, artifacts: Path, port: int) -> subprocess.Popen[Any]:
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no GenAI job runner: starts faster
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1", "--artifacts-destination", str(artifacts)]  # fmt: skip
    server = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from odbench.observers.mlflow_ui import wait_until_up

    if not wait_until_up(f"http://127.0.0.1:{port}", server, timeout_s=180):
        server.kill()
        pytest.fail("mlflow server did not start")
    return server


def _stop(server: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_tracking_server_stopped_mid_suite_misses_runs_that_sync_mirrors_later(tmp_path: Path) -> None:
    db, artifacts, results = tmp_path / "server.db", tmp_path / "artifacts", tmp_path / "results"
    ensure_database(f"sqlite:///{db}")  # a complete database now: the server need not migrate one
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_mlflow_server(db, artifacts, port)
    try:
        command = [sys.executable, "-m", "odbench.cli", "run", "--methods", "knn,lof,iforest", "--datasets", "digits",
                   "--classes", "0,1,2,3,4,5", "--results", str(results), "--device", "cpu", "--tracking-uri", uri]  # fmt: skip
        suite = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        client, experiment_id = None, None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and suite.poll() is None:  # stop the server once a job is mirrored
            time.sleep(0.3)
            try:
                from mlflow.tracking import MlflowClient

                client = client or MlflowClient(uri)
                found = client.get_experiment_by_name("odbench")
                if found and any(r.info.status == "FINISHED" for r in all_runs(client, found.experiment_id) if r.data.tags.get(KEY)):
                    experiment_id = found.experiment_id
                    break
            except Exception:
                continue
        assert experiment_id is not None, "no job reached MLflow before the suite ended"
        _stop(server)
        _, err = suite.communicate(timeout=300)
        store = Store(results)
        assert suite.returncode == 0, err
        assert len(store.records("ok")) == 18, "the store holds every result"
        warnings = [line for line in err.splitlines() if "warning" in line and "MLflow" in line]
        assert any("missed" in line and "sync-mlflow" in line for line in warnings), err
        assert len(warnings) <= 2, f"one warning when MLflow stops, one count at the end: {warnings}"

        server = _start_mlflow_server(db, artifacts, port)
        synced = subprocess.run([sys.executable, "-m", "odbench.cli", "sync-mlflow", "--results", str(results),
                                 "--tracking-uri", uri], env=subprocess_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
        assert synced.returncode == 0, synced.stderr
        from mlflow.tracking import MlflowClient

        assert mirror_gaps(MlflowClient(uri), experiment_id, store) == []
    finally:
        _stop(server)
