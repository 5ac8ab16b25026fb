"""Whether a dataset's data are on this machine, and what a run would do if they are not.

Read from what the dataset declares (``odbench.engine.plugin_index``:
its ``files`` with their published sizes, the ``local_folders`` an extracted
or user-supplied copy lives in), so ``odbench list`` answers without
importing the plugin or hashing a file.  Files are looked for where
``odbench.core.download.locate`` looks (each data folder, at its top or one
folder down, then the dataset's cache folder); a file pinned by its bytes
counts only at its published size (MNIST and Fashion-MNIST share file
names).  The hash is checked when a run reads the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odbench.core.download import cache_dir


@dataclass(frozen=True)
class Availability:
    """``on_disk``: a run reads local data; ``what``: a short cell (``on disk``, ``download 170 MB``); ``note``: the fix."""

    on_disk: bool
    what: str
    note: str | None = None


def _bases(data_dirs: Sequence[Path]) -> list[Path]:
    """The folders a file may sit in: each data folder and its sub-folders."""
    found = []
    for base in data_dirs:
        found.append(base)
        if base.is_dir():
            found += sorted(p for p in base.iterdir() if p.is_dir())
    return found


def _has_file(spec: Mapping[str, Any], folders: Sequence[Path]) -> bool:
    for folder in folders:
        path = folder / spec["filename"]
        if path.is_file() and (spec.get("size") is None or not spec.get("pinned_bytes") or path.stat().st_size == spec["size"]):
            return True
    return False


def _has_folder(name: str, marker: str, folders: Sequence[Path]) -> bool:
    return any((folder / name / marker).exists() for folder in folders)


#: one note for every dataset a run would download
DOWNLOAD_NOTE = (
    "a run downloads the files (size shown) once, into odbench's cache (ODBENCH_CACHE); to use a copy you have, "
    "put its files in a folder named by ODBENCH_DATA_DIR or --data-dir"
)


def megabytes(size: int) -> str:
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB"
    return f"{size / 1e6:.0f} MB" if size >= 10e6 else f"{size / 1e6:.2g} MB"


def availability(declared: Mapping[str, Any], data_dirs: Sequence[Path]) -> Availability:
    """Where the data of the dataset ``declared`` describes would come from, here and now."""
    if declared.get("takes_argument"):
        return Availability(True, "your file")
    if declared.get("bundled"):
        return Availability(True, "bundled")
    folders = [*_bases(data_dirs), cache_dir() / declared["name"]]
    local_folders = declared.get("local_folders") or []
    variable = declared.get("folder_variable")
    if variable and os.environ.get(variable):
        own = Path(os.environ[variable])
        if any((own / marker).exists() for _, marker in local_folders):
            return Availability(True, "on disk")
    if any(_has_folder(name, marker, folders) for name, marker in local_folders):
        return Availability(True, "on disk")
    files = declared.get("files") or []
    missing = [f for f in files if not _has_file(f, folders)]
    if files and not missing:
        return Availability(True, "on disk")
    if missing:
        sizes = [f.get("size") for f in missing]
        cost = megabytes(sum(sizes)) if None not in sizes else "size unknown"
        return Availability(False, f"download {cost}", DOWNLOAD_NOTE)
    where = " or ".join(name for name, _ in local_folders) or declared["name"]
    also = f", or set {variable} to that folder" if variable else ""
    note = (f"{declared['name']}: no download; put a folder named {where} in a folder named by ODBENCH_DATA_DIR or "
            f"--data-dir{also}")  # fmt: skip
    return Availability(False, "your copy", note)
