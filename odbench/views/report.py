"""``report()``: everything ``odbench report`` makes from a results folder, as a Python call.

The command line only parses its options and prints what this returns.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from odbench.engine.plan import UsageError
from odbench.engine.registry import Registry, RegistryError
from odbench.engine.store import Store
from odbench.views.reproduce import gap_tables_html, saved_gaps
from odbench.views.results import metric_names
from odbench.views.results import results as tidy_results
from odbench.views.tables import (
    FORMATS,
    constant_feature_notes,
    failed_jobs,
    mixed_code,
    render,
    summary,
    tables,
    tables_html,
)  # fmt: skip

TIDY_CSV, SUMMARY_CSV = "results.csv", "summary.csv"
_VIEWS = Path(__file__).parent
_STAMP = "<!-- odbench report drawn from {} -->\n"


@dataclass
class Report:
    """What :func:`report` made: the text to print, the tidy frame, the files written, warnings."""

    text: str
    frame: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    html_unchanged: bool = False  # the HTML file already showed exactly these jobs, so it was left as it was


def _drawn_from(frame: pd.DataFrame, gaps: list[pd.DataFrame], options: tuple[object, ...]) -> str:
    """A digest of everything an HTML report shows: the jobs' rows, the saved gap tables, the options, the views' code.

    A resume whose jobs were all done would otherwise redraw every figure
    (most of its time) to write the same page again.
    """
    digest = hashlib.sha256(frame.to_csv(index=False).encode())
    for gap in gaps:
        digest.update(gap.to_csv(index=False).encode())
    digest.update(repr(options).encode())
    for source in sorted(_VIEWS.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _shows(path: Path, stamp: str) -> bool:
    try:
        with path.open("rb") as file:
            file.seek(max(0, path.stat().st_size - len(stamp) - 2))
            return stamp.encode() in file.read()
    except OSError:
        return False


def _matches(values: pd.Series, patterns: str | Sequence[str] | None) -> pd.Series:
    chosen = [p.strip() for p in (patterns.split(",") if isinstance(patterns, str) else patterns or []) if p.strip()]
    return values.map(lambda v: any(fnmatch.fnmatchcase(str(v), p) for p in chosen))


def class_order(registry: Registry, datasets: list[str]) -> dict[str, list[str]]:
    """Each dataset's class names in its own order (a dataset whose plugin is gone keeps the default)."""
    order = {}
    for name in datasets:
        try:
            order[name] = list(registry.dataset(name).classes)
        except RegistryError:
            pass
    return order


def report(
    results: Path | str = "odbench_results",
    *,
    format: str = "markdown",
    html: Path | str | None = None,
    plots: Path | str | None = None,
    output: Path | str | None = None,
    metric: str | None = None,
    datasets: str | Sequence[str] | None = None,
    methods: str | Sequence[str] | None = None,
    digits: int = 3,
    registry: Registry | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Tables of a results folder in ``format``; optionally an HTML report and figure files.

    ``format``: ``markdown``, ``latex``, ``html`` (a whole document) or
    ``csv``: the tidy table (``results.csv``, one row per job, see
    ``odbench.views.results``) and the aggregated one (``summary.csv``:
    mean, std, n per cell and configuration) are written to ``output``
    (default: the results folder) and the text is the aggregated CSV.
    ``html``: write the self-contained HTML report there.  ``plots``: write
    every figure as PNG and PDF into that folder.  ``datasets`` /
    ``methods``: names or wildcards.  Raises ``UsageError`` (one line) on
    bad input, before anything is written.
    """
    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r}; known: {', '.join(FORMATS)}")
    root = Path(results)
    store = Store(root)
    want_ci = format == "csv" or html is not None
    frame = tidy_results(store, ci=False)
    if frame.empty:
        raise UsageError(f"no finished jobs in {root}; run `odbench run` first")
    if datasets:
        frame = frame[_matches(frame["dataset"], datasets)]
    if methods:
        frame = frame[_matches(frame["method"], methods)]
    if frame.empty:
        raise UsageError("no jobs match --datasets/--methods")
    if not (frame["status"] == "ok").any():
        raise UsageError(f"no finished jobs in {root} ({len(frame)} failed); see their errors with `odbench report --format csv`")
    if metric is not None and metric not in metric_names(frame):
        raise UsageError(f"no results for metric {metric!r}; known: {', '.join(metric_names(frame))}")
    registry = registry or Registry()
    order = class_order(registry, list(frame["dataset"].unique()))
    stamp = ""
    if html is not None:
        gaps = saved_gaps(root)
        stamp = _STAMP.format(_drawn_from(frame, gaps, (metric, digits, order, str(root))))
        if plots is None and format != "csv" and _shows(Path(html), stamp):
            want_ci = False  # the page on disk already shows these jobs: nothing to draw
    if want_ci:  # the bootstrap intervals: only for what shows them, and only for the jobs kept
        frame = tidy_results(store, ci=True).set_index("key").loc[frame["key"]].reset_index()
    failed = failed_jobs(frame)
    out = Report("", frame, warnings=[f"warning: {line}" for line in mixed_code(frame) + constant_feature_notes(frame)])

    if format == "csv":
        folder = Path(output) if output is not None else root
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_csv(folder / TIDY_CSV, index=False)
        aggregated = summary(frame, [metric] if metric else None)
        aggregated.to_csv(folder / SUMMARY_CSV, index=False)
        out.files += [folder / TIDY_CSV, folder / SUMMARY_CSV]
        out.text = aggregated.to_csv(index=False).rstrip("\n")
        if failed:
            out.warnings.append(f"{len(failed)} job(s) failed (status 'failed' in {TIDY_CSV}): " + "; ".join(failed))
    else:
        made = tables(frame, metric=metric, fmt=format, digits=digits, class_order=order)
        out.text = render(made, format, failed)
    if html is not None and plots is None and format != "csv" and _shows(Path(html), stamp):
        out.files.append(Path(html))
        out.html_unchanged = True
    elif html is not None or plots is not None:
        from odbench.views.html_report import close, figures, html_report, write_plots

        say = progress or (lambda text: None)
        drawn = []  # drawn once for both
        for figure in figures(frame, store, order):
            drawn.append(figure)
            say(f"drew figure {len(drawn)} ({figure.name})")
        try:
            if html is not None:
                made = tables(frame, metric=metric, fmt="html", digits=digits, class_order=order)
                page = html_report(frame, drawn, tables_html(made, failed), gaps_html=gap_tables_html(gaps, digits),
                                   source=str(root), progress=say)  # fmt: skip
                path = Path(html)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(page + "\n" + stamp, encoding="utf-8")
                out.files.append(path)
            if plots is not None:
                out.files += write_plots(drawn, Path(plots))
        finally:
            close(drawn)
    return out
