"""Discovery of method and dataset plugins, and lookup by name.

Plugins come from three places, in this order:

1. the bundled folders ``methods/`` and ``datasets/`` (shipped in the wheel
   as ``odbench_plugins.methods`` / ``odbench_plugins.datasets``);
2. user folders (``--plugin-dir`` or ``ODBENCH_PLUGIN_PATH``, a
   ``:``-separated list), each holding ``*.py`` plugin files of either kind;
3. installed packages' entry points in the groups ``odbench.methods`` and
   ``odbench.datasets``.

A plugin file is loaded by path under a private module name, so a folder
called ``datasets`` never shadows another package.  A file that fails to
import because an optional dependency is missing is listed as unavailable
with the reason instead of breaking discovery.

Plugin files are not imported to be named, checked or listed: what they
declare is read from the plugin index (``odbench.engine.plugin_index``),
which imports a file only when it is new or changed.  A plugin's class is
imported when a job (or a check that needs more than its declarations)
asks for it (:attr:`Plugin.cls`).
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import hashlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, Literal, TypeVar, overload

from odbench.classical import pyod_catalogue
from odbench.core.contracts import Dataset, Method
from odbench.core.params import check_specs
from odbench.engine.plugin_index import PluginIndex, declare, declared_key_defaults, declared_specs, file_digest

Kind = Literal["method", "dataset"]
#: the plugin class a Plugin holds: Method for kind "method", Dataset for "dataset"
PluginT = TypeVar("PluginT", Method, Dataset)
_BASES: dict[str, type] = {"method": Method, "dataset": Dataset}
_BUNDLED_PACKAGES = {"method": "odbench_plugins.methods", "dataset": "odbench_plugins.datasets"}
_REPO_FOLDERS = {"method": "methods", "dataset": "datasets"}


class RegistryError(ValueError):
    """Unknown or conflicting plugin names, or a plugin file that cannot load (a user error)."""


def _load_error(path: Path, err: BaseException) -> RegistryError:
    """One line naming the plugin file and its line where loading failed (the traceback would bury it)."""
    return RegistryError(f"cannot load plugin file {_failure(path, err)}; fix the file or move it out of the plugin folder")


def _failure(path: Path, err: BaseException) -> str:
    """``FILE, line N: Error: message``, the line being the plugin file's own."""
    mine = path.resolve()
    line = (
        err.lineno if isinstance(err, SyntaxError) and err.filename and Path(err.filename).resolve() == mine else None
    )
    if line is None:  # the deepest frame in the plugin file itself: the line that raised or imported what raised
        frames = traceback.extract_tb(err.__traceback__)
        line = next((f.lineno for f in reversed(frames) if Path(f.filename).resolve() == mine), None)
    what = err.msg if isinstance(err, SyntaxError) else str(err)
    where = f"{path}, line {line}" if line else str(path)
    return f"{where}: {type(err).__name__}: {what}"


@dataclass(frozen=True)
class Plugin(Generic[PluginT]):
    """One discovered plugin.  ``cls`` is ``None`` when it cannot load."""

    name: str
    kind: Kind
    source: str  # file path or entry point
    #: the plugin class; None when it cannot load, or until ``build`` makes it (read it as ``cls``)
    loaded: type[PluginT] | None
    unavailable: str | None = None  # why it cannot run here
    file_hash: str = ""  # sha256 of the plugin file, recorded with each job
    file: str | None = None  # the plugin's source file, where the job key's code fingerprint starts
    #: builds ``cls`` on first use, for plugins listed before they are imported (``pyod:NAME``)
    build: Callable[[], type[PluginT]] | None = field(default=None, compare=False, repr=False)
    #: what ``odbench list`` shows of a plugin not built yet: its modalities and whether it is deep
    listed_modalities: tuple[str, ...] = ()
    listed_deep: bool = False
    #: what the plugin index recorded of the class (``plugin_index.declare``), read while it is not imported
    declared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def available(self) -> bool:
        return self.unavailable is None

    @property
    def cls(self) -> type[PluginT] | None:
        """The plugin class, built on first use where the plugin was listed before being imported."""
        if self.loaded is None and self.build is not None and self.unavailable is None:
            try:
                built = self.build()
            except ImportError as err:  # an optional dependency the table did not know of
                raise RegistryError(f"{self.kind} {self.name!r} is unavailable: import failed: {err}") from None
            object.__setattr__(self, "loaded", built)  # frozen: the one late field, set once
        return self.loaded

    # what listing reads: never builds a plugin
    def declaration(self) -> dict[str, Any]:
        """What the plugin declares (``plugin_index.declare``), from the index or its imported class; {} if unknown."""
        if not self.declared and self.loaded is not None:
            try:
                object.__setattr__(self, "declared", declare(self.loaded))
            except Exception:  # noqa: BLE001 - a broken declaration shows up when the class is used
                return {}
        return self.declared

    @property
    def modalities(self) -> tuple[str, ...]:
        if self.loaded is not None and issubclass(self.loaded, Method):
            return tuple(self.loaded.modalities)
        return tuple(self.declared.get("modalities", self.listed_modalities))

    @property
    def deep(self) -> bool:
        if self.loaded is not None:
            return bool(getattr(self.loaded, "deep", False))
        return bool(self.declared.get("deep", self.listed_deep))

    @property
    def uses_negatives(self) -> bool:
        if self.loaded is not None:
            return bool(getattr(self.loaded, "uses_negatives", False))
        return bool(self.declared.get("uses_negatives", False))


