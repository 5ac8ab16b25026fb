"""Derived arrays computed once and kept on disk (decoded images, features).

Only files odbench wrote itself are read back, with ``allow_pickle=False``;
each is written to a temporary file of its own (unique per writer, in the
same folder) and moved into place atomically, so a killed run never leaves a
half-written cache behind and two workers building the same cache at once
each publish a whole file (the last one wins; both hold the same arrays).  The caller names the file after
everything the arrays depend on (source folder, file list, settings).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at ``path`` (``.npz``), building and saving them first if absent."""
    if not path.is_file():
        arrays = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as out:
                # allow_pickle is numpy's default, named so the type checker does not match **arrays against it
                np.savez(out, allow_pickle=True, **arrays)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}
