"""Derived arrays computed once and kept on disk (decoded images, features).

Only files odbench wrote itself are read back, with ``allow_pickle=False``;
each is written to a temporary name and moved into place, so a killed run
never leaves a half-written cache behind.  The caller names the file after
everything the arrays depend on (source folder, file list, settings).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at ``path`` (``.npz``), building and saving them first if absent."""
    if not path.is_file():
        arrays = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}
