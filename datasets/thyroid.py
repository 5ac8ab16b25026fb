"""ODDS Thyroid (3772 x 6, 93 anomalies): the paper's Table 2 "Thyroid".

ADBench's copy of the ODDS file (``38_thyroid.npz``: keys ``X``, ``y``,
y = 1 anomaly), checksum pinned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData, RemoteFile


class Thyroid(Dataset):
    name = "thyroid"
    modality = "tabular"
    classes = ("normal", "anomaly")
    default_protocol = "contamination"
    paper_metric = "f1@contamination"
    files = (
        RemoteFile(
            url="https://github.com/Minqi824/ADBench/raw/main/adbench/datasets/Classical/38_thyroid.npz",
            filename="38_thyroid.npz",
            sha256="8de161b3f235b7647bb0b39a836d983ff61d67bf234edac461da2d71e889cb87",
        ),
    )

    def load(self, root: Path) -> LabeledData:
        with np.load(self.path(root, "38_thyroid.npz"), allow_pickle=False) as npz:
            X, y = npz["X"].astype(np.float32), npz["y"].astype(int)
        return LabeledData(X=X, y=y, class_names=self.classes, anomaly_classes=(1,))
