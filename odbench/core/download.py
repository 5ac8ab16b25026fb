"""Fetching dataset files once, with pinned checksums.

Lookup order for a file: each user data directory (``--data-dir`` /
``ODBENCH_DATA_DIR``, a ``:``-separated list; the file may sit at its top or
one folder down), then the dataset's own folder in the cache (``root``:
``ODBENCH_CACHE`` or the per-user cache directory, then the dataset name),
then a download into that folder.  Whatever the source, the file's hash is checked before anything
parses it.

``ODBENCH_TRUST_LOCAL_FILES=1`` lets a user run on a copy whose hash differs
(a re-packed archive, a file fixed by hand).  Such a copy is used with a
warning and is never taken for the published data: :func:`local_identity`
gives its own sha256, which joins the job keys (``odbench.engine.identity``),
so its results are stored apart.  Readers still parse it as data only: CIFAR's
pickles go through a restricted unpickler (``odbench.data.formats``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
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
    #: bytes, as published: what a download costs (``odbench list``), and a copy of another size is not this file
    size: int | None = None


class ChecksumError(RuntimeError):
    """A file's hash differs from the pinned one (a user-fixable error)."""


class DataUnavailable(RuntimeError):
    """A file is neither present nor downloadable (offline, no data dir)."""


def cache_dir() -> Path:
    """Where downloads go: ``ODBENCH_CACHE`` or the per-user cache folder."""
    env = os.environ.get("ODBENCH_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("odbench"))


#: the data folders of the running call (``using_data_dirs``); None: the environment's
_given_dirs: contextvars.ContextVar[tuple[Path, ...] | None] = contextvars.ContextVar("odbench_data_dirs", default=None)


def data_dirs() -> list[Path]:
    """User folders searched before the cache: the running call's (:func:`using_data_dirs`), else ``ODBENCH_DATA_DIR``'s."""
    given = _given_dirs.get()
    return list(given) if given is not None else environment_data_dirs()


def environment_data_dirs() -> list[Path]:
    """The folders ``$ODBENCH_DATA_DIR`` names (a user's default; odbench never writes the variable)."""
    env = os.environ.get("ODBENCH_DATA_DIR", "")
    return [Path(p) for p in env.split(os.pathsep) if p]


@contextlib.contextmanager
def using_data_dirs(dirs: Sequence[Path | str]) -> Iterator[None]:
    """Search exactly ``dirs`` for data files inside the block (this thread's context), then as before.

    A workflow passes its ``--data-dir`` folders (and the environment's) this
    way, and each worker the list its job carries, instead of a process-wide variable.
    """
    token = _given_dirs.set(tuple(Path(d) for d in dirs))
    try:
        yield
    finally:
        _given_dirs.reset(token)


TRUST_VARIABLE = "ODBENCH_TRUST_LOCAL_FILES"


def trusting() -> bool:
    """True if the user vouched for local copies whose hash differs (``ODBENCH_TRUST_LOCAL_FILES=1``)."""
    return os.environ.get(TRUST_VARIABLE) == "1"


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file; read again only when it was replaced or its size or modification time changed."""
    stat = path.stat()
    return _hash_file(str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, algorithm)


@functools.lru_cache(maxsize=256)
def _hash_file(path: str, inode: int, size: int, mtime_ns: int, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fix_advice(remote: RemoteFile) -> str:
    where = f" (from {remote.url})" if "://" in remote.url and not remote.url.startswith("test://") else ""
    return (
        f"the copy is damaged, incomplete or not the published file: delete the file and run again to download it{where}, "
        f"or put a good copy in your data folder; only to use this exact copy anyway, set {TRUST_VARIABLE}=1 "
        "(its results are then stored under its own hash, apart from the published data's)"
    )


def mismatch(path: Path, remote: RemoteFile) -> str | None:
    """Why ``path`` is not the pinned file (a one-line message), or ``None`` if it is.

    A file pinned only by its parsed content (``content_sha256``) passes here:
    the dataset checks it after parsing (:func:`verify_content`).
    """
    if remote.sha256 is None and remote.md5 is None and remote.content_sha256 is not None:
        return None
    algorithm, expected = ("sha256", remote.sha256) if remote.sha256 else ("md5", remote.md5)
    if expected is None:
        return f"{remote.filename}: no checksum pinned; refusing to use an unverified file"
    actual = file_hash(path, algorithm)
    if actual != expected:
        return f"{path}: {algorithm} is {actual}, expected {expected}; {_fix_advice(remote)}"
    return None


_warned: set[str] = set()


def _warn_trusted(path: Path, problem: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        print(
            f"odbench: warning: using {path} unverified because {TRUST_VARIABLE}=1 ({problem.split(';')[0]}); "
            "its results are stored under its own sha256, apart from the published data's",
            file=sys.stderr,
        )


def verify(path: Path, remote: RemoteFile) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the pinned hash (or the user trusts local copies)."""
    problem = mismatch(path, remote)
    if problem is None:
        return
    if trusting():  # the user's explicit choice: allowed, warned, and keyed apart (local_identity)
        _warn_trusted(path, problem)
        return
    raise ChecksumError(problem)


def local_identity(remote: RemoteFile, root: Path) -> str:
    """What a job key must add for ``remote``'s copy in use: ``""`` for the published file.

    The copy in use is verified (or will be downloaded and verified) unless
    the user trusts local copies; then a copy that does not verify is
    identified by its own sha256.  A copy pinned only by its parsed content
    counts as unverified here (parsing is the dataset's), so under trust it
    too is keyed by its bytes.
    """
    if not trusting():
        return ""  # whatever is used has the pinned hash, or fails before it is read
    path = locate(remote, root)
    if path is None or (remote.content_sha256 is None and mismatch(path, remote) is None):
        return ""
    return f"{remote.filename}:sha256:{file_hash(path)}"


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
    if remote.content_sha256 is None or digest == remote.content_sha256:
        return
    problem = (
        f"{path}: content sha256 is {digest}, expected {remote.content_sha256} (rows and labels differ from the "
        f"published data); {_fix_advice(remote)}"
    )
    if trusting():  # keyed by the file's bytes already (local_identity)
        _warn_trusted(path, problem)
        return
    raise ChecksumError(problem)


def locate(remote: RemoteFile, root: Path) -> Path | None:
    """A verified local copy of ``remote``, or ``None`` if there is none.

    Every candidate is tried: datasets that share file names (MNIST and
    Fashion-MNIST both have ``train-images-idx3-ubyte.gz``) can sit side by
    side in one data directory, and the hash picks the right copy.  If
    copies exist but none verifies, the first mismatch is raised, or, when
    the user trusts local copies, that first copy is used (with a warning).
    """
    first: tuple[Path, str] | None = None
    for candidate in _candidates(remote.filename, root):
        if candidate.is_file():
            problem = mismatch(candidate, remote)
            if problem is None:
                return candidate
            first = first or (candidate, problem)
    if first is None:
        return None
    if trusting():
        _warn_trusted(*first)
        return first[0]
    raise ChecksumError(first[1])


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
    made = [folder for folder in (root, *root.parents) if not folder.exists()]  # what a failed download must not leave
    try:
        path = pooch.retrieve(remote.url, known_hash=known_hash, fname=remote.filename, path=root, progressbar=False)
    except ValueError as err:  # pooch's hash mismatch
        _remove_empty(made)
        raise ChecksumError(f"{remote.url}: {err}") from None
    except Exception as err:  # no network, HTTP error, ...
        _remove_empty(made)
        raise DataUnavailable(
            f"download {remote.filename} yourself from {remote.url} and put it in {root} or in a folder you pass "
            f"with --data-dir (or ODBENCH_DATA_DIR), then run again; odbench could not download it: {short_cause(err)}"
        ) from None
    return Path(path)


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders a failed download created, innermost first, where they are still empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()  # refuses a folder that is not empty: another download's files stay


def short_cause(err: BaseException) -> str:
    """Why a download failed, in a few words: the innermost system error (``Connection refused``) or the HTTP status.

    ``requests`` wraps urllib3's retry error around the connection error around the socket's:
    their messages repeat each other for hundreds of characters.
    """
    response = getattr(err, "response", None)
    if response is not None and getattr(response, "status_code", None) is not None:
        return f"HTTP {response.status_code} {getattr(response, 'reason', '') or ''}".strip()
    seen: set[int] = set()
    found: BaseException = err
    pending: list[BaseException] = [err]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return str(current.strerror)
        if "timed out" in str(current).lower() or "timeout" in type(current).__name__.lower():
            return "the connection timed out"
        found = current
        for inner in (current.__cause__, current.__context__, getattr(current, "reason", None), *current.args):
            if isinstance(inner, BaseException):
                pending.append(inner)
    text = " ".join(str(found).split())
    return f"{type(found).__name__}: {text[:120]}" if text else type(found).__name__


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
