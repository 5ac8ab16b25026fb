"""Figures: the paper's Figure 1, and the report's figures drawn from the store.

Figure 1 (``figure1``): the paper's Figure 1(b)-(d), drawn from what odbench measures.

(b) DROCC's decision regions on ``sine2d`` with its training points;
(c) DROCC and (d) DROCC-LF on ``sine10d``, in the plane of its first two
coordinates (coordinates 3-10 held at 0, their standardized mean), with the
training positives.  Tasks are built as the benchmark builds them (the
dataset's default protocol, seed 0, then ``odbench.protocols.scaling.standardize``)
and each panel's test metrics are printed.  Axes are the data's original
coordinates: the grid is standardized with the training normals' mean and
standard deviation, as ``standardize`` does, before it is scored.

Blue: accepted as normal, red: rejected, at a threshold read off the
*validation* split (no test label): (b) the score that accepts 95% of the
held-out normals (sine2d's validation split has no anomalies); (c), (d) the
score that accepts 5% of the validation negatives (recall@fpr5's rule; these
are the limited, far negatives).  The network's own logit-0 boundary is not
used: AUROC ignores it and it is biased by the adversarial class balance.
On the OCLN panels a dashed line marks where the measured ``recall@fpr5``
puts its threshold (the score accepting 5% of the test negatives, close
negatives included): an evaluator's view of the test split, never fed back
into training.

Run it as ``odbench reproduce figure1`` or ``python scripts/figure1.py
[out.png] [--seed 0]`` (under a minute on two CPU cores).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from odbench.core.contracts import FitContext, Method, Task
from odbench.core.download import dataset_root
from odbench.core.metrics import evaluate
from odbench.engine.registry import Registry
from odbench.engine.store import Store
from odbench.protocols import get_protocol
from odbench.protocols.scaling import standardize
from odbench.views.curves import MAIN_PHASE, MeanCurves, Phase, averaged_over, mean_curves, phases, pooled_ranks
from odbench.views.ranks import Ranking

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


def fit(registry: Registry, name: str, task: Task, seed: int, params: dict) -> Method:
    cls = registry.method(name)
    return cls(**{**cls.default_params(task.info), **params}).fit(task.for_fit(), FitContext(seed=seed))


def accepting(scores: np.ndarray, fraction: float) -> float:
    """The threshold that accepts (score strictly below) ``fraction`` of ``scores``,
    as ``odbench.core.metrics.recall_at_fpr`` reads it."""
    ordered = np.sort(scores)
    return float(ordered[min(int(np.floor(fraction * len(ordered))), len(ordered) - 1)])


def panel(
    ax, method, raw: Task, mean: np.ndarray, std: np.ndarray, title: str, accept: float, dashed: float | None
) -> None:
    """Regions of ``method`` accepted (score < ``accept``) in the plane of coordinates 1-2."""
    pts = raw.train.normal
    x0, x1 = pts[:, 0].min() - 0.5, pts[:, 0].max() + 0.5
    gx, gy = np.meshgrid(np.linspace(x0, x1, GRID), np.linspace(-2.2, 2.2, GRID))
    grid = np.zeros((gx.size, len(mean)))
    grid[:, 0], grid[:, 1] = gx.ravel(), gy.ravel()
    grid[:, 2:] = mean[2:]  # the other coordinates at their mean: 0 once standardized
    score = method.anomaly_score(((grid - mean) / std).astype(np.float32)).reshape(gx.shape)
    ax.contourf(gx, gy, score, levels=[-np.inf, accept, np.inf], colors=["#4a7fd4", "#e05a4f"], alpha=0.85)
    if dashed is not None:
        ax.contour(gx, gy, score, levels=[dashed], colors="k", linestyles="--", linewidths=1.0)
    ax.scatter(pts[:, 0], pts[:, 1], s=3, c="#f2d31b", edgecolors="none")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")


def figure1(out: Path, seed: int = 0, registry: Registry | None = None) -> list[str]:
    """Draw the figure to ``out`` (PNG); returns the measured numbers, one line per panel."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    registry = registry or Registry()
    lines = []
    started = time.perf_counter()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))

    raw, task, mean, std = build(registry, "sine2d", seed)
    drocc = fit(registry, "drocc", task, seed, SINE2D)
    m = evaluate(("auroc",), task.test.y, drocc.anomaly_score(task.test.X))
    lines.append(f"(b) DROCC on sine2d: AUROC {m['auroc']:.3f}")
    accept = accepting(drocc.anomaly_score(task.val.X), 0.95)
    panel(axes[0], drocc, raw, mean, std, f"(b) DROCC, sine2d (AUROC {m['auroc']:.3f})", accept, None)

    raw, task, mean, std = build(registry, "sine10d", seed)
    for ax, name, label in [(axes[1], "drocc", "(c) DROCC"), (axes[2], "drocc_lf", "(d) DROCC-LF")]:
        method = fit(registry, name, task, seed, SINE10D)
        s = method.anomaly_score(task.test.X)
        m = evaluate(("recall@fpr5", "auroc"), task.test.y, s)
        accept = accepting(method.anomaly_score(task.val.X)[task.val.y == 1], 0.05)
        measured = accepting(s[task.test.y == 1], 0.05)  # recall@fpr5's threshold on test
        line = f"{label} on sine10d: recall@fpr5 {m['recall@fpr5']:.3f}, AUROC {m['auroc']:.3f}"
        sigma = method.input_weights()
        if sigma is not None:
            line += f", sigma {np.round(sigma, 2).tolist()}"
        lines.append(line)
        title = f"{label}, sine10d coords 1-2\nrecall@fpr5 {m['recall@fpr5']:.3f}, AUROC {m['auroc']:.3f}"
        panel(ax, method, raw, mean, std, title, accept, measured)

    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    lines.append(f"wrote {out} ({time.perf_counter() - started:.0f} s)")
    return lines


