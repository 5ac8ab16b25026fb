"""The store follows no symbolic link out of the results folder.

The issue's row: a symlinked ``jobs/`` or ``quarantine/`` folder was
followed, so records were moved or written outside the results folder.  Each
case plants a link to a folder outside, runs the command and checks that it
was refused in one line (exit 2) and that the outside folder is byte for
byte as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from odbench.cli import main
from odbench.engine.store import Store, StoreLinkError

KEY = "a" * 64


def _ok(store: Store, key: str = KEY) -> None:
    record = {"key": key, "status": "ok", "method": "m", "dataset": "d", "created": "2026-01-01T00:00:00",
              "metrics": {"auroc": 0.5}, "split": {"train": 3, "val": 2, "test": 4}}  # fmt: skip
    store.write(record, np.linspace(0, 1, 4), np.arange(4) % 2, {"test": np.arange(4)})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the results folder, holding a damaged record (which the store would quarantine) and a good one."""
    folder = tmp_path / "outside"
    good = Store(tmp_path / "elsewhere")
    _ok(good, "b" * 64)
    folder.mkdir()
    for path in good.jobs.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / f"{KEY}.json").write_text("{ a torn record")
    return folder


def _refused(argv: list[str], capsys: pytest.CaptureFixture, link: Path) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith("odbench: error: ") and f"{link} is a symbolic link" in line, err


@pytest.mark.parametrize("command", ["run", "verify", "report"])
def test_a_linked_jobs_folder_is_refused_and_nothing_outside_changes(tmp_path, outside, capsys, command) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "jobs").symlink_to(outside, target_is_directory=True)
    before = _snapshot(outside)
    argv = {
        "run": ["run", "--methods", "knn", "--datasets", "digits", "--classes", "0", "--results", str(results),
                "--no-mlflow", "--device", "cpu"],
        "verify": ["verify", "--fix", "--results", str(results)],
        "report": ["report", "--results", str(results)],
    }[command]  # fmt: skip
    _refused(argv, capsys, results / "jobs")
    assert _snapshot(outside) == before and not (results / "quarantine").exists()


def test_a_linked_quarantine_folder_is_refused_and_the_damaged_record_stays(tmp_path, outside, capsys) -> None:
    results = tmp_path / "results"
    store = Store(results)
    _ok(store)
    store.record_path(KEY).write_text("{ torn")  # damaged: verify --fix would move it into quarantine/
    (results / "quarantine").symlink_to(outside, target_is_directory=True)
    before = _snapshot(outside)
    _refused(["verify", "--fix", "--results", str(results)], capsys, results / "quarantine")
    assert _snapshot(outside) == before
    assert store.record_path(KEY).read_text() == "{ torn"


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_a_linked_record_or_scores_file_is_refused(tmp_path, outside, suffix) -> None:
    store = Store(tmp_path / "results")
    _ok(store)
    path = store.jobs / f"{KEY}{suffix}"
    path.unlink()
    path.symlink_to(outside / f"{KEY}.json")  # a damaged record outside: quarantine would move it in
    before = _snapshot(outside)
    with pytest.raises(StoreLinkError, match="is a symbolic link"):
        store.records()
    with pytest.raises(StoreLinkError):
        store.verify(fix=True)
    assert _snapshot(outside) == before and not store.quarantine_dir.exists()


def test_a_link_planted_in_quarantine_is_not_written_through(tmp_path) -> None:
    """A dangling link named as the quarantine note would be: the note goes beside it, the target is not made."""
    store = Store(tmp_path / "results", warn=lambda message: None)
    _ok(store)
    store.record_path(KEY).write_text("{ torn")
    store.quarantine_dir.mkdir()
    target = tmp_path / "planted.txt"
    (store.quarantine_dir / f"{KEY}.reason.txt").symlink_to(target)
    assert store.records() == []
    assert not target.exists()
    notes = [p for p in store.quarantine_dir.glob(f"{KEY}.*.reason.txt") if not p.is_symlink()]
    assert len(notes) == 1 and "does not parse" in notes[0].read_text()


def test_a_linked_results_folder_is_used(tmp_path) -> None:
    """The results folder itself may live elsewhere (a larger disk): only what is inside it is held to it."""
    real = tmp_path / "disk"
    real.mkdir()
    os.symlink(real, tmp_path / "results")
    store = Store(tmp_path / "results")
    _ok(store)
    assert [r["key"] for r in store.records()] == [KEY] and (real / "jobs" / f"{KEY}.json").is_file()
