"""MLflow exact at the end of every run: the run waits for its mirror, saying how far it got; past its bound, a sync
finishes the mirror and closes the suite's run as it ended, never as KILLED (issue 29 §3b, issue 27 §4)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_tracking import _client, _schema_template, _suite, mirror_gaps, mlflow_schema, subprocess_env  # noqa: F401 -- fixtures

from odbench.cli import main
from odbench.engine.store import Store
from odbench.observers import tracking
from odbench.observers.mlflow_runs import KIND
from odbench.observers.mlflow_sync import all_runs

# A tracker mirrors the stored records of a results folder as a live suite would (each job's run opened by its
# start event), then its database is locked by another connection (an MLflow busy with another writer) while the
# jobs end and the tracker finishes.
MIRROR = """
import os, sqlite3, sys, time
from types import SimpleNamespace
from odbench.engine.execute import JobEvent
from odbench.engine.store import Store
from odbench.observers.tracking import Tracker

results = sys.argv[1]
records = Store(results).records()
tracker = Tracker(results, stream=sys.stderr, drain_s=float(sys.argv[2]))
tracker.start([SimpleNamespace(key=r["key"], job=r) for r in records])
for record in records:
    tracker.event(JobEvent(record["key"], "start", time.time()))
assert tracker.wait_idle(120)
busy = sqlite3.connect(os.path.join(results, "mlflow.db"), isolation_level=None, check_same_thread=False)
busy.execute("BEGIN IMMEDIATE")  # every write of the tracker now waits
for record in records:
    tracker.log_job(record, None)
"""


def _stored(results: Path) -> None:
    """Two finished jobs in ``results``, not mirrored."""
    assert main(_suite(results, "--no-mlflow", "--no-report")) == 0
    assert len(Store(results).records("ok")) == 2


def test_a_run_waits_until_mlflow_equals_the_store_and_says_how_far_it_got(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _stored(results)
    script = MIRROR + textwrap.dedent("""
        release = float(sys.argv[3])
        import threading
        threading.Timer(release, busy.rollback).start()  # the other writer is done after a while
        tracker.finish("FINISHED")
    """)
    done = subprocess.run([sys.executable, "-c", script.replace("from odbench.observers.tracking import Tracker",
                           "from odbench.observers import tracking; tracking.PROGRESS_EVERY_S = 0.2; "
                           "from odbench.observers.tracking import Tracker"), str(results), "60", "1.5"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    ticks = [line for line in done.stderr.splitlines() if line.startswith("odbench: mirroring to MLflow: ")]
    assert len(ticks) >= 3, done.stderr
    assert all(re.fullmatch(r"odbench: mirroring to MLflow: [0-2]/2 runs \(0:00:\d\d\)", line) for line in ticks), done.stderr
    assert "warning" not in done.stderr, done.stderr
    client, experiment_id = _client(results)
    assert mirror_gaps(client, experiment_id, Store(results)) == [], "the run ended with MLflow equal to the store"
    (suite,) = [r for r in all_runs(client, experiment_id) if r.data.tags.get(KIND) == "suite"]
    assert suite.info.status == "FINISHED"
    assert not list((results / ".mlflow-suites").glob("*")), "a closed suite leaves no end record behind"


@pytest.mark.parametrize("recorded", [True, False])
def test_past_its_bound_a_run_says_what_is_left_and_a_sync_closes_its_suite_as_it_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture, recorded: bool
) -> None:
    results = tmp_path / "results"
    _stored(results)
    capsys.readouterr()
    script = MIRROR + 'tracker.finish("FINISHED")\nos._exit(0)  # the run ends, its MLflow thread cut off mid-write\n'
    done = subprocess.run([sys.executable, "-c", script, str(results), "0.5"], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warning == (
        "odbench: warning: MLflow is still behind after 0 s: 2 of this run's 2 jobs not mirrored yet; results are in "
        f"the store; finish with `odbench sync-mlflow --results {results}` (or give --mlflow-wait more seconds)"
    ), warning
    client, experiment_id = _client(results)
    (suite,) = [r for r in all_runs(client, experiment_id) if r.data.tags.get(KIND) == "suite"]
    assert suite.info.status == "RUNNING", "the suite's run was left open by a process that is gone"
    if not recorded:  # a process that died before it could say how its suite ended
        for path in (results / ".mlflow-suites").glob("*.json"):
            path.unlink()
    assert main(["sync-mlflow", "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert mirror_gaps(client, experiment_id, Store(results)) == [], err
    (suite,) = [r for r in all_runs(client, experiment_id) if r.data.tags.get(KIND) == "suite"]
    if recorded:
        assert suite.info.status == "FINISHED", "a suite that finished is never called KILLED"
        assert "1 ended suites closed as they ended" in err and "0 runs of dead processes closed as KILLED" in err, err
    else:
        assert suite.info.status == "KILLED", "a suite whose process really died is"
    assert not list((results / ".mlflow-suites").glob("*")), "its end record was used and removed"


def test_the_mlflow_wait_is_an_option_of_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(_suite(tmp_path / "r", "--mlflow-wait", "-1")) == 2
    assert "--mlflow-wait: expected a number of seconds, 0 or more, got '-1'" in capsys.readouterr().err
    stream = io.StringIO()
    tracker = tracking.Tracker(tmp_path / "r", stream=stream, drain_s=tracking.DRAIN_S)
    assert tracker.drain_s >= 300, "a generous default: minutes, not the 60 s that left 21 jobs behind"


def test_a_sync_forgets_the_ends_recorded_by_dead_processes_that_left_no_open_run(tmp_path: Path) -> None:
    import socket

    from odbench.observers.mlflow_runs import owner_id
    from odbench.observers.mlflow_sync import reconcile, record_suite_end, suite_end

    results = tmp_path / "results"
    _stored(results)
    store = Store(results)
    dead = f"{socket.gethostname()}:999999999:1"  # no such pid: a process that is gone
    record_suite_end(store, dead, "FINISHED")  # e.g. a run whose jobs were all done: it opened no suite run
    record_suite_end(store, owner_id(), "FINISHED")  # this live process's own
    client, experiment_id = _client(results)
    reconcile(client, experiment_id, store)
    assert not suite_end(store, dead).exists(), "a dead process's end, with no run to close, is stale"
    assert suite_end(store, owner_id()).exists(), "a live process's end is its own to forget"
