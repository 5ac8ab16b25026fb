"""Generic dataset sources: a user's table, arrays or image folder.

Selected like any dataset, with the location as the argument, and options
after ``?`` (``csv:data.csv?label=target&encode=onehot``):

* ``csv:PATH`` / ``parquet:PATH`` — one row per example, one label column
  (option ``label``; default the first of ``DEFAULT_LABEL_COLUMNS``);
* ``npz:PATH`` — arrays ``X`` and ``y`` (the ADBench layout), or
  ``X_train``, ``y_train``, ``X_test``, ``y_test`` for a predefined split;
* ``folder:PATH`` — images as ``train/<class>/*`` and ``test/<class>/*``,
  or ``<class>/*`` for one pool the protocol splits; decoded once into a
  compact uint8 cache.

Labels: a 0/1 (or boolean) column is an anomaly flag (1 = anomaly) and the
data default to the ``contamination`` protocol; anything else is a class
label and the data default to ``one_vs_all``.  Every problem with the input
raises :class:`~odbench.api.DataError` saying what is wrong and how to fix it.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from odbench.core.contracts import DataError, Dataset, LabeledData
from odbench.data.cache import cached_arrays

DEFAULT_LABEL_COLUMNS = ("label", "y", "class", "target", "is_anomaly", "anomaly", "outlier")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def parse_argument(argument: str | None, kind: str) -> tuple[Path, dict[str, str]]:
    """``PATH?key=value&...`` -> (path, options); the path must exist."""
    if not argument:
        raise DataError(f"{kind}: needs a path, e.g. {kind}:data.{kind if kind != 'folder' else 'dir'}")
    location, _, query = argument.partition("?")
    path = Path(location).expanduser()
    if not path.exists():
        raise DataError(f"{kind}: {path} does not exist")
    return path, dict(parse_qsl(query, keep_blank_values=True))


def fingerprint_path(path: Path) -> str:
    """sha256 of a file, or of every file (names and bytes) under a folder.

    Job keys ask for it once per job; the bytes are hashed again only when
    a file's name, size or modification time has changed.
    """
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    signature = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_files(str(path), signature)


@functools.lru_cache(maxsize=64)
def _hash_files(root: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    base = Path(root)
    for name, _, _ in signature:
        file = Path(name)
        h.update(str(file.relative_to(base) if base.is_dir() else file.name).encode())
        h.update(file.read_bytes())
    return h.hexdigest()


def labels_to_classes(labels: np.ndarray, where: str) -> tuple[np.ndarray, tuple[str, ...], tuple[int, ...]]:
    """(class ids, class names, anomaly classes) from raw label values."""
    if len(labels) == 0:
        raise DataError(f"{where}: no rows")
    values = np.unique(labels)
    if len(values) < 2:
        raise DataError(f"{where}: every row has the label {values[0].item()!r}; need at least two classes (or normal and anomaly rows)")
    if set(values.tolist()) <= {0, 1}:
        return labels.astype(int), ("normal", "anomaly"), (1,)
    names = tuple(str(v) for v in values)
    return np.searchsorted(values, labels).astype(int), names, ()


def check_features(X: np.ndarray, where: str) -> None:
    if X.ndim < 2 or X.shape[0] == 0 or int(np.prod(X.shape[1:])) == 0:
        raise DataError(f"{where}: features have shape {X.shape}; need (rows, features...) with at least one of each")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"{where}: features must be numeric, got dtype {X.dtype}")
    bad = ~np.isfinite(X.reshape(len(X), -1)) if X.dtype != np.uint8 else None
    if bad is not None and bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(f"{where}: {int(bad.sum())} NaN or inf values in {len(rows)} rows (first: row {int(rows[0])}); clean or impute them first")
    flat = X.reshape(len(X), -1)
    if len(X) > 1 and bool((flat == flat[:1]).all()):  # every detector would score every row alike
        raise DataError(f"{where}: every feature is constant (all {len(X)} rows are identical); nothing tells rows apart")


def constant_features(*arrays: np.ndarray) -> int:
    """How many features hold one value in every row of ``arrays`` (rows, features) together: they tell no
    rows apart.  A dataset where all are is refused (:func:`check_features`); some are flagged in the record.
    Only tabular arrays are counted: an image's constant border pixels are no news."""
    tables = [a for a in arrays if a.ndim == 2 and len(a)]
    if not tables or len({a.shape[1] for a in tables}) != 1:
        return 0
    first = tables[0][:1]
    same = np.ones(first.shape[1], dtype=bool)
    for table in tables:
        same &= (table == first).all(axis=0)
    return int(same.sum())


