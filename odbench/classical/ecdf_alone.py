"""ECOD's and COPOD's score of each test point taken alone with the training data, for all points at once.

pyod's ECOD and COPOD score a batch by appending it to the training rows
and computing per-feature ECDFs and skewness over the union, so a point's
score moves with the rest of its batch.  odbench scores each point alone
(``PyodMethod.point_by_point``); called once per point, pyod re-sorts the
whole training set every time (about 8 ms a point at 7,000 x 6).  Here the
same numbers come from one sort: with the training column sorted, the ECDF
of the union at a point ``x`` is ``(#train <= x + 1) / (n + 1)`` (pyod's
``column_ecdf`` counts ties in), and the union's skewness follows from the
training column's central moments updated with ``x``.  ``tests/test_pyod_zoo.py``
checks the result against pyod's own batch-of-one scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_MODULES = {"pyod.models.ecod": "ecod", "pyod.models.copod": "copod"}


def scores_alone(detector: Any, X: np.ndarray) -> np.ndarray | None:
    """Each row of ``X`` scored as ``detector.decision_function(row[None])`` would; None for other detectors."""
    kind = _MODULES.get(type(detector).__module__)
    if kind is None or getattr(detector, "n_jobs", 1) != 1 or not hasattr(detector, "X_train"):
        return None  # pyod's parallel path and unfitted detectors go through pyod itself
    train = np.asarray(detector.X_train, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    n = len(train)
    ordered = np.sort(train, axis=0)
    columns = range(train.shape[1])
    at_most = np.stack([np.searchsorted(ordered[:, j], X[:, j], side="right") for j in columns], axis=1)
    at_least = n - np.stack([np.searchsorted(ordered[:, j], X[:, j], side="left") for j in columns], axis=1)
    left = -np.log((at_most + 1) / (n + 1))
    right = -np.log((at_least + 1) / (n + 1))
    skew_sign = np.sign(_union_skewness(train, X))
    skewed = left * -np.sign(skew_sign - 1) + right * np.sign(skew_sign + 1)
    if kind == "ecod":
        return np.maximum(skewed, np.maximum(left, right)).sum(axis=1)
    return np.maximum(skewed, (left + right) / 2).sum(axis=1)


def _union_skewness(train: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Per row of ``X`` and feature: ``scipy.stats.skew`` of the training column with that one value added."""
    n = len(train)
    centre = train.mean(axis=0)  # moments about the training mean keep the sums small (no cancellation)
    y = train - centre
    s1, s2, s3 = y.sum(axis=0), (y**2).sum(axis=0), (y**3).sum(axis=0)
    v = X - centre
    t1, t2, t3 = s1 + v, s2 + v**2, s3 + v**3
    mean = t1 / (n + 1)
    m2 = t2 / (n + 1) - mean**2
    m3 = t3 / (n + 1) - 3 * mean * t2 / (n + 1) + 2 * mean**3
    # scipy's skew is NaN where the variance is zero to its resolution, and pyod turns that NaN into 0
    zero = m2 <= (np.finfo(np.float64).resolution * (mean + centre)) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(zero, 0.0, m3 / m2**1.5)