def bundled_folder(kind: Kind) -> Path | None:
    """The folder of bundled plugins, in a source checkout or an installed wheel.

    A source checkout (editable install, or ``PYTHONPATH`` on a clone) has
    the folders beside the ``odbench`` package; a wheel installs them as
    ``odbench_plugins.methods`` / ``.datasets``.
    """
    repo = Path(__file__).resolve().parents[2] / _REPO_FOLDERS[kind]
    if repo.is_dir():
        return repo
    spec = importlib.util.find_spec(_BUNDLED_PACKAGES[kind]) if _has_plugin_package() else None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return None


def _has_plugin_package() -> bool:
    try:
        return importlib.util.find_spec("odbench_plugins") is not None
    except (ImportError, ValueError):
        return False


def user_folders(extra: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    env = os.environ.get("ODBENCH_PLUGIN_PATH", "")
    return [*extra, *(Path(p) for p in env.split(os.pathsep) if p)]


def _missing_requirements(cls: type) -> str | None:
    return _missing(getattr(cls, "requires", ()))


def _missing(requires: list[str] | tuple[str, ...]) -> str | None:
    missing = [mod for mod in requires if importlib.util.find_spec(mod) is None]
    return f"needs {', '.join(missing)} (pip install {' '.join(missing)})" if missing else None


def _load_file(path: Path) -> ModuleType:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"odbench_plugin_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _plugins_in_module(module: ModuleType) -> list[type[Method] | type[Dataset]]:
    """Plugin classes defined (not merely imported) in ``module``."""
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and obj.__module__ == module.__name__
        and issubclass(obj, (Method, Dataset))
        and "name" in vars(obj)
    ]


def _kind_of(cls: type) -> Kind:
    return "method" if issubclass(cls, Method) else "dataset"


def scan_file(path: Path, default_kind: Kind | None = None) -> list[Plugin[Any]]:
    """Every plugin in one file.

    A missing import (an optional dependency) yields one unavailable entry
    that says why; any other failure (a syntax error, an exception while
    the file runs) is a :class:`RegistryError` naming the file and line.
    """
    return _scan(path, default_kind, file_digest(path))[0]


def _scan(path: Path, default_kind: Kind | None, file_hash: str) -> tuple[list[Plugin[Any]], str | None]:
    """:func:`scan_file`'s plugins, and the module a failed import lacked (None when it imported)."""
    try:
        module = _load_file(path)
    except ImportError as err:
        kind = default_kind or "method"
        failed = Plugin(path.stem, kind, str(path), None, f"import failed: {_failure(path, err)}", file_hash, str(path))
        return [failed], err.name or ""
    except Exception as err:  # noqa: BLE001 - whatever a plugin file raises is the plugin author's to fix
        raise _load_error(path, err) from None
    found: list[Plugin[Any]] = [
        Plugin(cls.name, _kind_of(cls), str(path), cls, _missing_requirements(cls), file_hash, str(path))
        for cls in _plugins_in_module(module)
    ]
    return found, None