def load_table(path: Path, options: dict[str, str], kind: str) -> LabeledData:
    """A CSV or Parquet table -> LabeledData (see module docstring)."""
    import pandas as pd

    where = f"{kind}:{path}"
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
        header = _csv_header(path) if kind == "csv" else [str(c) for c in frame.columns]
    except Exception as err:  # noqa: BLE001 - parser errors are data errors here
        raise DataError(f"{where}: cannot read ({type(err).__name__}: {err})") from None
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:  # pandas would rename the second "a" to "a.1" in silence
        raise DataError(f"{where}: column names {', '.join(map(repr, twice))} appear more than once; give each column its own name")
    label = options.get("label") or next((c for c in DEFAULT_LABEL_COLUMNS if c in frame.columns), None)
    if label is None or label not in frame.columns:
        raise DataError(
            f"{where}: no label column {label or ''!r}; columns are {', '.join(map(str, frame.columns))}; "
            f"name it with {kind}:{path}?label=COLUMN"
        )
    if frame.empty:
        raise DataError(f"{where}: no rows")
    if frame[label].isna().any():
        raise DataError(f"{where}: {int(frame[label].isna().sum())} rows have no label in column {label!r}")
    features = frame.drop(columns=[label])
    text = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if text and options.get("encode") == "onehot":
        features = pd.get_dummies(features, columns=text, dtype=float)
    elif text:
        raise DataError(f"{where}: non-numeric feature columns {', '.join(text)}; drop them or add ?encode=onehot")
    X = features.to_numpy(dtype=np.float32)
    check_features(X, where)
    y, names, anomalies = labels_to_classes(frame[label].to_numpy(), where)
    return LabeledData(X=X, y=y, class_names=names, anomaly_classes=anomalies)


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's first line, as written (pandas renames repeated ones)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return next(csv.reader(f), [])


def load_npz(path: Path) -> LabeledData:
    """``X``/``y`` arrays, or ``X_train``/``y_train``/``X_test``/``y_test``."""
    import zipfile

    where = f"npz:{path}"
    if path.is_file() and not zipfile.is_zipfile(path):  # numpy would suggest unpickling it (allow_pickle=True)
        raise DataError(f"{where}: not an .npz file (a zip of arrays, as np.savez writes); save X and y with np.savez")
    try:
        npz = np.load(path, allow_pickle=False)  # never unpickle a user's file
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{where}: cannot read ({type(err).__name__}: {err})") from None
    with npz:
        keys = set(npz.files)

        def array(name: str) -> np.ndarray:
            try:
                return npz[name]
            except ValueError as err:  # an object array: reading it would mean unpickling
                raise DataError(
                    f"{where}: array {name!r} holds Python objects ({err}); save numbers or strings, "
                    f"e.g. np.savez(path, {name}=np.asarray({name}, dtype={'float' if name.startswith('X') else 'str'}))"
                ) from None

        if {"X", "y"} <= keys:
            X, y, X_test, y_test = array("X"), array("y"), None, None
        elif {"X_train", "y_train", "X_test", "y_test"} <= keys:
            X, y, X_test, y_test = array("X_train"), array("y_train"), array("X_test"), array("y_test")
        else:
            raise DataError(f"{where}: has arrays {', '.join(sorted(keys))}; need X and y (or X_train, y_train, X_test, y_test)")
    for xs, ys, part in ((X, y, ""), (X_test, y_test, "_test")):
        if xs is None or ys is None:  # no official test set
            continue
        check_features(np.asarray(xs), f"{where} X{part}")
        if len(xs) != len(ys):
            raise DataError(f"{where}: X{part} has {len(xs)} rows but y{part} has {len(ys)}")
    if X_test is not None and X_test.shape[1:] != X.shape[1:]:
        raise DataError(f"{where}: X_test rows have shape {X_test.shape[1:]} but X_train rows {X.shape[1:]}")
    labels = np.concatenate([y, y_test]) if y_test is not None else y
    ids, names, anomalies = labels_to_classes(np.asarray(labels), where)
    X = X if X.dtype == np.uint8 else X.astype(np.float32)
    if X_test is None or y_test is None:
        return LabeledData(X=X, y=ids, class_names=names, anomaly_classes=anomalies)
    X_test = X_test if X_test.dtype == np.uint8 else X_test.astype(np.float32)
    return LabeledData(X=X, y=ids[: len(y)], class_names=names, X_test=X_test, y_test=ids[len(y) :], anomaly_classes=anomalies)


