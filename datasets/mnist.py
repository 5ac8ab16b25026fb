"""MNIST (LeCun et al.): 60,000 / 10,000 handwritten digits, 28 x 28 grey.

The four official IDX files; their sha256 are pinned here (computed from
copies whose md5 equal the published ones: f68b3c2d..., d53e105e...,
9fb629c4..., ec29112d...).  Downloads come from the PyTorch mirror that
torchvision uses, because yann.lecun.com no longer serves plain
downloads reliably; the hash, not the address, is what is checked.

Used one-vs-all and for the paper's OCLN experiment (§5.2): positives =
digit 0, negatives = digit 1, close negatives = test zeros with a
fraction of their pixels set to the background value (``close_negatives``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData, RemoteFile
from odbench.data.formats import read_idx

_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FILES = {  # name: (sha256, bytes)
    "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
    "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
    "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
    "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
}


class Mnist(Dataset):
    name = "mnist"
    modality = "image"
    classes = tuple(str(d) for d in range(10))
    default_protocol = "one_vs_all"
    paper_metric = "recall@fpr3"  # the paper uses MNIST only for OCLN (digit 0 vs 1)
    # the DROCC-LF reference script's Normalize(mean=[0.1307], std=[0.3081])
    channel_stats = ((0.1307,), (0.3081,))
    backbone = "lenet_mnist"
    files = tuple(RemoteFile(url=_MIRROR + name, filename=name, sha256=sha, size=size) for name, (sha, size) in _FILES.items())

    def load(self, root: Path) -> LabeledData:
        """Images ``(N, 1, 28, 28)`` uint8; official 60,000 / 10,000 split."""
        arrays = {name: read_idx(self.path(root, name)) for name in _FILES}
        return LabeledData(
            X=arrays["train-images-idx3-ubyte.gz"][:, None],
            y=arrays["train-labels-idx1-ubyte.gz"].astype(np.int64),
            X_test=arrays["t10k-images-idx3-ubyte.gz"][:, None],
            y_test=arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int64),
            class_names=self.classes,
        )

    def close_negatives(
        self, X_normal: np.ndarray, rng: np.random.Generator, *, fraction: float = 0.5, per_image: bool = True
    ) -> np.ndarray:
        """"Half zeros": each image with ``fraction`` of its pixels set to the background value 0.

        The paper masks 50% of the pixels (§5.2).  ``per_image`` (default):
        exactly ``round(fraction * H * W)`` pixel positions of every image,
        drawn without replacement (pixels already 0 stay 0).
        ``per_image=False`` is the authors' ``get_close_negs``
        (``main_drocclf_mnist.py``, with ``fraction=0.4``): ``int(fraction *
        size)`` positions drawn over the whole array at once, so the share
        masked varies from image to image (0.29-0.53 measured), set to the
        batch minimum, which on MNIST is the background value 0.
        """
        out = X_normal.copy()
        if not per_image:
            flat = out.reshape(-1)
            flat[rng.choice(flat.size, size=int(fraction * flat.size), replace=False)] = 0
            return out
        n, pixels = len(out), int(np.prod(out.shape[1:]))
        k = int(round(fraction * pixels))
        # argsort of uniform noise: k distinct positions per row, vectorized
        masked = np.argsort(rng.random((n, pixels)), axis=1)[:, :k]
        flat = out.reshape(n, pixels)
        np.put_along_axis(flat, masked, 0, axis=1)
        return flat.reshape(out.shape)
