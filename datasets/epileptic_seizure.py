"""UCI Epileptic Seizure Recognition (Andrzejak et al., 2001): 11,500 EEG seconds.

``data.csv``: an id column, X1..X178 (one second of EEG at 178 Hz) and y in
1..5; y = 1 is seizure activity (2,300 rows), the anomaly; tumour-area,
healthy-area, eyes-closed and eyes-open recordings (y = 2..5) are normal.
Each row is a sequence of length 178 with one feature (LSTM backbone, the
paper's Table 3).  Class ids are y - 1.

Checksum: faithful copies of this file differ in bytes — the copy these
hashes were taken from was rebuilt from the original Bonn recordings (the
same rows and labels as UCI's file, checked on 19 published rows, in
another row order and with its own id column) — so the pin is a *content*
hash: sha256 of the little-endian int64 matrix [X1..X178, y] with its rows
sorted lexicographically, independent of row order and of the id column.
It is checked after the CSV is parsed (plain numbers, nothing executed)
and before any row is used; a mismatch is the usual ChecksumError.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from odbench.api import Dataset, LabeledData, RemoteFile
from odbench.core.download import verify_content


def content_digest(values: np.ndarray) -> str:
    """sha256 of an integer matrix with its rows sorted: blind to row order."""
    ordered = values[np.lexsort(values.T[::-1])]
    return hashlib.sha256(np.ascontiguousarray(ordered, dtype="<i8").tobytes()).hexdigest()


class EpilepticSeizure(Dataset):
    name = "epileptic_seizure"
    modality = "sequence"
    classes = ("seizure", "tumour area", "healthy area", "eyes closed", "eyes open")
    default_protocol = "contamination_edgeml"  # the authors' split: 2,300 seizures + 2,300 normals in test
    paper_metric = "auroc"
    backbone = "lstm"
    files = (
        RemoteFile(
            url="https://archive.ics.uci.edu/ml/machine-learning-databases/00388/data.csv",
            filename="data.csv",
            content_sha256="34f35a5991e44c59ca3ce627a08ee67dda935c35426044cc1f7a170f31fbf097",
            size=7592183,  # UCI's copy; faithful copies differ in bytes, so the size only tells the download's cost
        ),
    )

    def load(self, root: Path) -> LabeledData:
        """Sequences ``(11500, 178, 1)`` float32; y = class id (0 = seizure)."""
        path = self.path(root, "data.csv")
        table = pd.read_csv(path)
        values = table[[f"X{i}" for i in range(1, 179)] + ["y"]].to_numpy().astype("<i8")
        verify_content(self.files[0], content_digest(values), path)
        X = values[:, :-1].astype(np.float32)[:, :, None]
        y = values[:, -1] - 1
        return LabeledData(X=X, y=y, class_names=self.classes, anomaly_classes=(0,))
