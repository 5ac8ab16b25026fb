"""Skeletons written by ``odbench new method|dataset NAME``.

Each one passes ``odbench check`` exactly as written, so an author starts
from green and changes one thing at a time.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from odbench.core.contracts import DataError

METHOD = '''"""{title}: describe the method and cite its paper here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from odbench.api import DataInfo, FitContext, FitTask, Method, param
from odbench.data.inputs import as_float


class {cls}(Method):
    name = "{name}"  # what users type: odbench run --methods {name}
    modalities = ("tabular", "image", "sequence")  # inputs this method accepts
    uses_negatives = False  # True if fit() needs labelled anomalies (OCLN tasks)
    deep = False  # True for neural networks: scores are then checked batch-invariant
    test_params = {{"shrinkage": 0.1}}  # tiny settings for `odbench check` and the tests

    @dataclass
    class Params:  # every parameter, declared once: default, meaning, type, range
        shrinkage: float = param(0.1, "added to each feature's spread before scaling", low=0)
        # a default that depends on the data: declare it None here, fill it in data_defaults(info)

    params: Params  # resolved before fit runs (defaults merged, values checked): read self.params.shrinkage

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        # what Optuna may try, on validation data only
        return {{"shrinkage": trial.suggest_float("shrinkage", 1e-3, 1.0, log=True)}}

    def _vectors(self, X: np.ndarray) -> np.ndarray:
        # uint8 images arrive raw; as_float scales them with the task's statistics
        info = self.info_
        return as_float(X, info.channel_mean, info.channel_std, info.modality).reshape(len(X), -1)

    def fit(self, task: FitTask, ctx: FitContext) -> {cls}:
        # train on normal points only; a FitTask has no test split (test data reach the evaluator alone)
        self.info_ = task.info
        X = self._vectors(task.train.normal)
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) + self.params.shrinkage
        return self  # always return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        # shape (n,), HIGHER = MORE ANOMALOUS
        z = (self._vectors(X) - self.mean_) / self.scale_
        return np.sqrt((z**2).mean(axis=1))
'''

DATASET = '''"""{title}: describe the data, where they come from, and their licence."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData


class {cls}(Dataset):
    name = "{name}"  # what users type: odbench run --datasets {name}
    modality = "tabular"  # "tabular", "image" (uint8 N,C,H,W) or "sequence" (N,T,F)
    classes = ("a", "b", "c")
    default_protocol = "one_vs_all"  # or "contamination" when the data flag their own anomalies
    backbone = "mlp"  # the network deep methods use on these data (odbench.deep.nets)
    bundled = True  # generated here; a downloaded dataset lists `files` instead:
    # files = (RemoteFile(url="https://...", filename="data.npz", sha256="..."),)
    # and load() reads self.path(root, "data.npz") (downloaded and verified by prepare)

    def prepare(self, root: Path) -> None:
        pass  # nothing to download: the data are generated in load()

    def load(self, root: Path) -> LabeledData:
        rng = np.random.default_rng(0)  # fixed data; the protocol varies the splits by seed
        centres = rng.normal(0, 4, size=(len(self.classes), 5))
        y = np.repeat(np.arange(len(self.classes)), 100)
        X = (centres[y] + rng.normal(size=(len(y), 5))).astype(np.float32)
        return LabeledData(X=X, y=y, class_names=self.classes)
'''


def write_template(kind: str, name: str, folder: Path) -> Path:
    """Write ``folder/name.py`` from the template of ``kind``; never overwrite."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise DataError(f"plugin name {name!r} must be lower-case letters, digits and underscores, starting with a letter")
    path = folder / f"{name}.py"
    if path.exists():
        raise DataError(f"{path} exists already; choose another name or delete it")
    cls = "".join(part.capitalize() for part in name.split("_"))
    text = {"method": METHOD, "dataset": DATASET}[kind].format(name=name, cls=cls, title=name.replace("_", " ").title())
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
