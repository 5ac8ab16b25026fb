"""ODDS Thyroid (3772 x 6, 93 anomalies): the paper's Table 2 "Thyroid".

ADBench's copy of the ODDS file (``38_thyroid.npz``: keys ``X``, ``y``,
y = 1 anomaly), checksum pinned.
"""

from __future__ import annotations

from pathlib import Path

from odbench.api import Dataset, LabeledData, RemoteFile
from odbench.data.formats import read_outlier_npz


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
            size=39882,
        ),
    )

    def load(self, root: Path) -> LabeledData:
        return read_outlier_npz(self.path(root, "38_thyroid.npz"))
