"""Contract checks for plugins, shared by the test suite and ``odbench check``.

Like scikit-learn's estimator checks: each check returns a
:class:`CheckResult` with a hint on failure, so a plugin author learns what
to fix, not only that something broke.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from odbench.core.contracts import MODALITIES, Dataset, FitContext, LabeledData, Method, Task
from odbench.core.metrics import evaluate
from odbench.devkit.testing import obvious_outlier_task

#: median AUROC over CHECK_SEEDS draws of trivially separable data.  Working plugins reach
#: 1.0 on most draws; a DROCC-OE without its adversarial term (a classifier of the few
#: training negatives) reaches 0.89 on one draw and less on others, so one draw and a
#: floor of 0.9 could not tell it from a working one, which reached 0.57-1.0 by draw.
AUROC_FLOOR = 0.95
#: each check draws a fresh task and fits with the same seed; the median forgives one unlucky draw
CHECK_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class CheckResult:
    check: str
    passed: bool
    message: str = ""
    hint: str = ""
    skipped: bool = False


def _ok(check: str, message: str = "") -> CheckResult:
    return CheckResult(check, True, message)


def _fail(check: str, message: str, hint: str) -> CheckResult:
    return CheckResult(check, False, message, hint)


def _skip(check: str, message: str) -> CheckResult:
    return CheckResult(check, True, message, skipped=True)


def method_attributes(cls: type[Method]) -> CheckResult:
    problems = []
    if not isinstance(getattr(cls, "name", None), str) or not cls.name.replace("_", "").isalnum():
        problems.append("`name` must be a short identifier string")
    if not cls.modalities or not set(cls.modalities) <= set(MODALITIES):
        problems.append(f"`modalities` must be a non-empty subset of {MODALITIES}")
    if not isinstance(cls.uses_negatives, bool) or not isinstance(cls.deep, bool):
        problems.append("`uses_negatives` and `deep` must be booleans")
    if not isinstance(cls.test_params, dict):
        problems.append("`test_params` must be a dict")
    try:
        stored = cls(some_param=1).given_params
        if stored.get("some_param") != 1:
            problems.append("__init__ must store its keyword arguments in self.given_params (call super().__init__)")
    except Exception as err:  # noqa: BLE001 - any failure here is the finding
        problems.append(f"__init__(**params) raised {type(err).__name__}: {err}")
    if problems:
        return _fail("attributes", "; ".join(problems), "see odbench.api.Method for the expected class attributes")
    return _ok("attributes")


def _fit_and_score(
    cls: type[Method], modality: str, seed: int, task: Task | None = None
) -> tuple[np.ndarray, Method, Task]:
    task = task if task is not None else obvious_outlier_task(modality)
    method = cls(**{**cls.default_params(task.info), **cls.test_params})
    fitted = method.fit(task.for_fit(), FitContext(seed=seed))
    if fitted is not method:
        raise AssertionError("fit must return self")
    return np.asarray(method.anomaly_score(task.test.X)), method, task


def method_scores(cls: type[Method], modality: str) -> list[CheckResult]:
    """Fit on obvious-outlier tasks; check shape, finiteness, direction, determinism.

    Direction is judged on the median AUROC over :data:`CHECK_SEEDS` (a fresh
    task and fit seed each): one draw is a coin that a barely-learning method
    can win, and a working one can lose.
    """
    tag = f"[{modality}]"
    started = time.perf_counter()
    try:
        scores, method, task = _fit_and_score(cls, modality, seed=CHECK_SEEDS[0])
    except Exception as err:  # noqa: BLE001
        return [_fail(f"fit and score {tag}", f"{type(err).__name__}: {err}", "fit(task, ctx) must train on task.train and return self")]
    seconds = time.perf_counter() - started
    results = [_ok(f"fit and score {tag}", f"{seconds:.1f} s")]
    n = len(task.test)
    if scores.shape != (n,):
        return results + [_fail(f"score shape {tag}", f"got {scores.shape}, expected ({n},)", "return one score per row of X")]
    results.append(_ok(f"score shape {tag}"))
    if not np.all(np.isfinite(scores)):
        return results + [_fail(f"finite scores {tag}", "NaN or inf in scores", "guard divisions and logs")]
    results.append(_ok(f"finite scores {tag}"))
    aurocs = [evaluate(("auroc",), task.test.y, scores)["auroc"]]
    for seed in CHECK_SEEDS[1:]:
        other, _, other_task = _fit_and_score(cls, modality, seed=seed, task=obvious_outlier_task(modality, seed=seed))
        aurocs.append(evaluate(("auroc",), other_task.test.y, other)["auroc"] if np.all(np.isfinite(other)) else float("nan"))
    auroc = float(np.median(aurocs))
    shown = f"median AUROC {auroc:.3f} on obvious outliers (draws: {', '.join(f'{a:.3f}' for a in aurocs)})"
    if not auroc >= AUROC_FLOOR:  # NaN fails too
        hint = (
            "scores look inverted: anomaly_score must be higher for MORE anomalous points (negate a normality score)"
            if auroc < 1 - AUROC_FLOOR
            else "the method barely separates trivially separable outliers; check training and test_params"
        )
        results.append(_fail(f"score direction {tag}", shown, hint))
    else:
        results.append(_ok(f"score direction {tag}", shown))
    again, _, _ = _fit_and_score(cls, modality, seed=CHECK_SEEDS[0], task=task)
    if not np.allclose(again, scores, rtol=1e-5, atol=1e-7):
        results.append(_fail(f"determinism {tag}", "two fits with the same seed gave different scores",
                             "draw all randomness from ctx.seed (np.random.default_rng(ctx.seed), torch.manual_seed)"))
    else:
        results.append(_ok(f"determinism {tag}"))
    if cls.deep:
        results.append(batch_invariance(method, task.test.X, tag))
    return results


def batch_invariance(method: Method, X: np.ndarray, tag: str = "") -> CheckResult:
    """A point's score must not depend on which points share its batch."""
    whole = np.asarray(method.anomaly_score(X))
    order = np.random.default_rng(1).permutation(len(X))
    pieces = [np.asarray(method.anomaly_score(X[order[i : i + 5]])) for i in range(0, len(X), 5)]
    shuffled = np.empty_like(whole)
    shuffled[order] = np.concatenate(pieces)
    if not np.allclose(shuffled, whole, rtol=1e-4, atol=1e-5):
        return _fail(f"batch invariance {tag}", "scores change when the test set is shuffled and re-batched",
                     "score in eval mode (model.eval(): BatchNorm must use running statistics)")
    return _ok(f"batch invariance {tag}")


