"""The index of verified records: what lets a resume believe a record without reading its scores again.

The store's full check of a record reads its ``.npz`` and hashes every array
(``odbench.engine.store``); a suite of 10,000 done jobs would spend minutes on
that at every start.  So each record that passed the full check is listed in
``<results>/jobs.index.json`` with the signature of its two files (inode, size,
modification and change times in nanoseconds, for the record and for its
scores), its status and the sha256 of the record's text.  At the next start a
record whose files still show exactly that signature is believed as checked;
any other (an entry missing, a file rewritten, copied, touched or truncated)
gets the full check again, and the index learns the result.

What the index cannot see, it never claims: a file changed within the same
timestamp tick as its check would keep its signature, so a record is only
listed once both its files are :data:`SETTLE_NS` older than the check (a
record written a moment ago is checked again at the next start, once).  Bit
rot under an unchanged signature is for ``odbench verify``, which never
trusts the index.

The index is a cache, never a source of truth: it is written atomically
(temporary file, ``os.replace``), merged with what other processes wrote
meanwhile, and one that is torn, foreign, of another version or a link is
ignored and rebuilt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_NAME = "jobs.index.json"
#: the layout of the index file; another one is ignored (rebuilt)
VERSION = 1
#: a file changed less than this before its check could change again without changing its times
#: (timestamps move in ticks of a few milliseconds; NFS clients round more): it is checked again next time
SETTLE_NS = 2_000_000_000

#: (inode, size, mtime_ns, ctime_ns) of the record, then of its scores file (empty without one)
Signature = tuple[int, ...]


def file_signature(path: Path) -> Signature | None:
    """The record's and its scores file's (inode, size, mtime_ns, ctime_ns); ``None`` without a record."""
    try:
        record = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        scores = os.stat(path.with_suffix(".npz"))
        npz: Signature = (scores.st_ino, scores.st_size, scores.st_mtime_ns, scores.st_ctime_ns)
    except FileNotFoundError:
        npz = ()
    return (record.st_ino, record.st_size, record.st_mtime_ns, record.st_ctime_ns, *npz)


def settled(signature: Signature, checked_ns: int) -> bool:
    """Whether every time in ``signature`` is :data:`SETTLE_NS` older than ``checked_ns`` (when the check began)."""
    times = [t for i, t in enumerate(signature) if i % 4 in (2, 3)]
    return all(t < checked_ns - SETTLE_NS for t in times)


@dataclass(frozen=True)
class Entry:
    """One verified record: its files' signature, its status and the sha256 of its text."""

    signature: Signature
    status: str
    digest: str

    def as_json(self) -> list[Any]:
        return [list(self.signature), self.status, self.digest]

    @classmethod
    def from_json(cls, value: Any) -> Entry | None:
        """The entry, or ``None`` for anything malformed (a foreign or damaged index)."""
        if not (isinstance(value, list) and len(value) == 3):
            return None
        signature, status, digest = value
        if not (isinstance(signature, list) and len(signature) in (4, 8) and all(type(v) is int for v in signature)):
            return None
        if not (isinstance(status, str) and isinstance(digest, str) and len(digest) == 64):
            return None
        return cls(tuple(signature), status, digest)


class RecordIndex:
    """The verified records of one store, read once, saved on :meth:`save`.

    Only this process's own changes (entries added, keys dropped) are written
    back, over what the file holds then: two processes saving at once lose at
    worst an entry, which costs one full check later, never a wrong belief.
    """

    def __init__(self, path: Path, write: Callable[[Path, Callable[[Any], None]], None]) -> None:
        self.path = path
        self._write = write  # the store's atomic write (temporary file, fsync, os.replace)
        self._entries: dict[str, Entry] | None = None
        self._added: dict[str, Entry] = {}
        self._dropped: set[str] = set()

    def _read(self) -> dict[str, Entry]:
        """The file's entries; ``{}`` when it is missing, torn, foreign, of another version or a link."""
        try:
            if self.path.is_symlink():
                return {}
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("records"), dict):
            return {}
        entries = {}
        for key, value in data["records"].items():
            entry = Entry.from_json(value)
            if entry is not None:
                entries[key] = entry
        return entries

    @property
    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def add(self, key: str, entry: Entry) -> None:
        if self.entries.get(key) != entry:
            self.entries[key] = entry
            self._added[key] = entry
            self._dropped.discard(key)

    def drop(self, key: str) -> None:
        if self.entries.pop(key, None) is not None or key in self._added:
            self._added.pop(key, None)
            self._dropped.add(key)

    def save(self, present: Iterable[str] | None = None) -> bool:
        """Write this process's changes over the file's current entries; whether anything was written.

        ``present``: every key that has a record now (a sweep of the whole
        store); entries of any other key are dropped too.  Errors (a read-only
        store) are ignored: the index is only a cache.
        """
        keep = set(present) if present is not None else None
        stale = keep is not None and any(key not in keep for key in self.entries)
        if not (self._added or self._dropped or stale):
            return False
        merged = self._read()
        merged.update(self._added)
        for key in self._dropped:
            merged.pop(key, None)
        if keep is not None:
            merged = {key: entry for key, entry in merged.items() if key in keep}
        text = json.dumps({"version": VERSION, "records": {k: e.as_json() for k, e in sorted(merged.items())}},
                          separators=(",", ":")).encode()  # fmt: skip
        try:
            self._write(self.path, lambda f: f.write(text))
        except OSError:
            return False
        self._entries, self._added, self._dropped = merged, {}, set()
        return True
