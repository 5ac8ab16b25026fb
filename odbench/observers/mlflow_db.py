"""Getting an MLflow backend ready: quiet settings, a SQLite database that is never half-made, a fast probe.

MLflow builds a fresh SQLite database by running ~60 schema migrations in
place, which takes 5–15 s; a process killed meanwhile leaves a file every
later run refuses ("out-of-date database schema"), and two processes
starting at once race each other.  Here the schema is built once into a
template beside the download cache, under a file lock, and each new database
is a copy of it renamed into place, so a database file either is complete
or does not exist.  A database found half-made (or of an older schema) is
moved aside and rebuilt: the results store, not MLflow, holds the truth, and
reconciliation (:mod:`odbench.observers.mlflow_sync`) fills the new mirror.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from odbench.core.download import cache_dir
from odbench.core.files import replace_whole

# Quiet, offline MLflow: no telemetry, no progress bars, no INFO chatter, and
# HTTP calls that give up in seconds rather than retrying for minutes (a
# stopped server stalled a run 256 s).  setdefault leaves a user's choice alone.
_QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

#: seconds the probe of a remote tracking server waits for an answer
PROBE_TIMEOUT_S = 3.0


def quiet_mlflow() -> None:
    """Set the environment that keeps MLflow quiet and quick to fail; call before importing it."""
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def default_tracking_uri(results: Path) -> str:
    """``sqlite:///<results>/mlflow.db`` (absolute path)."""
    return f"sqlite:///{Path(results).resolve() / 'mlflow.db'}"


def artifact_root(results: Path) -> str:
    return (Path(results).resolve() / "mlartifacts").as_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for other URIs and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """An ``fcntl`` lock on ``path`` (created if needed); yields whether it was acquired.

    The kernel drops the lock when its holder dies, so a killed process never
    leaves a stale lock behind.  ``blocking=False`` yields ``False`` at once
    when another process holds a conflicting lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _schema_head() -> str:
    """The schema revision this MLflow writes (its newest migration); remembered per MLflow version.

    Asking MLflow costs an import of most of it (seconds); ``odbench ui`` must start fast.
    """
    from importlib.metadata import version

    remembered = cache_dir() / "mlflow-schema" / f"head-{version('mlflow')}.txt"
    with contextlib.suppress(OSError):
        return remembered.read_text().strip()
    from mlflow.store.db.utils import _get_latest_schema_revision

    head = str(_get_latest_schema_revision())
    replace_whole(remembered, head)
    return head


def schema_version(path: Path) -> str | None:
    """The schema revision stamped in a SQLite database, ``None`` if it has none or is unreadable."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return None
    # alembic stamps each migration as it goes: only the head, with the core tables, is complete
    return str(row[0]) if row and {"experiments", "runs", "metrics", "tags"} <= tables else None


def _build_template(head: str) -> Path:
    """A complete, empty database of schema ``head``, built once per MLflow version (under a lock)."""
    folder = cache_dir() / "mlflow-schema"
    template = folder / f"{head}.db"
    if schema_version(template) == head:
        return template
    with file_lock(folder / ".lock"):
        if schema_version(template) == head:  # another process built it while we waited
            return template
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        tmp = folder / f".{head}.{os.getpid()}.tmp.db"
        tmp.unlink(missing_ok=True)
        store = SqlAlchemyStore(f"sqlite:///{tmp}", (folder / "mlruns").as_uri())
        store.engine.dispose()
        if schema_version(tmp) != head:
            raise RuntimeError(f"MLflow built a database of schema {schema_version(tmp)}, expected {head}")
        os.replace(tmp, template)
    return template


def ensure_database(uri: str, artifacts: str | None = None) -> str | None:
    """Make the SQLite database of ``uri`` complete and current; returns a warning when one was rebuilt.

    Non-SQLite URIs are left to MLflow (a server, or a database MLflow
    migrates itself).  Safe when several processes call it at once: the
    first creates the file under a lock, the others find it complete.
    ``artifacts``: the artifact root recorded for MLflow's Default experiment.
    """
    path = sqlite_path(uri)
    if path is None:
        return None
    path = path.resolve()
    head = _schema_head()
    if schema_version(path) == head:
        return None
    warning = None
    with file_lock(path.with_name(f".{path.name}.lock")):
        found = schema_version(path)
        if found == head:  # another process finished it while we waited
            return None
        if path.exists():
            aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            warning = (
                f"MLflow database {path} was {'half-created' if found is None else f'of schema {found}'}; "
                f"moved it to {aside.name} and rebuilt the mirror from the results store"
            )
        template = _build_template(head)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, tmp)
        if artifacts is not None:
            with contextlib.closing(sqlite3.connect(tmp)) as db, db:
                db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (f"{artifacts}/0",))
        os.replace(tmp, path)  # the database appears complete, or not at all
    return warning


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """For an ``http(s)`` tracking URI, why its server does not answer ``/health`` in ``timeout`` s; else ``None``."""
    if not is_remote(uri):
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as answer:
            return None if answer.status == 200 else f"{uri} answered HTTP {answer.status}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"{uri} does not answer ({reason})"
