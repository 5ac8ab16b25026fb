"""Reconciliation: make the MLflow mirror hold every stored job exactly once, and no run of a dead process open.

Run at the start of every suite (by the tracker) and by ``odbench sync-mlflow``.
A stored record is mirrored when a finished or failed run carries its key and
its ``created`` stamp (runs of older attempts of a job stay, as its history).
A run left ``RUNNING`` by a process that is gone is completed with its record
when the store has it (the job ended, the mirror did not hear of it), and is
otherwise closed as ``KILLED``.  Runs owned by a process on another host are
left alone: from here, nobody can tell whether it still runs.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from odbench.engine.store import Store
from odbench.observers.mlflow_db import file_lock
from odbench.observers.mlflow_runs import (
    CREATED,
    KEY,
    KIND,
    OWNER,
    complete_run,
    job_tags,
    millis,
    owner_alive,
    run_name,
)

#: a live run whose start is this close to a record's ``started`` is that record's run
_SAME_START_MS = 5000


def suite_end(store: Store, owner: str) -> Path:
    """Where a suite process records how it ended, for the sync that closes its parent run if its mirror could not."""
    return store.root / ".mlflow-suites" / (re.sub(r"[^\w.-]", "_", owner) + ".json")


def record_suite_end(store: Store, owner: str, status: str) -> None:
    """Say in the store that the suite of process ``owner`` ended with ``status`` (``FINISHED``, ``FAILED``, ``KILLED``).

    Written before the suite waits for its mirror: if the process exits
    first, its parent run stays ``RUNNING`` in MLflow with a dead owner, and
    a later sync closes it with this status instead of calling it ``KILLED``.
    """
    path = suite_end(store, owner)
    with contextlib.suppress(OSError):  # a results folder that cannot take it: the sync then says KILLED
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"owner": owner, "status": status, "end_ms": int(time.time() * 1000)}))


def forget_suite_end(store: Store, owner: str) -> None:
    """The suite's parent run is closed in MLflow: its recorded end is no longer needed."""
    with contextlib.suppress(OSError):
        suite_end(store, owner).unlink(missing_ok=True)


def recorded_end(store: Store, owner: str) -> tuple[str, int | None] | None:
    """``(status, end in ms)`` a dead suite process recorded, or ``None`` when it recorded none (it died)."""
    try:
        found = json.loads(suite_end(store, owner).read_text())
    except (OSError, ValueError):
        return None
    status = found.get("status") if isinstance(found, dict) else None
    if status not in ("FINISHED", "FAILED", "KILLED"):
        return None
    end = found.get("end_ms")
    return str(status), int(end) if isinstance(end, int) else None


def _forget_dead_ends(store: Store) -> None:
    """Remove the ends recorded by dead processes whose suite left no open run (one that had no job to mirror)."""
    for path in sorted((store.root / ".mlflow-suites").glob("*.json")):
        try:
            owner = json.loads(path.read_text()).get("owner")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(owner, str) and owner_alive(owner) is False:
            with contextlib.suppress(OSError):
                path.unlink()


def mirror_lock(store: Store) -> Path:
    """The lock file a tracker holds shared while it mirrors ``store``; reconciliation needs it alone."""
    return store.root / ".mlflow-mirror.lock"


@dataclass
class SyncReport:
    mirrored: int = 0  # stored jobs logged now
    adopted: int = 0  # runs of dead processes completed with their stored record
    closed: int = 0  # runs of dead processes closed as KILLED
    present: int = 0  # stored jobs already mirrored
    ended: int = 0  # suite runs of processes that recorded their end, closed as they ended

    def line(self) -> str:
        ended = f"{self.ended} ended suites closed as they ended, " if self.ended else ""
        return (
            f"{self.mirrored} stored jobs mirrored now, {self.adopted} interrupted runs completed from the store, "
            f"{ended}{self.closed} runs of dead processes closed as KILLED, {self.present} already mirrored"
        )


