"""A dataset for the Ray tests: scikit-learn's digits, noting the loading process's id in <root>/loads.log on every load.

The root is under $ODBENCH_CACHE, which the engine forwards to every worker,
so loads anywhere land in one file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData


class Counted(Dataset):
    name = "counted"
    modality = "tabular"
    classes = tuple(str(d) for d in range(10))
    default_protocol = "one_vs_all"
    paper_metric = "auroc"
    bundled = True

    def prepare(self, root: Path) -> None:
        pass  # bundled with scikit-learn

    def load(self, root: Path) -> LabeledData:
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "loads.log", "a") as f:
            f.write(f"{os.getpid()}\n")
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return LabeledData(X=X.astype(np.float32), y=y.astype(np.int64), class_names=self.classes)
