"""UCI Epileptic Seizure Recognition (Andrzejak et al., 2001): 11,500 EEG seconds.

``data.csv``: an id column, X1..X178 (one second of EEG at 178 Hz) and y in
1..5; y = 1 is seizure activity (2,300 rows), the anomaly; tumour-area,
healthy-area, eyes-closed and eyes-open recordings (y = 2..5) are normal.
Each row is a sequence of length 178 with one feature (LSTM backbone, the
paper's Table 3).  Class ids are y - 1.

Checksum caveat: the pinned sha256 is that of a copy rebuilt from the
original Bonn recordings (same rows and labels as UCI's file, checked on
19 published rows, but in another row order and with its own id column).
UCI's own file is not byte-identical, so a fresh download from UCI fails
the check with an error that shows its hash; a user who trusts it can
pin that hash here or set ODBENCH_TRUST_LOCAL_FILES=1.  Only columns
X1..X178 and y are read, so both layouts load the same data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from odbench.api import Dataset, LabeledData, RemoteFile


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
            sha256="1cdbe78ed27e9f9df8f16bdcfba37cefae83459e70fd4b8a4c42108ef83131a9",
        ),
    )

    def load(self, root: Path) -> LabeledData:
        """Sequences ``(11500, 178, 1)`` float32; y = class id (0 = seizure)."""
        table = pd.read_csv(self.path(root, "data.csv"))
        X = table[[f"X{i}" for i in range(1, 179)]].to_numpy(np.float32)[:, :, None]
        y = table["y"].to_numpy(np.int64) - 1
        return LabeledData(X=X, y=y, class_names=self.classes, anomaly_classes=(0,))
