"""CIFAR-10 with flips and small rotations: the paper's Table 4.

Every training and test image is replaced by one augmented copy: mirrored
left-right with probability 1/2, then rotated by an angle uniform in
[-30, 30] degrees ("CIFAR-10 data flipped and rotated by a small angle of
+-30 degree"), so normal images come in several orientations and
transformation-based detectors such as GEOM lose their cue.  The draws
are fixed by ``augment_seed``, so every run sees the same images; they
are cached beside the archive after the first load, named by the archive's
sha256, so arrays made from one copy (a trusted, unverified one) are never
read back for another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData
from odbench.core.download import file_hash
from odbench.data.augment import flip_rotate
from odbench.data.cache import cached_arrays
from odbench.data.formats import CIFAR10_ARCHIVE, CIFAR10_CLASSES, read_cifar10


class Cifar10Aug(Dataset):
    name = "cifar10_aug"
    modality = "image"
    classes = CIFAR10_CLASSES
    default_protocol = "one_vs_all"
    paper_metric = "auroc"
    channel_stats = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))  # as cifar10: same images, moved
    backbone = "lenet_cifar"
    files = (CIFAR10_ARCHIVE,)
    augment_seed = 0
    max_degrees = 30.0

    def load(self, root: Path) -> LabeledData:
        archive = self.path(root, CIFAR10_ARCHIVE.filename)

        def augment() -> dict[str, np.ndarray]:
            data = read_cifar10(archive)
            assert data.X_test is not None and data.y_test is not None  # CIFAR-10 ships its test batch
            train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(self.augment_seed).spawn(2))
            return {
                "X": flip_rotate(data.X, train_rng, self.max_degrees), "y": data.y,
                "X_test": flip_rotate(data.X_test, test_rng, self.max_degrees), "y_test": data.y_test,
            }

        name = f"cifar10_aug_{file_hash(archive)[:16]}_seed{self.augment_seed}_deg{self.max_degrees:g}.npz"
        arrays = cached_arrays(Path(root) / name, augment)
        return LabeledData(arrays["X"], arrays["y"], self.classes, arrays["X_test"], arrays["y_test"])
