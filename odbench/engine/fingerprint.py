"""Fingerprints of the code that decides a job's numbers, and of the libraries it runs on.

A job's key must change when the code that computes its result changes, and
only then.  The code of a job is its two plugin files plus every odbench
module they import, directly or not, plus the modules that run every job
(``odbench.engine.execute`` and what it imports: protocols, standardization,
metrics, seeding).  Each module counts by its syntax tree with docstrings
removed, so a comment, a docstring, formatting or the README never re-run a
job, while a changed default, loss or split does.  The granularity is the
module: a change to DROCC's ascent re-runs DROCC jobs, not the pyod
baselines, whose import closure does not contain it.

The libraries are those the same closure imports (torch, pyod, scikit-learn,
numpy, ...), at the versions installed when the key is made (not when the
process started), with odbench's own version and Python's.  Imports are
found statically (``ast``), so nothing is executed to fingerprint a plugin.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import odbench
from odbench.engine.fingerprint_memo import FingerprintMemo, memo_path

#: modules every job runs through, whatever its plugins
JOB_RUNNER = "odbench.engine.execute"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return tree


_memos: dict[Path, FingerprintMemo] = {}


def _memo() -> FingerprintMemo:
    """This process's view of the on-disk memo in the cache folder it uses now (tests switch folders)."""
    where = memo_path()
    if where not in _memos:
        _memos[where] = FingerprintMemo(where)
    return _memos[where]


@lru_cache(maxsize=512)
def _parsed(path: Path, mtime_ns: int) -> tuple[str, tuple[str, ...]]:
    """(hash of the docstring-free syntax tree, absolute names imported anywhere in the file)."""
    memo = _memo()
    known = memo.parsed(path)
    if known is not None:
        return known
    digest, imported = _parse(path)
    memo.learn_parsed(path, digest, imported)
    return digest, imported


def _parse(path: Path) -> tuple[str, tuple[str, ...]]:
    tree = _strip_docstrings(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.append(node.module)
            # `from odbench.deep import nets` imports the module odbench.deep.nets
            imported += [f"{node.module}.{alias.name}" for alias in node.names if node.module.startswith("odbench")]
    digest = hashlib.sha256(ast.dump(tree).encode()).hexdigest()
    return digest, tuple(sorted(set(imported)))


@lru_cache(maxsize=1024)  # every job of a suite walks the same modules: find each file once
def _module_path(name: str) -> Path | None:
    """The source file of an odbench module, found without importing it (None: not a module)."""
    parts = name.split(".")
    base = Path(odbench.__file__).parent.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def installation_stamp() -> tuple[tuple[str, int | None], ...]:
    """Each import path entry with its modification time, read now (microseconds).

    Installing, upgrading or removing a distribution adds, renames or deletes
    its ``<name>-<version>.dist-info`` folder in one of these folders, which
    changes that folder's time; ``importlib.metadata`` finds distributions by
    the same times.
    """
    stamp: list[tuple[str, int | None]] = []
    for entry in sys.path:
        try:
            stamp.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:  # a zip file's inner path, an import hook, a folder not made yet
            stamp.append((entry, None))
    return tuple(stamp)


@dataclass
class _Installed:
    """What is installed, as of one :func:`installation_stamp`: import names to distributions, versions read so far."""

    distributions: Mapping[str, list[str]]
    versions: dict[str, str | None] = field(default_factory=dict)

    def version(self, dist: str) -> str | None:
        if dist not in self.versions:
            try:
                self.versions[dist] = metadata.version(dist)  # parses the METADATA file: ~1 ms
            except metadata.PackageNotFoundError:
                self.versions[dist] = None
        return self.versions[dist]


@lru_cache(maxsize=1)  # a new stamp (a library installed or upgraded since) reads everything again
def _installed(stamp: tuple[tuple[str, int | None], ...]) -> _Installed:
    known = _memo().distributions(repr(stamp))
    if known is not None:
        return _Installed(known[0], dict(known[1]))
    return _Installed(metadata.packages_distributions())  # scans every installed distribution: 0.2-0.6 s


def library_versions(import_names: set[str]) -> dict[str, str]:
    """The installed version of the distribution of each top-level import name (stdlib and odbench left out).

    Read when asked, not when the process started: a notebook that upgrades
    a library gets its new version in the next job key.  Versions are
    reused only while no import path folder has changed (:func:`installation_stamp`).
    """
    stamp = installation_stamp()
    installed = _installed(stamp)
    read_before = len(installed.versions)
    versions = {}
    for top in sorted(import_names):
        if top in sys.stdlib_module_names or top == "odbench":
            continue
        names = installed.distributions.get(top)
        version = installed.version(names[0]) if names else None
        if names and version is not None:
            versions[names[0]] = version
    memo = _memo()
    if len(installed.versions) != read_before or memo.distributions(repr(stamp)) is None:
        memo.learn_distributions(repr(stamp), installed.distributions, installed.versions)
    return versions


def code_fingerprint(*files: Path) -> dict[str, object]:
    """What decides the results of code starting at ``files`` (plugin files) and the job runner.

    Returns ``{"code": hash, "modules": {name: hash}, "versions": {dist: version}}``;
    ``code`` covers the modules and the versions together.
    """
    modules: dict[str, str] = {}
    external: set[str] = set()
    # plugins are named by folder and file, not full path: an installed copy keys as the checkout does
    pending: list[tuple[str, Path]] = [(f"<plugin>{Path(f).parent.name}/{Path(f).name}", Path(f)) for f in files]
    runner = _module_path(JOB_RUNNER)
    if runner is not None:
        pending.append((JOB_RUNNER, runner))
    seen: set[Path] = set()
    while pending:
        name, path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        digest, imported = _parsed(path, path.stat().st_mtime_ns)
        modules[name] = digest
        for target in imported:
            if target == "odbench" or target.startswith("odbench."):
                found = _module_path(target)
                if found is not None:
                    pending.append((target, found))
                    # importing a.b.c runs the __init__ of a.b too
                    parent = target.rsplit(".", 1)[0]
                    parent_path = _module_path(parent) if parent != target else None
                    if parent_path is not None:
                        pending.append((parent, parent_path))
            else:
                external.add(target.split(".")[0])
    versions = {"python": ".".join(map(str, sys.version_info[:2])), "odbench": odbench.__version__}
    versions.update(library_versions(external))
    code = hashlib.sha256(repr((sorted(modules.items()), sorted(versions.items()))).encode()).hexdigest()
    _memo().save()  # what this walk parsed or read, for the next process
    return {"code": code, "modules": dict(sorted(modules.items())), "versions": versions}
