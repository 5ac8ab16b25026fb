"""ODDS Annthyroid (7200 x 6, 534 anomalies), ADBench's copy.

ADBench's ``2_annthyroid.npz`` (keys ``X``, ``y``, y = 1 anomaly),
checksum pinned.  Not in the DROCC paper; a standard companion of Thyroid.
"""

from __future__ import annotations

from pathlib import Path

from odbench.api import Dataset, LabeledData, RemoteFile
from odbench.data.formats import read_outlier_npz


class Annthyroid(Dataset):
    name = "annthyroid"
    modality = "tabular"
    classes = ("normal", "anomaly")
    default_protocol = "contamination"
    paper_metric = "f1@contamination"
    files = (
        RemoteFile(
            url="https://github.com/Minqi824/ADBench/raw/main/adbench/datasets/Classical/2_annthyroid.npz",
            filename="2_annthyroid.npz",
            sha256="e738f7c58a8740d2c4aac4c71ff49ce5e1d1aa16f44178135fc9c09df05fad1b",
            size=66547,
        ),
    )

    def load(self, root: Path) -> LabeledData:
        return read_outlier_npz(self.path(root, "2_annthyroid.npz"))
