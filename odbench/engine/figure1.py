"""The numbers behind the paper's Figure 1(b)-(d): DROCC and DROCC-LF fitted on the sine waves, scored on a grid.

(b) DROCC on ``sine2d``; (c) DROCC and (d) DROCC-LF on ``sine10d``, in the
plane of its first two coordinates (coordinates 3-10 held at their mean, 0
once standardized).  Tasks are built as the benchmark builds them (the
dataset's default protocol, seed 0, then ``odbench.protocols.scaling.standardize``).
A panel's grid is in the data's original coordinates; it is standardized
with the training normals' mean and standard deviation, as ``standardize``
does, before it is scored.

The threshold that splits accepted from rejected is read off the
*validation* split (no test label): (b) the score that accepts 95% of the
held-out normals, or of the training normals where none are held out
(sine2d's contamination split has no validation split); (c), (d) the
score that accepts 5% of the validation negatives (recall@fpr5's rule; these
are the limited, far negatives).  The network's own logit-0 boundary is not
used: AUROC ignores it and it is biased by the adversarial class balance.
On the OCLN panels ``measured`` is where the measured ``recall@fpr5`` puts
its threshold (the score accepting 5% of the test negatives, close negatives
included): an evaluator's view of the test split, never fed back into training.

``odbench.views.plots.figure1`` draws what :func:`measure` returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from odbench.core.contracts import FitContext, Method, Task
from odbench.core.download import dataset_root
from odbench.core.metrics import evaluate
from odbench.engine.registry import Registry
from odbench.protocols import get_protocol
from odbench.protocols.scaling import standardize

#: DROCC on the 2-D wave: the small radius the standardized wave needs (the
#: settings of tests/test_drocc.py's sine2d claim)
SINE2D = {
    "epochs": 60, "only_ce_epochs": 5, "radius": 0.2, "ascent_step_size": 0.05, "ascent_num_steps": 10,
    "lr": 1e-2, "hidden": 128, "batch_size": 32,
}  # fmt: skip
#: DROCC and DROCC-LF on the noisy wave: one setting for both (the settings
#: of tests/test_drocc.py's sine10d claim)
SINE10D = {
    "epochs": 40, "only_ce_epochs": 5, "radius": 0.7, "ascent_step_size": 0.1, "ascent_num_steps": 10,
    "lr": 1e-2, "hidden": 128, "batch_size": 64,
}  # fmt: skip
GRID = 300  # points per axis


@dataclass(frozen=True)
class Panel:
    """One panel: a fitted method's scores on a grid of the plane of coordinates 1-2, and where it accepts.

    ``scores[i, j]`` is the score at ``(xs[j], ys[i])``; a point is accepted
    as normal when its score is below ``accept``.  ``points`` are the training
    positives' first two coordinates; ``summary`` the panel's measured numbers.
    """

    title: str
    summary: str
    xs: np.ndarray
    ys: np.ndarray
    scores: np.ndarray
    accept: float
    measured: float | None
    points: np.ndarray


@dataclass(frozen=True)
class Figure1:
    """The three panels, and the seconds their fits and scoring took."""

    panels: list[Panel]
    seconds: float


def build(registry: Registry, dataset: str, seed: int) -> tuple[Task, Task, np.ndarray, np.ndarray]:
    """(raw task, standardized task, mean, std): the benchmark's task and its scaling."""
    ds = registry.dataset(dataset)
    data = ds.load(dataset_root(ds.name))  # generated data: the folder stays unused
    protocol = get_protocol(ds.default_protocol)
    raw = protocol.make_task(data, ds, protocol.normal_classes(ds, data.class_names)[0], seed)
    ref = raw.train.normal.astype(np.float64)
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    std = np.where(std < 1e-8, 1.0, std)  # as standardize does
    return raw, standardize(raw), mean, std


