"""Paper-style tables from the tidy results frame (``odbench.views.results.results``).

* Per-class protocols (``one_vs_all``, ``ocln``): one table per dataset,
  protocol and metric; rows = normal classes (plus their mean), columns =
  methods — the layout of the paper's CIFAR-10 table.
* Single-task protocols (``contamination``): rows = methods, columns =
  datasets — the layout of its tabular F1 table.

A cell is ``mean ± std`` over repetitions (std omitted for one repetition)
of **one configuration**: when a cell holds results of several
configurations (``config_fingerprint``), the method is split into one
column per configuration, named by the parameters that differ
(``drocc[epochs=5]``), and a note says so; numbers of different
configurations are never averaged.  The best cell of each row is bold
(every metric here is higher-is-better).  A cell with any result selected
on test data (``selection == "oracle"``) carries a dagger; a cell averaging
a job whose validation scores were significantly inverted carries ⇅, and
a note under the table names those jobs.  Failed jobs are named under the
tables in every format.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tabulate import tabulate

FORMATS = ("markdown", "latex", "csv", "html")
DAGGER = "†"
ORACLE_NOTE = f"{DAGGER} selected on test data (oracle), not comparable to validation-selected results"
INVERTED = "⇅"
#: the columns of the aggregated CSV (``summary``)
SUMMARY_COLUMNS = [
    "dataset", "protocol", "metric", "normal_class", "method", "column", "config_fingerprint", "selection",
    "mean", "std", "n", "n_failed",
]  # fmt: skip


@dataclass(frozen=True)
class Table:
    """One rendered table: its title, its text, and notes that belong under it."""

    title: str
    text: str
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class _Cell:
    mean: float
    std: float
    n: int
    oracle: bool
    inverted: bool = False  # it averages a job whose validation scores were significantly inverted


def _cell(values: pd.DataFrame, metric: str) -> _Cell | None:
    col = values[metric].dropna() if metric in values else pd.Series(dtype=float)
    if col.empty:
        return None
    oracle = bool((values.loc[col.index, "selection"] == "oracle").any())
    inverted = bool(values.loc[col.index, "inverted"].fillna(False).astype(bool).any()) if "inverted" in values else False
    std = float(col.std(ddof=1)) if len(col) > 1 else float("nan")
    return _Cell(float(col.mean()), std, len(col), oracle, inverted)


def _text(cell: _Cell | None, best: bool, fmt: str, digits: int) -> str:
    if cell is None:
        return "--" if fmt == "latex" else "–"
    pm = r" $\pm$ " if fmt == "latex" else " ± "
    text = f"{cell.mean:.{digits}f}"
    if cell.n > 1:
        text += f"{pm}{cell.std:.{digits}f}"
    if best:
        text = {"markdown": f"**{text}**", "latex": rf"\textbf{{{text}}}", "html": f"<b>{text}</b>"}[fmt]
    if cell.oracle:
        text += DAGGER if fmt != "latex" else r"$^\dagger$"
    if cell.inverted:
        text += INVERTED if fmt != "latex" else r"$^\updownarrow$"
    return text


def _best_in_rows(cells: list[list[_Cell | None]], digits: int) -> list[list[bool]]:
    """True where a cell has its row's highest mean *as displayed* (ties all win; a lone cell does not)."""
    best = []
    for row in cells:
        shown = [None if c is None else round(c.mean, digits) for c in row]
        filled = [v for v in shown if v is not None]
        best.append([v is not None and len(filled) > 1 and v == max(filled) for v in shown])
    return best


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(char, escaped)
    return text


