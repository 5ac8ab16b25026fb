"""The MLflow mirror: a database that is never half-made, runs that follow their jobs, a mirror that heals."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from odbench.cli import main
from odbench.engine.store import Store
from odbench.observers.mlflow_db import default_tracking_uri, ensure_database, schema_version
from odbench.observers.mlflow_runs import CREATED, KEY, owner_alive, owner_id
from odbench.observers.mlflow_sync import all_runs
from odbench.observers.mlflow_view import VIEW_TAG, view_tag_value
from odbench.observers.tracking import connect

REPO = Path(__file__).resolve().parents[1]

# A real detector (distance to the training mean) that reports three epochs a
# tenth of a second apart, and fails on the normal class named by ODBENCH_TEST_FAIL.
PLUGIN = """
import os
import time

import numpy as np

from odbench.api import Method


class Paced(Method):
    name = "paced"

    def fit(self, task, ctx):
        if task.normal_class == os.environ.get("ODBENCH_TEST_FAIL"):
            raise ValueError("failing on purpose")
        self.mu_ = task.train.normal.reshape(len(task.train.normal), -1).mean(0)
        for epoch in range(3):
            time.sleep(0.1)
            ctx.report(epoch, {"loss": 1.0 / (epoch + 1)})
        return self

    def anomaly_score(self, X):
        return np.linalg.norm(X.reshape(len(X), -1) - self.mu_, axis=1)
"""


@pytest.fixture(scope="session")
def _schema_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MLflow's empty schema, built once per session (its ~60 migrations take 5-15 s)."""
    folder = tmp_path_factory.mktemp("mlflow-cache")
    os.environ["ODBENCH_CACHE"], saved = str(folder), os.environ.get("ODBENCH_CACHE")
    try:
        ensure_database(f"sqlite:///{folder / 'probe.db'}")
    finally:
        if saved is None:
            del os.environ["ODBENCH_CACHE"]
        else:
            os.environ["ODBENCH_CACHE"] = saved
    return folder / "mlflow-schema"


@pytest.fixture(autouse=True)
def mlflow_schema(_schema_template: Path) -> None:
    """Each test's own cache (conftest) starts with the session's schema template."""
    shutil.copytree(_schema_template, Path(os.environ["ODBENCH_CACHE"]) / "mlflow-schema", dirs_exist_ok=True)


def subprocess_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def mirror_gaps(client: Any, experiment_id: str, store: Store) -> list[str]:
    """What keeps MLflow from equalling the store: runs still RUNNING, stored jobs not mirrored exactly once."""
    runs = all_runs(client, experiment_id)
    gaps = [f"run {r.info.run_name} is still RUNNING" for r in runs if r.info.status == "RUNNING"]
    for record in store.records():
        copies = [
            r for r in runs
            if r.data.tags.get(KEY) == record["key"] and r.data.tags.get(CREATED) == str(record["created"])
            and r.info.status in ("FINISHED", "FAILED")
        ]  # fmt: skip
        if len(copies) != 1:
            gaps.append(f"job {record['key'][:12]} is mirrored {len(copies)} times")
    return gaps


def _client(results: Path, uri: str | None = None) -> tuple[Any, str]:
    client, experiment_id, _ = connect(uri or default_tracking_uri(results), results, "odbench")
    return client, experiment_id


def _suite(results: Path, *extra: str) -> list[str]:
    return ["run", "--methods", "knn", "--datasets", "digits", "--classes", "0,1", "--results", str(results),
            "--device", "cpu", *extra]  # fmt: skip


