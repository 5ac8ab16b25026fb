"""Our ``deepsvdd`` and ``autoencoder`` against pyod's on the same splits.

Thyroid and ODDS Arrhythmia (the ``thyroid`` and ``arrhythmia`` plugins),
each cut by the real ``contamination`` protocol and
standardized on the train normals; every detector trains on the same train
normals and is scored on the same test split (AUROC).  Both sides run with
their default settings; pyod additionally re-standardizes (its default).

    ODBENCH_DATA_DIR=/work/shared/data python scripts/compare_pyod.py --seeds 3
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from tabulate import tabulate

from odbench.api import Dataset, FitContext, LabeledData, Task
from odbench.core.download import dataset_root
from odbench.core.metrics import evaluate
from odbench.engine.registry import Registry
from odbench.protocols import get_protocol
from odbench.protocols.scaling import standardize


def load(registry: Registry, name: str) -> tuple[Dataset, LabeledData]:
    dataset = registry.dataset(name)
    root = dataset_root(dataset.name)
    dataset.prepare(root)
    return dataset, dataset.load(root)


def auroc(task: Task, scores: np.ndarray) -> float:
    return evaluate(("auroc",), task.test.y, scores)["auroc"]


def ours(registry: Registry, name: str, task: Task, seed: int) -> float:
    cls = registry.method(name)
    method = cls(**cls.default_params(task.info)).fit(task.for_fit(), FitContext(seed=seed))
    return auroc(task, method.anomaly_score(task.test.X))


def pyod(name: str, task: Task, seed: int) -> float:
    import torch

    torch.manual_seed(seed)  # pyod's DeepSVDD seeds nothing itself
    if name == "DeepSVDD":
        from pyod.models.deep_svdd import DeepSVDD

        detector = DeepSVDD(n_features=task.info.n_features, random_state=seed, verbose=0)
    else:
        from pyod.models.auto_encoder import AutoEncoder

        detector = AutoEncoder(random_state=seed, verbose=0)
    detector.fit(task.train.normal)
    return auroc(task, detector.decision_function(task.test.X))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if not os.environ.get("ODBENCH_DATA_DIR"):
        print("note: ODBENCH_DATA_DIR is unset; thyroid and arrhythmia must already be in the cache")
    registry = Registry()
    protocol = get_protocol("contamination")
    columns = [("deepsvdd", "ours"), ("DeepSVDD", "pyod"), ("autoencoder", "ours"), ("AutoEncoder", "pyod")]
    rows, summary = [], []
    for dataset, data in (load(registry, "thyroid"), load(registry, "arrhythmia")):
        values = []
        for seed in range(args.seeds):
            task = standardize(protocol.make_task(data, dataset, None, seed))
            started = time.perf_counter()
            row = [ours(registry, n, task, seed) if side == "ours" else pyod(n, task, seed) for n, side in columns]
            values.append(row)
            rows.append([dataset.name, seed, len(task.train), len(task.test), *row, time.perf_counter() - started])
        mean, std = np.mean(values, axis=0), np.std(values, axis=0)
        summary.append([dataset.name, *[f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, std)]])
    names = [f"{n} ({side})" for n, side in columns]
    print(tabulate(rows, headers=["dataset", "seed", "n_train", "n_test", *names, "seconds"], floatfmt=".3f"))
    print()
    print(tabulate(summary, headers=["dataset (mean ± std)", *names]))


if __name__ == "__main__":
    main()
