"""What each plugin file declares, kept on disk so that naming, checking and listing import no plugin.

A plugin file imports torch, pyod or scikit-learn: seconds on a small
machine, for a user who only typed a wrong name.  The first time a file is
seen (or after it changed) the registry imports it and records here what
its plugins declare: name, kind, requirements, a method's modalities and
parameters (name, type, default, meaning, choices, bounds), a dataset's
modality, protocol, classes and files.  Later processes read those
declarations instead of importing the file, and import it only when a job
needs the class.

The index is one JSON file in odbench's cache folder (``ODBENCH_CACHE`` or
the per-user cache, as downloads), ``plugin_index.json``.  An entry holds
for the file's path:

* the sha256 of the file: an edit makes it stale;
* a stamp of its folder's other files (helpers ``_x.py``, tables such as
  ``adbench_classical_files.csv``) a plugin may read at import;
* the declarations, or, for a file that could not import because a module
  is missing, the one-line reason (file and line) and that module's name:
  the entry goes stale once the module is installed.

The whole index is stale when odbench itself changed (its version, the
size or time of any of its source files), or Python or pyod did: a base
class there may declare parameters.  An index that cannot be read or
written is rebuilt or skipped silently: it only saves time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

from odbench.core.files import replace_whole
from odbench.core.params import Spec

INDEX_FILE = "plugin_index.json"
_FORMAT = 2
#: the parameter types a declaration may use, by the tag the index stores
_TYPES: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "dict": dict,
                          "none": type(None), "any": Any}  # fmt: skip


def index_path() -> Path:
    """Where the index lives: beside the downloads (``ODBENCH_CACHE`` or the per-user cache)."""
    from odbench.core.download import cache_dir

    return cache_dir() / INDEX_FILE


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def environment_stamp() -> str:
    """What every entry depends on besides its file: odbench's own code, Python, pyod."""
    import odbench
    from odbench.classical.pyod_catalogue import pyod_version

    package = Path(odbench.__file__).resolve().parent
    h = hashlib.sha256(f"{_FORMAT} {odbench.__version__} {sys.version} {pyod_version()}".encode())
    for folder, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            st = os.stat(os.path.join(folder, name))
            h.update(f"{os.path.relpath(os.path.join(folder, name), package)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def folder_stamp(folder: Path) -> str:
    """The folder's files other than plugin files (``_helpers.py``, data tables), by name, size and time."""
    h = hashlib.sha256()
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            plugin_file = entry.name.endswith(".py") and not entry.name.startswith("_")
            if plugin_file or not entry.is_file() or entry.name.startswith("."):
                continue
            st = entry.stat()
            h.update(f"{entry.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# ---- declarations: what a plugin class says, as plain JSON data ------------------------------------------------


def declare(cls: type) -> dict[str, Any]:
    """Everything listing and checking read of one plugin class, as JSON-able data."""
    from odbench.core.contracts import Method

    found: dict[str, Any] = {"name": cls.name, "requires": list(getattr(cls, "requires", ()))}  # type: ignore[attr-defined]
    if issubclass(cls, Method):
        from odbench.core.params import specs

        found.update(
            kind="method", modalities=list(cls.modalities), deep=bool(cls.deep), uses_negatives=bool(cls.uses_negatives),
            params=[_declare_spec(s) for s in specs(cls.Params).values()],
            own_key_params=cls.key_params.__func__ is not Method.key_params.__func__,  # type: ignore[attr-defined]
        )  # fmt: skip
        return found
    arguments = getattr(cls, "arguments", None)
    found.update(
        kind="dataset", modality=cls.modality, default_protocol=cls.default_protocol,  # type: ignore[attr-defined]
        classes=[str(c) for c in cls.classes], takes_argument=bool(cls.takes_argument),  # type: ignore[attr-defined]
        bundled=bool(cls.bundled),  # type: ignore[attr-defined]
        files=[{"filename": f.filename, "url": f.url, "size": getattr(f, "size", None),
                "pinned_bytes": f.content_sha256 is None} for f in cls.files],  # type: ignore[attr-defined]
        local_folders=[list(pair) for pair in getattr(cls, "local_folders", ())],
        folder_variable=getattr(cls, "folder_variable", None),
        arguments=list(arguments()) if callable(arguments) else None,
    )  # fmt: skip
    return found


def _declare_spec(spec: Spec) -> dict[str, Any]:
    return {
        "name": spec.name, "type_name": spec.type_name, "types": _type_tags(spec.annotation),
        "default_is_none": spec.default is None, "default": repr(spec.default), "help": spec.help,
        "choices": None if spec.choices is None else _jsonable(list(spec.choices)), "has_choices": spec.choices is not None,
        "low": spec.low, "high": spec.high, "runtime": spec.runtime, "keyed": spec.keyed,
        # as a job key writes it (odbench.engine.identity): the key of a resume is made without importing the class
        "default_json": json.dumps(spec.default, sort_keys=True, default=str),
    }  # fmt: skip


def _jsonable(values: list[Any]) -> list[Any] | None:
    """The values when JSON keeps them as they are (strings, numbers, booleans, None), else None (not checked early)."""
    plain = all(v is None or isinstance(v, (str, int, float, bool)) for v in values)
    return values if plain else None


def _type_tags(annotation: Any) -> list[str]:
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    tags = []
    for member in members:
        origin = typing.get_origin(member) or member
        if origin in (tuple, list, Sequence, Iterable):
            tags.append("list")
        else:
            tags.append(next((tag for tag, t in _TYPES.items() if t is origin), "other"))
    return tags


def declared_specs(declared: dict[str, Any]) -> dict[str, Spec] | None:
    """A method's parameter specs rebuilt from its declaration (None when one type is beyond the index: import it)."""
    found = {}
    for p in declared.get("params", ()):
        if "other" in p["types"] or (p["choices"] is None and p["has_choices"]):
            return None
        members = tuple(_TYPES[t] for t in p["types"])
        annotation = members[0] if len(members) == 1 else Union[members]  # noqa: UP007 - built at run time
        default = None if p["default_is_none"] else p["default"]
        choices = None if p["choices"] is None else tuple(_frozen(c) for c in p["choices"])
        found[p["name"]] = Spec(p["name"], default, p["help"], annotation, choices, p["low"], p["high"], runtime=p["runtime"])
    return found


def declared_key_defaults(declared: dict[str, Any]) -> tuple[dict[str, Any], set[str]] | None:
    """The declared defaults as a job key holds them, and the unkeyed names (None: the class makes its own keys)."""
    if declared.get("own_key_params", True):
        return None
    params = declared.get("params", ())
    if not all("default_json" in p and "keyed" in p for p in params):
        return None
    return {p["name"]: json.loads(p["default_json"]) for p in params}, {p["name"] for p in params if not p["keyed"]}


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


# ---- the index file ------------------------------------------------------------------------------------------


class PluginIndex:
    """The declarations of plugin files, read once per process and written back when an entry changed."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or index_path()
        self.stamp = environment_stamp()
        self.entries: dict[str, dict[str, Any]] = {}
        self.changed = False
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(self.path.read_text())
            if isinstance(stored, dict) and stored.get("format") == _FORMAT and stored.get("stamp") == self.stamp:
                self.entries = {k: v for k, v in dict(stored.get("files", {})).items() if _well_formed(v)}
        self._folders: dict[Path, str] = {}

    def _folder(self, path: Path) -> str:
        folder = path.parent
        if folder not in self._folders:
            self._folders[folder] = folder_stamp(folder)
        return self._folders[folder]

    def lookup(self, path: Path, digest: str) -> dict[str, Any] | None:
        """The entry for ``path`` if it still describes the file as it is now, else None."""
        entry = self.entries.get(str(path.resolve()))
        if entry is None or entry.get("sha256") != digest or entry.get("folder") != self._folder(path):
            return None
        missing = entry.get("missing_module")
        if missing and _installed(missing):  # the module a failed import lacked is there now: import again
            return None
        return entry

    def record(self, path: Path, digest: str, plugins: list[dict[str, Any]] | None = None,
               failure: str | None = None, missing_module: str | None = None) -> None:  # fmt: skip
        """Store what the file declares (``plugins``), or why it did not import (``failure``, ``missing_module``)."""
        self.entries[str(path.resolve())] = {
            "sha256": digest, "folder": self._folder(path), "plugins": plugins or [], "failure": failure,
            "missing_module": missing_module,
        }  # fmt: skip
        self.changed = True

    def forget(self, path: Path) -> None:
        if self.entries.pop(str(path.resolve()), None) is not None:
            self.changed = True

    def save(self) -> None:
        """Write the index atomically (a reader never sees half of it); a cache that cannot be written is skipped."""
        if not self.changed:
            return
        data = json.dumps({"format": _FORMAT, "stamp": self.stamp, "files": self.entries}, sort_keys=True)
        with contextlib.suppress(OSError):
            replace_whole(self.path, data)
        self.changed = False


def _well_formed(entry: Any) -> bool:
    """An entry as :meth:`PluginIndex.record` writes it (a damaged file's entries are read again from their files)."""
    if not isinstance(entry, dict) or not {"sha256", "folder", "plugins", "failure"} <= entry.keys():
        return False
    plugins = entry["plugins"]
    return isinstance(plugins, list) and all(
        isinstance(d, dict) and {"name", "kind", "requires"} <= d.keys() and d["kind"] in ("method", "dataset")
        for d in plugins
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