def test_runs_follow_their_jobs_with_real_times_epochs_as_they_happen_and_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    plugins, results = tmp_path / "plugins", tmp_path / "results"
    plugins.mkdir()
    (plugins / "paced.py").write_text(PLUGIN)
    monkeypatch.setenv("ODBENCH_TEST_FAIL", "1")
    argv = ["run", "--methods", "paced", "--datasets", "digits", "--classes", "0,1", "--plugin-dir", str(plugins),
            "--results", str(results), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 1  # class 1 fails on purpose
    assert "warning" not in capsys.readouterr().err
    client, experiment_id = _client(results)
    tags = client.get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags[VIEW_TAG] == view_tag_value(), "the runs table odbench ui opens (tests/test_tracking_ui.py renders it)"
    runs = {r.data.tags.get("normal_class"): r for r in all_runs(client, experiment_id) if r.data.tags.get(KEY)}
    store = Store(results)
    ok, failed = runs["0"], runs["1"]
    record = store.read(ok.data.tags[KEY])
    assert record is not None
    from odbench.observers.mlflow_runs import millis

    # real times: the run spans the job, from its start to its record
    assert abs(ok.info.start_time - millis(record["started"])) < 1000
    assert ok.info.end_time == millis(record["created"])
    # epochs were logged as they ended, 0.1 s apart, not all at the job's end
    epochs = client.get_metric_history(ok.info.run_id, "epoch/loss")
    assert [m.step for m in epochs] == [0, 1, 2]
    assert epochs[0].timestamp < epochs[2].timestamp < ok.info.end_time
    assert {a.path for a in client.list_artifacts(ok.info.run_id)} == {"record.json", "roc.png", "scores"}
    assert failed.info.status == "FAILED"
    assert {a.path for a in client.list_artifacts(failed.info.run_id)} == {"record.json", "traceback.txt"}
    text = Path(client.download_artifacts(failed.info.run_id, "traceback.txt", str(tmp_path))).read_text()
    assert "ValueError: failing on purpose" in text
    (parent,) = [r for r in all_runs(client, experiment_id) if r.data.tags.get("odbench.kind") == "suite"]
    assert parent.data.metrics["jobs_ok"] == 1 and parent.data.metrics["jobs_failed"] == 1
    assert parent.data.metrics["auroc_mean/digits/paced"] == pytest.approx(record["metrics"]["auroc"])
    assert mirror_gaps(client, experiment_id, store) == []


def test_a_half_created_database_is_rebuilt_and_refilled_from_the_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    assert main(_suite(results, "--no-mlflow")) == 0
    # what a kill during MLflow's own creation leaves: the first tables, no migrations
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.initial_models import Base

    db = results / "mlflow.db"
    Base.metadata.create_all(sqlalchemy.create_engine(f"sqlite:///{db}"))
    assert schema_version(db) is None
    capsys.readouterr()
    assert main(_suite(results)) == 0
    err = capsys.readouterr().err
    assert "half-created" in err and "mlflow.db.broken-" in err and "2 stored jobs mirrored now" in err
    assert list(results.glob("mlflow.db.broken-*"))
    client, experiment_id = _client(results)
    assert mirror_gaps(client, experiment_id, Store(results)) == []


# one process of the race: get the database ready, then log a run into it
RACER = """
import sys
from pathlib import Path
from odbench.observers.tracking import connect

client, experiment_id, warning = connect(sys.argv[1], Path(sys.argv[2]), "odbench")
assert warning is None, warning
run = client.create_run(experiment_id, tags={"racer": sys.argv[2]})
client.set_terminated(run.info.run_id)
"""


def test_two_processes_on_a_fresh_database_both_log(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    racers = [
        subprocess.Popen([sys.executable, "-c", RACER, uri, str(tmp_path / name)], env=subprocess_env(),
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
        for name in ("a", "b")
    ]
    errs = [racer.communicate(timeout=300)[1] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], errs
    client, experiment_id = _client(tmp_path, uri)
    assert sorted(r.data.tags["racer"] for r in all_runs(client, experiment_id)) == [str(tmp_path / "a"), str(tmp_path / "b")]


def test_an_unreachable_tracking_server_costs_one_warning_and_sync_mirrors_later(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = tmp_path / "results"
    assert main(_suite(results, "--tracking-uri", f"http://127.0.0.1:{port}")) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 2, lines
    assert "does not answer" in lines[0] and "MLflow missed 2 runs" in lines[1] and "sync-mlflow" in lines[1]
    assert len(Store(results).records("ok")) == 2
    # later, into a reachable mirror (here the default SQLite one): every stored job, once
    assert main(["sync-mlflow", "--results", str(results)]) == 0
    assert main(["sync-mlflow", "--results", str(results)]) == 0
    assert "0 stored jobs mirrored now" in capsys.readouterr().err
    client, experiment_id = _client(results)
    assert mirror_gaps(client, experiment_id, Store(results)) == []


def test_sync_mlflow_without_results_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["sync-mlflow", "--results", str(tmp_path / "nothing")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("odbench: error: no results in")


def test_a_run_is_owned_by_a_live_process_until_it_dies() -> None:
    assert owner_alive(owner_id()) is True
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    from odbench.observers.mlflow_runs import _process_start

    owner = f"{socket.gethostname()}:{child.pid}:{_process_start(child.pid)}"
    assert owner_alive(owner) is True
    child.kill()
    child.wait()
    assert owner_alive(owner) is False
    assert owner_alive(f"{socket.gethostname()}:{os.getpid()}:0") is False, "a reused pid is another process"
    assert owner_alive("another-host:1:1") is None


def test_the_ui_server_settings_use_mlflow_servers_own_variable_names() -> None:
    from mlflow.server import constants

    from odbench.observers.mlflow_ui import SERVER_ENV

    assert SERVER_ENV == {
        "backend": constants.BACKEND_STORE_URI_ENV_VAR,
        "artifact_root": constants.ARTIFACT_ROOT_ENV_VAR,
        "serve_artifacts": constants.SERVE_ARTIFACTS_ENV_VAR,
        "artifacts_destination": constants.ARTIFACTS_DESTINATION_ENV_VAR,
    }


# a suite's tracker that starts and is killed before it ends
KILLED_TRACKER = """
import os
import sys
from pathlib import Path
from odbench.observers.tracking import Tracker

Tracker(Path(sys.argv[1])).start([])
os._exit(0)
"""


def test_a_resume_of_a_mirrored_store_opens_mlflow_only_when_something_changed(tmp_path: Path) -> None:
    """The mirror stamp (``odbench.observers.mirror_stamp``): no reconciliation while it vouches, one when it cannot."""
    from odbench.observers.tracking import Tracker

    def suite_with_no_job() -> Tracker:
        tracker = Tracker(results)
        tracker.start([])
        tracker.finish()
        return tracker

    results = tmp_path / "results"
    assert main(_suite(results)) == 0
    assert suite_with_no_job().client is None, "a complete mirror of an unchanged store needs no MLflow at all"
    # a job stored without the mirror: the next suite reconciles, and mirrors it
    assert main(_suite(results, "--no-mlflow", "--classes", "2")) == 0
    assert suite_with_no_job().client is not None
    client, experiment_id = _client(results)
    assert mirror_gaps(client, experiment_id, Store(results)) == [] and len(Store(results).records()) == 3
    assert suite_with_no_job().client is None
    # a tracker killed after its start may have left a run open: the next suite reconciles
    done = subprocess.run([sys.executable, "-c", KILLED_TRACKER, str(results)], env=subprocess_env(), timeout=120)
    assert done.returncode == 0
    assert suite_with_no_job().client is not None
    assert suite_with_no_job().client is None
    # the database deleted (to rebuild the mirror): the next suite refills it from the store
    (results / "mlflow.db").unlink()
    assert suite_with_no_job().client is not None
    client, experiment_id = _client(results)
    assert mirror_gaps(client, experiment_id, Store(results)) == [] and len(all_runs(client, experiment_id)) >= 3
    assert suite_with_no_job().client is None
    # one killed while another suite ran beside it: that suite leaves no stamp, so the next one reconciles
    running = Tracker(results)
    running.start([])
    done = subprocess.run([sys.executable, "-c", KILLED_TRACKER, str(results)], env=subprocess_env(), timeout=120)
    assert done.returncode == 0
    running.finish()
    assert suite_with_no_job().client is not None


def test_a_suite_that_saw_a_record_it_did_not_write_or_a_start_beside_it_leaves_no_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from odbench.observers import tracking
    from odbench.observers.tracking import Tracker

    def suite_with_no_job() -> Tracker:
        tracker = Tracker(results)
        tracker.start([])
        tracker.finish()
        return tracker

    results = tmp_path / "results"
    assert main(_suite(results)) == 0
    # a job stored by a run without the mirror while a suite's tracker ran
    running = Tracker(results)
    running.start([])
    assert main(_suite(results, "--no-mlflow", "--classes", "2")) == 0
    running.finish()
    assert running.client is None  # it had nothing to mirror itself
    assert suite_with_no_job().client is not None, "the record stored beside it was never mirrored"
    client, experiment_id = _client(results)
    assert mirror_gaps(client, experiment_id, Store(results)) == [] and len(Store(results).records()) == 3
    # another tracker counted its start between this one's two reads of the count: no stamp vouches for that one
    real_count = tracking.count_tracker_start

    def count_beside_another(store: Store) -> int | None:
        real_count(store)
        return real_count(store)

    monkeypatch.setattr(tracking, "count_tracker_start", count_beside_another)
    beside = suite_with_no_job()
    monkeypatch.setattr(tracking, "count_tracker_start", real_count)
    assert beside.client is not None and not beside._trusted
    assert suite_with_no_job().client is not None


def test_a_stamp_vouches_only_for_records_its_suite_wrote() -> None:
    from odbench.observers.mirror_stamp import only_own_changes

    before = {"a.json": (10, 1), "b.json": (12, 1)}
    assert only_own_changes(before, {**before, "c.json": (5, 2)}, own={"c.json"})
    assert only_own_changes(before, {**before, "a.json": (11, 3)}, own={"a.json"})  # its own job, run again
    assert not only_own_changes(before, {**before, "c.json": (5, 2)}, own=set())  # another process's record
    assert not only_own_changes(before, {**before, "b.json": (12, 9)}, own={"c.json"})  # rewritten meanwhile
    assert not only_own_changes(before, {"a.json": (10, 1)}, own=set())  # removed meanwhile


def test_a_stamp_vouches_for_its_own_mirror_and_files_with_no_tracker_since(tmp_path: Path) -> None:
    from odbench.observers.mirror_stamp import _digest, mirror_identity, still_mirrored

    db = tmp_path / "m.db"
    db.write_bytes(b"")
    uri, files = f"sqlite:///{db}", {"a.json": (10, 1)}
    stamp = {"uri": mirror_identity(uri), "experiment": "odbench", "records": _digest(files), "trackers_started": 4}
    assert still_mirrored(stamp, uri, "odbench", files, 4)
    assert not still_mirrored(stamp, uri, "odbench", files, 5)  # a tracker started since
    assert not still_mirrored(stamp, "http://127.0.0.1:5000", "odbench", files, 4)
    assert not still_mirrored(stamp, uri, "other", files, 4)
    assert not still_mirrored(stamp, uri, "odbench", {"a.json": (10, 2)}, 4)
    assert not still_mirrored(None, uri, "odbench", files, 4)
    db.unlink()
    assert not still_mirrored(stamp, uri, "odbench", files, 4)  # the database gone
