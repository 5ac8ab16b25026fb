"""The results store: one record per finished job, written atomically.

Layout under ``root``::

    jobs/<key>.json   the record (metrics, timings, versions, params, ...)
    jobs/<key>.npz    raw test scores (higher = more anomalous), test labels
                      (0 normal, 1 anomalous) and the split's row indices

``key`` is a sha256 over everything that determines a job's result (see
``odbench.engine.identity``), so the store is also the resume cache: a job whose record
says ``status == "ok"`` is done.  A failed job is recorded with its error and
is *not* done, so running the same command again retries it.  Each file is
written to a temporary name and moved into place with ``os.replace``; the
``.npz`` goes first and the ``.json`` last, so a record that exists always
has its scores, and an interrupted write leaves the previous state intact.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

OK, FAILED = "ok", "failed"


def to_json_safe(value: Any) -> Any:
    """Plain JSON types; NaN/inf become ``None`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    return value


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """A folder of job records.  Nothing is created until the first write."""

    #: the non-metric columns of :meth:`frame`
    COLUMNS = [
        "key", "method", "dataset", "protocol", "normal_class", "repetition", "seed", "selection",
        "headline_metric", "fit_seconds", "score_seconds", "peak_rss_mb", "device", "created", "code_fingerprint",
    ]  # fmt: skip

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.jobs = self.root / "jobs"

    def record_path(self, key: str) -> Path:
        return self.jobs / f"{key}.json"

    def scores_path(self, key: str) -> Path:
        return self.jobs / f"{key}.npz"

    def read(self, key: str) -> dict[str, Any] | None:
        path = self.record_path(key)
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def done(self, key: str) -> bool:
        """True if the job finished successfully (a failed job is not done)."""
        record = self.read(key)
        return record is not None and record.get("status") == OK

    def write(
        self,
        record: dict[str, Any],
        scores: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        split_index: dict[str, np.ndarray] | None = None,
        extra: dict[str, np.ndarray] | None = None,
    ) -> Path:
        """Write one record (and its arrays), atomically; returns the json path.

        ``scores``/``labels``: test anomaly scores (higher = more anomalous)
        and test labels, shape ``(n_test,)``.  ``split_index``: row numbers of
        each split in its source arrays (``train``, ``val``, ``test``), saved
        as ``<name>_index``.  ``extra``: further arrays saved under their names
        (e.g. ``test_close``, the mask of generated close negatives).
        """
        key = record["key"]
        self.jobs.mkdir(parents=True, exist_ok=True)
        # serialize first: a record that cannot be written leaves no trace
        text = json.dumps(to_json_safe(record), indent=1, sort_keys=True, allow_nan=False).encode()
        if scores is not None:
            arrays = {"scores": np.asarray(scores, np.float64)}
            if labels is not None:
                arrays["labels"] = np.asarray(labels, np.int8)
            for name, index in (split_index or {}).items():
                arrays[f"{name}_index"] = np.asarray(index, np.int64)
            arrays.update(extra or {})
            # allow_pickle is numpy's default, named so the type checker does not match **arrays against it
            _atomic_write(self.scores_path(key), lambda f: np.savez_compressed(f, allow_pickle=True, **arrays))
        _atomic_write(self.record_path(key), lambda f: f.write(text))
        return self.record_path(key)

    def scores(self, key: str) -> dict[str, np.ndarray]:
        """The arrays saved with a record (``scores``, ``labels``, ``*_index``)."""
        with np.load(self.scores_path(key), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}

    def records(self, status: str | None = None) -> list[dict[str, Any]]:
        """All records (or those with ``status``), oldest first."""
        if not self.jobs.is_dir():
            return []
        found = [json.loads(p.read_text()) for p in sorted(self.jobs.glob("*.json"))]
        if status is not None:
            found = [r for r in found if r.get("status") == status]
        return sorted(found, key=lambda r: (r.get("created", ""), r["key"]))

    def frame(self) -> Any:
        """A ``pandas.DataFrame``, one row per successful job, metrics as columns.

        Columns: ``key, method, dataset, protocol, normal_class, repetition,
        seed, selection, headline_metric, fit_seconds, score_seconds,
        peak_rss_mb, device, created, code_fingerprint`` and one column per metric name.
        """
        import pandas as pd

        columns = self.COLUMNS
        rows = []
        for record in self.records(OK):
            row = {c: record.get(c) for c in columns}
            row.update({name: (np.nan if v is None else v) for name, v in record.get("metrics", {}).items()})
            rows.append(row)
        return pd.DataFrame(rows, columns=None if rows else columns)
