"""Figures: the paper's Figure 1, and the report's figures drawn from the store.

Figure 1 (``figure1``): the paper's Figure 1(b)-(d), drawn from what
``odbench.engine.figure1.measure`` fitted and scored (this module fits
nothing).  Blue: accepted as normal, red: rejected, at the threshold each
panel read off its validation split; on the OCLN panels a dashed line marks
where the measured ``recall@fpr5`` puts its threshold on the test split.
Yellow: the training positives, in the data's original coordinates.

Run it as ``odbench reproduce figure1`` or ``python scripts/figure1.py
[out.png] [--seed 0]`` (under a minute on two CPU cores).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from odbench.engine.store import Store
from odbench.views.curves import MAIN_PHASE, MeanCurves, Phase, averaged_over, mean_curves, phases, pooled_ranks
from odbench.views.ranks import Ranking

if TYPE_CHECKING:  # only the types: drawing a report never imports the fitting code (nor torch)
    from odbench.engine.figure1 import Figure1, Panel


def panel(ax: Any, measured: Panel) -> None:
    """Regions accepted (score < ``accept``) in the plane of coordinates 1-2, and the training positives."""
    gx, gy = np.meshgrid(measured.xs, measured.ys)
    levels = [-np.inf, measured.accept, np.inf]
    ax.contourf(gx, gy, measured.scores, levels=levels, colors=["#4a7fd4", "#e05a4f"], alpha=0.85)
    if measured.measured is not None:
        ax.contour(gx, gy, measured.scores, levels=[measured.measured], colors="k", linestyles="--", linewidths=1.0)
    pts = measured.points
    ax.scatter(pts[:, 0], pts[:, 1], s=3, c="#f2d31b", edgecolors="none")
    ax.set_title(measured.title, fontsize=9)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")


def figure1(measured: Figure1, out: Path) -> list[str]:
    """Draw ``measured`` to ``out`` (PNG); returns its numbers, one line per panel, and where it went."""
    plt = _pyplot()
    started = time.perf_counter()
    fig, axes = plt.subplots(1, len(measured.panels), figsize=(5 * len(measured.panels), 4.2))
    for ax, one in zip(np.atleast_1d(axes), measured.panels):
        panel(ax, one)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    seconds = measured.seconds + time.perf_counter() - started
    return [*(one.summary for one in measured.panels), f"wrote {out} ({seconds:.0f} s)"]


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
