"""Hyperparameter search with Optuna, on the validation split only.

One study per (method, dataset, protocol, normal class).  The objective
fits the method on ``task.for_fit()`` — a task *without* its test split, so
the search cannot read test labels even by accident — and returns the
protocol's headline metric on the validation split.  Deep methods report
per-epoch validation numbers through ``FitContext.on_epoch``; those feed
Optuna's pruner.  Studies live in an Optuna storage (SQLite by default), so
an interrupted search resumes and a re-run adds only the missing trials.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from odbench.api import FitContext, Method, Task
from odbench.metrics import evaluate


class TuningError(ValueError):
    """The task cannot be tuned as asked (a user error)."""


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    params: dict[str, Any]
    value: float | None
    state: str


def study_name(method: str, dataset: str, protocol: str, normal_class: str | None, grid: bool = False) -> str:
    return f"{method}|{dataset}|{protocol}|{normal_class or '-'}" + ("|grid" if grid else "")


def _check_validation(task: Task) -> None:
    y = task.val.y
    if y is None or len(np.unique(y)) < 2:
        raise TuningError(
            f"the validation split of {task.dataset} ({task.protocol}) has no labelled anomalies, so nothing can be "
            "tuned on it; use a protocol whose validation split has both classes (e.g. --protocol-option val_anomaly_fraction=0.2)"
        )


def _grid_size(grid: dict[str, list[Any]]) -> int:
    return math.prod(len(v) for v in grid.values())


def make_objective(
    method_cls: type[Method],
    task: Task,
    seed: int,
    device: str = "cpu",
    grid: dict[str, list[Any]] | None = None,
    fixed: dict[str, Any] | None = None,
) -> Callable[[optuna.Trial], float]:
    """The function Optuna maximizes: the validation metric of one fit."""
    fit_task = task.for_fit()
    metric = task.headline_metric

    def objective(trial: optuna.Trial) -> float:
        if grid is not None:
            suggested = {k: trial.suggest_categorical(k, v) for k, v in grid.items()}
        else:
            suggested = method_cls.search_space(trial, task.info)
        params = {**method_cls.default_params(task.info), **(fixed or {}), **suggested}

        def on_epoch(epoch: int, numbers: dict[str, float]) -> None:
            value = numbers.get(f"val_{metric}")
            if value is not None and np.isfinite(value):
                trial.report(float(value), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        method = method_cls(**params).fit(fit_task, FitContext(seed=seed, device=device, on_epoch=on_epoch))
        scores = method.anomaly_score(fit_task.val.X)
        value = evaluate((metric,), fit_task.val.y, scores)[metric]
        if not np.isfinite(value):
            raise optuna.TrialPruned(f"validation {metric} is not finite")
        return float(value)

    return objective


def tune(
    method_cls: type[Method],
    task: Task,
    *,
    n_trials: int,
    storage: str,
    name: str,
    seed: int,
    device: str = "cpu",
    use_grid: bool = False,
    fixed: dict[str, Any] | None = None,
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
) -> optuna.Study:
    """Run (or resume) the study ``name`` until it has ``n_trials`` finished trials.

    With ``use_grid`` the method's ``param_grid`` is searched exhaustively and
    ``n_trials`` is ignored.  Returns the study; ``study.best_params`` holds
    the suggested values only (merge with defaults to rebuild the method).
    """
    _check_validation(task)
    grid = method_cls.param_grid(task.info) if use_grid else None
    if use_grid and grid is None:
        raise TuningError(f"method {method_cls.name!r} has no parameter grid; drop --grid to search its space")
    sampler = optuna.samplers.GridSampler(grid, seed=seed) if grid else optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        load_if_exists=True,
    )
    target = _grid_size(grid) if grid else n_trials
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = sum(t.state in finished for t in study.trials)
    if done < target:
        objective = make_objective(method_cls, task, seed, device, grid, fixed)
        study.optimize(objective, n_trials=target - done, callbacks=callbacks, catch=(RuntimeError, ValueError))
    return study


def outcomes(study: optuna.Study) -> list[TrialOutcome]:
    return [TrialOutcome(t.number, dict(t.params), t.value, t.state.name) for t in study.trials]
