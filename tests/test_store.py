"""The results store: atomic writes, failed jobs are not done, one row per ok job."""

from __future__ import annotations

import json

import numpy as np
import pytest

from odbench.engine.identity import job_key
from odbench.engine.store import Store


def _record(key: str, status: str = "ok", **extra) -> dict:
    return {"key": key, "status": status, "method": "m", "dataset": "d", "protocol": "one_vs_all",
            "normal_class": "0", "repetition": 0, "seed": 1, "selection": "val", "headline_metric": "auroc",
            "metrics": {"auroc": 0.75, "aupr": float("nan")}, "created": "2026-01-01T00:00:00", **extra}  # fmt: skip


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path) -> None:
    store = Store(tmp_path / "results")
    assert not (tmp_path / "results").exists(), "a store is created on first write, not before"
    scores, labels = np.array([0.1, 0.9, 0.3]), np.array([0, 1, 0])
    store.write(_record("k1"), scores, labels, {"train": np.arange(5), "test": np.array([7, 8, 9])})
    assert sorted(p.name for p in store.jobs.iterdir()) == ["k1.json", "k1.npz"]
    arrays = store.scores("k1")
    np.testing.assert_array_equal(arrays["scores"], scores)
    np.testing.assert_array_equal(arrays["labels"], labels)
    np.testing.assert_array_equal(arrays["test_index"], [7, 8, 9])
    # strict JSON on disk: NaN becomes null
    assert json.loads(store.record_path("k1").read_text(), parse_constant=pytest.fail)["metrics"]["aupr"] is None

    before = store.record_path("k1").read_bytes()
    with pytest.raises(TypeError):  # a record that cannot be serialized ...
        store.write(_record("k1", metrics={"auroc": object()}))
    assert store.record_path("k1").read_bytes() == before  # ... leaves the previous one intact
    assert sorted(p.name for p in store.jobs.iterdir()) == ["k1.json", "k1.npz"], "no temporary file left behind"


def test_failed_job_is_recorded_but_not_done(tmp_path) -> None:
    store = Store(tmp_path)
    store.write(_record("k2", status="failed", error={"type": "ValueError", "message": "boom", "traceback": "..."}))
    assert not store.done("k2")
    assert store.read("k2")["error"]["message"] == "boom"
    assert [r["key"] for r in store.records("failed")] == ["k2"]
    assert store.frame().empty, "the frame holds successful jobs only"
    store.write(_record("k2"), np.zeros(2), np.array([0, 1]))  # the retry succeeds
    assert store.done("k2")
    assert len(store.records()) == 1
    frame = store.frame()
    assert list(frame["key"]) == ["k2"] and frame.loc[0, "auroc"] == 0.75 and np.isnan(frame.loc[0, "aupr"])


def test_job_key_changes_with_every_ingredient() -> None:
    base = dict(method="knn", params={"n_neighbors": 5}, dataset="digits", protocol="one_vs_all", protocol_options={},
                normal_class="3", repetition=0, base_seed=0, selection="val", code="a", data="b")  # fmt: skip
    key = job_key(**base)
    assert key == job_key(**dict(base, params={"n_neighbors": 5})) and len(key) == 64
    changes = dict(method="lof", params={"n_neighbors": 6}, dataset="sine2d", protocol="ocln",
                   protocol_options={"val_fraction": 0.3}, normal_class="4", repetition=1, base_seed=1,
                   selection="oracle", code="c", data="d")  # fmt: skip
    for name, value in changes.items():
        assert job_key(**dict(base, **{name: value})) != key, name


def test_has_records_says_whether_any_record_file_is_there(tmp_path) -> None:
    store = Store(tmp_path / "results")
    assert store.has_records() is False  # no folder at all
    store.jobs.mkdir(parents=True)
    (store.jobs / ".k1.json.tmp").write_text("{}")  # a writer's unfinished temporary file is not a record
    assert store.has_records() is False
    store.write(_record("k1"), np.zeros(2), np.array([0, 1]))
    assert store.has_records() is True
