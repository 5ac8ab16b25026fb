"""CIFAR-10 with flips and small rotations: the paper's Table 4.

Every training and test image is replaced by one augmented copy: mirrored
left-right with probability 1/2, then rotated by an angle uniform in
[-30, 30] degrees ("CIFAR-10 data flipped and rotated by a small angle of
+-30 degree"), so normal images come in several orientations and
transformation-based detectors such as GEOM lose their cue.  The draws
are fixed by ``augment_seed``, so every run sees the same images; they
are cached beside the archive after the first load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData, RemoteFile
from odbench.augment import flip_rotate
from odbench.formats import read_cifar_batches

ARCHIVE = RemoteFile(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)


class Cifar10Aug(Dataset):
    name = "cifar10_aug"
    modality = "image"
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    default_protocol = "one_vs_all"
    paper_metric = "auroc"
    channel_stats = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    backbone = "lenet_cifar"
    files = (ARCHIVE,)
    augment_seed = 0
    max_degrees = 30.0

    def load(self, root: Path) -> LabeledData:
        archive = self.path(root, ARCHIVE.filename)
        cache = Path(root) / f"cifar10_aug_seed{self.augment_seed}_deg{self.max_degrees:g}.npz"
        if not cache.is_file():
            X, y = read_cifar_batches(archive, [f"data_batch_{i}" for i in range(1, 6)])
            X_test, y_test = read_cifar_batches(archive, ["test_batch"])
            train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(self.augment_seed).spawn(2))
            arrays = {
                "X": flip_rotate(X, train_rng, self.max_degrees), "y": y,
                "X_test": flip_rotate(X_test, test_rng, self.max_degrees), "y_test": y_test,
            }
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(cache)  # atomic: a killed run leaves no half-written cache
        with np.load(cache, allow_pickle=False) as npz:  # our own arrays: no pickles
            return LabeledData(X=npz["X"], y=npz["y"], X_test=npz["X_test"], y_test=npz["y_test"],
                               class_names=self.classes)
