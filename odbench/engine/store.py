"""The results store: one record per finished job, written atomically.

Layout under ``root``::

    jobs/<key>.json   the record (metrics, timings, versions, params, ...)
    jobs/<key>.npz    raw test scores (higher = more anomalous), test labels
                      (0 normal, 1 anomalous) and the split's row indices
    quarantine/       damaged records moved aside, each with a ``.reason.txt``

``key`` is a sha256 over everything that determines a job's result (see
``odbench.engine.identity``), so the store is also the resume cache: a job whose record
says ``status == "ok"`` is done.  A failed job is recorded with its error and
is *not* done, so running the same command again retries it.  Each file is
written to a temporary name and moved into place with ``os.replace``; the
``.npz`` goes first and the ``.json`` last, so a record that exists always
has its scores, and an interrupted write leaves the previous state intact.

A record is only believed when it survives a check: it parses, names its
own key, and (when ok) its ``.npz`` is there, readable, holds arrays whose
sha256 is the one the record gives (``scores_sha256``) and whose lengths
are the record's split sizes.  A record that fails is moved to
``quarantine/`` with a one-line warning, so its job is no longer done and
runs again; nothing reads it by accident.  ``odbench verify`` runs the same
check over the whole store.

A resume does not read every scores file again: the records that passed the
check are listed, with their files' sizes and times and the hash of their
text, in ``jobs.index.json`` (``odbench.engine.store_index``), and a record
whose files still match its entry is believed as checked.  Any mismatch gets
the full check; ``odbench verify`` never trusts the index.

The store follows no symbolic link: a linked ``jobs/``, ``quarantine/`` or ``claims/``
folder, record, scores file or quarantine note would have records read,
moved or written outside the results folder, so each is refused
(:class:`StoreLinkError`, one line) before anything is read or changed.
The results folder itself may be a link (to a larger disk, say).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from odbench.core.errors import UsageError
from odbench.engine.store_index import INDEX_NAME, Entry, RecordIndex, file_signature, settled

OK, FAILED = "ok", "failed"
#: where runs sharing this store claim their jobs (``odbench.engine.claims``, which is not imported here: the store
#: is part of every job's code fingerprint, and claiming decides no number)
CLAIMS_DIR = "claims"


class StoreLinkError(UsageError):
    """A folder or file of the store is a symbolic link, which the store refuses to follow."""


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


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the arrays' names, dtypes, shapes and bytes (not the zip's bytes, which carry timestamps)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
#: a temporary file older than this is stale whoever wrote it (a write takes seconds)
STALE_TEMP_SECONDS = 15 * 60


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename.

    The temporary name carries the writer's pid and host
    (``.<name>~<pid>~<host>~<random>.tmp``), so a later run can tell a dead
    writer's leftover from a live one's file in flight.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}~{os.getpid()}~{_HOST}~", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _temp_is_stale(path: Path, now: float) -> bool:
    """A dead writer's temporary file, or one older than :data:`STALE_TEMP_SECONDS`."""
    if not path.exists():  # renamed into place meanwhile
        return False
    parts = path.name.split("~")
    if len(parts) == 4 and parts[2] == _HOST and parts[1].isdigit() and not _pid_alive(int(parts[1])):
        return True
    # another host's writer, a pid reused since, or a file from before pids were in the name
    return _older_than(path, now, STALE_TEMP_SECONDS)


def _warn(message: str) -> None:
    print(f"odbench: warning: {message}", file=sys.stderr)


@dataclass
class Damage:
    """A record that cannot be believed: its file and why."""

    path: Path
    reason: str


@dataclass
class Check:
    """What :meth:`Store.verify` found."""

    ok: int = 0
    failed: int = 0
    damaged: list[Damage] = field(default_factory=list)
    #: leftovers of interrupted writes: stale temporary files, scores without a record
    strays: list[Path] = field(default_factory=list)
    quarantined: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


