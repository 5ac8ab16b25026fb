"""A store that survives damage: damaged records are quarantined and their jobs run again,
leftovers of interrupted writes are cleaned up without touching a live writer's files."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from odbench.cli import main
from odbench.engine import store as store_module
from odbench.engine.store import STALE_TEMP_SECONDS, Store


def _ok(store: Store, key: str, n_test: int = 4) -> None:
    record = {"key": key, "status": "ok", "method": "m", "dataset": "d", "created": "2026-01-01T00:00:00",
              "metrics": {"auroc": 0.5}, "split": {"train": 3, "val": 2, "test": n_test}}  # fmt: skip
    index = {"train": np.arange(3), "val": np.arange(2), "test": np.arange(n_test)}
    store.write(record, np.linspace(0, 1, n_test), np.arange(n_test) % 2, index)


@pytest.fixture
def warned() -> list[str]:
    return []


@pytest.fixture
def store(tmp_path: Path, warned: list[str]) -> Store:
    s = Store(tmp_path / "results", warn=warned.append)
    for key in ("a" * 64, "b" * 64):
        _ok(s, key)
    return s


def _quarantined(store: Store, key: str, warned: list[str], fragment: str) -> None:
    """``key`` is no longer done, its files sit in quarantine with the reason, one warning named it."""
    assert not store.done(key)
    assert not store.record_path(key).exists() and not store.scores_path(key).exists()
    assert (store.quarantine_dir / f"{key}.json").exists()
    assert fragment in (store.quarantine_dir / f"{key}.reason.txt").read_text()
    (line,) = warned
    assert str(store.record_path(key)) in line and fragment in line and "\n" not in line
    assert [r["key"] for r in store.records()] == ["b" * 64], "records() holds only what passes the check"
    assert store.done("b" * 64)


def test_invalid_json_is_quarantined(store: Store, warned: list[str]) -> None:
    key = "a" * 64
    store.record_path(key).write_text('{"key": "' + key + '", "status": "ok", "metr')  # torn by hand
    assert store.records() and warned  # never raises
    warned.clear()
    assert (store.quarantine_dir / f"{key}.json").read_text().endswith("metr")
    assert (store.quarantine_dir / f"{key}.npz").exists(), "its scores travel with it"
    store.quarantine_dir.joinpath(f"{key}.json").rename(store.record_path(key))  # damaged again: both kept
    assert store.read(key) is None
    assert len(list(store.quarantine_dir.glob(f"{key}*.reason.txt"))) == 2
    assert "does not parse" in warned[0]


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("delete", "is missing"),
        ("other_job", "does not match the record's scores_sha256"),
        ("truncate", "is unreadable"),
        ("wrong_length", "has 5 scores for a test split of 4"),
        ("wrong_key", "names key bbbbbbbbbbbb"),
    ],
)
def test_damaged_scores_are_quarantined(store: Store, warned: list[str], damage: str, fragment: str) -> None:
    key, other = "a" * 64, "b" * 64
    npz = store.scores_path(key)
    if damage == "delete":
        npz.unlink()
    elif damage == "other_job":  # same shapes, other numbers: only the hash tells
        arrays = store.scores(key)
        np.savez(npz, **{**arrays, "scores": arrays["scores"][::-1].copy()})
    elif damage == "truncate":
        npz.write_bytes(npz.read_bytes()[:40])
    elif damage == "wrong_length":  # a record written before scores_sha256 existed: the split sizes still tell
        record = json.loads(store.record_path(key).read_text())
        del record["scores_sha256"]
        store.record_path(key).write_text(json.dumps(record))
        np.savez(npz, **{**store.scores(key), "scores": np.zeros(5)})
    elif damage == "wrong_key":
        store.record_path(key).write_text(store.record_path(other).read_text())
    _quarantined(store, key, warned, fragment)


def test_checks_are_cached_until_a_file_changes(store: Store, warned: list[str]) -> None:
    key = "a" * 64
    assert store.done(key)
    record = store.read(key)
    assert record is not None
    record["status"] = "mutated"  # a caller's dict is its own
    assert store.done(key)
    arrays = store.scores(key)
    np.savez(store.scores_path(key), **{**arrays, "labels": 1 - arrays["labels"]})  # changed after a good check
    assert not store.done(key) and "scores_sha256" in warned[0]


def _write_slowly(path: str, started: multiprocessing.synchronize.Event, go: multiprocessing.synchronize.Event) -> None:
    def write(f) -> None:
        f.write(b"{}")
        started.set()
        go.wait(30)

    store_module._atomic_write(Path(path), write)


def test_stale_temp_files_go_a_live_writers_stay(tmp_path: Path, warned: list[str]) -> None:
    """Two processes on one store: the cleanup spares a live writer's file in flight, and removes
    a killed writer's, or any older than STALE_TEMP_SECONDS (another host, a reused pid)."""
    store = Store(tmp_path, warn=warned.append)
    store.jobs.mkdir(parents=True)
    ctx = multiprocessing.get_context("spawn")
    temps = {}
    writers = {}
    for name in ("live", "killed"):
        started, go = ctx.Event(), ctx.Event()
        writer = ctx.Process(target=_write_slowly, args=(str(store.jobs / f"{name}.json"), started, go))
        writer.start()
        assert started.wait(60)
        (temps[name],) = store.jobs.glob(f".{name}.json~{writer.pid}~*.tmp")
        writers[name] = (writer, go)
    writers["killed"][0].kill()
    writers["killed"][0].join()  # reaped: its pid is dead
    foreign_fresh = store.jobs / ".c.json~1~otherhost~x.tmp"
    foreign_old = store.jobs / ".d.json~1~otherhost~x.tmp"
    legacy_old = store.jobs / ".e.json.abc.tmp"
    for path in (foreign_fresh, foreign_old, legacy_old):
        path.write_bytes(b"")
    for path in (foreign_old, legacy_old):
        os.utime(path, (time.time() - STALE_TEMP_SECONDS - 60,) * 2)

    assert sorted(store.remove_stale_temp_files()) == sorted([temps["killed"], foreign_old, legacy_old])
    assert "removed 3 temporary file(s)" in warned[0]
    assert temps["live"].exists() and foreign_fresh.exists()
    writer, go = writers["live"]
    go.set()
    writer.join(60)
    assert writer.exitcode == 0 and (store.jobs / "live.json").read_bytes() == b"{}", "the live write completed"
    assert not temps["live"].exists()


