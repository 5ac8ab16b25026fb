"""``odbench reproduce``'s tables: our numbers beside the paper's, read from the store.

The experiments and the jobs that reproduce one are ``odbench.engine.experiments``';
``odbench.workflows.reproduce`` runs them.  Everything here is a function of
an experiment, the store's records and the paper's published numbers
(``drocc_paper_results.csv`` beside the experiment files): the paper-layout
table (:func:`comparison`), the honest-vs-oracle gap table and the verdict.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from odbench.engine.experiments import (  # the experiments' definitions; re-exported for the views' callers
    BUDGETS,
    Budget,
    Column,
    Experiment,
    ReproductionPlan,
    available,
    load_experiment,
    paper_folder,
    with_variant,
)
from odbench.engine.registry import Registry

PAPER_CSV = "drocc_paper_results.csv"
MISS = "✗"  # outside the stated tolerance
DAGGER = "†"  # selected on test data (oracle)


def _norm(name: Any) -> str:
    """Class names as the paper's CSV writes them: lower case, underscores."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


def paper_values(experiment: Experiment) -> pd.DataFrame:
    """The paper's rows for this experiment: dataset, normal_class, column, mean, std."""
    frame = pd.read_csv(paper_folder() / PAPER_CSV, dtype={"normal_class": str})
    frame = frame[frame["table"] == experiment.paper_table].rename(columns={"method": "column"})
    ours = {paper: mine for mine, paper in experiment.paper_datasets.items()}
    frame["dataset"] = frame["dataset"].map(lambda name: ours.get(name, name))
    frame["normal_class"] = frame["normal_class"].fillna("").map(_norm)
    return frame[["dataset", "normal_class", "column", "mean", "std"]]


def collect(repro: ReproductionPlan, registry: Registry, store: Any, metric: str, scale: float) -> pd.DataFrame:
    """Our finished results: one row per job (column, dataset, class, value, how it was selected and scored)."""
    rows = []
    for column, job in repro.columns:
        record = store.read(job.key(registry))
        if record is None or record.get("status") != "ok":
            continue
        value = record["metrics"].get(metric)
        ceiling = record.get("split", {}).get("ceilings", {}).get(metric)
        check = record.get("validation_check") or {}
        projection = (record.get("diagnostics") or {}).get("projection") or {}
        rows.append(
            {
                "column": column,
                "dataset": job.dataset,
                "normal_class": _norm(job.normal_class or ""),
                "value": np.nan if value is None else float(value) * scale,
                "oracle": record.get("selection") == "oracle",
                "ceiling": np.nan if ceiling is None else float(ceiling) * scale,
                "selected_by": record.get("selected_by") or "",  # empty: no epochs (a classical method)
                "scoring": record.get("scoring", "eval"),
                "inverted": bool(check.get("inverted", False)),
                "repetition": job.repetition,
                "scores_sha256": record.get("scores_sha256", ""),
                "projection_moved": projection.get("moved_share", np.nan),
                "fit_seconds": record.get("fit_seconds", np.nan),
            }
        )
    return pd.DataFrame(rows, columns=COLLECTED)


#: :func:`collect`'s columns, and what a frame without one of them (made by hand, or by an older odbench) means
COLLECTED = [
    "column", "dataset", "normal_class", "value", "oracle", "ceiling", "selected_by", "scoring", "inverted",
    "repetition", "scores_sha256", "projection_moved", "fit_seconds",
]  # fmt: skip
_ABSENT = {"selected_by": "", "scoring": "eval", "inverted": False, "repetition": 0, "scores_sha256": "",
           "projection_moved": np.nan, "fit_seconds": np.nan}  # fmt: skip