def indexed_file(index: PluginIndex, path: Path, default_kind: Kind | None = None) -> list[Plugin[Any]]:
    """The plugins of one file, from ``index`` when it knows the file as it is (nothing imported), else by importing it.

    An import that fails on a missing module is indexed too (its one line
    names the file and line), until that module is installed; any other
    failure is raised, as :func:`scan_file` does, and indexed never.
    """
    digest = file_digest(path)
    entry = index.lookup(path, digest)
    if entry is not None and entry["failure"]:
        return [Plugin(path.stem, default_kind or "method", str(path), None, entry["failure"], digest, str(path))]
    if entry is not None:
        return [
            Plugin(d["name"], d["kind"], str(path), None, _missing(d["requires"]), digest, str(path),
                   build=functools.partial(_class_in_file, path, d["kind"], d["name"]), declared=d)
            for d in entry["plugins"]
        ]  # fmt: skip
    try:
        found, missing_module = _scan(path, default_kind, digest)
    except RegistryError:
        index.forget(path)
        raise
    if missing_module is not None:
        index.record(path, digest, failure=found[0].unavailable, missing_module=missing_module or None)
        return found
    try:
        declared = [declare(p.loaded) for p in found if p.loaded is not None]
    except Exception:  # noqa: BLE001 - a declaration the index cannot hold: the file is imported each time instead
        index.forget(path)
        return found
    index.record(path, digest, plugins=declared)
    return [replace(p, declared=d) for p, d in zip(found, declared, strict=True)]


def _class_in_file(path: Path, kind: Kind, name: str) -> type[Any]:
    """The plugin class ``name`` of ``path``, imported now (the index listed it without importing)."""
    try:
        module = _load_file(path)
    except ImportError as err:
        raise RegistryError(f"{kind} {name!r} is unavailable: import failed: {_failure(path, err)}") from None
    except Exception as err:  # noqa: BLE001 - whatever a plugin file raises is the plugin author's to fix
        raise _load_error(path, err) from None
    for cls in _plugins_in_module(module):
        if cls.name == name and _kind_of(cls) == kind:
            return cls
    raise RegistryError(f"{path} no longer defines the {kind} {name!r}; run the command again")


def _entry_point_plugins(kind: Kind) -> list[Plugin[Any]]:
    found: list[Plugin[Any]] = []
    for ep in metadata.entry_points(group=f"odbench.{kind}s"):
        source = f"entry point {ep.value}"
        try:
            cls = ep.load()
        except ImportError as err:
            found.append(Plugin(ep.name, kind, source, None, f"import failed: {err}"))
            continue
        file = inspect.getsourcefile(cls)
        digest = hashlib.sha256(Path(file).read_bytes()).hexdigest() if file else ""
        found.append(Plugin(cls.name, kind, source, cls, _missing_requirements(cls), digest, file))
    return found


def pyod_plugins() -> list[Plugin[Any]]:
    """Every pyod detector as ``pyod:<Name>``, listed from a table (``odbench.classical.pyod_catalogue``).

    Nothing of pyod is imported here: a detector's module loads when its
    plugin is first asked for (``Registry.get``).  The job's code fingerprint
    starts at the generic adapter, whose imports bring in pyod's version.
    """
    from odbench.core.contracts import MODALITIES

    adapter = Path(__file__).resolve().parents[1] / "classical" / "pyod_zoo.py"
    digest = hashlib.sha256(adapter.read_bytes()).hexdigest()
    found: list[Plugin[Any]] = []
    for entry in pyod_catalogue.CATALOGUE:
        found.append(Plugin(
            entry.method_name, "method", f"pyod {pyod_catalogue.pyod_version()}: pyod.models.{entry.module}.{entry.cls}",
            None, pyod_catalogue.unavailable(entry), digest, str(adapter), build=functools.partial(_build_zoo, entry.name),
            listed_modalities=MODALITIES if entry.refused is None else (), listed_deep=entry.deep,
        ))  # fmt: skip
    for name, why in pyod_catalogue.unknown_to_odbench():
        found.append(
            Plugin(pyod_catalogue.PREFIX + name, "method", "pyod knowledge base", None, why, digest, str(adapter))
        )
    return found


def _build_zoo(name: str) -> type[Method]:
    from odbench.classical.pyod_zoo import zoo_method

    return zoo_method(name)


