"""A resume trusts the index of verified records, and only where the files still match it.

The issue's row: a re-run of a suite whose jobs were all done re-read and
re-hashed every record and scores file at each start.  Records that passed
the full check are listed in ``jobs.index.json``; a later start believes a
record whose files show the listed signature, checks every other in full,
and ``odbench verify`` trusts nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from odbench.engine import store_index
from odbench.engine.store import Store
from odbench.engine.store_index import INDEX_NAME

A, B = "a" * 64, "b" * 64


def _ok(store: Store, key: str) -> None:
    record = {"key": key, "status": "ok", "method": "m", "dataset": "d", "created": "2026-01-01T00:00:00",
              "metrics": {"auroc": 0.5}, "split": {"train": 3, "val": 2, "test": 4}}  # fmt: skip
    store.write(record, np.linspace(0, 1, 4), np.arange(4) % 2, {"test": np.arange(4)})


@pytest.fixture
def settled_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files count as settled at once (timestamps are real, but a test need not wait two seconds)."""
    monkeypatch.setattr(store_index, "SETTLE_NS", 0)


@pytest.fixture
def indexed(tmp_path: Path, settled_now: None) -> Path:
    """A results folder with two good records, both checked once and indexed."""
    root = tmp_path / "results"
    store = Store(root)
    _ok(store, A)
    _ok(store, B)
    assert [r["key"] for r in store.records()] == [A, B]
    assert set(json.loads((root / INDEX_NAME).read_text())["records"]) == {A, B}
    return root


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys whose scores a store reads to check them (the expensive part a resume skips)."""
    read: list[str] = []
    original = Store._scores_problem

    def counted(self: Store, record: dict) -> str | None:
        read.append(record["key"])
        return original(self, record)

    monkeypatch.setattr(Store, "_scores_problem", counted)
    return read


def test_a_resume_believes_indexed_records_without_reading_their_scores(indexed: Path, monkeypatch) -> None:
    read = _counting(monkeypatch)
    store = Store(indexed)
    assert store.done(A) and store.done(B)
    assert [r["key"] for r in store.records()] == [A, B]
    assert read == [], "no scores file read for a record whose files match the index"
    assert store.verify().ok == 2 and sorted(read) == [A, B], "odbench verify checks everything, index or not"


def test_a_record_that_changed_since_it_was_indexed_is_checked_in_full(indexed: Path, monkeypatch) -> None:
    warned: list[str] = []
    store = Store(indexed, warn=warned.append)
    npz = store.scores_path(A)
    arrays = store.scores(A)
    np.savez(npz, **arrays)  # the same arrays uncompressed (still a good record), so a change below keeps the size
    assert Store(indexed).records() and store_index.RecordIndex(indexed / INDEX_NAME, None).get(A).signature == (
        store_index.file_signature(store.record_path(A))
    )
    before = npz.stat()
    np.savez(npz, **{**arrays, "scores": arrays["scores"][::-1].copy()})  # other numbers: same size, same inode
    os.utime(npz, ns=(before.st_atime_ns, before.st_mtime_ns))  # its modification time put back: the change time tells
    assert npz.stat().st_size == before.st_size and npz.stat().st_ino == before.st_ino
    read = _counting(monkeypatch)
    fresh = Store(indexed, warn=warned.append)
    assert not fresh.done(A) and fresh.done(B)
    assert read == [A] and "scores_sha256" in warned[0], "the changed record was checked and quarantined"
    fresh.records()
    assert set(json.loads((indexed / INDEX_NAME).read_text())["records"]) == {B}, "a quarantined record leaves the index"


def test_a_torn_or_foreign_index_is_ignored_and_rebuilt(indexed: Path, monkeypatch) -> None:
    for text in ('{"version": 1, "records": {"' + A, '{"version": 99, "records": {}}', "[1, 2]"):
        (indexed / INDEX_NAME).write_text(text)
        read = _counting(monkeypatch)
        store = Store(indexed)
        assert [r["key"] for r in store.records()] == [A, B] and sorted(read) == [A, B], text
        assert set(json.loads((indexed / INDEX_NAME).read_text())["records"]) == {A, B}, "rebuilt from the full check"


def test_an_index_entry_never_outvotes_the_files(indexed: Path, monkeypatch) -> None:
    """An entry whose signature does not match (a record rewritten by hand) is no proof; its text hash is checked too."""
    store = Store(indexed, warn=lambda message: None)
    path = store.record_path(A)
    record = json.loads(path.read_text())
    record["metrics"]["auroc"] = 0.9  # edited by hand: same length, so the size alone would not tell
    path.write_text(json.dumps(record, indent=1, sort_keys=True))
    data = json.loads((indexed / INDEX_NAME).read_text())
    data["records"][A][0] = list(store_index.file_signature(path))  # an index that claims the edited file
    (indexed / INDEX_NAME).write_text(json.dumps(data))
    read = _counting(monkeypatch)
    assert Store(indexed).read(A)["metrics"]["auroc"] == 0.9 and read == [A], "the text hash differs: checked in full"


def test_records_written_a_moment_ago_are_not_indexed(tmp_path: Path) -> None:
    """A file changed within a timestamp tick of its check could change again unseen: it waits for the next start."""
    store = Store(tmp_path)
    _ok(store, A)
    assert store.records() and not (tmp_path / INDEX_NAME).exists()
