"""Claims: which process computes a job, so that runs sharing a results folder never compute one job twice.

Before a job is handed to any executor, the process that plans the suite (the
driver: the same for the sequential, local pool and Ray executors, so a claim
never depends on where the job runs) claims it: ``claims/<key>.json`` in the
results folder, naming the owner's host, pid, process start time and boot,
and when.  The file is complete before it appears (written under a temporary
name, then hard-linked into place, which fails if the name exists: the
atomic create-if-absent of ``O_CREAT | O_EXCL``, with no moment where a claim
is empty).  A claim is released (deleted) once the job's record is written or
it failed, and all of a run's claims when the run ends, however it ends short
of ``kill -9``.

A claim held by someone else is judged by its owner:

* on this host, the owner is dead when its pid is gone, or the pid now
  belongs to a process that started at another time (a reused pid), or the
  machine has booted since;
* on another host nothing can be asked, so the owner refreshes the time of
  its claims every :data:`HEARTBEAT_S`; a claim untouched for :data:`STALE_S`
  is dead.

A dead owner's claim is taken over atomically: under a lock on
``claims/.lock`` the claim is read again and, if it is still the dead
owner's, replaced by the taker's (``os.replace``), so two runs that find the
same dead claim never both take it.  A live owner's job is waited for (see
``odbench.engine.suite``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from odbench.engine.store import CLAIMS_DIR

#: seconds between two refreshes of a live run's claims (what another host judges its owner by)
HEARTBEAT_S = 60.0
#: a claim from another host untouched this long is a dead owner's
STALE_S = 600.0

LIVE, DEAD, GONE = "live", "dead", "gone"


def process_start(pid: int) -> str:
    """When ``pid`` started, as the kernel counts (``/proc/<pid>/stat``, clock ticks since boot); else
    ``psutil``'s creation time; ``""`` where neither can tell (then a pid is judged by being alive only)."""
    try:
        # the process name (field 2) may hold spaces and parentheses: the fields after its last ")" are plain
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-untyped]

        return f"{psutil.Process(pid).create_time():.3f}"
    except Exception:  # psutil missing, or no such process
        return ""


def boot_id() -> str:
    """This boot of the machine (Linux); ``""`` elsewhere."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@dataclass(frozen=True)
class Owner:
    """A process that may hold claims: host, pid, start time (:func:`process_start`) and boot (:func:`boot_id`)."""

    host: str
    pid: int
    start: str
    boot: str

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()), boot_id())

    def alive(self) -> bool | None:
        """Whether this owner still runs; ``None`` when it ran on another host (nothing can be asked)."""
        if self.host != socket.gethostname():
            return None
        if self.boot and boot_id() not in ("", self.boot):
            return False  # the machine booted since: every process of then is gone
        if not _pid_exists(self.pid):
            return False
        now = process_start(self.pid)
        return not self.start or not now or now == self.start  # another start time: the pid was reused


class Claims:
    """The claims of one run on one results folder: take, judge, take over, release.

    ``token`` tells this run's claims from another run's in the same process.
    While it holds claims a daemon thread refreshes their times every
    :data:`HEARTBEAT_S` (for runs on other hosts to judge it by).
    """

    def __init__(self, root: Path | str, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S) -> None:
        self.folder = Path(root) / CLAIMS_DIR
        self.owner = Owner.this_process()
        self.token = uuid.uuid4().hex
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.mine: set[str] = set()
        self.taken_over: dict[str, dict[str, Any]] = {}  # key -> the dead owner's claim it replaced
        self._guard = threading.Lock()  # self.mine, between the caller and the heartbeat thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def _content(self) -> bytes:
        o = self.owner
        claim = {"host": o.host, "pid": o.pid, "start": o.start, "boot": o.boot, "token": self.token,
                 "claimed": datetime.now(UTC).isoformat()}  # fmt: skip
        return json.dumps(claim, sort_keys=True).encode()

    def _temporary(self) -> Path:
        """A complete claim of this run under a name no one else uses."""
        tmp = self.folder / f".claim~{self.owner.pid}~{uuid.uuid4().hex}.tmp"
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as f:
            f.write(self._content())
        return tmp

    def claim(self, key: str) -> bool:
        """Claim ``key``'s job for this run: True if it is now ours (new, or taken over from a dead owner)."""
        if key in self.mine:
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._temporary()
        try:
            try:
                os.link(tmp, self.path(key))  # fails if the name exists, whoever made it
                return self._mine(key)
            except FileExistsError:
                pass
            holder = self.holder(key)
            if holder is None or self.state(holder) == DEAD:  # released meanwhile, or its owner is gone
                return self._take_over(key, holder or {}, tmp)
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def holder(self, key: str) -> dict[str, Any] | None:
        """The claim on ``key`` as written, plus its file's ``mtime``; ``{}`` for an unreadable one; None: unclaimed."""
        path = self.path(key)
        try:
            text, mtime = path.read_bytes(), path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            claim = json.loads(text)
        except ValueError:
            claim = None
        if not isinstance(claim, dict):
            return {"mtime": mtime}
        return {**claim, "mtime": mtime}

    def state(self, holder: dict[str, Any] | None) -> str:
        """``gone`` (no claim), ``live`` or ``dead`` (see the module docstring)."""
        if holder is None:
            return GONE
        if holder.get("token") == self.token:
            return LIVE
        try:
            owner = Owner(str(holder["host"]), int(holder["pid"]), str(holder.get("start", "")), str(holder.get("boot", "")))
        except (KeyError, TypeError, ValueError):  # not a claim anyone could have written in full: judged by its age
            return DEAD if time.time() - float(holder.get("mtime", 0)) > self.stale_s else LIVE
        alive = owner.alive()
        if alive is None:  # another host: its heartbeat says
            return DEAD if time.time() - float(holder.get("mtime", 0)) > self.stale_s else LIVE
        return LIVE if alive else DEAD

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644), "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield  # closing the file drops the lock

    def _take_over(self, key: str, dead: dict[str, Any], tmp: Path) -> bool:
        """Replace the dead claim ``dead`` by this run's, unless it changed meanwhile (then someone else took it)."""
        with self._locked():
            now = self.holder(key)
            if now is None:  # released meanwhile: an ordinary claim
                try:
                    os.link(tmp, self.path(key))
                except FileExistsError:
                    return False
                return self._mine(key)
            if {k: v for k, v in now.items() if k != "mtime"} != {k: v for k, v in dead.items() if k != "mtime"}:
                return False
            os.replace(tmp, self.path(key))
        self.taken_over[key] = dead
        return self._mine(key)

    def _mine(self, key: str) -> bool:
        with self._guard:
            self.mine.add(key)
        if self._thread is None and self.heartbeat_s > 0:
            self._thread = threading.Thread(target=self._beat, name="odbench-claims", daemon=True)
            self._thread.start()
        return True

    def release(self, key: str) -> None:
        """Delete this run's claim on ``key`` (its record is written, or it failed); another's is left alone."""
        with self._guard:
            if key not in self.mine:
                return
            self.mine.discard(key)
        holder = self.holder(key)
        if holder is not None and holder.get("token") == self.token:
            self.path(key).unlink(missing_ok=True)

    def release_all(self) -> None:
        """Release every claim of this run and stop the heartbeat (the run ends, however)."""
        for key in list(self.mine):
            self.release(key)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._stop = threading.Event()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._guard:
                keys = list(self.mine)
            for key in keys:
                with contextlib.suppress(OSError):
                    os.utime(self.path(key))
