"""Real servers for the integration tests, bound to 127.0.0.1: PostgreSQL, an MLflow server on it, a Ray head.

CI (``.ci/run``) starts them once and exports ``ODBENCH_TEST_POSTGRES_URL``,
``ODBENCH_TEST_MLFLOW_URI`` and ``ODBENCH_TEST_RAY_ADDRESS``; without those,
the session fixtures in ``conftest.py`` start them here when the binaries exist
(``initdb``/``pg_ctl`` on PATH or under ``/usr/lib/postgresql/*/bin``, ``mlflow``, ``ray``),
so a plain ``python -m pytest`` runs the same tests.  Each service is stopped
through the process this module started, never by name.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

#: Ray on Linux swaps 127.0.0.1 for the machine's address when it connects; the first variable keeps
#: the loopback (its name is Ray's, ray/_private/ray_constants.py).  The head and every driver share a
#: token of their own (Ray's token authentication), not ~/.ray/auth_token, which other Rays here may rewrite.
LOOPBACK_RAY = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(ready: Callable[[], bool], seconds: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    tail = log.read_text()[-2000:] if log is not None and log.is_file() else ""
    raise RuntimeError(f"{what} did not start within {seconds:.0f} s\n{tail}")


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, or Debian's versioned folder."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return Path(folders[-1]) if folders else None


def _as_user(user: str | None) -> Callable[[], None] | None:
    """initdb refuses to run as root: as root, run PostgreSQL as ``user`` (``postgres``)."""
    if user is None:
        return None
    entry = pwd.getpwnam(user)

    def drop() -> None:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return drop


class Postgres:
    """A throwaway cluster in a fresh folder under /tmp (trust auth on 127.0.0.1, fsync off: test data only).

    Not under pytest's temporary folders: those are private to root, and the
    server runs as ``postgres`` when the tests run as root.
    """

    def __init__(self) -> None:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="odbench-pg-"))
        self.folder, self.port = folder, free_port()
        self.bin = postgres_bin()
        if self.bin is None:
            raise FileNotFoundError("no PostgreSQL binaries (initdb, pg_ctl)")
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)  # KeyError: no such user
            os.chown(folder, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        data, log = self.folder / "data", self.folder / "log"
        options = f"-k {self.folder} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off -c max_connections=200"
        for command in (
            [str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "odbench", "--no-sync"],
            [str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"],
        ):
            done = subprocess.run(command, preexec_fn=_as_user(self.user), capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{Path(command[0]).name} failed: {(done.stderr or done.stdout)[-500:]}")
        import psycopg

        with psycopg.connect(f"postgresql://odbench@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            for name in ("mlflow", "optuna"):
                conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://odbench@127.0.0.1:{self.port}"

    def stop(self) -> None:
        subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"],
            preexec_fn=_as_user(self.user), capture_output=True,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


class Server:
    """A long-running command in its own process group, stopped through that group."""

    def __init__(self, command: list[str], log: Path, grace: float = 10) -> None:
        self.log, self.grace = log, grace
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(self.grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def mlflow_server(database_url: str, folder: Path) -> tuple[Server, str]:
    """``mlflow server`` on the PostgreSQL database ``mlflow``, artifacts under ``folder``."""
    port = free_port()
    backend = database_url.replace("postgresql://", "postgresql+psycopg://") + "/mlflow"
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
        "--artifacts-destination", (folder / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    server = Server(command, folder / "mlflow.log")
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(f"mlflow server exited:\n{server.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    _wait(healthy, 120, "mlflow server", server.log)
    return server, uri


def ray_head(folder: Path, cpus: int = 2, gpus: int = 0) -> tuple[Server, str]:
    """A Ray head of ``cpus`` CPUs on 127.0.0.1 with no dashboard; ports of its own, so other Rays here are left alone.

    ``gpus``: logical GPUs Ray schedules by (its ``--num-gpus``); none need exist, so GPU packing is testable on a CPU.
    """
    port = free_port()
    ports = {
        "--node-manager-port": free_port(), "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port(),
    }  # fmt: skip
    command = [
        shutil.which("ray") or "ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
        "--num-cpus", str(cpus), "--num-gpus", str(gpus), "--include-dashboard", "false", "--disable-usage-stats", "--block",
        *[str(x) for pair in ports.items() for x in pair],
    ]  # fmt: skip
    os.environ.update(LOOPBACK_RAY)
    server = Server(command, folder / "ray.log", grace=3)  # `ray start --block` ignores SIGTERM for long

    def listening() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(f"ray start exited:\n{server.log.read_text()[-2000:]}")
        return "Ray runtime started" in server.log.read_text(errors="replace")

    _wait(listening, 120, "ray head", server.log)
    return server, f"127.0.0.1:{port}"