def check_method(cls: type[Method]) -> list[CheckResult]:
    results = [method_attributes(cls)]
    if not results[0].passed:
        return results
    for modality in cls.modalities:
        results += method_scores(cls, modality)
    return results


def dataset_attributes(cls: type[Dataset]) -> CheckResult:
    from odbench.protocols import PROTOCOLS

    problems = []
    if not isinstance(getattr(cls, "name", None), str) or not cls.name.replace("_", "").isalnum():
        problems.append("`name` must be a short identifier string")
    if cls.modality not in MODALITIES:
        problems.append(f"`modality` must be one of {MODALITIES}")
    if cls.default_protocol not in PROTOCOLS:
        problems.append(f"`default_protocol` must be one of {', '.join(PROTOCOLS)}")
    if not cls.bundled and not cls.files and "prepare" not in vars(cls) and not cls.takes_argument:
        problems.append("a downloaded dataset lists its `files` (RemoteFile with a pinned sha256) or overrides prepare()")
    if problems:
        return _fail("attributes", "; ".join(problems), "see odbench.api.Dataset for the expected class attributes")
    return _ok("attributes")


def labeled_data(data: LabeledData, cls: type[Dataset]) -> CheckResult:
    problems = []
    n_classes = len(data.class_names)
    for part, y in (("y", data.y), ("y_test", data.y_test)):
        if y is not None and (y.min() < 0 or y.max() >= n_classes):
            problems.append(f"{part} must hold class ids 0..{n_classes - 1}")
    for part, X in (("X", data.X), ("X_test", data.X_test)):
        if X is not None and X.dtype != np.uint8 and not np.all(np.isfinite(X)):
            problems.append(f"{part} has NaN or inf values")
    if data.X_test is not None and data.X_test.shape[1:] != data.X.shape[1:]:
        problems.append(f"X_test rows have shape {data.X_test.shape[1:]}, X rows {data.X.shape[1:]}")
    if cls.modality == "image" and data.X.ndim != 4:
        problems.append(f"images must be (N, C, H, W); got {data.X.shape}")
    if problems:
        return _fail("loaded data", "; ".join(problems), "see odbench.api.LabeledData")
    return _ok("loaded data", f"{len(data.X)} rows of shape {data.X.shape[1:]}, {n_classes} classes")


