"""When the MLflow mirror was last known to equal the store: what lets a suite skip reconciliation.

Reconciling (:func:`odbench.observers.mlflow_sync.reconcile`) imports MLflow,
opens its database and lists every run: about 2.5 s on a 2-core machine, most
of a resume that finds every job done.  A suite whose mirror ended complete
leaves a stamp in the store: the tracking URI and experiment, a digest of the
record files as it left them (name, size, modification time) and how many
trackers had started on this store by then.  The next suite skips the
reconciliation when all of it still holds: the same mirror (for a SQLite
database, the same file: one deleted or rebuilt is refilled), no record added,
removed or rewritten since, and no tracker started in between (one that died
could have left a run open or a job unmirrored).

A stamp is written only where the suite saw everything: it reconciled alone
at its start (or found a valid stamp), mirrored every job it ran, no other
tracker started while it ran, and every record other than its own is as it
was at its start.  Each suite consumes the stamp it found, so a suite that
starts beside it never trusts a stamp it could invalidate.

What a stamp cannot see is MLflow changed by hand (runs deleted in the UI, a
tracking server's database reset): ``odbench sync-mlflow`` always compares
with MLflow itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from odbench.core.files import replace_whole
from odbench.engine.store import Store

#: a record file as the stamp sees it: (size, modification time in ns)
FileState = tuple[int, int]


def _stamp_path(store: Store) -> Path:
    return store.root / ".mlflow-mirror.stamp.json"


def _starts_path(store: Store) -> Path:
    return store.root / ".mlflow-mirror.starts"


def record_files(store: Store) -> dict[str, FileState]:
    """Every record file of the store (``<key>.json``) with its size and modification time."""
    files: dict[str, FileState] = {}
    with contextlib.suppress(FileNotFoundError), os.scandir(store.jobs) as entries:
        for entry in entries:
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):  # removed while listed
                    info = entry.stat()
                    files[entry.name] = (info.st_size, info.st_mtime_ns)
    return files


def mirror_identity(uri: str) -> str | None:
    """Which mirror ``uri`` is: for a SQLite database its file (device and inode; ``None`` when it is gone), else the URI."""
    if not uri.startswith("sqlite:///"):
        return uri
    try:
        info = os.stat(uri[len("sqlite:///") :])
    except OSError:
        return None
    return f"{uri} {info.st_dev}:{info.st_ino}"


def _digest(files: dict[str, FileState]) -> str:
    text = "\n".join(f"{name} {size} {mtime}" for name, (size, mtime) in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def trackers_started(store: Store) -> int:
    """How many trackers have started on this store (one byte each in a file only ever appended to)."""
    try:
        return _starts_path(store).stat().st_size
    except OSError:
        return 0


def count_tracker_start(store: Store) -> int | None:
    """Count this tracker's start; the count it makes (``None`` where the store cannot take it: no stamp then)."""
    try:
        fd = os.open(_starts_path(store), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        os.write(fd, b".")  # one appended byte: atomic among processes, so the size counts every start
        return os.fstat(fd).st_size
    except OSError:
        return None
    finally:
        os.close(fd)


def take_stamp(store: Store) -> dict[str, Any] | None:
    """Read and remove the stamp: a suite trusts it at most once, and a suite beside it finds none."""
    path = _stamp_path(store)
    try:
        stamp = json.loads(path.read_text())
        path.unlink()
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def still_mirrored(
    stamp: dict[str, Any] | None, uri: str, experiment: str, files: dict[str, FileState], started_before: int
) -> bool:
    """Whether ``stamp`` vouches for this mirror now: same mirror and experiment, same record files, no tracker since."""
    identity = mirror_identity(uri)
    return (
        stamp is not None
        and identity is not None
        and stamp.get("uri") == identity
        and stamp.get("experiment") == experiment
        and stamp.get("records") == _digest(files)
        and stamp.get("trackers_started") == started_before
    )


def only_own_changes(before: dict[str, FileState], after: dict[str, FileState], own: set[str]) -> bool:
    """Whether every record file outside ``own`` (file names) is as it was: none added, removed or rewritten."""
    return all(name in after for name in before) and all(
        name in own or before.get(name) == state for name, state in after.items()
    )


def leave_stamp(store: Store, uri: str, experiment: str, files: dict[str, FileState], started: int) -> None:
    """Say that the mirror at ``uri``/``experiment`` equals the store whose record files are ``files``."""
    stamp = {"uri": mirror_identity(uri), "experiment": experiment, "records": _digest(files), "trackers_started": started}
    with contextlib.suppress(OSError):  # no stamp: the next suite reconciles, as it always did
        replace_whole(_stamp_path(store), json.dumps(stamp))