class Store:
    """A folder of job records.  Nothing is created until the first write.

    ``warn`` receives each one-line warning (a record quarantined, temporary
    files removed); by default they go to stderr.
    """

    #: the non-metric columns of :meth:`frame`
    COLUMNS = [
        "key", "method", "dataset", "protocol", "normal_class", "repetition", "seed", "selection",
        "headline_metric", "fit_seconds", "score_seconds", "peak_rss_mb", "device", "created", "code_fingerprint",
    ]  # fmt: skip

    def __init__(self, root: Path | str, warn: Callable[[str], None] = _warn) -> None:
        self.root = Path(root)
        self.jobs = self.root / "jobs"
        self.quarantine_dir = self.root / "quarantine"
        self.warn = warn
        # records already checked, by the (record, scores) files' stat signatures: a check reads each once
        self._checked: dict[Path, tuple[tuple[Any, ...], str]] = {}
        # and those checked by earlier processes, kept in the results folder (what a resume trusts)
        self.index = RecordIndex(self.root / INDEX_NAME, _atomic_write)

    def check_links(self, *paths: Path) -> None:
        """Raise :class:`StoreLinkError` if the store's folders, or any of ``paths``, is a symbolic link."""
        for path in (self.jobs, self.quarantine_dir, self.root / CLAIMS_DIR, *paths):
            if path.is_symlink():
                raise StoreLinkError(
                    f"{path} is a symbolic link (to {os.readlink(path)}); odbench reads, moves and writes nothing "
                    f"outside the results folder {self.root}: put a real {'file' if path.suffix else 'folder'} there, "
                    "or remove the link"
                )

    def record_path(self, key: str) -> Path:
        return self.jobs / f"{key}.json"

    def scores_path(self, key: str) -> Path:
        return self.jobs / f"{key}.npz"

    def read(self, key: str) -> dict[str, Any] | None:
        """The record of ``key`` if there is one that passes the check; a damaged one is quarantined."""
        return self._load(self.record_path(key))

    def done(self, key: str) -> bool:
        """True if the job finished successfully (a failed job is not done, nor is a damaged record).

        A record listed in the index with its files unchanged is not read
        again (see the module docstring); any other gets the full check.
        """
        path = self.record_path(key)
        self.check_links(path, path.with_suffix(".npz"))
        entry = self.index.get(key)
        if entry is not None and entry.signature == self._signature(path):
            return entry.status == OK
        record = self._load(path)
        return record is not None and record.get("status") == OK

    def save_index(self, present: Any = None) -> bool:
        """Write what this process verified into the index (``present``: every key with a record, to drop the rest)."""
        return self.index.save(present)

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
        (e.g. ``test_close``, the mask of generated close negatives).  The
        arrays' sha256 is set in ``record["scores_sha256"]``.
        """
        key = record["key"]
        self.check_links()
        arrays: dict[str, np.ndarray] = {}
        if scores is not None:
            arrays["scores"] = np.asarray(scores, np.float64)
            if labels is not None:
                arrays["labels"] = np.asarray(labels, np.int8)
            for name, index in (split_index or {}).items():
                arrays[f"{name}_index"] = np.asarray(index, np.int64)
            arrays.update({name: np.asarray(value) for name, value in (extra or {}).items()})
            record["scores_sha256"] = arrays_sha256(arrays)
        else:
            record.pop("scores_sha256", None)
        # serialize first: a record that cannot be written leaves no trace
        text = json.dumps(to_json_safe(record), indent=1, sort_keys=True, allow_nan=False).encode()
        self.jobs.mkdir(parents=True, exist_ok=True)
        if arrays:
            # allow_pickle is numpy's default, named so the type checker does not match **arrays against it
            _atomic_write(self.scores_path(key), lambda f: np.savez_compressed(f, allow_pickle=True, **arrays))
        _atomic_write(self.record_path(key), lambda f: f.write(text))
        return self.record_path(key)

    def scores(self, key: str) -> dict[str, np.ndarray]:
        """The arrays saved with a record (``scores``, ``labels``, ``*_index``)."""
        self.check_links(self.scores_path(key))
        with np.load(self.scores_path(key), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}

    def has_records(self) -> bool:
        """Whether any record file is here, unchecked: :meth:`records` reads every scores file to check it."""
        self.check_links()
        return self.jobs.is_dir() and next(self.jobs.glob("*.json"), None) is not None

    def records(self, status: str | None = None) -> list[dict[str, Any]]:
        """All records that pass the check (or those with ``status``), oldest first.

        Damaged records are quarantined on the way (one warning each).
        """
        self.check_links()
        if not self.jobs.is_dir():
            return []
        paths = sorted(self.jobs.glob("*.json"))
        found = [r for p in paths if (r := self._load(p)) is not None]
        self.save_index(present={p.stem for p in paths})
        if status is not None:
            found = [r for r in found if r.get("status") == status]
        return sorted(found, key=lambda r: (r.get("created", ""), r["key"]))

    # -- checking ---------------------------------------------------------------------------------

    def _signature(self, path: Path) -> tuple[Any, ...] | None:
        return file_signature(path)

    def inspect(self, path: Path, full: bool = False) -> tuple[dict[str, Any] | None, str | None]:
        """``(record, None)`` for a record that passes the check, ``(None, reason)`` for a damaged
        one, ``(None, None)`` for no record at ``path``.  Changes no record; a link raises :class:`StoreLinkError`.

        A record the index lists with the same file signature and text hash is
        believed without reading its scores; ``full``: check it all the same
        (``odbench verify``).  What a full check finds goes into the index.
        """
        self.check_links(path, path.with_suffix(".npz"))
        record: dict[str, Any] | None = None
        reason: str | None = None
        for _ in range(3):  # a writer may replace the files while we read: look again
            began = time.time_ns()
            signature = self._signature(path)
            if signature is None:
                return None, None
            cached = None if full else self._checked.get(path)
            if cached is not None and cached[0] == signature:
                return json.loads(cached[1]), None  # a fresh dict: callers may change theirs
            entry = None if full else self.index.get(path.stem)
            if entry is not None and entry.signature == signature:
                trusted = self._trusted(path, entry)
                if trusted is not None and self._signature(path) == signature:
                    self._checked[path] = (signature, trusted[0])
                    return trusted[1], None
            text, record, reason = self._check(path)
            if self._signature(path) != signature:
                continue
            if reason is None and record is not None and text is not None:
                self._checked[path] = (signature, text)
                if settled(signature, began):  # a file changed just now could change again unseen
                    self.index.add(path.stem, Entry(signature, str(record["status"]), _text_sha256(text)))
            elif reason is not None:
                self.index.drop(path.stem)
            return record, reason
        return record, reason

    def _trusted(self, path: Path, entry: Entry) -> tuple[str, dict[str, Any]] | None:
        """The text and record of an indexed record whose text still has the entry's hash; else ``None`` (check it)."""
        try:
            text = path.read_text()
            record = json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if _text_sha256(text) != entry.digest or not isinstance(record, dict) or record.get("key") != path.stem:
            return None
        return text, record

    def _check(self, path: Path) -> tuple[str | None, dict[str, Any] | None, str | None]:
        """``(text, record, reason)``: the record's text and record if it passes, else the reason."""
        try:
            text = path.read_text()
            record = json.loads(text)
        except FileNotFoundError:
            return None, None, None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return None, None, f"the record does not parse ({type(err).__name__}: {err})"
        if not isinstance(record, dict) or not isinstance(record.get("key"), str) or "status" not in record:
            return None, None, "not a job record (no key or status)"
        if record["key"] != path.stem:
            return None, None, f"the record names key {record['key'][:12]}..., not its file's"
        if record["status"] == OK and (reason := self._scores_problem(record)):
            return None, None, reason
        return text, record, None  # a failed job has no scores; it is not done either way

    def _scores_problem(self, record: dict[str, Any]) -> str | None:
        """Why the scores of an ok record cannot be believed, or ``None``."""
        path = self.scores_path(record["key"])
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except FileNotFoundError:
            return f"its scores file {path.name} is missing"
        except Exception as err:  # a truncated or foreign zip, an object array: unreadable either way
            return f"its scores file {path.name} is unreadable ({type(err).__name__}: {err})"
        if "scores" not in arrays:
            return f"its scores file {path.name} holds no scores"
        expected = record.get("scores_sha256")
        if expected is not None and arrays_sha256(arrays) != expected:
            return f"its scores file {path.name} does not match the record's scores_sha256"
        split = record.get("split") or {}
        lengths = {"scores": "test", "labels": "test", "test_close": "test"}
        lengths.update({f"{name}_index": name for name in ("train", "val", "test")})
        for name, part in lengths.items():
            size = split.get(part)
            if name in arrays and isinstance(size, int) and len(arrays[name]) != size:
                return f"its scores file {path.name} has {len(arrays[name])} {name} for a {part} split of {size}"
        return None

    def _load(self, path: Path) -> dict[str, Any] | None:
        record, reason = self.inspect(path)
        if reason is not None:
            self.quarantine(path, reason)
        return record

    def quarantine(self, path: Path, reason: str) -> Path | None:
        """Move a damaged record (and its scores) to ``quarantine/`` beside a ``.reason.txt``; warn once.

        Returns the record's new path, or ``None`` if another process moved it
        first or the store is read-only (then the record stays, ignored).
        """
        folder = self.quarantine_dir
        self.check_links(path, path.with_suffix(".npz"))
        stem = path.stem
        if any(os.path.lexists(folder / f"{stem}{end}") for end in (".json", ".npz", ".reason.txt")):
            # the same job damaged before: keep both
            stem = f"{stem}.{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}.{os.getpid()}"
        target, note = folder / f"{stem}{path.suffix}", folder / f"{stem}.reason.txt"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # the reason first: a kill between the moves still leaves it beside what was moved
            # a new file, never through a link planted under its name
            with os.fdopen(os.open(note, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "w") as f:
                f.write(f"{path}: {reason}\nquarantined {datetime.now(UTC).isoformat()} by pid {os.getpid()} on {_HOST}\n")
            try:
                os.replace(path, target)
            except FileNotFoundError:  # another process quarantined (or rewrote) it first
                if not target.exists():
                    note.unlink(missing_ok=True)
                return None
            scores = path.with_suffix(".npz")
            if path.suffix == ".json" and scores.exists():
                os.replace(scores, folder / f"{stem}.npz")
        except OSError as err:  # a read-only store: report without the record, change nothing
            self.warn(
                f"{path}: {reason}; ignored, and left in place (cannot move it to {folder}: {err.strerror or err})"
            )
            return None
        finally:
            self._checked.pop(path, None)
            self.index.drop(path.stem)
        self.warn(f"{path}: {reason}; moved to {folder}, its job will run again")
        return target

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temporary files that interrupted writes left (see :func:`_temp_is_stale`).

        A live writer's file in flight is kept, so two runs can share one store.
        """
        self.check_links()
        if not self.jobs.is_dir():
            return []
        now = time.time()
        removed = []
        # the index's and the claims' temporary files live beside them, outside jobs/
        leftovers = [*self.jobs.glob(".*.tmp"), *self.root.glob(f".{INDEX_NAME}~*.tmp"), *self.root.glob(f"{CLAIMS_DIR}/.*.tmp")]
        for path in sorted(leftovers):
            if _temp_is_stale(path, now):
                path.unlink(missing_ok=True)
                removed.append(path)
        if removed:
            self.warn(f"removed {len(removed)} temporary file(s) that an interrupted write left in {self.jobs}")
        return removed

    def verify(self, fix: bool = False) -> Check:
        """Check every record (see the module docstring) and list leftovers of interrupted writes.

        ``fix``: quarantine the damaged records and delete the leftovers
        (stale temporary files; scores files older than
        :data:`STALE_TEMP_SECONDS` without a record).  Otherwise nothing changes.
        """
        check = Check()
        self.check_links()
        if not self.jobs.is_dir():
            return check
        now = time.time()
        paths = sorted(self.jobs.glob("*.json"))
        for path in paths:
            record, reason = self.inspect(path, full=True)
            if reason is not None:
                check.damaged.append(Damage(path, reason))
            elif record is not None:
                check.ok += record.get("status") == OK
                check.failed += record.get("status") != OK
        for path in sorted(self.jobs.glob("*.npz")):
            if not path.with_suffix(".json").exists() and _older_than(path, now, STALE_TEMP_SECONDS):
                check.strays.append(path)
        check.strays += [p for p in sorted(self.jobs.glob(".*.tmp")) if _temp_is_stale(p, now)]
        if fix or self.index.path.exists():  # what was checked is indexed; a damaged record never is
            self.save_index(present={p.stem for p in paths})
        if fix:
            for damage in check.damaged:
                if (moved := self.quarantine(damage.path, damage.reason)) is not None:
                    check.quarantined.append(moved)
            for path in check.strays:
                path.unlink(missing_ok=True)
                check.removed.append(path)
        return check

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


def _text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _older_than(path: Path, now: float, seconds: float) -> bool:
    try:
        return now - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False