def check_dataset(dataset: Dataset, root: Path) -> list[CheckResult]:
    from odbench.core.download import ChecksumError, DataUnavailable
    from odbench.protocols import get_protocol

    cls = type(dataset)
    results = [dataset_attributes(cls)]
    try:
        dataset.prepare(root)
        data = dataset.load(root)
    except (DataUnavailable, ChecksumError) as err:
        return results + [_skip("load", f"data not available here: {err}")]
    except Exception as err:  # noqa: BLE001
        return results + [_fail("load", f"{type(err).__name__}: {err}", "prepare(root) then load(root) must return LabeledData")]
    results.append(labeled_data(data, cls))
    protocol = get_protocol(cls.default_protocol)
    first = protocol.normal_classes(dataset, data.class_names)[0]
    try:
        task = protocol.make_task(data, dataset, first, seed=0)
        results.append(_ok("default protocol", f"{protocol.name}: train {len(task.train)}, val {len(task.val)}, test {len(task.test)}"))
    except Exception as err:  # noqa: BLE001
        results.append(_fail("default protocol", f"{type(err).__name__}: {err}", "check classes / anomaly_classes"))
    return results


def end_to_end(path: Path, kind: str, name: str, results: Path) -> list[CheckResult]:
    """A tiny real job through the runner and store, as ``odbench run`` would do it.

    A method runs on one class of the bundled ``digits`` data with its
    ``test_params``; a dataset is run by ``knn`` on its first task, with at
    most 200 training points.
    """
    from odbench.engine.executors import SequentialExecutor
    from odbench.engine.plan import expand
    from odbench.engine.registry import Registry, RegistryError, bundled_folder
    from odbench.engine.store import Store
    from odbench.engine.suite import run_suite

    check = "end-to-end job"
    folder = path.resolve().parent
    bundled = {bundled_folder("method"), bundled_folder("dataset")}
    try:
        registry = Registry([] if folder in {f.resolve() for f in bundled if f} else [folder])
    except RegistryError as err:
        return [_fail(check, str(err), "every plugin needs a unique name; rename yours")]
    if kind == "method":
        cls = registry.method(name)
        if "tabular" not in cls.modalities:
            return [_skip(check, "needs a bundled dataset of its modality; run it with odbench run")]
        plan = expand(registry, [name], ["digits"], classes=["0"], params={name: dict(cls.test_params)})
    else:
        plan = expand(registry, ["knn"], [name], protocol_options={"max_train": 200})
        plan.jobs = plan.jobs[:1]
    store = Store(results)
    summary = run_suite(plan, registry, store, executor=SequentialExecutor(plan.cache))
    if summary.failed or summary.ok != len(plan.jobs):
        errors = [r.get("error", {}).get("message", "") for r in store.records() if r.get("status") != "ok"]
        message = errors[0] if errors else "; ".join(summary.notes) or "the job did not finish"
        return [_fail(check, message, "run `odbench run` with the same names to see the whole job")]
    record = store.records()[0]
    metric = record.get("headline_metric")
    return [_ok(check, f"{record['method']} on {record['dataset']}: {metric} {record['metrics'].get(metric, float('nan')):.3f}")]
