"""Where deep jobs run: ``cpu``, ``cuda[:n]`` or ``auto``."""

from __future__ import annotations

from odbench.engine.plan import UsageError


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda[:n]`` or ``auto`` (the first GPU if torch sees one)."""
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} asked for, but torch sees no CUDA device; use --device cpu or auto")
        return device
    raise UsageError(f"unknown device {device!r}; use cpu, cuda or auto")
