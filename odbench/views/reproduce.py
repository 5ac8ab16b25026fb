"""``odbench reproduce``: the paper's experiments, our numbers beside its own.

An experiment is data, not code: a TOML file in ``results/paper/experiments``
(shipped in the wheel as ``odbench_paper``) naming the datasets, protocol,
metric, the paper's columns and, for each column odbench has, the method and
the reference hyperparameters.  A *budget* scales the run: ``quick`` (a
laptop CPU, reduced epochs / training points, said in the caption) or
``full`` (the paper's schedule).  The paper's published numbers come from
``drocc_paper_results.csv`` in the same folder.

Jobs run through the ordinary runner and store, so a reproduction resumes
like any suite and its runs appear in MLflow.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from odbench.engine.plan import Job, Plan, UsageError, expand
from odbench.engine.registry import Registry

PAPER_CSV = "drocc_paper_results.csv"
BUDGETS = ("quick", "full")
MISS = "✗"  # outside the stated tolerance
DAGGER = "†"  # selected on test data (oracle)


def paper_folder() -> Path:
    """``results/paper`` of a source checkout, or the installed ``odbench_paper``."""
    repo = Path(__file__).resolve().parents[2] / "results" / "paper"
    if repo.is_dir():
        return repo
    spec = importlib.util.find_spec("odbench_paper")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the paper's experiment files are not installed (odbench_paper); reinstall odbench")
    return Path(next(iter(spec.submodule_search_locations)))


def available() -> list[str]:
    return sorted(p.stem for p in (paper_folder() / "experiments").glob("*.toml"))


@dataclass(frozen=True)
class Column:
    """One column of the paper's table; ``method`` is None for paper-only ones."""

    name: str
    method: str | None
    params: dict[str, Any] = field(default_factory=dict)
    dataset_params: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    name: str
    repetitions: int
    classes: list[str] | None = None
    max_train: int | None = None
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    paper_table: str
    datasets: list[str]
    metric: str
    scale: float
    tolerance: float
    layout: str  # "classes": rows = normal classes; "datasets": rows = columns of the paper
    columns: list[Column]
    budgets: dict[str, Budget]
    protocol: str | None = None
    protocol_options: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | None = None
    #: our dataset name -> the name in the paper's CSV, where they differ
    paper_datasets: dict[str, str] = field(default_factory=dict)
    #: named alternatives (another protocol and its metric), e.g. the authors' own split
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    variant: str | None = None


def with_variant(experiment: Experiment, variant: str | None) -> Experiment:
    """The experiment with a named variant's protocol, options, metric and tolerance."""
    if variant is None:
        return experiment
    if variant not in experiment.variants:
        known = ", ".join(experiment.variants) or "none"
        raise UsageError(f"experiment {experiment.name!r} has no variant {variant!r}; known: {known}")
    changes = {k: v for k, v in experiment.variants[variant].items() if k != "note"}
    return replace(experiment, **changes, variant=variant)


def load_experiment(name: str) -> Experiment:
    """The experiment ``name``; an unknown name is a UsageError listing the known ones."""
    path = paper_folder() / "experiments" / f"{name}.toml"
    if not path.is_file():
        raise UsageError(f"unknown experiment {name!r}; known: {', '.join(available())}, figure1")
    raw = tomllib.loads(path.read_text())
    columns = [
        Column(col, spec.get("method"), dict(spec.get("params", {})), dict(spec.get("dataset_params", {})))
        for col, spec in raw["columns"].items()
    ]
    budgets = {
        b: Budget(b, int(spec.get("repetitions", 1)), spec.get("classes"), spec.get("max_train"), spec.get("params", {}))
        for b, spec in raw.get("budget", {}).items()
    }
    return Experiment(
        name=name,
        title=raw["title"],
        paper_table=raw["paper_table"],
        datasets=list(raw["datasets"]),
        metric=raw["metric"],
        scale=float(raw.get("scale", 1.0)),
        tolerance=float(raw["tolerance"]),
        layout=raw.get("layout", "datasets"),
        columns=columns,
        budgets=budgets,
        protocol=raw.get("protocol"),
        protocol_options=dict(raw.get("protocol_options", {})),
        classes=raw.get("classes"),
        paper_datasets=dict(raw.get("paper_datasets", {})),
        variants=dict(raw.get("variants", {})),
    )


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