def test_verify_reports_and_fix_quarantines(store: Store, capsys: pytest.CaptureFixture) -> None:
    root = str(store.root)
    store.scores_path("a" * 64).unlink()
    store.record_path("c" * 64).write_text("not json")
    failed = {"key": "f" * 64, "status": "failed", "error": {"message": "boom"}}
    store.write(failed)  # a failed job has no scores and is not damage
    orphan = store.scores_path("d" * 64)
    orphan.write_bytes(b"x")
    os.utime(orphan, (time.time() - STALE_TEMP_SECONDS - 60,) * 2)

    assert main(["verify", "--results", root]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{root}: 2 records (1 ok, 1 failed), 2 damaged, 1 leftover file(s)")
    assert f"damaged: {store.record_path('a' * 64)}: its scores file" in out and "does not parse" in out
    assert store.record_path("a" * 64).exists(), "without --fix nothing changes"

    assert main(["verify", "--results", root, "--fix"]) == 1
    out = capsys.readouterr()
    assert "quarantined 2 record(s)" in out.out and "deleted 1 leftover" in out.out
    assert not orphan.exists() and len(list(store.quarantine_dir.glob("*.reason.txt"))) == 2
    assert main(["verify", "--results", root]) == 0
    assert "2 records (1 ok, 1 failed), 0 damaged, 0 leftover" in capsys.readouterr().out
    assert main(["verify", "--results", str(store.root / "nowhere")]) == 2


def test_run_reruns_exactly_the_damaged_jobs_and_report_warns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    argv = ["run", "--methods", "knn", "--datasets", "digits", "--classes", "0,4,7", "--results", str(results),
            "--no-mlflow", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    store = Store(results)
    by_class = {r["normal_class"]: r["key"] for r in store.records()}
    torn, lost, intact = by_class["0"], by_class["4"], by_class["7"]
    store.record_path(torn).write_text(store.record_path(torn).read_text()[:-30])
    store.scores_path(lost).unlink()
    intact_bytes = store.record_path(intact).read_bytes()
    stale = store.jobs / f".{intact}.json~999999999~{store_module._HOST}~x.tmp"  # a pid that cannot exist
    stale.write_bytes(b"half a record")

    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "2 ok, 0 failed, 0 skipped, 1 already done" in err
    assert f"{store.record_path(torn)}: the record does not parse" in err
    assert f"{store.record_path(lost)}: its scores file {lost}.npz is missing" in err
    assert "Traceback" not in err and not stale.exists()
    assert store.done(torn) and store.done(lost) and store.record_path(intact).read_bytes() == intact_bytes

    np.savez(store.scores_path(intact), **{**store.scores(torn)})  # another job's scores under its name
    (store.jobs / "notes.json").write_text("{ not a record")
    assert main(["report", "--results", str(results), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert f"warning: {store.record_path(intact)}: its scores file" in err
    assert f"warning: {store.jobs / 'notes.json'}: the record does not parse" in err
    summary = pd.read_csv(io.StringIO(out), dtype={"normal_class": str})  # the aggregated CSV: one row per cell and metric
    classes = set(summary.loc[summary["method"] == "knn", "normal_class"])
    assert classes >= {"0", "4"}
    assert "7" not in classes, "the damaged job's numbers are not reported"


def test_a_store_that_cannot_be_changed_is_still_read(store: Store, warned: list[str]) -> None:
    """Where quarantine/ cannot be made (here a file is in its way; a read-only store alike), the damaged
    record is left in place and ignored: report still works."""
    key = "a" * 64
    store.quarantine_dir.write_text("in the way")
    store.scores_path(key).unlink()
    assert [r["key"] for r in store.records()] == ["b" * 64]
    assert "left in place" in warned[0] and store.record_path(key).exists()