# -- the report's figures, drawn from the store (``odbench report --html / --plots``) ------------------------------
#
# Every function takes the tidy frame's successful rows of one (dataset,
# protocol), ``column`` (each row's table column: method or method[config])
# and the store for raw scores and histories; it returns a matplotlib Figure
# (Agg) or None when it has nothing to draw.


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def palette(columns: list[str]) -> dict[str, Any]:
    """One colour per table column, the same in every figure of a report."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(columns) <= 10 else "tab20"]
    return {c: cmap(i % cmap.N) for i, c in enumerate(columns)}


def _first_job(rows: pd.DataFrame) -> pd.Series:
    """The job a per-job figure shows: the first normal class (in dataset order), repetition 0."""
    return rows.sort_values(["_class_order", "repetition"]).iloc[0]


def _columns(rows: pd.DataFrame, column: pd.Series) -> Iterator[tuple[str, pd.DataFrame]]:
    """(column name, its rows) in report order: one configuration each, never two averaged together."""
    names = column[rows.index]
    for name in dict.fromkeys(names):
        yield name, rows[names == name]


def column_curves(rows: pd.DataFrame, store: Store) -> MeanCurves | None:
    """The mean ROC and PR curves of one column's jobs (``rows``: its tidy-frame rows)."""
    jobs = []
    for key in rows["key"]:
        arrays = store.scores(key)
        jobs.append((key, arrays["labels"], arrays["scores"]))
    return mean_curves(jobs)


def _band(ax: Any, grid: np.ndarray, mean: np.ndarray, std: np.ndarray, color: Any) -> None:
    ax.fill_between(grid, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color=color, alpha=0.15, linewidth=0)


