"""CIFAR-10 (Krizhevsky, 2009): 50,000 / 10,000 colour images, 32 x 32, 10 classes.

The official python archive, sha256 pinned (the value Keras pins; its
published md5 is c58f30108f718f92721af3b95e74349a).  The pickled batches
are read only from the verified archive.  Normalization is the DROCC
reference code's (``data_process_scripts/process_cifar.py`` in EdgeML):
per-channel mean (0.4914, 0.4822, 0.4465), std (0.247, 0.243, 0.261),
applied to uint8 images at batch time.  One-vs-all over the 10 classes
(the paper's Table 1).
"""

from __future__ import annotations

from pathlib import Path

from odbench.api import Dataset, LabeledData, RemoteFile
from odbench.formats import read_cifar_batches

ARCHIVE = RemoteFile(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


class Cifar10(Dataset):
    name = "cifar10"
    modality = "image"
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    default_protocol = "one_vs_all"
    paper_metric = "auroc"
    channel_stats = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    backbone = "lenet_cifar"
    files = (ARCHIVE,)

    def load(self, root: Path) -> LabeledData:
        """Images ``(N, 3, 32, 32)`` uint8; official train / test batches."""
        archive = self.path(root, ARCHIVE.filename)
        X, y = read_cifar_batches(archive, TRAIN_BATCHES)
        X_test, y_test = read_cifar_batches(archive, ["test_batch"])
        return LabeledData(X=X, y=y, X_test=X_test, y_test=y_test, class_names=self.classes)
