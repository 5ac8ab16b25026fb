"""The paper's Figure 1 data: points on a 2-D sine wave, anomalies off it.

1000 normal points with x uniform on [-2π, 2π] and y = sin(x); anomalies are drawn uniformly from the surrounding
box and kept only if they are at least ``MARGIN`` from the curve, so every
one is off the manifold but many sit inside the wave's bounding ellipse
(which is what defeats minimum-enclosing-ball methods such as OC-SVM).
Generated, no download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData

N_NORMAL, N_ANOMALY, MARGIN = 1000, 200, 0.35


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


class Sine2D(Dataset):
    name = "sine2d"
    modality = "tabular"
    classes = ("normal", "anomaly")
    default_protocol = "contamination"
    paper_metric = "auroc"
    bundled = True

    def prepare(self, root: Path) -> None:
        pass  # generated

    def load(self, root: Path) -> LabeledData:
        rng = np.random.default_rng(2020)  # the data are fixed; splits vary by seed
        X = np.concatenate([sine_wave(N_NORMAL, rng), off_wave(N_ANOMALY, rng)]).astype(np.float32)
        y = np.r_[np.zeros(N_NORMAL, int), np.ones(N_ANOMALY, int)]
        return LabeledData(X=X, y=y, class_names=self.classes, anomaly_classes=(1,))
