"""Readers for the standard file formats that dataset plugins parse.

Each reader takes a path that has already passed its checksum
(``Dataset.path`` / ``odbench.core.download.fetch`` verify before they return),
so the CIFAR reader may unpickle: the bytes are the publisher's.  Images
come back as uint8, channels first.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from odbench.core.contracts import LabeledData, RemoteFile

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_DTYPES: dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (MNIST, Fashion-MNIST), gzip-compressed or not.

    Returns the array with the shape stored in the header, e.g. ``(N, 28,
    28)`` uint8 for images and ``(N,)`` uint8 for labels.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} values")
    return data.reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def read_cifar_batches(archive: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` from CIFAR python batches.

    ``archive`` is the official ``cifar-10-python.tar.gz``; ``names`` are
    batch file names inside its ``cifar-10-batches-py/`` folder, read in the
    order given.
    """
    images, labels = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for name in names:
            member = tar.extractfile(f"cifar-10-batches-py/{name}")
            if member is None:
                raise ValueError(f"{archive}: no batch {name!r}")
            batch = pickle.loads(member.read(), encoding="bytes")  # verified archive only
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_wav(path: Path, length: int) -> tuple[np.ndarray, int]:
    """Mono samples in [-1, 1) as float32, zero-padded or cut to ``length``.

    Returns ``(samples, sample_rate)``.  Speech Commands clips are 16-bit
    PCM at 16 kHz, some shorter than one second: they are padded at the end
    (as TensorFlow's speech-commands input pipeline does).
    """
    from scipy.io import wavfile

    rate, data = wavfile.read(path)
    if data.ndim > 1:
        data = data.mean(axis=1)
    if data.dtype == np.int16:
        x = data.astype(np.float32) / 32768.0
    elif data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype == np.int32:
        x = data.astype(np.float32) / 2147483648.0
    else:
        x = data.astype(np.float32)
    out = np.zeros(length, dtype=np.float32)
    out[: min(length, len(x))] = x[:length]
    return out, int(rate)


def read_outlier_npz(path: Path) -> LabeledData:
    """An ADBench / ODDS-style ``.npz`` (``X``, ``y`` with y = 1 anomaly) as normal/anomaly data."""
    with np.load(path, allow_pickle=False) as npz:  # arrays only: nothing is unpickled
        X, y = npz["X"].astype(np.float32), npz["y"].astype(np.int64)
    return LabeledData(X=X, y=y, class_names=("normal", "anomaly"), anomaly_classes=(1,))


#: the official CIFAR-10 python archive (sha256 as pinned by Keras's cifar10.py)
CIFAR10_ARCHIVE = RemoteFile(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_cifar10(archive: Path) -> LabeledData:
    """The official train (5 batches) and test split of a verified CIFAR-10 archive."""
    X, y = read_cifar_batches(archive, [f"data_batch_{i}" for i in range(1, 6)])
    X_test, y_test = read_cifar_batches(archive, ["test_batch"])
    return LabeledData(X=X, y=y, X_test=X_test, y_test=y_test, class_names=CIFAR10_CLASSES)