def roc_pr_figure(rows: pd.DataFrame, column: pd.Series, store: Store, colors: dict[str, Any], title: str) -> Any:
    """ROC and precision-recall curves per column: the vertical mean over its jobs (seeds and classes), ±1 std band."""
    plt = _pyplot()
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.6))
    spans = []
    for name, mine in _columns(rows, column):
        curves = column_curves(mine, store)
        if curves is None:
            continue
        used = mine[mine["key"].isin(curves.keys)]
        over = averaged_over(used)
        spans.append(over)
        auroc = f"AUROC {used['auroc'].mean():.3f}, " if "auroc" in used else ""
        roc_ax.plot(curves.grid, curves.roc_mean, color=colors[name], label=f"{name} ({auroc}mean of {over})")
        pr_ax.plot(curves.grid, curves.pr_mean, color=colors[name], label=name)
        if curves.n_jobs > 1:
            _band(roc_ax, curves.grid, curves.roc_mean, curves.roc_std, colors[name])
            _band(pr_ax, curves.grid, curves.pr_mean, curves.pr_std, colors[name])
    roc_ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    roc_ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate (anomalies found)",
        title="ROC",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    pr_ax.set(
        xlabel="recall (anomalies found)",
        ylabel="interpolated precision",
        title="precision-recall",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    roc_ax.legend(fontsize=8, loc="lower right")
    over = f"mean of {spans[0]}" if len(set(spans)) == 1 else "mean over each column's jobs (legend)"
    fig.suptitle(f"{title}: {over} per column, vertical averaging; band: ±1 std", fontsize=11)
    fig.tight_layout()
    return fig


#: bins of the pooled percentile-rank histograms
RANK_BINS = np.linspace(0.0, 1.0, 41)


def column_ranks(rows: pd.DataFrame, store: Store) -> tuple[np.ndarray, np.ndarray]:
    """(normal, anomalous) test-score percentile ranks of one column's jobs, each job ranked on its own, pooled."""
    jobs = []
    for key in rows["key"]:
        arrays = store.scores(key)
        jobs.append((arrays["labels"], arrays["scores"]))
    return pooled_ranks(jobs)


def histogram_figure(rows: pd.DataFrame, column: pd.Series, store: Store, title: str) -> Any:
    """Test-score histograms of normal vs anomalous points, one panel per column, pooled over its jobs.

    Each job's scores become percentile ranks within its own test split
    before pooling: raw scores of two classes or seeds are on different scales.
    """
    plt = _pyplot()
    columns = list(_columns(rows, column))
    ncols = min(4, len(columns))
    nrows = -(-len(columns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows), squeeze=False)
    for ax, (name, mine) in zip(axes.ravel(), columns):
        normal, anomalous = column_ranks(mine, store)
        for ranks, colour, label in ((normal, "#4a7fd4", "normal"), (anomalous, "#e05a4f", "anomalous")):
            if len(ranks):  # a density of no points is 0/0
                ax.hist(ranks, bins=RANK_BINS, density=True, alpha=0.6, color=colour, label=label)
        ax.set_title(f"{name}: {averaged_over(mine)}", fontsize=8)
        ax.set_xlabel("score's percentile rank in its job's test split", fontsize=7)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(columns) :]:
        ax.set_visible(False)
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle(f"{title}: test scores, normal vs anomalous (each job rank-normalized, then pooled)", fontsize=11)
    fig.tight_layout()
    return fig


#: how a figure names a training phase (``odbench.views.curves.phases``); others go by their own name
PHASE_LABELS = {"pretrain": "pretraining", MAIN_PHASE: "training"}


