"""UCI Abalone: the paper's Table 2 tabular set (Das et al., 2018 labelling).

Rows with 8, 9 or 10 rings are normal (1,891), rows with 3 or 21 rings are
anomalies (29); all other rows are not used.  Features: the seven
measurements plus the sex, one-hot encoded as three columns (M, F, I), 10
in all.  Sex is categorical with no order; the authors' script codes it
0/1/2, which invents one (infant "twice" female), so one-hot is used here.
Note DROCC's default radius sqrt(d)/2 sees d = 10, not the script's 8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from odbench.api import Dataset, LabeledData, RemoteFile

NORMAL_RINGS, ANOMALY_RINGS = (8, 9, 10), (3, 21)


class Abalone(Dataset):
    name = "abalone"
    modality = "tabular"
    classes = ("normal", "anomaly")
    default_protocol = "contamination"
    paper_metric = "f1@contamination"
    files = (
        RemoteFile(
            url="https://archive.ics.uci.edu/ml/machine-learning-databases/abalone/abalone.data",
            filename="abalone.data",
            sha256="de37cdcdcaaa50c309d514f248f7c2302a5f1f88c168905eba23fe2fbc78449f",
            size=191873,
        ),
    )

    def load(self, root: Path) -> LabeledData:
        table = pd.read_csv(self.path(root, "abalone.data"), header=None)
        rings = table[8].to_numpy()
        keep = np.isin(rings, NORMAL_RINGS + ANOMALY_RINGS)
        sex = np.stack([(table[0] == s).to_numpy() for s in ("M", "F", "I")], axis=1)
        X = np.concatenate([sex, table.loc[:, 1:7].to_numpy()], axis=1).astype(np.float32)[keep]
        y = np.isin(rings[keep], ANOMALY_RINGS).astype(np.int64)
        return LabeledData(X=X, y=y, class_names=self.classes, anomaly_classes=(1,))