def _complete(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column of :data:`COLLECTED`; a missing one takes its 'not recorded' value."""
    missing = {name: value for name, value in _ABSENT.items() if name not in frame.columns}
    return frame.assign(**missing) if missing else frame
INVERTED = "⇅"  # the cell averages a job whose validation scores are significantly inverted
#: what chose a deep job's epoch, as captions and the ``why`` column say it
SELECTED_BY = {
    "val": "validation",
    "last": "last epoch (no validation split holding both classes)",
    "oracle": f"test data {DAGGER} (oracle)",
}


def selection_lines(ours: pd.DataFrame) -> list[str]:
    """One caption line saying, from the records, what selected each deep column's epoch."""
    if ours.empty or not (ours["selected_by"] != "").any():
        return []
    parts = []
    for rule, frame in ours[ours["selected_by"] != ""].groupby("selected_by", sort=True):
        columns = ", ".join(dict.fromkeys(frame["column"]))
        parts.append(f"{SELECTED_BY.get(str(rule), str(rule))}: {columns}")
    return ["Epoch selected by " + "; ".join(parts) + " (classical methods have no epochs)."]


def scoring_lines(experiment: Experiment) -> list[str]:
    if experiment.scoring == "eval":
        return []
    return [
        f"Scoring '{experiment.scoring}': BatchNorm in train mode, test batches of one source each (positives and far "
        "negatives in file order, close negatives shuffled and alone), as the authors' test loop; a point's score "
        "depends on its batch, so these cells are never comparable with eval-mode ones."
    ]


def inverted_lines(ours: pd.DataFrame) -> list[str]:
    if ours.empty or not ours["inverted"].any():
        return []
    from odbench.core.metrics import INVERSION_ALPHA, INVERSION_TEST

    count = int(ours["inverted"].sum())
    return [f"{INVERTED} the cell averages {count} job(s) whose validation AUROC is significantly below 0.5 "
            f"(inverted scores; {INVERSION_TEST}, p < {INVERSION_ALPHA:g})."]  # fmt: skip


def identical_lines(ours: pd.DataFrame) -> list[str]:
    """A caption line for each pair of columns whose jobs gave bit-identical test scores on every task they share.

    Two methods that differ only where the training never goes (DROCC-LF's
    Σ-annulus that no offset reaches) produce the same numbers; a table that
    shows them as two results must say so, and why, from the records.
    """
    if ours.empty or not (ours["scores_sha256"] != "").any():
        return []
    task = ["dataset", "normal_class", "repetition"]
    hashes = ours[ours["scores_sha256"] != ""].pivot_table(index=task, columns="column", values="scores_sha256", aggfunc="first")
    lines, columns = [], list(hashes.columns)
    for i, first in enumerate(columns):
        for second in columns[i + 1 :]:
            both = hashes[[first, second]].dropna()
            if len(both) and (both[first] == both[second]).all():
                moved = ours.loc[ours["column"].isin([first, second]), "projection_moved"].dropna()
                why = (
                    f"; the projection onto N(r) moved at most {moved.max():.4%} of the offsets, so what tells "
                    "the two apart (the set the offsets are projected onto) never acted" if len(moved) else ""
                )
                lines.append(f"{first} and {second} gave bit-identical test scores on all {len(both)} task(s){why}.")
    return lines


def reasons(experiment: Experiment, column: str, selected_by: list[str], budget: str, n: int) -> str:
    """The ``why`` of one row: the protocol differences from the experiment's file, then what the records say ran."""
    spec = next((c for c in experiment.columns if c.name == column), None)
    found = {**experiment.why, **(spec.why if spec else {})}
    parts = [f"{aspect}: {text}" for aspect, text in found.items()]
    rules = [SELECTED_BY.get(rule, rule) for rule in dict.fromkeys(selected_by) if rule]
    if rules:
        parts.append("epoch: " + " / ".join(rules))
    if budget != "full":
        parts.append(f"budget: '{budget}' (reduced epochs or training points)")
    reps = experiment.budgets[budget].repetitions if budget in experiment.budgets else None
    if reps is not None and n and n < reps:
        parts.append(f"repetitions: {n} of the budget's {reps}")
    return "; ".join(parts)


def _fmt(mean: float, std: float, n: int, digits: int) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 and not np.isnan(std) else "")