@dataclass
class ReproductionPlan:
    """The runner's plan, each job tagged with the paper column it fills."""

    plan: Plan
    columns: list[tuple[str, Job]]  # (paper column, job)


def check_columns(experiment: Experiment, columns: list[str] | None) -> None:
    """Every named column is one odbench runs (said before any data is read)."""
    runnable = [c.name for c in experiment.columns if c.method is not None]
    unknown = [c for c in columns or [] if c not in runnable]
    if unknown:
        raise UsageError(f"experiment {experiment.name!r} has no column {unknown[0]!r} that odbench runs; known: {', '.join(runnable)}")


def plan_jobs(
    experiment: Experiment,
    budget: str,
    registry: Registry,
    datasets: list[str],
    base_seed: int = 0,
    *,
    repetitions: int | None = None,
    selection: str = "val",
    columns: list[str] | None = None,
) -> ReproductionPlan:
    """Jobs for every column odbench has (or those named in ``columns``), on ``datasets`` (the runnable subset).

    ``repetitions`` overrides the budget's count (a full schedule on fewer
    seeds); ``selection="oracle"`` picks each deep job's epoch on test, as
    the authors' trainers do, and every such cell is marked.
    """
    if budget not in experiment.budgets:
        raise UsageError(f"experiment {experiment.name!r} has no budget {budget!r}; known: {', '.join(experiment.budgets)}")
    check_columns(experiment, columns)
    b = experiment.budgets[budget]
    options = dict(experiment.protocol_options)
    if b.max_train is not None:
        options["max_train"] = b.max_train
    plan, tags = Plan(jobs=[]), []
    for column in experiment.columns:
        if column.method is None or (columns and column.name not in columns):
            continue
        for dataset in datasets:
            params = {**column.params, **column.dataset_params.get(dataset, {}), **b.params.get(column.method, {})}
            classes = b.classes or experiment.classes
            dataset_classes = registry.dataset(dataset).classes
            if classes and dataset_classes:  # a class list applies to the datasets that have those classes
                classes = [c for c in classes if c in dataset_classes] or None
            part = expand(
                registry, [column.method], [dataset], protocol=experiment.protocol, classes=classes,
                repetitions=repetitions or b.repetitions, base_seed=base_seed, params={column.method: params},
                protocol_options=options, selection=selection,
            )  # fmt: skip
            plan.jobs += part.jobs
            plan.notes += part.notes
            tags += [(column.name, job) for job in part.jobs]
    return ReproductionPlan(plan, tags)


def collect(repro: ReproductionPlan, registry: Registry, store: Any, metric: str, scale: float) -> pd.DataFrame:
    """Our finished results: one row per job (column, dataset, class, value, oracle, ceiling)."""
    rows = []
    for column, job in repro.columns:
        record = store.read(job.key(registry))
        if record is None or record.get("status") != "ok":
            continue
        value = record["metrics"].get(metric)
        ceiling = record.get("split", {}).get("ceilings", {}).get(metric)
        rows.append(
            {
                "column": column,
                "dataset": job.dataset,
                "normal_class": _norm(job.normal_class or ""),
                "value": np.nan if value is None else float(value) * scale,
                "oracle": record.get("selection") == "oracle",
                "ceiling": np.nan if ceiling is None else float(ceiling) * scale,
            }
        )
    return pd.DataFrame(rows, columns=["column", "dataset", "normal_class", "value", "oracle", "ceiling"])


def _fmt(mean: float, std: float, n: int, digits: int) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 and not np.isnan(std) else "")


def comparison(experiment: Experiment, ours: pd.DataFrame, budget: str) -> tuple[pd.DataFrame, list[str]]:
    """The paper-layout table (cells as text) and the lines of its caption."""
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