def _latex_table(headers: list[str], body: list[list[str]], caption: str) -> str:
    """A booktabs table: first column left-aligned, numbers right-aligned, caption on top."""
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in headers) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(body):
        if i == len(body) - 1 and row and row[0] == "mean":
            lines.append(r"\midrule")
        lines.append(" & ".join([latex_escape(row[0]), *row[1:]]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def _render(
    row_names: list[str], columns: list[str], cells: list[list[_Cell | None]], best: list[list[bool]],
    corner: str, fmt: str, digits: int, title: str,
) -> str:  # fmt: skip
    body = [[name] + [_text(c, b, fmt, digits) for c, b in zip(row, flags)] for name, row, flags in zip(row_names, cells, best)]
    if fmt == "latex":
        return _latex_table([corner, *columns], body, latex_escape(title))
    if fmt == "html":
        body = [[html.escape(row[0]), *row[1:]] for row in body]
        return tabulate(body, headers=[html.escape(h) for h in (corner, *columns)], tablefmt="unsafehtml", disable_numparse=True)
    return tabulate(body, headers=[corner, *columns], tablefmt="pipe", disable_numparse=True)


def _order(values: pd.Series) -> list[str]:
    seen = list(dict.fromkeys(values.astype(str)))
    return sorted(seen, key=lambda v: (0, int(v)) if v.lstrip("-").isdigit() else (1, v))


def mixed_code(frame: pd.DataFrame) -> list[str]:
    """One line per table cell whose results came from more than one code fingerprint.

    Such a cell averages numbers computed by different code (an engine edit
    between runs); the line says how many of each, so the user can re-run
    or filter rather than trust the mean.
    """
    if "code_fingerprint" not in frame:
        return []
    found = []
    frame = _ok(frame)
    cells = frame.assign(cls=frame["normal_class"].fillna("-"), code=frame["code_fingerprint"].fillna("unknown"))
    for (method, dataset, protocol, cls), group in cells.groupby(["method", "dataset", "protocol", "cls"], sort=True):
        counts = group["code"].value_counts()
        if len(counts) > 1:
            parts = ", ".join(f"{n} from code {str(code)[:12]}" for code, n in counts.items())
            where = dataset if cls == "-" else f"{dataset}/{cls}"
            found.append(f"{method} on {where} ({protocol}) mixes results of {len(counts)} code versions: {parts}")
    return found


def constant_feature_notes(frame: pd.DataFrame) -> list[str]:
    """One line per user file (``csv:``, ``npz:``, ...) whose jobs saw features holding one value in every row.

    The record counts them for every dataset; the warning is for the user's own files, where a constant
    column is news (an export gone wrong).  A bundled dataset's are known (digits' blank corner pixels).
    """
    if "constant_features" not in frame:
        return []
    seen = _ok(frame)
    seen = seen[(seen["constant_features"].fillna(0) > 0) & seen["dataset"].astype(str).str.contains(":")]
    return [
        f"{dataset}: {int(group['constant_features'].max())} feature(s) hold one value in every row; they tell no rows "
        "apart (drop them, or check how the file was exported)"
        for dataset, group in seen.groupby("dataset", sort=True)
    ]


# -- configurations: one column per configuration where a cell holds several --------------------------------------


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"] if "status" in frame else frame


def _value_key(value: object) -> str:
    """A comparable text for a parameter value (NaN: the parameter was absent)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _config_dims(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(("param.", "protocol."))] + ["selection"]


def _natural(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def column_labels(frame: pd.DataFrame, cell: list[str]) -> tuple[pd.Series, list[str]]:
    """Each row's column name — its method, or ``method[p=v,...]`` where cells mix configurations — and notes.

    ``cell``: the columns that, with ``method``, identify one table cell
    (e.g. ``["dataset", "protocol", "normal_class"]``).  A method is split
    only when some cell of it holds several ``config_fingerprint`` values;
    it is then split by every parameter that differs inside such a cell, so
    parameters that merely differ between classes (tuned per class) keep one column.
    """
    labels = frame["method"].astype(str).copy()
    notes: list[str] = []
    if "config_fingerprint" not in frame or frame.empty:
        return labels, notes
    dims = _config_dims(frame)
    for method, rows in frame.groupby("method", sort=True):
        keys = rows[[d for d in dims if d in rows]].map(_value_key)
        split: set[str] = set()
        mixed = False
        for _, members in rows.groupby([rows[c].fillna("-") for c in cell], sort=False):
            if members["config_fingerprint"].nunique() > 1:
                mixed = True
                split |= {d for d in keys.columns if keys.loc[members.index, d].nunique() > 1}
        if not mixed:
            continue
        if split:
            ordered = sorted(split)
            short = {d: d.split(".", 1)[-1] for d in ordered}
            labels[rows.index] = [
                method + "[" + ",".join(f"{short[d]}={keys.at[i, d]}" for d in ordered) + "]" for i in rows.index
            ]
            names = ", ".join(d.split(".", 1)[-1] for d in ordered)
        else:  # configurations that differ in nothing shown (e.g. a parameter's type): name them by fingerprint
            labels[rows.index] = [f"{method}[config={rows.at[i, 'config_fingerprint']}]" for i in rows.index]
            names = "config_fingerprint"
        count = labels[rows.index].nunique()
        notes.append(f"{method}: {count} configurations differ in {names}; one column each, never averaged")
    return labels, notes


def _method_columns(labels: pd.Series, methods: list[str], frame: pd.DataFrame) -> list[str]:
    """Column names in method order; a split method's columns in natural order of their values."""
    out = []
    for method in methods:
        mine = sorted(set(labels[frame["method"] == method]), key=lambda label: [_natural(v.split("=", 1)[-1]) for v in label.strip("]").split(",")])
        out += mine
    return out


# -- the tables ----------------------------------------------------------------------------------------------------


def tables(
    frame: pd.DataFrame,
    *,
    metric: str | None = None,
    fmt: str = "markdown",
    digits: int = 3,
    class_order: dict[str, list[str]] | None = None,
    method_order: list[str] | None = None,
) -> list[Table]:
    """Every table the frame's successful results make, in a stable order.

    ``frame``: the tidy frame (``results()``) or ``Store.frame()`` (which has
    no parameter columns, so no configuration split).  ``metric`` overrides
    each dataset's headline metric (the first metric of its protocol).
    ``class_order`` maps a dataset to its class names in dataset order
    (otherwise numeric-then-alphabetical); ``method_order`` orders the
    methods (otherwise alphabetical).  ``fmt`` is markdown, latex or html
    (csv is :func:`summary`'s job).
    """
    if fmt not in FORMATS or fmt == "csv":
        raise ValueError(f"unknown table format {fmt!r}; known: markdown, latex, html (csv: summary())")
    frame = _ok(frame)
    if frame.empty:
        return []
    frame = frame.copy()
    frame["metric"] = metric if metric is not None else frame["headline_metric"]
    present = set(frame["method"])
    methods = [m for m in (method_order or []) if m in present] + sorted(present - set(method_order or []))
    out: list[Table] = []

    per_class = frame[frame["normal_class"].notna()]
    for (dataset, protocol, name), group in per_class.groupby(["dataset", "protocol", "metric"], sort=True):
        group = group.assign(cls=group["normal_class"].astype(str))
        labels, notes = column_labels(group, ["cls"])
        group = group.assign(column=labels)
        order = (class_order or {}).get(dataset) or _order(group["normal_class"])
        classes = [c for c in order if c in set(group["cls"])]
        cols = _method_columns(labels, methods, group)
        cells = [[_cell(group[(group["cls"] == c) & (group["column"] == m)], name) for m in cols] for c in classes]
        # the mean row: each column's mean over classes of its per-class means
        means = []
        for j in range(len(cols)):
            filled = [cell for row in cells if (cell := row[j]) is not None]
            means.append(
                _Cell(float(np.mean([c.mean for c in filled])), float("nan"), 1, any(c.oracle for c in filled),
                      any(c.inverted for c in filled))
                if filled
                else None
            )
        rows = [*cells, means]
        title = f"{dataset} ({protocol}), {name}: rows = normal class, columns = method"
        text = _render([*classes, "mean"], cols, rows, _best_in_rows(rows, digits), "normal class", fmt, digits, title)
        out.append(Table(title, text, tuple(notes + _oracle_note(rows) + inverted_note(group))))

    single = frame[frame["normal_class"].isna()]
    for (protocol, name), group in single.groupby(["protocol", "metric"], sort=True):
        labels, notes = column_labels(group, ["dataset"])
        group = group.assign(column=labels)
        datasets = list(dict.fromkeys(group["dataset"]))
        row_names = _method_columns(labels, methods, group)
        cells = [[_cell(group[(group["column"] == m) & (group["dataset"] == d)], name) for d in datasets] for m in row_names]
        # rows are methods here, so "best" is the best method of each dataset (column), as in the paper
        best = [list(col) for col in zip(*_best_in_rows([list(c) for c in zip(*cells)], digits))]
        title = f"{protocol}, {name}: rows = method, columns = dataset"
        text = _render(row_names, datasets, cells, best, "method", fmt, digits, title)
        out.append(Table(title, text, tuple(notes + _oracle_note(cells) + inverted_note(group))))
    return out


def _oracle_note(cells: list[list[_Cell | None]]) -> list[str]:
    return [ORACLE_NOTE] if any(c is not None and c.oracle for row in cells for c in row) else []


def inverted_note(group: pd.DataFrame) -> list[str]:
    """The note naming a table's jobs whose validation scores were significantly inverted (empty when none)."""
    if "inverted" not in group:
        return []
    flagged = group[group["inverted"].fillna(False).astype(bool)]
    if flagged.empty:
        return []
    from odbench.core.metrics import INVERSION_ALPHA, INVERSION_TEST

    jobs = []
    for _, row in flagged.iterrows():
        where = row["dataset"] if pd.isna(row["normal_class"]) else f"{row['dataset']}/{row['normal_class']}"
        jobs.append(f"{row['method']} on {where} rep {row['repetition']} (validation AUROC {row['val_auroc']:.3f})")
    return [f"{INVERTED} averages inverted scores: validation AUROC significantly below 0.5 ({INVERSION_TEST}, "
            f"p < {INVERSION_ALPHA:g}): " + "; ".join(jobs)]  # fmt: skip


def failed_jobs(frame: pd.DataFrame) -> list[str]:
    """One line per failed job of a tidy frame: where it ran and why it failed."""
    if "status" not in frame:
        return []
    lines = []
    for _, row in frame[frame["status"] == "failed"].iterrows():
        where = row["dataset"] if pd.isna(row["normal_class"]) else f"{row['dataset']}/{row['normal_class']}"
        error = row.get("error") if isinstance(row.get("error"), str) else "unknown error"
        lines.append(f"{row['method']} on {where} ({row['protocol']}), repetition {row['repetition']}: {error}")
    return lines


def render(tables_: list[Table], fmt: str = "markdown", failed: list[str] | None = None) -> str:
    """All tables as one text, each under its title with its notes; failed jobs said last.

    markdown: ``###`` titles; latex: one booktabs ``table`` environment each,
    the title and notes in its caption, failed jobs in a caption of their
    own; html: a complete, self-contained document.
    """
    failed = failed or []
    failed_head = f"{len(failed)} job(s) failed and are not in the tables" + (":" if failed else "")
    if fmt == "latex":
        parts = []
        for t in tables_:
            text = t.text
            if t.notes:
                note = latex_escape(" ".join(n.rstrip(".") + "." for n in t.notes)).replace(DAGGER, r"$^\dagger$").replace(INVERTED, r"$\updownarrow$")
                text = text.replace(r"\caption{" + latex_escape(t.title) + "}", r"\caption{" + latex_escape(t.title) + ". " + note + "}")
            parts.append(text)
        if failed:
            parts.append("% " + failed_head + "\n" + "\n".join(f"% - {line}" for line in failed))
        else:
            parts.append("% no job failed")
        return "\n\n".join(parts)
    if fmt == "html":
        return html_document("odbench report", tables_html(tables_, failed))
    parts = [f"### {t.title}\n\n{t.text}" + "".join(f"\n\n{n}" for n in t.notes) for t in tables_]
    parts.append(failed_head + "".join(f"\n- {line}" for line in failed) if failed else "No job failed.")
    return "\n\n".join(parts)


def tables_html(tables_: list[Table], failed: list[str]) -> str:
    """The tables (html format) and the failed-job list as an HTML fragment, for a document's body."""
    parts = []
    for t in tables_:
        notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in t.notes)
        parts.append(f"<h3>{html.escape(t.title)}</h3>\n{t.text}\n{notes}")
    if failed:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in failed)
        parts.append(f'<div class="failed"><h3>{len(failed)} failed job(s), not in the tables</h3><ul>{items}</ul></div>')
    else:
        parts.append('<p class="note">No job failed.</p>')
    return "\n".join(parts)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .6em 0; font-size: 14px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; text-align: right; }
