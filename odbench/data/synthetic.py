"""The 2-D sine wave of the paper's Figure 1, and points off it.

Shared by the ``sine2d`` and ``sine10d`` dataset plugins (and usable by any
synthetic experiment): one generator, so both data sets draw the same wave.
"""

from __future__ import annotations

import numpy as np

MARGIN = 0.35  # how far off the curve an off-wave point must be


def sine_wave(n: int, rng: np.random.Generator, periods: int = 2) -> np.ndarray:
    """``n`` points on y = sin(x), x uniform on [-periods·π, periods·π]."""
    x = rng.uniform(-periods * np.pi, periods * np.pi, n)
    return np.stack([x, np.sin(x)], axis=1)


def distance_to_wave(points: np.ndarray) -> np.ndarray:
    """Distance of each 2-D point to the curve y = sin(x) (dense sampling)."""
    grid = np.linspace(-2.5 * np.pi, 2.5 * np.pi, 4000)  # covers the box of up to two periods
    curve = np.stack([grid, np.sin(grid)], axis=1)
    d2 = ((points[:, None, :] - curve[None, :, :]) ** 2).sum(-1)
    return np.sqrt(d2.min(axis=1))


def off_wave(n: int, rng: np.random.Generator, periods: int = 2) -> np.ndarray:
    """``n`` points in the box around the wave of ``periods`` periods, each ``MARGIN`` off it."""
    half = periods * np.pi
    found = np.empty((0, 2))
    while len(found) < n:
        cand = np.stack([rng.uniform(-half, half, 4 * n), rng.uniform(-2.0, 2.0, 4 * n)], axis=1)
        found = np.concatenate([found, cand[distance_to_wave(cand) >= MARGIN]])
    return found[:n]
