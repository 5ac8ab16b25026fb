"""A user's NumPy arrays: ``npz:PATH`` with ``X`` and ``y`` (ADBench layout).

Or ``X_train``, ``y_train``, ``X_test``, ``y_test`` for a predefined split.
Labels: classes (one-vs-all) or a 0/1 anomaly flag (contamination);
(N, C, H, W) arrays are images, (N, T, F) arrays sequences.
"""

from __future__ import annotations

from pathlib import Path

from odbench.api import LabeledData
from odbench.data.sources import UserSource, load_npz


class NPZ(UserSource):
    name = "npz"
    modality = "tabular"

    def load(self, root: Path) -> LabeledData:
        data = load_npz(self.location()[0])
        if data.X.ndim == 4:
            self.modality, self.backbone = "image", "lenet_cifar"
        elif data.X.ndim == 3:
            self.modality, self.backbone = "sequence", "lstm"
        return self.learn(data)