def comparison(experiment: Experiment, ours: pd.DataFrame, budget: str) -> tuple[pd.DataFrame, list[str]]:
    """The paper-layout table (cells as text) and the lines of its caption."""
    ours = _complete(ours)
    paper = paper_values(experiment)
    digits = 1 if experiment.scale == 100.0 else 2
    # the rows of the table: classes (per dataset) or the paper's columns
    single_task = ours.empty or (ours["normal_class"] == "").all()
    classes = sorted(set(paper["normal_class"]) - {""}) if experiment.layout == "classes" else [""]
    if experiment.layout == "classes" and not ours.empty:
        ordered = list(dict.fromkeys(ours["normal_class"]))
        classes = ordered + [c for c in classes if c not in ordered]
    body: dict[str, dict[str, str]] = {}
    means: dict[tuple[str, str], tuple[str, float]] = {}  # (row, cell) -> (group, our mean): for bold
    misses = 0

    def cell(dataset: str, cls: str, column: str) -> tuple[str, str, str, float]:
        nonlocal misses
        mine = ours[(ours["dataset"] == dataset) & (ours["column"] == column)]
        if experiment.layout == "classes" or not single_task:
            mine = mine[mine["normal_class"] == cls] if cls else mine
        ref = paper[(paper["dataset"] == dataset) & (paper["column"] == column)]
        if experiment.layout == "classes":
            ref = ref[ref["normal_class"] == cls]
        has_method = any(c.name == column and c.method for c in experiment.columns)
        values = mine["value"].dropna()
        ours_text = _fmt(values.mean(), values.std(ddof=1), len(values), digits) if len(values) else ("–" if has_method else "")
        if len(values) and mine["oracle"].any():
            ours_text += DAGGER
        if len(values) and mine["inverted"].any():
            ours_text += INVERTED
        paper_text, delta_text = "–", ""
        if len(ref):
            p = ref.iloc[0]
            paper_text = _fmt(float(p["mean"]), float(p["std"]) if pd.notna(p["std"]) else np.nan, 2, digits)
            if len(values):
                delta = values.mean() - float(p["mean"])
                delta_text = f"{delta:+.{digits}f}"
                if abs(delta) > experiment.tolerance:
                    delta_text += f" {MISS}"
                    misses += 1
        return ours_text, paper_text, delta_text, values.mean() if len(values) else np.nan

    if experiment.layout == "classes":
        for dataset in experiment.datasets:
            for cls in classes:
                row = body.setdefault(cls, {})
                for column in experiment.columns:
                    o, p, d, mean = cell(dataset, cls, column.name)
                    tag = f"{column.name}" + (f" [{dataset}]" if len(experiment.datasets) > 1 else "")
                    if column.method:
                        row[tag], row[f"{tag} Δ"] = o, d
                        means[(cls, tag)] = (f"{cls}|{dataset}", mean)  # best method per class and dataset
                    row[f"{tag} (paper)"] = p
        index_name = "normal class"
    else:
        for column in experiment.columns:
            row = body.setdefault(column.name, {})
            for dataset in experiment.datasets:
                o, p, d, mean = cell(dataset, "", column.name)
                if column.method:
                    row[dataset], row[f"{dataset} Δ"] = o, d
                    means[(column.name, dataset)] = (dataset, mean)  # best method per dataset
                row[f"{dataset} (paper)"] = p
        index_name = "method"
    best: dict[str, float] = {}
    for group, mean in means.values():
        if not np.isnan(mean):
            best[group] = max(best.get(group, -np.inf), round(mean, digits))
    for (row_key, col), (group, mean) in means.items():
        if not np.isnan(mean) and round(mean, digits) == best[group]:
            body[row_key][col] = f"**{body[row_key][col]}**"  # markdown bold; render() translates
    table = pd.DataFrame.from_dict(body, orient="index").fillna("")  # paper-only rows have no Δ cells
    table.index.name = index_name

    caption = [experiment.title]
    if experiment.variant is not None:
        note = experiment.variants[experiment.variant].get("note", "")
        caption.append(f"Variant '{experiment.variant}': protocol {experiment.protocol}, metric {experiment.metric}. {note}".strip())
    if budget != "full":
        caption.append(
            f"Budget '{budget}': reduced epochs, repetitions or training points (see results/paper/experiments/"
            f"{experiment.name}.toml) — not the paper's schedule, so differences are no verdict on the paper."
        )
    caption.append(
        f"Δ = ours − paper; {MISS} marks |Δ| > {experiment.tolerance:g}. Columns without Δ are paper-only; "
        "– = not run here, or the metric is undefined on this test set (one class only)."
    )
    caption += selection_lines(ours) + scoring_lines(experiment) + inverted_lines(ours) + identical_lines(ours)
    if not ours.empty and ours["oracle"].any():
        caption.append(f"{DAGGER} epoch selected on test data (oracle), as the authors' code did; not an honest estimate.")
    ceilings = ours["ceiling"].dropna() if not ours.empty else pd.Series(dtype=float)
    if len(ceilings):
        caption.append(f"The metric cannot exceed {ceilings.max():.{digits}f} on these test sets (protocol ceiling).")
    if misses:
        caption.append(f"{misses} cell(s) outside tolerance.")
    return table, caption


