"""What fingerprinting learnt in earlier processes: each source file's digest and imports, the installed distributions.

Every ``odbench run`` makes its job keys from the code fingerprint
(``odbench.engine.fingerprint``), which parses every module the plugins
import (about 60 files, 0.8 s on a small machine) and asks
``importlib.metadata`` which distribution provides each library (a scan of
every installed distribution, 0.6 s): most of a resume that finds every job
done.  This memo keeps both in odbench's cache folder
(``fingerprint_memo.json``, beside the plugin index):

* per source file, its digest and imports, reused while the file keeps its
  size, modification time and inode (as the plugin index and the store index
  trust a file's signature);
* the import-name-to-distribution map and the versions read from it, reused
  while :func:`odbench.engine.fingerprint.installation_stamp` is unchanged
  (any install, upgrade or removal changes it).

Both are reused only under the Python that wrote them (the digest is of its
syntax tree).  The memo is a cache: one that cannot be read is ignored, one
that cannot be written is skipped, and a damaged entry is parsed again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from odbench.core.files import replace_whole

MEMO_FILE = "fingerprint_memo.json"
_FORMAT = 1


def memo_path() -> Path:
    """Where the memo lives: the cache folder (``ODBENCH_CACHE`` or the per-user cache)."""
    from odbench.core.download import cache_dir

    return cache_dir() / MEMO_FILE


def _signature(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class FingerprintMemo:
    """The memo of one process: read on first use, written back (atomically) when it learnt something."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or memo_path()
        self.files: dict[str, list[Any]] = {}
        self.installed: dict[str, Any] = {}
        self.changed = False
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(self.path.read_text())
            if isinstance(stored, dict) and stored.get("format") == _FORMAT and stored.get("python") == sys.version:
                self.files = dict(stored.get("files", {}))
                self.installed = dict(stored.get("installed", {}))

    def parsed(self, path: Path) -> tuple[str, tuple[str, ...]] | None:
        """The digest and imports learnt for ``path`` as it is now, else None."""
        entry = self.files.get(str(path))
        if not isinstance(entry, list) or len(entry) != 3 or entry[0] != _signature(path):
            return None
        digest, imports = entry[1], entry[2]
        if not isinstance(digest, str) or not isinstance(imports, list):
            return None
        return digest, tuple(str(name) for name in imports)

    def learn_parsed(self, path: Path, digest: str, imports: tuple[str, ...]) -> None:
        signature = _signature(path)
        if signature is not None:
            self.files[str(path)] = [signature, digest, list(imports)]
            self.changed = True

    def distributions(self, stamp: str) -> tuple[Mapping[str, list[str]], dict[str, str | None]] | None:
        """The import-name map and versions learnt under installation ``stamp``, else None."""
        if self.installed.get("stamp") != stamp:
            return None
        found, versions = self.installed.get("distributions"), self.installed.get("versions")
        if not isinstance(found, dict) or not isinstance(versions, dict):
            return None
        return found, versions

    def learn_distributions(self, stamp: str, found: Mapping[str, list[str]], versions: dict[str, str | None]) -> None:
        self.installed = {"stamp": stamp, "distributions": {k: list(v) for k, v in found.items()}, "versions": versions}
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        data = json.dumps({"format": _FORMAT, "python": sys.version, "files": self.files, "installed": self.installed})
        with contextlib.suppress(OSError):
            replace_whole(self.path, data)
        self.changed = False
