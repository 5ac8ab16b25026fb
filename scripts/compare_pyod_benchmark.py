"""odbench's ``unsupervised`` protocol against PyOD's published benchmark table.

PyOD's benchmark (``notebooks/benchmark.py``; table in
``scripts/pyod_benchmark_roc.csv`` with its source) splits each of 17 ODDS
sets 60/40 at random, z-scores on the training part, fits IForest, KNN,
LOF and OCSVM with pyod's defaults on the whole (contaminated) training
part and reports test ROC AUC, averaged over 10 splits.  This script runs
the same cells through odbench: the ``unsupervised`` protocol, the task's
own scaling (``odbench.protocols.scaling``) and the bundled method plugins
with their default parameters, one seed per trial.  Only sets whose files
are already on this machine are run (nothing is downloaded): ODDS
Arrhythmia through the ``arrhythmia`` plugin, the others through
``adbench:NAME``.  A set whose shape differs from the published one is a
different version of the data; its cells are shown but counted apart.

    ODBENCH_DATA_DIR=/work/shared/data python scripts/compare_pyod_benchmark.py
    ... --protocol-option val_fraction=0.2 --param ocsvm.nu=0.1   # undo a fix, for comparison
"""

from __future__ import annotations

import argparse
import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from odbench.api import Dataset, FitContext, LabeledData
from odbench.core.download import dataset_root, locate
from odbench.core.metrics import evaluate
from odbench.engine.registry import Registry, RegistryError
from odbench.protocols import get_protocol
from odbench.protocols.scaling import standardize

TABLE = Path(__file__).with_name("pyod_benchmark_roc.csv")
METHODS = ("iforest", "knn", "lof", "ocsvm")
TOLERANCE = 0.02


def dataset_id(pyod_name: str) -> str:
    return "arrhythmia" if pyod_name == "arrhythmia" else f"adbench:{pyod_name}"


def local_dataset(registry: Registry, pyod_name: str) -> tuple[Dataset, LabeledData] | None:
    """The set's plugin and arrays when every file is already here; None otherwise."""
    try:
        dataset = registry.dataset(dataset_id(pyod_name))
    except (RegistryError, ValueError):  # ADBench lacks the set, or pins no checksum for it
        return None
    root = dataset_root(dataset.name)
    if any(locate(remote, root) is None for remote in dataset.files):
        return None
    dataset.prepare(root)
    return dataset, dataset.load(root)


def auroc_trials(registry: Registry, method: str, dataset: Dataset, data: LabeledData, protocol: str,
                 options: dict, params: dict, trials: int) -> list[float]:
    """Test AUROC of ``method`` on ``trials`` tasks (seeds 0, 1, ...), as the runner would fit it."""
    cls = registry.method(method)
    values = []
    for seed in range(trials):
        task = standardize(get_protocol(protocol).make_task(data, dataset, None, seed, **options), dataset.channel_stats)
        model = cls(**{**cls.default_params(task.info), **params}).fit(task.for_fit(), FitContext(seed=seed))
        values.append(evaluate(("auroc",), task.test.y, model.anomaly_score(task.test.X))["auroc"])
    return values


def _assignments(items: list[str]) -> dict[str, object]:
    out = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="random splits per cell (PyOD: 10)")
    parser.add_argument("--protocol", default="unsupervised")
    parser.add_argument("--protocol-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE")
    args = parser.parse_args()
    if not os.environ.get("ODBENCH_DATA_DIR"):
        print("note: ODBENCH_DATA_DIR is unset; only sets already in odbench's cache are run")
    options = _assignments(args.protocol_option)
    params: dict[str, dict] = {m: {} for m in METHODS}
    for key, value in _assignments(args.param).items():
        method, _, name = key.partition(".")
        params[method][name] = value

    published = pd.read_csv(TABLE, comment="#")
    registry = Registry()
    rows, skipped = [], []
    for ref in published.itertuples(index=False):
        found = local_dataset(registry, ref.dataset)
        if found is None:
            skipped.append(ref.dataset)
            continue
        dataset, data = found
        n, d = len(data.y) + (0 if data.y_test is None else len(data.y_test)), int(np.prod(data.X.shape[1:]))
        same = (n, d) == (ref.n_samples, ref.n_features)
        for method in METHODS:
            ours = auroc_trials(registry, method, dataset, data, args.protocol, options, params[method], args.trials)
            theirs = float(getattr(ref, method))
            rows.append({
                "dataset": ref.dataset, "odbench id": dataset.id, "shape": f"{n}x{d}" + ("" if same else f" (pyod {ref.n_samples}x{ref.n_features})"),
                "method": method, "ours": np.mean(ours), "± (trials)": np.std(ours), "pyod": theirs,
                "diff": np.mean(ours) - theirs, "within": abs(np.mean(ours) - theirs) <= TOLERANCE, "same data": same,
            })  # fmt: skip
    frame = pd.DataFrame(rows)
    print(tabulate(frame, headers="keys", showindex=False, floatfmt=".4f"))
    print()
    if skipped:
        print(f"not available here (no local file): {', '.join(skipped)}")
    for label, part in (("same data as pyod's", frame[frame["same data"]]), ("all available", frame)):
        if len(part):
            print(f"{label}: {int(part['within'].sum())} of {len(part)} cells within {TOLERANCE}, "
                  f"mean |diff| {part['diff'].abs().mean():.4f}")  # fmt: skip
    print(f"protocol {args.protocol} {options or ''}, params {({m: p for m, p in params.items() if p}) or 'defaults'}, "
          f"{args.trials} trials")  # fmt: skip


if __name__ == "__main__":
    main()
