"""Paper-style tables from the store's DataFrame (``Store.frame()``).

* Per-class protocols (``one_vs_all``, ``ocln``): one table per dataset,
  protocol and metric; rows = normal classes (plus their mean), columns =
  methods — the layout of the paper's CIFAR-10 table.
* Single-task protocols (``contamination``): rows = methods, columns =
  datasets — the layout of its tabular F1 table.

A cell is ``mean ± std`` over repetitions (std omitted for one repetition);
the best cell of each row is bold (every metric here is higher-is-better).
A cell with any result selected on test data (``selection == "oracle"``)
carries a dagger, explained under the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from tabulate import tabulate

FORMATS = ("markdown", "latex", "csv", "html")
DAGGER = "†"
_TABLEFMT = {"markdown": "pipe", "latex": "latex_raw", "html": "unsafehtml"}


@dataclass(frozen=True)
class Table:
    title: str
    text: str


@dataclass(frozen=True)
class _Cell:
    mean: float
    std: float
    n: int
    oracle: bool


def _cell(values: pd.DataFrame, metric: str) -> _Cell | None:
    col = values[metric].dropna() if metric in values else pd.Series(dtype=float)
    if col.empty:
        return None
    oracle = bool((values.loc[col.index, "selection"] == "oracle").any())
    return _Cell(float(col.mean()), float(col.std(ddof=1)) if len(col) > 1 else float("nan"), len(col), oracle)


def _text(cell: _Cell | None, best: bool, fmt: str, digits: int) -> str:
    if cell is None:
        return "–" if fmt != "csv" else ""
    text = f"{cell.mean:.{digits}f}"
    if cell.n > 1:
        text += f" ± {cell.std:.{digits}f}"
    if best and fmt != "csv":
        text = {"markdown": f"**{text}**", "latex": rf"\textbf{{{text}}}", "html": f"<b>{text}</b>"}[fmt]
    if cell.oracle:
        text += DAGGER if fmt != "latex" else r"$^\dagger$"
    return text


def _best_in_rows(cells: list[list[_Cell | None]], digits: int) -> list[list[bool]]:
    """True where a cell has its row's highest mean *as displayed* (ties all win; a lone cell does not)."""
    best = []
    for row in cells:
        shown = [None if c is None else round(c.mean, digits) for c in row]
        filled = [v for v in shown if v is not None]
        best.append([v is not None and len(filled) > 1 and v == max(filled) for v in shown])
    return best


def _render(
    row_names: list[str], columns: list[str], cells: list[list[_Cell | None]], best: list[list[bool]],
    corner: str, fmt: str, digits: int,
) -> str:  # fmt: skip
    body = [
        [name] + [_text(c, b, fmt, digits) for c, b in zip(row, flags)]
        for name, row, flags in zip(row_names, cells, best)
    ]
    if fmt == "csv":
        return pd.DataFrame(body, columns=[corner, *columns]).to_csv(index=False).rstrip("\n")
    text = tabulate(body, headers=[corner, *columns], tablefmt=_TABLEFMT[fmt], disable_numparse=True)
    if any(c is not None and c.oracle for row in cells for c in row):
        note = f"{DAGGER} selected on test data (oracle), not comparable to validation-selected results"
        text += ("\n\n" if fmt != "latex" else "\n% ") + note
    return text


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
    cells = frame.assign(cls=frame["normal_class"].fillna("-"), code=frame["code_fingerprint"].fillna("unknown"))
    for (method, dataset, protocol, cls), group in cells.groupby(["method", "dataset", "protocol", "cls"], sort=True):
        counts = group["code"].value_counts()
        if len(counts) > 1:
            parts = ", ".join(f"{n} from code {str(code)[:12]}" for code, n in counts.items())
            where = dataset if cls == "-" else f"{dataset}/{cls}"
            found.append(f"{method} on {where} ({protocol}) mixes results of {len(counts)} code versions: {parts}")
    return found


def tables(
    frame: pd.DataFrame,
    *,
    metric: str | None = None,
    fmt: str = "markdown",
    digits: int = 3,
    class_order: dict[str, list[str]] | None = None,
    method_order: list[str] | None = None,
) -> list[Table]:
    """Every table the frame's results make, in a stable order.

    ``metric`` overrides each dataset's headline metric (the first metric of
    its protocol).  ``class_order`` maps a dataset to its class names in
    dataset order (otherwise numeric-then-alphabetical); ``method_order``
    orders the methods (otherwise alphabetical).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if frame.empty:
        return []
    frame = frame.copy()
    frame["metric"] = metric if metric is not None else frame["headline_metric"]
    present = set(frame["method"])
    methods = [m for m in (method_order or []) if m in present] + sorted(present - set(method_order or []))
    out: list[Table] = []

    per_class = frame[frame["normal_class"].notna()]
    for (dataset, protocol, name), group in per_class.groupby(["dataset", "protocol", "metric"], sort=True):
        order = (class_order or {}).get(dataset) or _order(group["normal_class"])
        classes = [c for c in order if c in set(group["normal_class"].astype(str))]
        cols = [m for m in methods if m in set(group["method"])]
        cells = [
            [_cell(group[(group["normal_class"].astype(str) == c) & (group["method"] == m)], name) for m in cols]
            for c in classes
        ]
        # the mean row: each method's mean over classes of its per-class means
        means = []
        for j in range(len(cols)):
            filled = [cell for row in cells if (cell := row[j]) is not None]
            means.append(
                _Cell(float(np.mean([c.mean for c in filled])), float("nan"), 1, any(c.oracle for c in filled))
                if filled
                else None
            )
        rows = [*cells, means]
        text = _render([*classes, "mean"], cols, rows, _best_in_rows(rows, digits), "normal class", fmt, digits)
        out.append(Table(f"{dataset} ({protocol}), {name}: rows = normal class, columns = method", text))

    single = frame[frame["normal_class"].isna()]
    for (protocol, name), group in single.groupby(["protocol", "metric"], sort=True):
        datasets = list(dict.fromkeys(group["dataset"]))
        row_names = [m for m in methods if m in set(group["method"])]
        cells = [[_cell(group[(group["method"] == m) & (group["dataset"] == d)], name) for d in datasets] for m in row_names]
        # rows are methods here, so "best" is the best method of each dataset (column), as in the paper
        best = [list(col) for col in zip(*_best_in_rows([list(c) for c in zip(*cells)], digits))]
        text = _render(row_names, datasets, cells, best, "method", fmt, digits)
        out.append(Table(f"{protocol}, {name}: rows = method, columns = dataset", text))
    return out


def render(tables_: list[Table], fmt: str = "markdown") -> str:
    """All tables as one text, each under its title."""
    parts = []
    for table in tables_:
        title = f"% {table.title}" if fmt == "latex" else (f"# {table.title}" if fmt == "csv" else f"### {table.title}")
        if fmt == "html":
            title = f"<h3>{table.title}</h3>"
        parts.append(f"{title}\n\n{table.text}")
    return "\n\n".join(parts)
