"""Readers for the standard file formats that dataset plugins parse.

Each reader takes a path that has already passed its checksum
(``Dataset.path`` / ``odbench.core.download.fetch`` verify before they return)
or that the user vouched for (``ODBENCH_TRUST_LOCAL_FILES=1``).  So no
reader trusts the bytes: CIFAR's pickled batches go through
:class:`ArrayUnpickler`, which builds numpy arrays, lists, dicts, strings and
numbers and refuses everything else, so a forged archive cannot run code.
Images come back as uint8, channels first.
"""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from odbench.core.contracts import DataError, LabeledData, RemoteFile


class UnsafePickle(DataError):
    """A pickle asked for something other than plain data (a forged or foreign file)."""


#: the dtype kinds a plain array may have: booleans, numbers, byte and unicode strings
_PLAIN_KINDS = set("biufcSU")


def _plain_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.kind not in _PLAIN_KINDS:  # object, void (structured), datetime: not what a CIFAR batch holds
        raise pickle.UnpicklingError(f"refusing a numpy dtype of kind {dtype.kind!r} ({dtype})")
    return dtype


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): None for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): None for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): None,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1,
}


_BUILD: Callable[[Any], None] = pickle._Unpickler.dispatch[pickle.BUILD[0]]


class ArrayUnpickler(pickle._Unpickler):
    """Unpickles numpy arrays of plain dtypes, lists, dicts, tuples, bytes, str and numbers only.

    Any other global a pickle names (a function to call, a class to build)
    raises :class:`pickle.UnpicklingError` before it is imported; the official
    CIFAR batches need only the numpy names in ``_GLOBALS``.  It is the
    pure-Python unpickler, so that state given to a dtype (``BUILD``) can be
    checked too: a forged state could otherwise flag a plain dtype as holding
    object pointers.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and plain data are read")
        return _GLOBALS[module, name] or super().find_class(module, name)

    def load_build(self) -> None:
        stack: list[Any] = self.stack  # type: ignore[attr-defined]  # the pure unpickler's, not in typeshed
        state, target = stack[-1], stack[-2]
        if isinstance(target, np.dtype):
            # (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
            plain = isinstance(state, tuple) and len(state) in (8, 9) and state[2:5] == (None, None, None)
            if not plain or state[7] != 0 or state[1] not in ("<", ">", "|", "="):
                raise pickle.UnpicklingError(f"refusing a numpy dtype state {state!r:.80}")
        elif not isinstance(target, np.ndarray):
            raise pickle.UnpicklingError(f"refusing to set the state of a {type(target).__name__}")
        _BUILD(self)

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build}


def load_plain_pickle(blob: bytes, where: str) -> Any:
    """``pickle.loads(blob, encoding="bytes")`` through :class:`ArrayUnpickler`; a refusal is an
    :class:`UnsafePickle` naming ``where``."""
    try:
        return ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise UnsafePickle(f"{where}: {err}; this is not the published file: delete it and download it again") from None
    except Exception as err:  # truncated or malformed: numpy or the unpickler gave up on it
        raise DataError(
            f"{where}: unreadable pickle ({type(err).__name__}: {err}); delete the file and download it again"
        ) from None


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
            batch = load_plain_pickle(member.read(), f"{archive}: {name}")
            if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
                raise DataError(f"{archive}: {name} is not a CIFAR batch (no data and labels)")
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
    size=170498071,
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_cifar10(archive: Path) -> LabeledData:
    """The official train (5 batches) and test split of a verified CIFAR-10 archive."""
    X, y = read_cifar_batches(archive, [f"data_batch_{i}" for i in range(1, 6)])
    X_test, y_test = read_cifar_batches(archive, ["test_batch"])
    return LabeledData(X=X, y=y, X_test=X_test, y_test=y_test, class_names=CIFAR10_CLASSES)
