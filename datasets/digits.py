"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes).

Used one-vs-all as 64-feature vectors; ships with scikit-learn, so no
download.  No official test split: the protocol cuts a stratified 20%.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData


class Digits(Dataset):
    name = "digits"
    modality = "tabular"
    classes = tuple(str(d) for d in range(10))
    default_protocol = "one_vs_all"
    paper_metric = "auroc"
    bundled = True

    def prepare(self, root: Path) -> None:
        pass  # bundled with scikit-learn

    def load(self, root: Path) -> LabeledData:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return LabeledData(X=bunch.data.astype(np.float32), y=bunch.target.astype(int), class_names=self.classes)
