"""ODDS Arrhythmia (452 x 274, 66 anomalies): the paper's Table 2 set.

UCI's Arrhythmia has 279 attributes; the paper, like ODDS, DAGMM and
GOAD, uses 274 "after discarding five categorical attributes".  Comparing
rows of the UCI ``arrhythmia.data`` with ODDS's ``arrhythmia.mat`` shows
which five: UCI attributes 11-15, the T, P, QRST and J vector angles and
the heart rate -- the five columns with missing values ("?"), not
categorical ones.  ODDS's file already lacks them, so it is used as is
(as GOAD's loader does).  Anomalies (y = 1) are the ODDS labelling: the
smallest arrhythmia classes (3, 4, 5, 7, 8, 9, 14, 15).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData, RemoteFile


class Arrhythmia(Dataset):
    name = "arrhythmia"
    modality = "tabular"
    classes = ("normal", "anomaly")
    default_protocol = "contamination"
    paper_metric = "f1@contamination"
    files = (
        RemoteFile(
            # ODDS's own host serves via a Dropbox link; pyod ships the same bytes
            url="https://raw.githubusercontent.com/yzhao062/pyod/master/examples/data/arrhythmia.mat",
            filename="arrhythmia.mat",
            sha256="e4d47e499591ae31e5d7f0cd983367092353eac240f48e14c9b36457edb3460d",
            size=105540,
        ),
    )

    def load(self, root: Path) -> LabeledData:
        from scipy.io import loadmat

        mat = loadmat(self.path(root, "arrhythmia.mat"))  # after the checksum
        X, y = mat["X"].astype(np.float32), mat["y"].ravel().astype(np.int64)
        return LabeledData(X=X, y=y, class_names=self.classes, anomaly_classes=(1,))
