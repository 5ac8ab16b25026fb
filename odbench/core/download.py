"""Fetching dataset files once, with pinned checksums.

Lookup order for a file: each user data directory (``--data-dir`` /
``ODBENCH_DATA_DIR``, a ``:``-separated list; the file may sit at its top or
one folder down), then the dataset's own folder in the cache (``root``:
``ODBENCH_CACHE`` or the per-user cache directory, then the dataset name),
then a download into that folder.  Whatever the source, the file's hash is checked before anything
parses it: nothing unverified is ever unpickled or loaded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset downloads: where from and what it must hash to."""

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None  # only where the publisher gives nothing better
    #: for files whose bytes vary between faithful copies (row order, an id
    #: column): the hash of the dataset's canonical parsed content, which the
    #: plugin checks with ``odbench.core.download.verify_content`` before use.
    #: Only for formats parsed as plain data (CSV), never for pickles.
    content_sha256: str | None = None


class ChecksumError(RuntimeError):
    """A file's hash differs from the pinned one (a user-fixable error)."""


class DataUnavailable(RuntimeError):
    """A file is neither present nor downloadable (offline, no data dir)."""


def cache_dir() -> Path:
    """Where downloads go: ``ODBENCH_CACHE`` or the per-user cache folder."""
    env = os.environ.get("ODBENCH_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("odbench"))


def data_dirs() -> list[Path]:
    """User folders searched before the cache (``ODBENCH_DATA_DIR``)."""
    env = os.environ.get("ODBENCH_DATA_DIR", "")
    return [Path(p) for p in env.split(os.pathsep) if p]


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, remote: RemoteFile) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the pinned hash."""
    if os.environ.get("ODBENCH_TRUST_LOCAL_FILES") == "1":  # explicit escape hatch
        return
    if remote.sha256 is None and remote.md5 is None and remote.content_sha256 is not None:
        return  # checked on the parsed content by the dataset (verify_content)
    algorithm, expected = ("sha256", remote.sha256) if remote.sha256 else ("md5", remote.md5)
    if expected is None:
        raise ChecksumError(f"{remote.filename}: no checksum pinned; refusing to use an unverified file")
    actual = file_hash(path, algorithm)
    if actual != expected:
        raise ChecksumError(
            f"{path}: {algorithm} is {actual}, expected {expected}; delete the file to download it again, "
            "or set ODBENCH_TRUST_LOCAL_FILES=1 if you trust this copy"
        )


def dataset_root(name: str) -> Path:
    """The cache folder of one dataset (where its downloads land)."""
    return cache_dir() / name


def _candidates(filename: str, root: Path) -> list[Path]:
    found = []
    for base in data_dirs():
        found += [base / filename, *sorted(base.glob(f"*/{filename}"))]
    return [*found, root / filename]


def verify_content(remote: RemoteFile, digest: str, path: Path) -> None:
    """Raise :class:`ChecksumError` unless a parsed file's canonical content hash is the pinned one.

    A no-op for files pinned by their bytes (already checked by ``verify``).
    """
    if remote.content_sha256 is None or os.environ.get("ODBENCH_TRUST_LOCAL_FILES") == "1":
        return
    if digest != remote.content_sha256:
        raise ChecksumError(
            f"{path}: content sha256 is {digest}, expected {remote.content_sha256} (rows and labels differ from the "
            "published data); delete the file to download it again, or set ODBENCH_TRUST_LOCAL_FILES=1 if you trust it"
        )


def locate(remote: RemoteFile, root: Path) -> Path | None:
    """A verified local copy of ``remote``, or ``None`` if there is none.

    Every candidate is tried: datasets that share file names (MNIST and
    Fashion-MNIST both have ``train-images-idx3-ubyte.gz``) can sit side by
    side in one data directory, and the hash picks the right copy.  If
    copies exist but none verifies, the first mismatch is raised.
    """
    first_error: ChecksumError | None = None
    for candidate in _candidates(remote.filename, root):
        if candidate.is_file():
            try:
                verify(candidate, remote)
            except ChecksumError as err:
                first_error = first_error or err
                continue
            return candidate
    if first_error is not None:
        raise first_error
    return None


def fetch(remote: RemoteFile, root: Path) -> Path:
    """A verified local path for ``remote``, downloading into ``root`` once."""
    found = locate(remote, root)
    if found is not None:
        return found
    import pooch  # downloads with retries and hash checking

    if remote.sha256:
        known_hash: str | None = f"sha256:{remote.sha256}"
    elif remote.md5:
        known_hash = f"md5:{remote.md5}"
    else:
        known_hash = None  # content-hashed (verify_content runs after parsing)
    try:
        path = pooch.retrieve(remote.url, known_hash=known_hash, fname=remote.filename, path=root, progressbar=False)
    except ValueError as err:  # pooch's hash mismatch
        raise ChecksumError(f"{remote.url}: {err}") from None
    except Exception as err:  # no network, HTTP error, ...
        raise DataUnavailable(
            f"cannot download {remote.url} ({type(err).__name__}: {err}); put {remote.filename} in a folder "
            "named by ODBENCH_DATA_DIR (or --data-dir) and run again"
        ) from None
    return Path(path)


def locate_folder(name: str, root: Path, marker: str) -> Path | None:
    """A folder called ``name`` holding ``marker`` (a relative path), or ``None``.

    For data that come as a tree of many files (extracted archives, a
    user's ImageNet copy) rather than one pinned file.  Searched like
    files: each user data directory (the folder at its top or one level
    down), then ``root``.  What is inside is not hashed: callers parse such
    trees only as data (wav, images), never unpickle from them.
    """
    candidates = []
    for base in data_dirs():
        candidates += [base / name, *sorted(base.glob(f"*/{name}"))]
    for folder in [*candidates, root / name]:
        if (folder / marker).exists():
            return folder
    return None
