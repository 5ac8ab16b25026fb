"""The paper's experiments as data, and the jobs that reproduce one.

An experiment is a TOML file in ``results/paper/experiments`` (shipped in the
wheel as ``odbench_paper``) naming the datasets, protocol, metric, the
paper's columns and, for each column odbench has, the method and the
reference hyperparameters.  A *budget* scales the run: ``quick`` (a laptop
CPU, reduced epochs / training points) or ``full`` (the paper's schedule).
:func:`plan_jobs` turns an experiment into the runner's jobs, each tagged
with the paper column it fills; the tables beside the paper's numbers are
``odbench.views.reproduce``'s, read from the store.
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from odbench.engine.plan import Job, Plan, UsageError, expand
from odbench.engine.registry import Registry

BUDGETS = ("quick", "full")


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
    #: aspect -> how this column's paper number was made otherwise than ours (adds to the experiment's)
    why: dict[str, str] = field(default_factory=dict)


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
    #: the epoch selection this experiment (variant) runs unless the command line names one
    selection: str | None = None
    #: how scores are read (``odbench.deep.scoring_modes``); only a variant may name another than eval
    scoring: str = "eval"
    #: aspect -> how the paper's numbers were made otherwise than ours (the gap table's ``why``)
    why: dict[str, str] = field(default_factory=dict)


#: what a variant may change
VARIANT_KEYS = ("protocol", "protocol_options", "metric", "tolerance", "selection", "scoring", "why", "columns_why", "note")


def with_variant(experiment: Experiment, variant: str | None) -> Experiment:
    """The experiment with a named variant's protocol, options, metric, selection, scoring and reasons."""
    if variant is None:
        return experiment
    if variant not in experiment.variants:
        known = ", ".join(experiment.variants) or "none"
        raise UsageError(f"experiment {experiment.name!r} has no variant {variant!r}; known: {known}")
    spec = experiment.variants[variant]
    changes = {k: v for k, v in spec.items() if k not in ("note", "why", "columns_why")}
    own = spec.get("columns_why", {})  # a variant's reasons for single columns (their numbers' convention)
    columns = [replace(c, why={**c.why, **own.get(c.name, {})}) for c in experiment.columns]
    return replace(experiment, **changes, columns=columns, why={**experiment.why, **spec.get("why", {})}, variant=variant)


def load_experiment(name: str) -> Experiment:
    """The experiment ``name``; an unknown name is a UsageError listing the known ones."""
    path = paper_folder() / "experiments" / f"{name}.toml"
    if not path.is_file():
        raise UsageError(f"unknown experiment {name!r}; known: {', '.join(available())}, figure1")
    raw = tomllib.loads(path.read_text())
    columns = [
        Column(col, spec.get("method"), dict(spec.get("params", {})), dict(spec.get("dataset_params", {})),
               dict(spec.get("why", {})))
        for col, spec in raw["columns"].items()
    ]  # fmt: skip
    for variant, spec in raw.get("variants", {}).items():
        unknown = sorted(set(spec) - set(VARIANT_KEYS))
        if unknown:  # a typo in a shipped file would otherwise be ignored silently
            raise UsageError(f"{path.name}: variant {variant!r} sets {unknown[0]!r}; a variant may set {', '.join(VARIANT_KEYS)}")
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
        selection=raw.get("selection"),
        why=dict(raw.get("why", {})),
    )


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
    selection: str | None = None,
    columns: list[str] | None = None,
) -> ReproductionPlan:
    """Jobs for every column odbench has (or those named in ``columns``), on ``datasets`` (the runnable subset).

    ``repetitions`` overrides the budget's count (a full schedule on fewer
    seeds); ``selection="oracle"`` picks each deep job's epoch on test, as
    the authors' trainers do, and every such cell is marked.  ``selection``
    None: the experiment's own (a variant's), else ``"val"``.  The jobs
    score as the experiment says (``Experiment.scoring``).
    """
    selection = selection or experiment.selection or "val"
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
                protocol_options=options, selection=selection, scoring=experiment.scoring,
            )  # fmt: skip
            plan.jobs += part.jobs
            plan.notes += part.notes
            tags += [(column.name, job) for job in part.jobs]
    return ReproductionPlan(plan, tags)
