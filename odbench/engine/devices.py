"""Where deep jobs run: ``cpu``, ``cuda[:n]`` or ``auto``; its share of the cores; deterministic GPU kernels; what ran it.

torch is imported only when a GPU is asked about, so a classical suite never loads it here.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path
from typing import Any

from odbench.core.errors import UsageError

#: cuBLAS reproducible only with a fixed workspace (NVIDIA's cuBLAS docs, "Results reproducibility")
_CUBLAS_WORKSPACE = ":4096:8"


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda[:n]`` or ``auto`` (the first GPU if torch sees one)."""
    if device == "cpu" or (device == "auto" and "torch" not in sys.modules and not _gpu_driver_present()):
        return "cpu"  # no GPU driver here: torch (seconds to import) would say the same
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} asked for, but torch sees no CUDA device; use --device cpu or auto")
        return device
    raise UsageError(f"unknown device {device!r}; use cpu, cuda or auto")


def _gpu_driver_present() -> bool:
    """Whether a GPU torch could use may be here: anywhere but Linux, or a Linux with an NVIDIA or AMD GPU device or driver."""
    if not sys.platform.startswith("linux"):
        return True  # no cheap test: ask torch
    dev = Path("/dev")
    return Path("/proc/driver/nvidia").exists() or (dev / "kfd").exists() or any(dev.glob("nvidia*"))


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's or ``taskset``'s limit), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call (macOS, Windows)
        return max(1, os.cpu_count() or 1)


#: every job's torch threads when ``--threads`` is not given (a shared machine, a test suite)
THREADS_VARIABLE = "ODBENCH_THREADS"


def threads_per_job(workers: int, fixed: int | None = None) -> int:
    """A job's torch threads when ``workers`` jobs share this process's cores.

    ``fixed`` (``--threads``) when given, else ``$ODBENCH_THREADS``, else cores/workers: a lone job
    gets every core, N workers about cores/N each (at least 1).  More math threads than cores make
    every worker spin-wait on the others (measured: a 10 s test took 6 min).
    """
    if fixed is not None:
        return fixed
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise UsageError(f"${THREADS_VARIABLE}={value!r} is not a positive integer; set it to a thread count or unset it")
        return int(value)
    return max(1, available_cores() // workers)


def make_deterministic() -> None:
    """The same seed gives the same numbers on a GPU: fixed cuBLAS workspace, no cuDNN autotuning.

    ``CUBLAS_WORKSPACE_CONFIG`` is read when cuBLAS initialises, so this runs
    before a job's first CUDA call (a fresh worker's first job; later jobs of
    the same process keep the setting).  Kernels with no deterministic
    version warn instead of failing (``warn_only``), so a method still runs.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    import torch

    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
_MMAP_THRESHOLD_MAX = 32 * 2**20


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed blocks of up to 32 MiB instead of returning them to the kernel; True if set.

    A conv net's activations at batch 256 are 4-34 MB each.  By default
    glibc serves blocks over its (moving) mmap threshold with a fresh
    ``mmap``, unmaps them on ``free`` and trims its heap back to the kernel,
    so activations keep page-faulting their memory in again: a 32 MB
    elementwise op took 17 ms into a fresh tensor against 2 ms into a reused
    one.  Keeping them (and the heap, up to 1 GiB) made the reference-style
    fp32 DROCC batch about 1.5x faster here (``scripts/bench_drocc.py
    --sections train --keep-freed-memory``); the peak RSS stays what the
    job needs at its largest.  Process-wide, so set once per process; a
    no-op where the C library is not glibc.
    """
    global keeping_freed_memory
    mallopt = _mallopt()
    if mallopt is None:
        return False
    keeping_freed_memory = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))
    return keeping_freed_memory


#: whether :func:`keep_freed_memory` changed this process's malloc (``odbench.run`` undoes it when it returns)
keeping_freed_memory = False
#: glibc's defaults for both thresholds (DEFAULT_MMAP_THRESHOLD_MIN, DEFAULT_TRIM_THRESHOLD)
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024


def release_freed_memory() -> None:
    """Undo :func:`keep_freed_memory`: glibc's default thresholds again (fixed at their defaults, no longer
    moved by glibc's own heuristic, which an explicit setting turns off for good)."""
    global keeping_freed_memory
    mallopt = _mallopt()
    if mallopt is not None and keeping_freed_memory:
        mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
    keeping_freed_memory = False


def _mallopt() -> Any:
    """glibc's ``mallopt``, or None where the C library has none."""
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def cpu_description() -> str:
    """The CPU's model, core count and the vector extensions that decide speed and bf16 (Linux's /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(wanted) or 'no AVX2'}"


def ran_on() -> dict[str, Any]:
    """Which process ran a job, for its record: host and process id (the Ray executor adds its node and GPU share).

    Kept out of the job key and out of the numbers, so it never decides what is compared across executors.
    """
    return {"host": platform.node(), "pid": os.getpid(), "node_id": None}


def bound_gpu_memory(device: str, share: float) -> bool:
    """Cap this process's CUDA memory at ``share`` of its GPU (torch's caching allocator); True if a bound was set.

    A Ray worker runs one job at a time and is reused for the next, so each
    job sets its own bound (1.0 lifts an earlier one).  With no GPU visible
    (a CPU test cluster of logical GPUs) there is nothing to bound.
    """
    if not device.startswith("cuda") or share <= 0:
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    torch.cuda.set_per_process_memory_fraction(min(share, 1.0))
    return True


def gpu_out_of_memory(error: dict[str, Any]) -> bool:
    """Whether a failed record's ``error`` is the GPU running out of memory (``torch.cuda.OutOfMemoryError``, or
    the ``RuntimeError`` older torch and some kernels raise instead)."""
    kind, message = str(error.get("type", "")), str(error.get("message", "")).lower()
    return kind == "OutOfMemoryError" or (kind == "RuntimeError" and "out of memory" in message)


def device_info(device: str) -> dict[str, Any]:
    """What the job ran on, for its record: the GPU's name and the CUDA/cuDNN versions, or the CPU."""
    info: dict[str, Any] = {"device": device, "host": platform.node(), "cpu": platform.machine(), "cpu_model": cpu_description()}
    torch = sys.modules.get("torch")
    if torch is None:  # a classical job: torch was never needed
        return info
    info["torch"] = str(torch.__version__)  # a plain str: torch's TorchVersion would make unpickling the record import torch
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        info.update(
            gpu=torch.cuda.get_device_name(index),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            deterministic=torch.are_deterministic_algorithms_enabled(),
        )
    return info
