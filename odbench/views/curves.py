"""The numbers behind the report's per-dataset figures: averaged curves, pooled scores, training phases.

Drawing lives in ``odbench.views.plots``; this module only computes, so a
test can check what a figure shows without reading pixels.

* ROC and precision-recall curves of several jobs (seeds, normal classes)
  are averaged *vertically*: each job's curve, from scikit-learn's
  ``roc_curve`` / ``precision_recall_curve``, is read off at the same false
  positive rates (ROC) or recalls (PR), and the mean and standard
  deviation are taken at each grid point.
* Scores of different jobs are on different scales (a DeepSVDD distance, a
  kNN distance on another class's standardization), so they are pooled only
  after each job's test scores are turned into percentile ranks.
* A deep job's history holds every training phase in the order it ran: the
  main phase under plain keys (``loss``, ``val_auroc``), an earlier one
  under its phase's prefix (``pretrain_loss``, from
  ``odbench.deep.decoders.pretrain_encoder``).  ``phases`` splits it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: points of the common grids (false positive rate, recall) that curves are averaged on
CURVE_GRID = 201
#: the phase whose history rows have plain keys: the main training, the one that selects an epoch
MAIN_PHASE = "train"


def roc_on_grid(labels: np.ndarray, scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """True positive rate at each false positive rate of ``grid`` (anomalies, label 1, are positives).

    Where several ROC points share a false positive rate (a vertical step),
    the highest true positive rate counts: the curve is read just after the
    step, so the grid's value at an FPR is what a threshold reaching it finds.
    Between points the curve is linear, as the trapezoidal AUROC assumes.
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    # fpr never falls: between two distinct rates np.interp's bracket is the diagonal the curve really draws
    values = np.interp(grid, fpr, tpr)
    # on a grid rate that is itself a vertical step, the top of the step (the last point at that rate)
    last = np.searchsorted(fpr, grid, side="right") - 1
    on_step = fpr[last] == grid
    values[on_step] = tpr[last[on_step]]
    return values


def pr_on_grid(labels: np.ndarray, scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Interpolated precision at each recall of ``grid``: the best precision at that recall or more.

    Linear interpolation between precision-recall points would draw
    precisions no threshold reaches (Davis and Goadrich, 2006); the
    "interpolated precision" step (as in PASCAL VOC) never does.
    """
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    rising_recall, precision = recall[::-1], precision[::-1]  # scikit-learn lists recall falling
    best_from = np.maximum.accumulate(precision[::-1])[::-1]  # best_from[j]: the best precision of points j, j+1, ...
    # the first point whose recall reaches each grid recall; every later point has at least that recall
    first = np.searchsorted(rising_recall, grid, side="left")
    return best_from[np.minimum(first, len(best_from) - 1)]


@dataclass
class MeanCurves:
    """ROC and PR curves of one table column on one dataset, averaged over ``n_jobs`` jobs."""

    grid: np.ndarray
    roc_mean: np.ndarray
    roc_std: np.ndarray
    pr_mean: np.ndarray
    pr_std: np.ndarray
    n_jobs: int
    #: the jobs' keys, in the order averaged (a test or a caption can name them)
    keys: list[str] = field(default_factory=list)


def mean_curves(jobs: Sequence[tuple[str, np.ndarray, np.ndarray]], grid_points: int = CURVE_GRID) -> MeanCurves | None:
    """Vertical averages of the ROC and PR curves of ``jobs`` (``(key, labels, scores)`` each).

    A job whose test split holds one class only has no curve and is left
    out; None when no job is left.
    """
    grid = np.linspace(0.0, 1.0, grid_points)
    rocs, prs, keys = [], [], []
    for key, labels, scores in jobs:
        if len(np.unique(labels)) < 2:
            continue
        rocs.append(roc_on_grid(labels, scores, grid))
        prs.append(pr_on_grid(labels, scores, grid))
        keys.append(key)
    if not keys:
        return None
    roc, pr = np.vstack(rocs), np.vstack(prs)
    return MeanCurves(grid, roc.mean(axis=0), roc.std(axis=0), pr.mean(axis=0), pr.std(axis=0), len(keys), keys)


def percentile_ranks(scores: np.ndarray) -> np.ndarray:
    """Each score's mid-rank among ``scores``, scaled into (0, 1): 0 least, 1 most anomalous (ties share a rank).

    What makes scores of different jobs comparable enough to pool: only
    their order within their own test split is kept.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    return (rankdata(scores, method="average") - 0.5) / len(scores)


def pooled_ranks(jobs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(normal, anomalous) percentile ranks of every job's test scores (``(labels, scores)`` each), pooled."""
    normal, anomalous = [], []
    for labels, scores in jobs:
        ranks = percentile_ranks(scores)
        normal.append(ranks[labels == 0])
        anomalous.append(ranks[labels == 1])
    empty = np.zeros(0)
    return (np.concatenate(normal) if normal else empty), (np.concatenate(anomalous) if anomalous else empty)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def averaged_over(rows: pd.DataFrame) -> str:
    """What a mean over ``rows`` (tidy-frame rows of one column) runs over: "2 seeds x 5 classes", "3 seeds".

    When some (seed, class) jobs are missing, the job count comes first:
    "7 jobs: 2 seeds, 4 classes".
    """
    n_seeds = rows["repetition"].nunique()
    seeds = _count(n_seeds, "seed", "seeds")
    n_classes = rows["normal_class"].dropna().nunique()
    if n_classes == 0:
        return seeds if n_seeds == len(rows) else f"{_count(len(rows), 'job', 'jobs')}: {seeds}"
    classes = _count(n_classes, "class", "classes")
    if n_seeds * n_classes == len(rows):
        return f"{seeds} x {classes}"
    return f"{_count(len(rows), 'job', 'jobs')}: {seeds}, {classes}"


@dataclass
class Phase:
    """One training phase of a job's history: its name and its rows, keys without the phase's prefix."""

    name: str
    rows: list[dict[str, float]]


def phases(history: Sequence[dict[str, float]]) -> list[Phase]:
    """A job's history split into its training phases, in the order they ran.

    A row with a plain ``loss`` belongs to the main phase (``MAIN_PHASE``);
    a row with ``<phase>_loss`` to that phase, its keys stripped of
    ``<phase>_``.  Rows with no loss at all are not curves and are skipped.
    A record written before pretraining was drawn has only main rows: one phase.
    """
    found: list[Phase] = []
    for row in history:
        if "loss" in row:
            name, rest = MAIN_PHASE, dict(row)
        else:
            prefixed = sorted(k[: -len("_loss")] for k in row if k.endswith("_loss"))
            if not prefixed:
                continue
            name = prefixed[0]
            start = f"{name}_"
            rest = {k[len(start) :]: v for k, v in row.items() if k.startswith(start)}
            rest["epoch"] = row["epoch"]  # the epoch the phase reported (its own count, from 0)
        if not found or found[-1].name != name:
            found.append(Phase(name, []))
        found[-1].rows.append(rest)
    return found