class Registry:
    """All plugins visible to this process, by kind and name."""

    def __init__(self, plugin_dirs: list[Path] | tuple[Path, ...] = (), entry_points: bool = True) -> None:
        #: the user folders given here (not the environment's): worker processes rebuild the registry from them
        self.plugin_dirs: tuple[Path, ...] = tuple(Path(d) for d in plugin_dirs)
        found: list[Plugin[Any]] = []
        index = PluginIndex()
        try:
            for kind in ("method", "dataset"):
                folder = bundled_folder(kind)
                if folder is not None:
                    for path in sorted(folder.glob("[!_]*.py")):
                        found += indexed_file(index, path, kind)
            for folder in user_folders(list(plugin_dirs)):
                if not folder.is_dir():
                    raise RegistryError(f"plugin folder {folder} does not exist")
                for path in sorted(folder.glob("[!_]*.py")):
                    found += indexed_file(index, path)
        finally:
            index.save()  # the files read so far, even when one of them fails
        if entry_points:
            found += _entry_point_plugins("method") + _entry_point_plugins("dataset")
        found += pyod_plugins()
        self._plugins: dict[Kind, dict[str, Plugin[Any]]] = {"method": {}, "dataset": {}}
        for plugin in found:
            table = self._plugins[plugin.kind]
            if plugin.name in table:
                raise RegistryError(
                    f"two {plugin.kind} plugins are named {plugin.name!r}: {table[plugin.name].source} and {plugin.source}; "
                    "rename one"
                )
            table[plugin.name] = plugin

    @overload
    def all(self, kind: Literal["method"]) -> list[Plugin[Method]]: ...
    @overload
    def all(self, kind: Literal["dataset"]) -> list[Plugin[Dataset]]: ...
    @overload
    def all(self, kind: Kind) -> list[Plugin[Any]]: ...

    def all(self, kind: Kind) -> list[Plugin[Any]]:
        return sorted(self._plugins[kind].values(), key=lambda p: p.name)

    @overload
    def get(self, kind: Literal["method"], name: str) -> Plugin[Method]: ...
    @overload
    def get(self, kind: Literal["dataset"], name: str) -> Plugin[Dataset]: ...
    @overload
    def get(self, kind: Kind, name: str) -> Plugin[Any]: ...

    def get(self, kind: Kind, name: str) -> Plugin[Any]:
        """The plugin called ``name`` (for datasets, ``name:argument`` too), its class imported."""
        plugin = self.check(kind, name)
        plugin.cls  # noqa: B018 - imports a plugin listed from its declarations, or says why it cannot
        return plugin

    def check(self, kind: Kind, name: str) -> Plugin[Any]:
        """The plugin called ``name``, checked from its declarations (nothing imported): known, available, argument.

        A dataset that needs an argument (``csv:PATH``) or takes none is
        checked here when its declarations are indexed.
        """
        base, sep, _ = name.partition(":") if kind == "dataset" else (name, "", "")
        plugin = self._plugins[kind].get(base)
        if plugin is None:
            raise RegistryError(self._unknown(kind, name))
        if plugin.unavailable:
            raise RegistryError(f"{kind} {plugin.name!r} is unavailable: {plugin.unavailable}")
        takes = plugin.declared.get("takes_argument") if kind == "dataset" else None
        if takes is False and sep:
            raise RegistryError(f"dataset {plugin.name!r} takes no argument (got {name!r})")
        if takes and not sep:
            raise RegistryError(f"dataset {plugin.name!r} needs an argument: {plugin.name}:VALUE")
        return plugin

    def _unknown(self, kind: Kind, name: str) -> str:
        """One line for a name nobody registered: the closest names, or what exists."""
        prefix = pyod_catalogue.PREFIX
        if kind == "method" and name.lower().startswith(prefix):
            zoo = {p.name[len(prefix) :]: p.name for p in self._plugins[kind].values() if p.name.startswith(prefix)}
            typed = name[len(prefix) :]
            close = difflib.get_close_matches(typed.lower(), [z.lower() for z in zoo], n=3, cutoff=0.5)
            by_lower = {z.lower(): full for z, full in zoo.items()}
            hint = f"closest: {', '.join(by_lower[c] for c in close)}" if close else "see `odbench list --methods pyod`"
            return f"unknown pyod detector {name!r}; {hint}"
        own = [p for p in self._plugins[kind] if not p.startswith(prefix)]
        close = difflib.get_close_matches(name, own, n=3, cutoff=0.6)
        known = ", ".join(own) or "none"
        zoo_note = f", and pyod's detectors as {prefix}<Name> (odbench list --methods pyod)" if kind == "method" else ""
        closest = f"; closest: {', '.join(close)}" if close else ""
        # a plugin file that failed to import may be the one that defines it: say so, with its file and line
        failed = "; ".join(
            p.unavailable for n, p in self._plugins[kind].items() if n in own and p.loaded is None and p.unavailable
        )
        broken = f"; {failed} (that file may define it)" if failed else ""
        return f"unknown {kind} {name!r}; known: {known}{zoo_note}{closest}{broken}"

    def select(self, kind: Kind, patterns: str | list[str]) -> list[str]:
        """Names matching comma-separated names or wildcards (``deep*``).

        A pattern that matches nothing is an error listing what exists.
        Available plugins only; a name given exactly that is unavailable is
        an error that says why.
        """
        if isinstance(patterns, str):
            patterns = [p.strip() for p in patterns.split(",") if p.strip()]
        chosen: dict[str, None] = {}  # ordered set
        for pattern in patterns:
            wildcard = any(ch in pattern for ch in "*?[")
            # "csv:data.csv?label=y" is a dataset with an argument, not a wildcard; "pyod:*" is every pyod detector
            if wildcard and (kind == "method" or ":" not in pattern):
                hits = [p.name for p in self.all(kind) if fnmatch.fnmatchcase(p.name, pattern) and p.available]
                if not hits:
                    known = ", ".join(p.name for p in self.all(kind))
                    raise RegistryError(f"no {kind} matches {pattern!r}; known: {known}")
                chosen.update(dict.fromkeys(hits))
            elif wildcard and self._family_arguments(pattern) is not None:
                chosen.update(dict.fromkeys(self._family_arguments(pattern) or []))
            else:
                self.check(kind, pattern)  # raises on a miss
                chosen[pattern] = None
        if not chosen:
            raise RegistryError(f"no {kind} given")
        return list(chosen)

    def _family_arguments(self, pattern: str) -> list[str] | None:
        """``adbench:*``: the family's known arguments that match, or None when the family lists none.

        A family lists its arguments with a ``arguments()`` classmethod; one that
        takes any argument (a file name) has none and its pattern stays a name.
        """
        family, _, argument = pattern.partition(":")
        plugin = self._plugins["dataset"].get(family)
        known = plugin.declaration().get("arguments") if plugin is not None and plugin.available else None
        if known is None:
            return None
        hits = [f"{family}:{a}" for a in known if fnmatch.fnmatch(a.lower(), argument.lower())]
        if not hits:
            raise RegistryError(f"no dataset matches {pattern!r}; {family} knows: {', '.join(known)}")
        return hits

    def check_params(self, method: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` checked and coerced as :meth:`Method.check_params` does, from the index's declarations.

        The method's class is imported only where the index cannot rebuild
        its declarations (a pyod detector, a parameter of an unusual type).
        """
        plugin = self.check("method", method)
        known = declared_specs(plugin.declared) if plugin.declared else None
        if known is None:
            return self.method(method).check_params(dict(given))
        return check_specs(method, known, given)

    def key_params(self, method: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a job key holds (:meth:`Method.key_params`), from the index's declarations where it has them.

        A resume makes every key and runs nothing: a deep method's class
        (torch) is imported only for a job that runs.
        """
        plugin = self.check("method", method)
        known = declared_key_defaults(plugin.declared) if plugin.declared else None
        if known is None:
            return self.method(method).key_params(dict(given))
        defaults, unkeyed = known
        return {k: v for k, v in {**defaults, **given}.items() if k not in unkeyed}

    def load_files(self) -> None:
        """Import every plugin file's classes now (a worker pool's preload), not at each plugin's first use."""
        for table in self._plugins.values():
            for plugin in table.values():
                if plugin.file is not None and plugin.source == plugin.file and plugin.available:
                    with contextlib.suppress(RegistryError):
                        plugin.cls  # noqa: B018 - imports it

    def method(self, name: str) -> type[Method]:
        cls = self.get("method", name).cls
        assert cls is not None
        return cls

    def dataset(self, name: str) -> Dataset:
        """A dataset instance; ``family:argument`` passes the argument on."""
        plugin = self.get("dataset", name)
        cls = plugin.cls
        assert cls is not None
        _, sep, argument = name.partition(":")
        if sep and not cls.takes_argument:
            raise RegistryError(f"dataset {plugin.name!r} takes no argument (got {name!r})")
        if not sep and cls.takes_argument:
            raise RegistryError(f"dataset {plugin.name!r} needs an argument: {plugin.name}:VALUE")
        return cls(argument) if sep else cls()
