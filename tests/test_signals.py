"""SIGTERM and Ctrl-C stop a run cleanly and at once, whatever its job runs; a job's numbers do not depend on the executor's thread count."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SUITE = ["--methods", "drocc", "--datasets", "digits", "--classes", "0,1,2,3", "--param", "drocc.epochs=30", "--param", "drocc.only_ce_epochs=5",
         "--param", "drocc.ascent_num_steps=5", "--no-mlflow"]  # fmt: skip


def _session(sid: int) -> list[int]:
    """Live processes of a session (the run and everything it started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            found.append(int(stat.parent.name))
    return found


def _stored(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (results / "jobs").glob("*.json")] if (results / "jobs").is_dir() else []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find child processes")
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c twice"])
def test_a_signalled_pool_run_stops_at_once_and_resumes(how: str, tmp_path: Path) -> None:
    results = tmp_path / "r"
    argv = [sys.executable, "-m", "odbench.cli", "run", "--jobs", "2", "--results", str(results), *SUITE]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 240
    while len(_stored(results)) < 1 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.poll() is None, "the suite ended before it could be signalled"
    if how == "sigterm":
        os.kill(run.pid, signal.SIGTERM)  # the main process only: its workers must be stopped by it
    else:
        os.killpg(run.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        time.sleep(0.5)
        os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == (143 if how == "sigterm" else 130), err
    # progress lines are "<date> <time> [i/n] ...": everything else is a message
    messages = [line for line in err.splitlines() if line.strip() and not re.match(r"(\d{4}-\d\d-\d\d \S+ )?\[\d+/\d+\]", line)]
    assert len(messages) == 1 and ("terminated" if how == "sigterm" else "interrupted") in messages[0], err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "leaked" not in err, err
    time.sleep(1)
    assert _session(run.pid) == [], "no worker, manager or server process may outlive the run"
    kept = _stored(results)
    time.sleep(3)
    assert len(_stored(results)) == len(kept), "no orphan keeps storing jobs"
    for record in kept:  # consistent: each finished record has its scores
        assert record["status"] == "ok" and (results / "jobs" / f"{record['key']}.npz").is_file()
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{len(kept)} already done" in again.stderr and len(_stored(results)) == 4


DRILL = Path(__file__).parent / "drill_plugins"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find child processes")
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c twice"])
def test_a_jobs_1_run_stops_within_5_s_during_one_long_c_call(how: str, tmp_path: Path) -> None:
    """A fit stuck in one C call that never checks for signals (tests/drill_plugins/stubborn.py) delays any
    signal handler of its process by the whole call (measured: more than 30 s for pyod's kNN on shuttle, issue 29). With
    ``--jobs 1`` the job runs in a worker process that the main process kills, so the run ends at once,
    with the jobs finished before it in the store."""
    results, started = tmp_path / "r", tmp_path / "started"
    started.mkdir()
    argv = [sys.executable, "-m", "odbench.cli", "run", "--jobs", "1", "--results", str(results), "--no-mlflow",
            "--methods", "knn,stubborn", "--datasets", "sine2d", "--plugin-dir", str(DRILL), "--device", "cpu",
            "--param", "stubborn.seconds=300", "--param", f"stubborn.pid_dir={started}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "err", "w") as err_file:
        run = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err_file, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
        deadline = time.monotonic() + 240
        while not any(started.iterdir()) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run.poll() is None and any(started.iterdir()), (tmp_path / "err").read_text()
        time.sleep(1.0)  # well inside the C call
        signalled = time.monotonic()
        if how == "sigterm":
            os.kill(run.pid, signal.SIGTERM)  # the main process only: it must stop its worker itself
        else:
            os.killpg(run.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group, twice
            time.sleep(0.5)
            os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(timeout=30)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
        took = time.monotonic() - signalled
    err = (tmp_path / "err").read_text()
    assert took <= 5.0, f"the run took {took:.1f} s to stop\n{err}"
    assert run.returncode == (143 if how == "sigterm" else 130), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    time.sleep(0.5)
    assert _session(run.pid) == [], "no worker, manager or server process may outlive the run"
    # the store is exact: knn's finished job whole (record and scores), nothing of the killed one, no temporary file
    (record,) = _stored(results)
    assert record["method"] == "knn" and record["status"] == "ok"
    assert sorted(p.name for p in (results / "jobs").iterdir()) == [f"{record['key']}.json", f"{record['key']}.npz"]


@pytest.mark.slow
def test_jobs_1_and_jobs_2_give_bit_identical_scores_at_equal_threads(tmp_path: Path) -> None:
    """4 torch threads in-process and 1 in a pool worker gave DROCC scores 1.2e-4 apart on 32x32 images:
    the thread count changes the bits, so `--threads` fixes it whatever the executor; by default a lone job
    takes every core."""
    rng = np.random.default_rng(0)
    for name, scale in (("a", 0.5), ("b", 1.0)):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(40):
            Image.fromarray((rng.random((32, 32, 3)) * 255 * scale).astype("uint8")).save(tmp_path / "img" / name / f"{i}.png")
    suite = ["run", "--no-mlflow", "--methods", "drocc", "--datasets", f"folder:{tmp_path / 'img'}", "--classes", "a",
             "--param", "drocc.epochs=2", "--param", "drocc.ascent_num_steps=2"]  # fmt: skip
    # a machine whose torch uses several threads: --jobs 1 runs the job in this process
    code = (
        "import sys, torch; torch.set_num_threads(4); from odbench.cli import main; a = sys.argv[1:]; "
        f"sys.exit(main([*a, '--threads', '1', '--jobs', '1', '--results', {str(tmp_path / 'one')!r}]) "
        f"or main([*a, '--threads', '1', '--jobs', '2', '--results', {str(tmp_path / 'two')!r}]) "
        f"or main([*a, '--jobs', '1', '--results', {str(tmp_path / 'lone')!r}]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "ODBENCH_THREADS"}  # the conftest's one thread for every job
    done = subprocess.run([sys.executable, "-c", code, *suite], env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (one,), (two,), (lone,) = _stored(tmp_path / "one"), _stored(tmp_path / "two"), _stored(tmp_path / "lone")
    assert one["key"] == two["key"] == lone["key"] and one["torch_threads"] == two["torch_threads"] == 1
    assert lone["torch_threads"] == len(os.sched_getaffinity(0))  # a lone job is not pinned to one thread
    scores = [np.load(tmp_path / d / "jobs" / f"{one['key']}.npz")["scores"] for d in ("one", "two")]
    assert np.array_equal(scores[0], scores[1])