def all_runs(client: Any, experiment_id: str) -> list[Any]:
    """Every active run of the experiment (all pages)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=10000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def mirrors(run: Any, record: dict[str, Any]) -> bool:
    """Whether ``run`` is the finished mirror of ``record`` (same key and record; legacy runs by status)."""
    tags = run.data.tags
    if tags.get(KEY) != record["key"] or run.info.status not in ("FINISHED", "FAILED"):
        return False
    if CREATED not in tags:  # logged before records were told apart: match by outcome
        return (run.info.status == "FINISHED") == (record.get("status") == "ok")
    return tags[CREATED] == str(record.get("created"))


def reconcile(
    client: Any, experiment_id: str, store: Store, skip: frozenset[str] = frozenset(), parent_name: str | None = None,
    created_before: str | None = None, on_progress: Callable[[int, int], None] | None = None,
) -> SyncReport:
    """Bring the experiment in line with ``store``; ``skip``: keys a live suite is about to log itself.

    ``created_before`` (an ISO time): records created later are left alone,
    since a suite that started after it mirrors them itself (a suite
    reconciles at its start, and may see another's jobs being stored).

    Back-filled runs are nested under one parent run named ``parent_name``
    (default ``"mirrored from the store (<time>)"``), made only when needed.
    ``on_progress(done, total)`` hears each back-filled job (a long catch-up is shown).

    A suite run left ``RUNNING`` by a dead process is closed as that process
    recorded its end (:func:`record_suite_end`: a suite that finished while
    its mirror was behind), and as ``KILLED`` only when it recorded none.
    """
    report = SyncReport()
    records = {
        r["key"]: r for r in store.records() if created_before is None or str(r.get("created", "")) < created_before
    }
    runs = all_runs(client, experiment_id)
    done = {key for key, record in records.items() if any(mirrors(run, record) for run in runs)}
    closed_ends: set[str] = set()
    for run in runs:
        owner = run.data.tags.get(OWNER)
        if run.info.status != "RUNNING" or owner is None or owner_alive(owner) is not False:
            continue  # closed, owned by a live process (or one on another host), or from an older odbench
        ended = recorded_end(store, owner) if run.data.tags.get(KIND) in ("suite", "study") else None
        if ended is not None:  # its process ended the suite, only its mirror was cut off
            client.set_terminated(run.info.run_id, status=ended[0], end_time=ended[1])
            closed_ends.add(owner)
            report.ended += 1
            continue
        key = run.data.tags.get(KEY)
        record = records.get(key) if key is not None and key not in skip and key not in done else None
        start = millis(record.get("started")) if record is not None else None
        if run.data.tags.get(KIND) == "job" and record is not None and start is not None and abs(start - run.info.start_time) < _SAME_START_MS:
            complete_run(client, run.info.run_id, record, _scores(store, record))
            done.add(str(key))
            report.adopted += 1
        else:
            client.set_terminated(run.info.run_id, status="KILLED")
            report.closed += 1
    for owner in closed_ends:
        forget_suite_end(store, owner)
    _forget_dead_ends(store)
    report.present = len(done) - report.adopted
    parent_id = None
    missing = [key for key in records if key not in done and key not in skip]
    for number, key in enumerate(missing, 1):
        record = records[key]
        if parent_id is None:
            name = parent_name or f"mirrored from the store ({datetime.now().strftime('%Y-%m-%d %H:%M:%S')})"
            parent_id = client.create_run(experiment_id, run_name=name, tags={KIND: "suite"}).info.run_id
        tags = {**job_tags(record, key), "mlflow.parentRunId": parent_id}
        run = client.create_run(experiment_id, start_time=millis(record.get("started")), run_name=run_name(record), tags=tags)
        complete_run(client, run.info.run_id, record, _scores(store, record))
        report.mirrored += 1
        if on_progress is not None:
            on_progress(number, len(missing))
    if parent_id is not None:
        client.set_terminated(parent_id, status="FINISHED")
    return report


def _scores(store: Store, record: dict[str, Any]) -> Path | None:
    return store.scores_path(record["key"]) if record.get("status") == "ok" else None


def sync(
    store: Store, client: Any, experiment_id: str, wait: bool = False, on_progress: Callable[[int, int], None] | None = None
) -> SyncReport | None:
    """:func:`reconcile` while no tracker mirrors ``store``; ``None`` when one does and ``wait`` is False."""
    with file_lock(mirror_lock(store), blocking=wait) as alone:
        if not alone:
            return None
        return reconcile(client, experiment_id, store, on_progress=on_progress)