th { border-bottom: 1.5px solid #333; background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
.note { color: #555; font-size: 13px; margin: .2em 0; }
.failed { background: #fff1f0; border-left: 4px solid #d33; padding: .3em 1em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 13px; }
"""


def html_document(title: str, body: str) -> str:
    """A complete HTML5 document with odbench's stylesheet inlined."""
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


# -- the aggregated CSV --------------------------------------------------------------------------------------------


def summary(frame: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Aggregates of the tidy frame: one row per (cell, configuration, metric), numeric mean, std and n.

    ``column`` is the table column the configuration gets (see
    :func:`column_labels`); ``n_failed`` counts failed jobs of the same
    configuration and cell.  ``std`` is the sample std (NaN for n = 1).
    """
    from odbench.views.results import metric_names

    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    metrics = metrics or metric_names(frame)
    frame = frame.assign(cls=frame["normal_class"].fillna(""))
    # the column each configuration gets in its dataset's table
    labels = pd.concat([column_labels(rows, ["cls"])[0] for _, rows in frame.groupby(["dataset", "protocol"])])
    frame = frame.assign(column=labels)
    keys = ["dataset", "protocol", "cls", "method", "column", "config_fingerprint"]
    rows = []
    for values, group in frame.groupby(keys, sort=True, dropna=False):
        ok = group[group["status"] == "ok"] if "status" in group else group
        n_failed = len(group) - len(ok)
        base = dict(zip(keys, values))
        base["normal_class"] = base.pop("cls") or None
        base["selection"] = ok["selection"].iloc[0] if len(ok) else group["selection"].iloc[0]
        shown = [m for m in metrics if m in ok and ok[m].notna().any()] or [""]
        for name in shown:
            col = ok[name].dropna() if name else pd.Series(dtype=float)
            rows.append({**base, "metric": name, "mean": col.mean() if len(col) else np.nan,
                         "std": col.std(ddof=1) if len(col) > 1 else np.nan, "n": len(col), "n_failed": n_failed})  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