def render(table: pd.DataFrame, caption: list[str], fmt: str) -> str:
    """Markdown, LaTeX (booktabs, best in bold), CSV or HTML; ``**x**`` cells are our best."""
    bold = re.compile(r"\*\*(.+?)\*\*")
    if fmt == "csv":
        return table.map(lambda text: bold.sub(r"\1", text)).to_csv()
    if fmt == "latex":

        def latex(text: str) -> str:
            escaped = text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")
            for char, tex in (("±", r"$\pm$"), ("†", r"$^\dagger$"), ("✗", r"$\times$"), ("Δ", r"$\Delta$"), ("−", "-"), ("–", "--"), ("—", "---")):
                escaped = escaped.replace(char, tex)  # pdflatex's default input has none of these
            return bold.sub(r"\\textbf{\1}", escaped)

        cells = table.map(latex)
        cells.index = [latex(str(i)) for i in cells.index]
        cells.columns = [latex(str(c)) for c in cells.columns]
        body = cells.to_latex(escape=False).strip()  # booktabs rules are pandas' default
        return "\n".join(["\\begin{table}", f"\\caption{{{latex(' '.join(caption))}}}", body, "\\end{table}"])
    headers = [table.index.name or "", *table.columns]
    rows = [[idx, *row] for idx, row in zip(table.index, table.to_numpy().tolist())]
    if fmt == "html":
        rows = [[bold.sub(r"<b>\1</b>", str(c)) for c in row] for row in rows]
        text = tabulate(rows, headers=headers, tablefmt="unsafehtml", disable_numparse=True)
        return f"<figure>{text}<figcaption>{'<br>'.join(caption)}</figcaption></figure>"
    text = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)
    return f"### {caption[0]}\n\n{text}\n\n" + "\n".join(f"*{line}*" for line in caption[1:])


# -- the gap table: honest (validation-selected) vs oracle (test-selected) vs the paper ----------------------------

GAP_COLUMNS = [
    "experiment", "variant", "budget", "dataset", "normal_class", "column", "honest_mean", "honest_std", "honest_n",
    "oracle_mean", "oracle_std", "oracle_n", "paper_mean", "paper_std", "paper_minus_honest", "oracle_minus_honest",
    "honest_selected_by", "why",
]  # fmt: skip
GAP_FOLDER = "reproduce"


def _stats(values: pd.Series) -> tuple[float, float, int]:
    values = values.dropna()
    if values.empty:
        return np.nan, np.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else np.nan, len(values)


def _values(frame: pd.DataFrame, cell: dict[str, str]) -> pd.Series:
    """The values of one (dataset, normal class, column) cell of :func:`collect`'s rows."""
    if frame.empty:
        return pd.Series(dtype=float)
    mask = (frame["dataset"] == cell["dataset"]) & (frame["column"] == cell["column"])
    return frame.loc[mask & (frame["normal_class"] == cell["normal_class"]), "value"]


def paper_cell(experiment: Experiment, paper: pd.DataFrame, where: dict[str, str]) -> tuple[float, float]:
    """The paper's (mean, std) for one (dataset, normal class, column) cell; NaN where it has none.

    A single-task row (our normal class empty) takes the paper's one row for
    that dataset and column, whatever class name the paper gives it
    (Table 3 calls its Epileptic Seizure row 'seizure').
    """
    ref = paper[(paper["dataset"] == where["dataset"]) & (paper["column"] == where["column"])]
    exact = ref[ref["normal_class"] == where["normal_class"]]
    if len(exact) or experiment.layout == "classes" or where["normal_class"] or len(ref) != 1:
        ref = exact
    if not len(ref):
        return np.nan, np.nan
    std = ref["std"].iloc[0]
    return float(ref["mean"].iloc[0]), float(std) if pd.notna(std) else np.nan


def _selected(frame: pd.DataFrame, where: dict[str, str]) -> list[str]:
    """What selected the epochs of one cell's jobs (``val``, ``last``, ``oracle``), as the records say."""
    if frame.empty:
        return []
    mask = (frame["dataset"] == where["dataset"]) & (frame["column"] == where["column"])
    rules = frame.loc[mask & (frame["normal_class"] == where["normal_class"]), "selected_by"]
    return [str(r) for r in dict.fromkeys(rules) if r]


