"""What a workflow changes in its own process, put back when it returns.

A job's runner, and a workflow around it, set what only a whole process
has: glibc's malloc thresholds (``devices.keep_freed_memory``), torch's
deterministic kernels on a GPU (``devices.make_deterministic``), the
environment MLflow and cuBLAS read, and the log levels that keep MLflow,
Optuna and pooch quiet.  A notebook that calls ``odbench.run`` (or runs jobs
in its own process: ``SequentialExecutor``, tuning trials) gets its process
back as it was: :func:`restored_process_state` undoes each of them.
A warm pool worker (``odbench.engine.executors``) runs each of its jobs inside
the same context, so one job's settings never reach the next; it starts each
job's peak memory afresh (:func:`reset_peak_rss`) and retires when it keeps
too much memory between jobs (:func:`holds_more_than`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from odbench.engine import devices

#: the loggers odbench quiets (MLflow and its database layers, Optuna's trials, pooch's downloads)
QUIETED_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "optuna", "pooch")
#: torch's flags as a fresh import has them: (deterministic algorithms, warn only, cudnn.benchmark, cudnn.deterministic)
_TORCH_DEFAULTS = (False, False, False, False)


def _torch_flags() -> tuple[bool, bool, bool, bool] | None:
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return None
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )


def _restore_torch(flags: tuple[bool, bool, bool, bool]) -> None:
    torch: Any = sys.modules.get("torch")
    if torch is None or _torch_flags() == flags:
        return
    deterministic, warn_only, benchmark, cudnn_deterministic = flags
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = cudnn_deterministic


def _restore_environ(before: dict[str, str]) -> None:
    for name in [n for n in os.environ if n not in before]:
        del os.environ[name]
    for name, value in before.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@contextmanager
def restored_process_state() -> Iterator[None]:
    """Run the block, then give the process back its environment, log levels, torch flags and malloc settings."""
    environ = dict(os.environ)
    levels = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
    torch_flags = _torch_flags() or _TORCH_DEFAULTS  # torch imported by a job: a fresh import's flags
    kept = devices.keeping_freed_memory
    try:
        yield
    finally:
        _restore_environ(environ)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        _restore_torch(torch_flags)
        if not kept:  # the caller's own setting stays
            devices.release_freed_memory()


def reset_peak_rss() -> bool:
    """Start this process's peak resident memory afresh, so that the next job's ``peak_rss_mb`` is its own.

    Linux resets it when a process writes ``5`` to ``/proc/self/clear_refs`` (since 4.0); False where it
    cannot (another system, a locked-down ``/proc``): the peak is then the process's.
    """
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def resident_mb() -> float | None:
    """This process's resident memory now, in MiB (None where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def holds_more_than(bound_mb: float) -> bool:
    """Whether this process keeps more than ``bound_mb`` MiB resident, after handing freed heap back to the system."""
    held = resident_mb()
    if held is None or held <= bound_mb:
        return False
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)  # glibc: free pages inside the heap go back too, not only its top
    held = resident_mb()
    return held is not None and held > bound_mb
