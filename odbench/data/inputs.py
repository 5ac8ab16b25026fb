"""Stored arrays as the float inputs a model sees.

uint8 images stay uint8 in memory (a quarter of float32's size) and become
floats a batch at a time: scaled to [0, 1], then normalized per channel with
the task's statistics (``DataInfo.channel_mean`` / ``channel_std``).  Float
data (tabular, sequences) arrive standardized already
(``odbench.protocols.scaling``) and are only cast.  Protocols and methods
both use this, so it sits below both.
"""

from __future__ import annotations

import numpy as np


def _broadcast(stat: np.ndarray, X: np.ndarray, modality: str) -> np.ndarray:
    if modality == "image":
        return stat.reshape(1, -1, *([1] * (X.ndim - 2)))
    return stat


def as_float(X: np.ndarray, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, modality: str) -> np.ndarray:
    """float32 copy of a batch; uint8 images scaled to [0, 1] then normalized."""
    if X.dtype != np.uint8:
        return np.asarray(X, dtype=np.float32)
    out = X.astype(np.float32) / 255.0
    if mean is not None and std is not None:
        m = _broadcast(np.asarray(mean, np.float32), out, modality)
        s = _broadcast(np.asarray(std, np.float32), out, modality)
        out = (out - m) / s
    return out
