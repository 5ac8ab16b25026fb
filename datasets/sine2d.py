"""The paper's Figure 1 data: points on a 2-D sine wave, anomalies off it.

1000 normal points with x uniform on [-2π, 2π] and y = sin(x); anomalies
are drawn uniformly from the surrounding box and kept only if they are at least ``odbench.data.synthetic.MARGIN`` from the curve, so every
one is off the manifold but many sit inside the wave's bounding ellipse
(which is what defeats minimum-enclosing-ball methods such as OC-SVM).
Generated, no download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData
from odbench.data.synthetic import off_wave, sine_wave

N_NORMAL, N_ANOMALY = 1000, 200


class Sine2D(Dataset):
    name = "sine2d"
    modality = "tabular"
    classes = ("normal", "anomaly")
    default_protocol = "contamination"
    paper_metric = "auroc"
    bundled = True

    def prepare(self, root: Path) -> None:
        pass  # generated

    def load(self, root: Path) -> LabeledData:
        rng = np.random.default_rng(2020)  # the data are fixed; splits vary by seed
        X = np.concatenate([sine_wave(N_NORMAL, rng), off_wave(N_ANOMALY, rng)]).astype(np.float32)
        y = np.r_[np.zeros(N_NORMAL, int), np.ones(N_ANOMALY, int)]
        return LabeledData(X=X, y=y, class_names=self.classes, anomaly_classes=(1,))