def fit(registry: Registry, name: str, task: Task, seed: int, params: Mapping[str, Any]) -> Method:
    cls = registry.method(name)
    return cls(**{**cls.default_params(task.info), **params}).fit(task.for_fit(), FitContext(seed=seed))


def accepting(scores: np.ndarray, fraction: float) -> float:
    """The threshold that accepts (score strictly below) ``fraction`` of ``scores``,
    as ``odbench.core.metrics.recall_at_fpr`` reads it."""
    ordered = np.sort(scores)
    return float(ordered[min(int(np.floor(fraction * len(ordered))), len(ordered) - 1)])


def grid_scores(
    method: Method, raw: Task, mean: np.ndarray, std: np.ndarray, grid: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ys, scores): ``method``'s scores on a grid of the plane of coordinates 1-2, in original units."""
    pts = raw.train.normal
    xs = np.linspace(pts[:, 0].min() - 0.5, pts[:, 0].max() + 0.5, grid)
    ys = np.linspace(-2.2, 2.2, grid)
    gx, gy = np.meshgrid(xs, ys)
    points = np.zeros((gx.size, len(mean)))
    points[:, 0], points[:, 1] = gx.ravel(), gy.ravel()
    points[:, 2:] = mean[2:]  # the other coordinates at their mean: 0 once standardized
    scores = method.anomaly_score(((points - mean) / std).astype(np.float32)).reshape(gx.shape)
    return xs, ys, np.asarray(scores)


def measure(
    seed: int = 0, registry: Registry | None = None, *, overrides: Mapping[str, Any] | None = None, grid: int = GRID
) -> Figure1:
    """Fit the three panels' methods and score their grids.

    ``overrides`` replace parameters of every panel (a test's short
    schedule); the figure itself uses :data:`SINE2D` and :data:`SINE10D`.
    """
    registry = registry or Registry()
    started = time.perf_counter()
    panels = []

    raw, task, mean, std = build(registry, "sine2d", seed)
    drocc = fit(registry, "drocc", task, seed, {**SINE2D, **(overrides or {})})
    m = evaluate(("auroc",), task.test.y, drocc.anomaly_score(task.test.X))
    xs, ys, scores = grid_scores(drocc, raw, mean, std, grid)
    held_out = task.val.normal if len(task.val) else task.train.normal  # never the test split's normals
    panels.append(Panel(
        title=f"(b) DROCC, sine2d (AUROC {m['auroc']:.3f})", summary=f"(b) DROCC on sine2d: AUROC {m['auroc']:.3f}",
        xs=xs, ys=ys, scores=scores, accept=accepting(drocc.anomaly_score(held_out), 0.95), measured=None,
        points=raw.train.normal[:, :2],
    ))  # fmt: skip

    raw, task, mean, std = build(registry, "sine10d", seed)
    for name, label in [("drocc", "(c) DROCC"), ("drocc_lf", "(d) DROCC-LF")]:
        method = fit(registry, name, task, seed, {**SINE10D, **(overrides or {})})
        s = method.anomaly_score(task.test.X)
        m = evaluate(("recall@fpr5", "auroc"), task.test.y, s)
        line = f"{label} on sine10d: recall@fpr5 {m['recall@fpr5']:.3f}, AUROC {m['auroc']:.3f}"
        sigma = method.input_weights()
        if sigma is not None:
            line += f", sigma {np.round(sigma, 2).tolist()}"
        xs, ys, scores = grid_scores(method, raw, mean, std, grid)
        panels.append(Panel(
            title=f"{label}, sine10d coords 1-2\nrecall@fpr5 {m['recall@fpr5']:.3f}, AUROC {m['auroc']:.3f}",
            summary=line, xs=xs, ys=ys, scores=scores,
            accept=accepting(method.anomaly_score(task.val.X)[task.val.y == 1], 0.05),
            measured=accepting(s[task.test.y == 1], 0.05),  # recall@fpr5's threshold on test
            points=raw.train.normal[:, :2],
        ))  # fmt: skip
    return Figure1(panels, time.perf_counter() - started)
