"""Fashion-MNIST (Xiao et al., 2017): 60,000 / 10,000 clothing images, 28 x 28.

MNIST's IDX format and sizes.  Zalando publishes md5 only, so md5 is
pinned (the values in the Fashion-MNIST README and torchvision).  Not in
the DROCC paper; a common one-vs-all image benchmark.  Channel statistics
are fitted on each task's training normals (no reference code fixes them).
"""

from __future__ import annotations

from pathlib import Path

from odbench.api import Dataset, LabeledData, RemoteFile
from odbench.data.formats import read_idx

_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MD5 = {  # name: (md5, bytes)
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", 29515),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", 4422102),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", 5148),
}


class FashionMnist(Dataset):
    name = "fashion_mnist"
    modality = "image"
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
    default_protocol = "one_vs_all"
    paper_metric = "auroc"
    backbone = "lenet_mnist"
    # same file names as MNIST: each has its own cache folder, and in a data
    # directory holding both (in different subfolders) the hash picks the copy
    files = tuple(RemoteFile(url=_BASE + name, filename=name, md5=md5, size=size) for name, (md5, size) in _MD5.items())

    def load(self, root: Path) -> LabeledData:
        images = {n: read_idx(self.path(root, n)) for n in _MD5}
        return LabeledData(
            X=images["train-images-idx3-ubyte.gz"][:, None],
            y=images["train-labels-idx1-ubyte.gz"].astype("int64"),
            X_test=images["t10k-images-idx3-ubyte.gz"][:, None],
            y_test=images["t10k-labels-idx1-ubyte.gz"].astype("int64"),
            class_names=self.classes,
        )