def gap_table(experiment: Experiment, honest: pd.DataFrame, oracle: pd.DataFrame, budget: str) -> pd.DataFrame:
    """One row per cell odbench ran: honest and oracle mean/std/n, the paper's number, and the two gaps.

    ``honest`` / ``oracle``: :func:`collect`'s rows of the same plan run
    with ``--selection val`` and ``--selection oracle`` (either may be
    empty: a selection not run leaves its columns NaN).  Gaps:
    ``paper − honest`` (how far the paper's number is above an honest
    estimate) and ``oracle − honest`` (the optimism of picking the epoch on
    the test set).  Values are in the experiment's scale (e.g. percent).
    """
    paper = paper_values(experiment)
    honest, oracle = _complete(honest), _complete(oracle)
    cells = pd.concat([honest, oracle])[["dataset", "normal_class", "column"]].drop_duplicates()
    order = {c.name: i for i, c in enumerate(experiment.columns)}
    datasets = {d: i for i, d in enumerate(experiment.datasets)}
    cells = cells.assign(_order=cells["column"].map(order), _dataset=cells["dataset"].map(datasets))
    cells = cells.sort_values(["_dataset", "_order"], kind="stable")  # classes stay in the order they ran
    rows = []
    for _, cell in cells.iterrows():
        where = {"dataset": cell["dataset"], "normal_class": cell["normal_class"], "column": cell["column"]}
        h, o = _stats(_values(honest, where)), _stats(_values(oracle, where))
        p_mean, p_std = paper_cell(experiment, paper, where)
        rules = _selected(honest, where)
        rows.append({
            "experiment": experiment.name, "variant": experiment.variant or "", "budget": budget, **where,
            "honest_mean": h[0], "honest_std": h[1], "honest_n": h[2], "oracle_mean": o[0], "oracle_std": o[1], "oracle_n": o[2],
            "paper_mean": p_mean, "paper_std": p_std, "paper_minus_honest": p_mean - h[0], "oracle_minus_honest": o[0] - h[0],
            "honest_selected_by": " / ".join(rules),
            "why": reasons(experiment, cell["column"], rules + (["oracle"] if o[2] else []), budget, max(h[2], o[2])),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def gap_path(results: Path, experiment: Experiment, budget: str) -> Path:
    variant = f"~{experiment.variant}" if experiment.variant else ""
    return results / GAP_FOLDER / f"{experiment.name}{variant}_{budget}.csv"


def save_gap(results: Path, gaps: pd.DataFrame, experiment: Experiment, budget: str) -> Path:
    """Keep the gap table beside the store, where ``odbench report --html`` finds it."""
    path = gap_path(results, experiment, budget)
    path.parent.mkdir(parents=True, exist_ok=True)
    gaps.to_csv(path, index=False)
    return path


def saved_gaps(results: Path) -> list[pd.DataFrame]:
    """The gap tables ``odbench reproduce`` left in a results folder, by file name."""
    folder = results / GAP_FOLDER
    found = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    frames = [pd.read_csv(p, dtype={"normal_class": str, "variant": str}) for p in found]
    return [f.fillna({"normal_class": "", "variant": ""}) for f in frames]


def _num(value: Any, digits: int, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return "–"
    return f"{float(value):+.{digits}f}" if sign else f"{float(value):.{digits}f}"


def _pm(mean: Any, std: Any, n: Any, digits: int) -> str:
    text = _num(mean, digits)
    if text != "–" and pd.notna(std) and std != "" and int(n or 0) > 1:
        text += f" ± {float(std):.{digits}f}"
    return text


def gap_caption(gaps: pd.DataFrame) -> list[str]:
    first = gaps.iloc[0] if len(gaps) else None
    name = "" if first is None else f"{first['experiment']}" + (f" ({first['variant']})" if first["variant"] else "") + f", budget {first['budget']}"
    lines = [f"Honest vs oracle vs paper: {name}"]
    lines.append(
        "honest: epoch selected without test data, on validation or, where there is no validation split, the last "
        "epoch ('selected by' says which); oracle: on the test set (`--selection oracle`, as the authors' code); "
        "paper − honest: how much higher the published number is than an honest estimate; oracle − honest: the optimism "
        "of test-set selection; why: how the paper's number was made otherwise than ours (the experiment's file, "
        "then what the records say ran)."
    )
    if len(gaps) and (gaps["oracle_n"].fillna(0) == 0).all():
        lines.append(f"oracle not run: `odbench reproduce {first['experiment']} --selection oracle` fills it." if first is not None else "")
    return lines


def render_gap(gaps: pd.DataFrame, fmt: str, digits: int = 2) -> str:
    """The gap table in markdown, html, latex or csv (numeric columns)."""
    if fmt == "csv":
        return gaps.to_csv(index=False).rstrip("\n")
    headers = ["dataset", "normal class", "column", "honest", "selected by", "oracle", "paper", "paper − honest",
               "oracle − honest", "why"]  # fmt: skip
    body = [
        [r["dataset"], r["normal_class"] or "", r["column"], _pm(r["honest_mean"], r["honest_std"], r["honest_n"], digits),
         r.get("honest_selected_by", "") if pd.notna(r.get("honest_selected_by", "")) else "",
         _pm(r["oracle_mean"], r["oracle_std"], r["oracle_n"], digits), _pm(r["paper_mean"], r["paper_std"], 2, digits),
         _num(r["paper_minus_honest"], digits, True), _num(r["oracle_minus_honest"], digits, True),
         r.get("why", "") if pd.notna(r.get("why", "")) else ""]
        for _, r in gaps.iterrows()
    ]  # fmt: skip
    caption = gap_caption(gaps)
    if fmt == "html":
        import html

        body = [[html.escape(str(c)) for c in row] for row in body]
        text = tabulate(body, headers=headers, tablefmt="unsafehtml", disable_numparse=True)
        return f"<h3>{html.escape(caption[0])}</h3>\n{text}\n" + "".join(f'<p class="note">{html.escape(c)}</p>' for c in caption[1:])
    if fmt == "latex":
        frame = pd.DataFrame(body, columns=headers).set_index("dataset")
        return render(frame, caption, "latex")
    text = tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True)
    return f"### {caption[0]}\n\n{text}\n\n" + "\n".join(f"*{line}*" for line in caption[1:] if line)


# -- the verdict: one tidy row per cell, for results/reproduced/ ------------------------------------------------------

VERDICT_COLUMNS = [
    "experiment", "variant", "budget", "selection", "scoring", "method", "dataset", "normal_class", "metric",
    "ours_mean", "ours_std", "n", "paper", "delta", "inverted", "why",
]  # fmt: skip


def verdict_table(experiment: Experiment, ours: pd.DataFrame, budget: str) -> pd.DataFrame:
    """One row per cell odbench ran: our mean, std and n in the paper's unit, the paper's number, Δ and why they differ.

    ``selection`` is what the records say chose the epochs (``val``,
    ``last``, ``oracle``; empty for classical methods); ``inverted`` counts
    the cell's jobs whose validation scores were significantly inverted.
    """
    paper = paper_values(experiment)
    ours = _complete(ours)
    rows: list[dict[str, Any]] = []
    if ours.empty:
        return pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    order = {c.name: i for i, c in enumerate(experiment.columns)}
    cells = ours[["dataset", "normal_class", "column"]].drop_duplicates()
    cells = cells.assign(_order=cells["column"].map(order), _dataset=cells["dataset"].map(experiment.datasets.index))
    for _, cell in cells.sort_values(["_dataset", "_order"], kind="stable").iterrows():
        where = {"dataset": cell["dataset"], "normal_class": cell["normal_class"], "column": cell["column"]}
        mean, std, n = _stats(_values(ours, where))
        p_mean, _ = paper_cell(experiment, paper, where)
        mask = (ours["dataset"] == where["dataset"]) & (ours["column"] == where["column"])
        mine = ours[mask & (ours["normal_class"] == where["normal_class"])]
        rules = _selected(ours, where)
        rows.append({
            "experiment": experiment.name, "variant": experiment.variant or "", "budget": budget,
            "selection": " / ".join(rules), "scoring": experiment.scoring, "method": where["column"],
            "dataset": where["dataset"], "normal_class": where["normal_class"], "metric": experiment.metric,
            "ours_mean": mean, "ours_std": std, "n": n, "paper": p_mean, "delta": mean - p_mean,
            "inverted": int(mine["inverted"].sum()), "why": reasons(experiment, where["column"], rules, budget, n),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def verdict_name(experiment: Experiment) -> str:
    """``table2`` or ``table2_edgeml``: the file name (without suffix) of an experiment's verdict."""
    return experiment.name + (f"_{experiment.variant}" if experiment.variant else "")


def gap_tables_html(frames: list[pd.DataFrame], digits: int = 2) -> str:
    """Every saved gap table as HTML (empty text when none)."""
    return "\n".join(render_gap(frame, "html", digits) for frame in frames if len(frame))


__all__ = [
    "BUDGETS", "Budget", "Column", "Experiment", "ReproductionPlan", "available", "load_experiment", "paper_folder",
    "with_variant", "collect", "comparison", "gap_table", "render", "render_gap", "save_gap", "saved_gaps",
    "verdict_table", "verdict_name", "gap_tables_html", "paper_values",
]  # fmt: skip
