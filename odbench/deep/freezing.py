"""Freezing parts of a network while an inner search runs (input-gradient ascents)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def batchnorm_stats_frozen(model: nn.Module, frozen: bool = True) -> Iterator[None]:
    """Train-mode BatchNorm that normalizes with batch statistics but leaves
    the running statistics untouched (momentum 0) while the block runs."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if frozen else []
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, saved):
            m.momentum = momentum


@contextmanager
def parameters_frozen(model: nn.Module) -> Iterator[None]:
    """No parameter requires grad inside the block: input gradients only."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


