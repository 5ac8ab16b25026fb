"""CIFAR-10 (Krizhevsky, 2009): 50,000 / 10,000 colour images, 32 x 32, 10 classes.

The official python archive, sha256 pinned (the value Keras pins; its
published md5 is c58f30108f718f92721af3b95e74349a).  The pickled batches
are read only from the verified archive (or a copy the user vouched for,
keyed apart), through an unpickler that builds numpy arrays and plain data
only (``odbench.data.formats.ArrayUnpickler``).  Normalization is the DROCC
reference code's (``data_process_scripts/process_cifar.py`` in EdgeML):
per-channel mean (0.4914, 0.4822, 0.4465), std (0.247, 0.243, 0.261),
applied to uint8 images at batch time.  One-vs-all over the 10 classes
(the paper's Table 1).
"""

from __future__ import annotations

from pathlib import Path

from odbench.api import Dataset, LabeledData
from odbench.data.formats import CIFAR10_ARCHIVE, CIFAR10_CLASSES, read_cifar10


class Cifar10(Dataset):
    name = "cifar10"
    modality = "image"
    classes = CIFAR10_CLASSES
    default_protocol = "one_vs_all"
    paper_metric = "auroc"
    channel_stats = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    backbone = "lenet_cifar"
    files = (CIFAR10_ARCHIVE,)

    def load(self, root: Path) -> LabeledData:
        """Images ``(N, 3, 32, 32)`` uint8; official train / test batches."""
        return read_cifar10(self.path(root, CIFAR10_ARCHIVE.filename))
