"""A user's NumPy arrays: ``npz:PATH`` with ``X`` and ``y`` (ADBench layout).

Or ``X_train``, ``y_train``, ``X_test``, ``y_test`` for a predefined split.
Labels: classes (one-vs-all) or a 0/1 anomaly flag (contamination).
"""

from __future__ import annotations

from pathlib import Path

from odbench.api import Dataset, LabeledData
from odbench.sources import fingerprint_path, load_npz, parse_argument


class NPZ(Dataset):
    name = "npz"
    modality = "tabular"
    takes_argument = True
    bundled = True

    def prepare(self, root: Path) -> None:
        parse_argument(self.argument, self.name)

    def fingerprint(self) -> str:
        return fingerprint_path(parse_argument(self.argument, self.name)[0])

    def load(self, root: Path) -> LabeledData:
        data = load_npz(parse_argument(self.argument, self.name)[0])
        self.default_protocol = "contamination" if data.anomaly_classes else "one_vs_all"
        if data.X.ndim == 4:  # (N, C, H, W) arrays are images
            self.modality, self.backbone = "image", "lenet_cifar"
        elif data.X.ndim == 3:  # (N, T, F) arrays are sequences
            self.modality, self.backbone = "sequence", "lstm"
        return data
