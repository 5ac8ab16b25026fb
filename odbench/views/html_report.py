"""The report's figures, and the self-contained HTML file that holds them with the tables.

``figures(frame, store)`` draws every figure of a results folder (named, in
report order); ``html_report(...)`` inlines them as base64 PNG beside the
tables, the critical-difference ranking and the reproduction gap tables,
so one file can be attached to a review.  ``write_plots`` saves the same
figures as PNG and PDF.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from odbench.engine.store import Store
from odbench.views import plots
from odbench.views.ranks import MIN_METHODS, MIN_TASKS, Ranking, rank_methods, task_values
from odbench.views.tables import column_labels, html_document


@dataclass
class Figure:
    """A drawn figure: a file-safe ``name``, a ``caption`` and the matplotlib figure."""

    name: str
    section: str
    caption: str
    figure: Any


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def ranking(frame: pd.DataFrame) -> Ranking | None:
    """The ranking of the table columns over every task of the frame (see ``odbench.views.ranks``)."""
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return None
    column, _ = column_labels(ok.assign(cls=ok["normal_class"].fillna("")), ["dataset", "protocol", "cls"])
    return rank_methods(task_values(ok, column))


def figures(frame: pd.DataFrame, store: Store, class_order: dict[str, list[str]] | None = None) -> Iterator[Figure]:
    """Every figure of the report, one at a time (each is closed by the caller after use)."""
    ok = frame[frame["status"] == "ok"].copy()
    if ok.empty:
        return
    ok["cls"] = ok["normal_class"].fillna("")
    found = ranking(frame)
    if found is not None:
        yield Figure(
            "critical_difference",
            "Ranking",
            "Critical-difference diagram (Friedman + Nemenyi).",
            plots.critical_difference_figure(found),
        )
    # columns as the dataset's table names them: a method is split only where its cells mix configurations
    column = pd.concat([column_labels(rows, ["cls"])[0] for _, rows in ok.groupby(["dataset", "protocol"])])
    colors = plots.palette(sorted(set(column)))
    for (dataset, protocol), rows in ok.groupby(["dataset", "protocol"], sort=True):
        order = (class_order or {}).get(dataset, [])
        rows = rows.assign(_class_order=[order.index(c) if c in order else len(order) for c in rows["cls"]])
        rows = rows.sort_values(["_class_order", "cls"])
        title = f"{dataset} ({protocol})"
        slug = _slug(f"{dataset}_{protocol}")
        yield Figure(f"{slug}_roc_pr", title, "ROC and precision-recall curves per column: each job's curve read off at common false positive "
                     "rates (recalls), then averaged (the legend says over what); band: ±1 std; precision interpolated "
                     "(the best at that recall or more).",
                     plots.roc_pr_figure(rows, column, store, colors, title))  # fmt: skip
        yield Figure(f"{slug}_histograms", title, "Test anomaly scores of normal and anomalous points, pooled over each column's "
                     "jobs after ranking each job's scores within its own test split (raw scores of different jobs are on "
                     "different scales).",
                     plots.histogram_figure(rows, column, store, title))  # fmt: skip
        curves = plots.training_figure(rows, column, store, title)
        if curves is not None:
            yield Figure(
                f"{slug}_training",
                title,
                "Per-epoch loss of every training phase in the order it ran (pretraining, then training) and "
                "the selection metric, for each deep column's first class, repetition 0; dashed: the epoch kept.",
                curves,
            )
        yield Figure(
            f"{slug}_seeds",
            title,
            "The headline metric's spread over repetitions (or over classes with one repetition, as the title says).",
            plots.seed_box_figure(rows, column, colors, title),
        )


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_plots(drawn: list[Figure], folder: Path) -> list[Path]:
    """Figures (from :func:`figures`) as ``folder/<name>.png`` and ``.pdf``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fig in drawn:
        for suffix in ("png", "pdf"):
            path = folder / f"{fig.name}.{suffix}"
            fig.figure.savefig(path, dpi=120)
            written.append(path)
    return written


def close(drawn: list[Figure]) -> None:
    plt = plots._pyplot()
    for fig in drawn:
        plt.close(fig.figure)


def html_report(
    frame: pd.DataFrame, drawn: list[Figure], tables_html: str, *, gaps_html: str = "", source: str = "",
    progress: Callable[[str], None] | None = None,
) -> str:
    """The whole report as one HTML document, ``drawn`` (from :func:`figures`) inlined as base64 PNG.

    ``progress`` hears each figure as it is encoded (a long report is never silent).
    """
    ok = frame[frame["status"] == "ok"]
    failed = int((frame["status"] == "failed").sum())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    methods = ", ".join(sorted(set(ok["method"]))) or "none"
    datasets = ", ".join(sorted(set(ok["dataset"]))) or "none"
    parts = [
        f'<p class="note">{len(frame)} jobs in {html.escape(source)}: {len(ok)} ok, {failed} failed. '
        f"Methods: {html.escape(methods)}. Datasets: {html.escape(datasets)}. Generated {stamp}. "
        "Cells are mean ± std over repetitions of one configuration; numbers selected on validation data unless marked †.</p>",
        "<h2>Tables</h2>",
        tables_html,
    ]
    if gaps_html:
        parts += ["<h2>Reproduction: honest, oracle and paper</h2>", gaps_html]
    found = ranking(frame)
    parts.append("<h2>Ranking across tasks</h2>")
    if found is None:
        parts.append(
            f'<p class="note">No critical-difference diagram: it needs at least {MIN_METHODS} methods with results '
            f"on the same {MIN_TASKS} or more tasks (dataset, protocol, normal class).</p>"
        )
    else:
        rows = "".join(
            f"<tr><td>{html.escape(str(m))}</td><td>{r:.2f}</td></tr>" for m, r in found.average_ranks.items()
        )
        parts.append(
            f'<p class="note">{html.escape(found.lines()[0])}. Each task ranks the methods by its headline metric '
            "(mean over repetitions); rank 1 is best.</p>"
            f"<table><tr><th>method</th><th>average rank</th></tr>{rows}</table>"
        )
        if found.dropped:
            parts.append(f'<p class="note">{html.escape(found.lines()[-1])}</p>')
    section = None
    for number, fig in enumerate(drawn, 1):
        if progress is not None:
            progress(f"encoding figure {number}/{len(drawn)}")
        if fig.section != section and fig.section != "Ranking":
            parts.append(f"<h2>{html.escape(fig.section)}</h2>")
        section = fig.section
        parts.append(
            f'<figure><img alt="{html.escape(fig.name)}" src="data:image/png;base64,{_png(fig.figure)}">'
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
        )
    return html_document("odbench report", "\n".join(parts))
