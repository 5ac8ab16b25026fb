"""Serving the MLflow UI on a results folder: one server process, up in seconds, gone when we go.

``mlflow ui`` took 50–80 s to answer on 2 busy cores: its command imports
MLflow, then starts a uvicorn supervisor with 4 workers and a job-execution
runner (GenAI scorers), each importing MLflow again (~10 s apiece under load).
Here one uvicorn process serves MLflow's app directly, configured through the
environment variables ``mlflow server`` itself sets, without job execution.
The server runs in its own process group; SIGTERM, SIGINT or our death (Linux
``PR_SET_PDEATHSIG``) stops it, so it never outlives ``odbench ui``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from odbench.observers.mlflow_db import ensure_database, quiet_mlflow
from odbench.observers.mlflow_view import ensure_view, runs_page

# the names ``mlflow server`` passes its settings to its workers under (mlflow/server/constants.py;
# a test checks them against the installed MLflow)
SERVER_ENV = {
    "backend": "_MLFLOW_SERVER_FILE_STORE",
    "artifact_root": "_MLFLOW_SERVER_ARTIFACT_ROOT",
    "serve_artifacts": "_MLFLOW_SERVER_SERVE_ARTIFACTS",
    "artifacts_destination": "_MLFLOW_SERVER_ARTIFACT_DESTINATION",
}


def server_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--host", host, "--port", str(port), "--workers", "1",
            "--log-level", "warning", "mlflow.server.fastapi_app:app"]  # fmt: skip


def server_env(uri: str, artifacts: str | None) -> dict[str, str]:
    quiet_mlflow()
    # no GenAI job runner; and no deprecation notices of MLflow's own imports on the user's terminal
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", PYTHONWARNINGS="ignore")
    env[SERVER_ENV["backend"]] = uri
    if artifacts is not None:
        env[SERVER_ENV["artifact_root"]] = artifacts
    return env


def _die_with_parent() -> None:
    """In the child before exec: its own process group, and SIGTERM when the parent dies (Linux)."""
    os.setsid()
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_server(uri: str, artifacts: str | None, host: str, port: int) -> subprocess.Popen[bytes]:
    """Start the UI server on ``uri`` (a database URI); the database is made current first."""
    ensure_database(uri, artifacts)
    return subprocess.Popen(server_command(host, port), env=server_env(uri, artifacts), preexec_fn=_die_with_parent)


def stop_server(server: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace_s``."""
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    except ProcessLookupError:
        pass


def wait_until_up(url: str, server: subprocess.Popen[Any], timeout_s: float = 120.0) -> bool:
    """Whether ``url``'s ``/health`` answers before ``timeout_s`` (``False`` at once if the server exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def _page(url: str, experiment: str, stream: Any) -> str:
    """The address to open: the experiment's runs table with odbench's view (set here if missing)."""
    try:
        experiment_id, shared_view = ensure_view(url, experiment)
    except OSError as err:
        print(f"odbench: warning: MLflow did not say which experiment is {experiment!r} ({err})", file=stream)
        experiment_id, shared_view = None, False
    return runs_page(url, experiment_id, shared_view)


def serve(
    uri: str, artifacts: str | None, host: str, port: int, experiment: str = "odbench", stream: Any = None,
    while_starting: Callable[[], object] | None = None,
) -> int:  # fmt: skip
    """Serve until the server exits, or SIGTERM/SIGINT arrives; then stop it. Returns an exit status.

    ``while_starting`` runs in this process while the server imports MLflow
    (most of its start-up), before the address is printed: filling an empty
    mirror then costs no extra wait.
    """
    stream = stream or sys.stderr
    started = time.monotonic()
    server = start_server(uri, artifacts, host, port)
    stopping: list[float] = []

    def stop(signum: int, _frame: Any) -> None:
        # only signal here: waiting on the server inside a handler would deadlock Popen.wait
        if not stopping:
            stopping.append(time.monotonic())
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)

    previous: dict[int, Any] = {}
    try:
        if while_starting is not None:
            while_starting()  # before our handlers: Ctrl-C meanwhile interrupts it, and the finally stops the server
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        url = f"http://{host}:{port}"
        if wait_until_up(url, server):
            print(
                f"odbench: MLflow UI at {_page(url, experiment, stream)} "
                f"(up in {time.monotonic() - started:.1f} s; Ctrl-C to stop)",
                file=stream,
            )
        while server.poll() is None:
            if stopping and time.monotonic() - stopping[0] > 10:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        stop_server(server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        return 0
    status = server.returncode
    print(f"odbench: error: the MLflow UI server exited with status {status} (is port {port} free?)", file=stream)
    return 1