def _class_folders(root: Path, where: str) -> dict[str, list[Path]]:
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"{where}: class folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        classes[folder.name] = images
    if len(classes) < 2:
        raise DataError(f"{where}: {root} needs at least two class folders (<class>/image.png); found {len(classes)}")
    return classes


def _decode(files: list[Path], where: str) -> np.ndarray:
    """Images -> uint8 (N, C, H, W); every image must share one size."""
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for file in files:
        try:
            with Image.open(file) as img:
                arrays.append(np.asarray(img.convert("RGB" if img.mode not in ("L", "1") else "L")))
        except (UnidentifiedImageError, OSError) as err:  # not an image, or a truncated one
            raise DataError(f"{where}: {file} is not a readable image ({err}); remove it or replace it") from None
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise DataError(f"{where}: images have different sizes {sorted(sizes)[:4]}; resize them to one size first")
    channels = {a.ndim for a in arrays}
    if channels == {2, 3}:  # mixed grey and colour: make all colour
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    stacked = np.stack(arrays)
    return stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2).copy()


def folder_classes(path: Path) -> tuple[str, ...]:
    """The class names of an image folder, read from its sub-folder names without decoding an image.

    Sorted as :func:`load_folder` numbers them, so a class id means the same here and there.
    """
    split = (path / "train").is_dir() and (path / "test").is_dir()
    roots = [path / "train", path / "test"] if split else [path]
    return tuple(sorted({p.name for root in roots for p in root.iterdir() if p.is_dir()}))


def load_folder(path: Path, cache: Path) -> LabeledData:
    """An image folder -> uint8 LabeledData, decoded once into ``cache``."""
    where = f"folder:{path}"
    split = (path / "train").is_dir() and (path / "test").is_dir()

    def decode() -> dict[str, np.ndarray]:
        train = _class_folders(path / "train" if split else path, where)
        test = _class_folders(path / "test", where) if split else {}
        names = sorted(set(train) | set(test))
        arrays = {"X": _decode([f for c in names for f in train.get(c, [])], where),
                  "y": np.array([i for i, c in enumerate(names) for _ in train.get(c, [])], int),
                  "names": np.array(names)}
        if split:
            arrays["X_test"] = _decode([f for c in names for f in test.get(c, [])], where)
            arrays["y_test"] = np.array([i for i, c in enumerate(names) for _ in test.get(c, [])], int)
            if arrays["X_test"].shape[1:] != arrays["X"].shape[1:]:
                raise DataError(f"{where}: test images are {arrays['X_test'].shape[1:]}, train images {arrays['X'].shape[1:]}")
        return arrays

    arrays = cached_arrays(cache / f"folder-{fingerprint_path(path)[:16]}.npz", decode)  # named by the data's hash
    names = tuple(str(n) for n in arrays["names"])
    return LabeledData(X=arrays["X"], y=arrays["y"], class_names=names,
                       X_test=arrays.get("X_test"), y_test=arrays.get("y_test"))


class UserSource(Dataset):
    """Base of the ``kind:PATH`` plugins: the argument is a user's file or folder.

    Nothing to download; ``prepare`` only checks that the path exists, and
    the path's content hash joins every job key (``fingerprint``).  Loading
    tells the source its default protocol (and, for arrays, its modality).
    """

    takes_argument = True
    bundled = True  # nothing to download: the data are the user's

    def location(self) -> tuple[Path, dict[str, str]]:
        return parse_argument(self.argument, self.name)

    def prepare(self, root: Path) -> None:
        self.location()  # fails early on a missing path

    def fingerprint(self) -> str:
        return fingerprint_path(self.location()[0])

    def learn(self, data: LabeledData) -> LabeledData:
        """Labels decide the protocol: a 0/1 flag -> contamination, classes -> one-vs-all."""
        self.default_protocol = "contamination" if data.anomaly_classes else "one_vs_all"
        return data


class TableSource(UserSource):
    """``csv:`` / ``parquet:`` tables (the plugin's name is the format)."""

    modality = "tabular"

    def load(self, root: Path) -> LabeledData:
        path, options = self.location()
        return self.learn(load_table(path, options, self.name))
