"""Runs that share a results folder never compute one job twice.

The issue's row: two ``odbench run`` processes sharing 9 jobs on one results
folder computed each twice and left 9 duplicate MLflow runs.  A job is now
claimed in the store before it is dispatched; a dead owner's claim is taken
over (once, however many runs find it), a live owner's job is waited for.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from odbench.engine.claims import DEAD, LIVE, STALE_S, Claims, boot_id, process_start

REPO = Path(__file__).resolve().parents[1]
DRILL = REPO / "tests" / "drill_plugins"
KEY = "a" * 64
linux = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="judges owners by /proc start times")


def _dead_pid() -> tuple[int, str]:
    """A pid whose process has ended (and was reaped), with the start time it had."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = process_start(child.pid)
    child.kill()
    child.wait()
    return child.pid, start


def _plant(root: Path, key: str, host: str, pid: int, start: str, token: str = "someone") -> Path:
    path = root / "claims" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "start": start, "boot": boot_id(), "token": token}))
    return path


@linux
def test_a_dead_or_reused_owners_claim_is_taken_over_a_live_ones_is_not(tmp_path: Path) -> None:
    claims = Claims(tmp_path, heartbeat_s=0)
    host = socket.gethostname()
    dead = _plant(tmp_path, "d" * 64, host, *_dead_pid())
    reused = _plant(tmp_path, "r" * 64, host, os.getpid(), "1")  # this pid, but a process that started at tick 1
    live_child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = _plant(tmp_path, "l" * 64, host, live_child.pid, process_start(live_child.pid))
        remote_fresh = _plant(tmp_path, "f" * 64, "another-host", 1, "5")
        remote_stale = _plant(tmp_path, "s" * 64, "another-host", 1, "5")
        os.utime(remote_stale, (time.time() - STALE_S - 5,) * 2)  # its owner stopped refreshing it

        assert claims.claim("d" * 64) and claims.claim("r" * 64) and claims.claim("s" * 64)
        for path in (dead, reused, remote_stale):
            assert json.loads(path.read_text())["token"] == claims.token, "taken over: the claim is now this run's"
        assert set(claims.taken_over) == {"d" * 64, "r" * 64, "s" * 64}
        assert not claims.claim("l" * 64) and not claims.claim("f" * 64), "a live owner's job is not taken"
        assert claims.state(claims.holder("l" * 64)) == LIVE
        assert json.loads(live.read_text())["token"] == "someone" and json.loads(remote_fresh.read_text())["token"] == "someone"
        live_child.kill()
        live_child.wait()
        assert claims.state(claims.holder("l" * 64)) == DEAD and claims.claim("l" * 64), "its owner died: taken over"
    finally:
        live_child.kill()
        live_child.wait()
    assert claims.claim(KEY) and not Claims(tmp_path, heartbeat_s=0).claim(KEY), "a new claim excludes every other run"
    claims.release_all()
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == [".lock", "f" * 64 + ".json"], (
        "a run releases its own claims only"
    )


def _take_all(root: str, keys: list[str], barrier: multiprocessing.synchronize.Barrier, won: multiprocessing.Queue) -> None:
    claims = Claims(root, heartbeat_s=0)
    barrier.wait(60)
    won.put([key for key in keys if claims.claim(key)])


@linux
def test_runs_that_find_the_same_dead_claims_take_each_over_once(tmp_path: Path) -> None:
    keys = [f"{i:064d}" for i in range(300)]
    pid, start = _dead_pid()
    for key in keys:
        _plant(tmp_path, key, socket.gethostname(), pid, start)
    ctx = multiprocessing.get_context("fork")
    barrier, won = ctx.Barrier(3), ctx.Queue()
    takers = [ctx.Process(target=_take_all, args=(str(tmp_path), keys, barrier, won)) for _ in range(3)]
    for taker in takers:
        taker.start()
    results = [won.get(timeout=120) for _ in takers]
    for taker in takers:
        taker.join(60)
    everything = [key for result in results for key in result]
    assert sorted(everything) == keys, "every dead claim taken over by exactly one run"


def _mlflow_runs_per_job(results: Path) -> dict[str, int]:
    with sqlite3.connect(results / "mlflow.db") as db:
        rows = db.execute("SELECT value, COUNT(*) FROM tags WHERE key = 'job_key' GROUP BY value").fetchall()
    return dict(rows)


@pytest.mark.slow
@linux
def test_two_runs_on_one_results_folder_compute_each_job_once(tmp_path: Path) -> None:
    """Two real `odbench run` processes (sequential, and a pool) started together on 6 shared jobs (MLflow on), one
    job's claim left by a killed run: each job is fitted once in all (the method leaves a file per fit), the other run reports it done
    by another run, MLflow holds one run per job, and no claim is left."""
    from odbench.engine.plan import expand, plan_keys
    from odbench.engine.registry import Registry

    results, fits = tmp_path / "results", tmp_path / "fits"
    fits.mkdir()
    params = {"seconds": 2.0, "pid_dir": str(fits)}
    argv = ["run", "--plugin-dir", str(DRILL), "--methods", "sleepy", "--datasets", "digits", "--classes", "0,1,2,3,4,5",
            "--param", "sleepy.seconds=2.0", "--param", f"sleepy.pid_dir={json.dumps(str(fits))}", "--results", str(results),
            "--device", "cpu"]  # fmt: skip
    plan = expand(Registry([DRILL]), ["sleepy"], ["digits"], classes=[str(c) for c in range(6)], params={"sleepy": params})
    keys = plan_keys(Registry([DRILL]), plan.jobs, plan.cache)
    _plant(results, keys[-1], socket.gethostname(), *_dead_pid())  # a run killed with -9 while it held this job

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # one run in-process, the other on a pool of two workers: the claims are the planning process's either way
    runs = [subprocess.Popen([sys.executable, "-m", "odbench.cli", *argv, "--jobs", jobs], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for jobs in ("1", "2")]  # fmt: skip
    errs = [run.communicate(timeout=600)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errs

    seeds = [name.split("-")[1] for name in os.listdir(fits)]
    assert len(seeds) == 6 and len(set(seeds)) == 6, f"each job fitted once in all: {sorted(seeds)}\n{errs}"
    counts = []
    for err in errs:
        (line,) = re.findall(r"(\d+) ok, 0 failed, 0 skipped, (\d+) already done(?:, (\d+) done by another run)?", err)
        counts.append([int(n or 0) for n in line])
    assert sum(ok for ok, _, _ in counts) == 6, errs
    assert all(ok + done + elsewhere == 6 for ok, done, elsewhere in counts), errs
    assert _mlflow_runs_per_job(results) == dict.fromkeys(keys, 1), "one MLflow run per job"
    assert [p.name for p in (results / "claims").glob("*.json")] == [], "every claim released"


def test_a_linked_claims_folder_is_refused(tmp_path: Path) -> None:
    """Claims are written in the results folder only: a link planted as claims/ is refused like a linked jobs/."""
    from odbench.engine.store import Store, StoreLinkError

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "claims").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StoreLinkError, match="claims is a symbolic link"):
        Store(tmp_path / "results").check_links()
