"""Files written whole or not at all: a reader sees the old file or the new one, never half of either.

For odbench's caches and side files (the plugin index, the fingerprint memo,
the MLflow mirror stamp, the bootstrap intervals): a temporary file beside
the target, renamed over it.  The store's records need more (an fsync, and a
temporary name that says which process wrote it): ``odbench.engine.store``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it; nothing is left behind on a failure,
    which is raised (the caller decides whether it matters: a cache that cannot be written is usually skipped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