def _phase_panel(ax: Any, phase: Phase, job: pd.Series) -> None:
    """One phase's loss per epoch; the main phase adds its selection metric and the epoch it kept."""
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in phase.rows]
    ax.plot(
        epochs,
        [row["loss"] for row in phase.rows],
        color="#333",
        label=f"{PHASE_LABELS.get(phase.name, phase.name)} loss",
    )
    ax.set_xlabel(f"{PHASE_LABELS.get(phase.name, phase.name)} epoch", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    handles = ax.get_legend_handles_labels()[0]
    if phase.name == MAIN_PHASE:
        selected = sorted(k for k in phase.rows[0].keys() | phase.rows[-1].keys() if k.startswith(("val_", "oracle_")))
        if selected:
            twin = ax.twinx()
            metric = selected[0]
            points = [(row["epoch"], row[metric]) for row in phase.rows if row.get(metric) is not None]
            (line,) = twin.plot(*zip(*points), color="#e05a4f", marker=".", label=f"{metric} (selection)")
            twin.set_ylabel(metric, fontsize=8, color="#e05a4f")
            twin.tick_params(labelsize=7)
            handles.append(line)
        kept = f"kept: epoch {int(job['selected_epoch'])} ({job['selected_by']})"
        handles.append(ax.axvline(job["selected_epoch"], color="#2a9d3a", linestyle="--", label=kept))
    else:  # an earlier phase hands its last epoch on (pretraining selects nothing: odbench.deep.decoders)
        handles.append(
            ax.axvline(epochs[-1], color="0.5", linestyle=":", label=f"handed on: epoch {int(epochs[-1])} (last)")
        )
    ax.legend(handles=handles, fontsize=7, loc="best")


def training_figure(rows: pd.DataFrame, column: pd.Series, store: Store, title: str) -> Any:
    """Per-epoch curves of the deep columns (first job each), every phase in the order it ran, selected epoch marked.

    One row per column, one panel per phase (pretraining, then training),
    main phases aligned in the last panel column.
    """
    deep = rows[rows["selected_epoch"].notna()] if "selected_epoch" in rows else rows.iloc[:0]
    shown = []
    for name, mine in _columns(deep, column):
        job = _first_job(mine)
        found = phases((store.read(job["key"]) or {}).get("history", []))
        if found:
            shown.append((name, job, found))
    if not shown:
        return None
    plt = _pyplot()
    ncols = max(len(found) for _, _, found in shown)
    fig, axes = plt.subplots(len(shown), ncols, figsize=(5.2 * ncols, 3.2 * len(shown)), squeeze=False)
    for panels, (name, job, found) in zip(axes, shown):
        for ax in panels[: ncols - len(found)]:
            ax.set_visible(False)
        cls = "" if pd.isna(job["normal_class"]) else f", class {job['normal_class']}"
        for ax, phase in zip(panels[ncols - len(found) :], found):
            _phase_panel(ax, phase, job)
            what = PHASE_LABELS.get(phase.name, phase.name)
            ax.set_title(f"{name}{cls}, rep {job['repetition']}: {what} ({len(phase.rows)} epochs)", fontsize=8)
    most = max((found for _, _, found in shown), key=len)  # the fullest sequence of phases names their order
    order = " then ".join(PHASE_LABELS.get(p.name, p.name) for p in most)
    fig.suptitle(f"{title}: per-epoch curves of the deep methods ({order}, left to right)", fontsize=11)
    fig.tight_layout()
    return fig


def seed_box_figure(rows: pd.DataFrame, column: pd.Series, colors: dict[str, Any], title: str) -> Any:
    """Box plots of the headline metric over repetitions (each the mean over normal classes), one box per column.

    With a single repetition the boxes show the spread over normal classes
    instead, and the title says so.
    """
    plt = _pyplot()
    metric = rows["headline_metric"].iloc[0]
    frame = rows.assign(column=column[rows.index])
    seeds = frame["repetition"].nunique() > 1
    names = list(dict.fromkeys(frame["column"]))
    data = []
    for name in names:
        mine = frame[frame["column"] == name]
        values = mine.groupby("repetition")[metric].mean() if seeds else mine[metric]
        data.append(values.dropna().to_numpy())
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2), 3.6))
    boxes = ax.boxplot(data, patch_artist=True, widths=0.6)
    for patch, name in zip(boxes["boxes"], names):
        patch.set_facecolor(colors[name])
        patch.set_alpha(0.55)
    rng = np.random.default_rng(0)  # jitter only: where the points sit, not what they are
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=10, color="k", zorder=3)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    per_class = frame["normal_class"].notna().any()
    if seeds:
        what = "over repetitions" + (" (each: mean over normal classes)" if per_class else "")
    else:
        what = "over normal classes (one repetition)" if per_class else "(one repetition)"
    ax.set_title(f"{title}: {metric}\n{what}", fontsize=9)
    fig.tight_layout()
    return fig


def critical_difference_figure(ranking: Ranking) -> Any:
    """scikit-posthocs' critical-difference diagram of a ranking (Nemenyi, alpha 0.05)."""
    import scikit_posthocs as sp

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(ranking.average_ranks) + 1.6))
    sp.critical_difference_diagram(ranking.average_ranks, ranking.nemenyi_p, ax=ax)
    ax.set_title(
        f"average rank over {ranking.n_tasks} tasks (1 = best); bars join methods Nemenyi cannot tell apart "
        f"(alpha 0.05); Friedman p = {ranking.friedman_p:.3g}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
