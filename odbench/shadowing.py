"""A folder named ``odbench`` in the working directory that Python would import instead of the installed odbench.

Python puts the working directory first on ``sys.path`` for ``python -m``,
``python -c`` and the worker processes multiprocessing starts (its fork
server runs ``python -c``).  Run from a folder that holds a clone named
``odbench/``, those import the clone's root as ``odbench``: a namespace
package (no ``__init__.py`` there), or another copy of the code.  With an
editable install the submodules still resolve to the installed files, so
nothing fails at import: jobs then fail inside (``odbench.__file__`` is
``None``), and ``--jobs 2`` dies with an ImportError in its workers.

Importing this module checks the running process (the first thing
``odbench.cli`` does, before it reads any name from ``odbench``);
:func:`refuse_shadowing` checks what a worker started here would import.
Both end in one line saying what to do, exit 2.  Only the standard library
is used here: when ``odbench`` is the wrong package, nothing else of it can
be trusted to import.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import odbench


def _advice(folder: Path) -> str:
    # a clone's root holds pyproject.toml; a package folder (with __init__.py) sits inside the checkout to install
    checkout = folder.parent if (folder / "__init__.py").is_file() else folder
    return (
        f"odbench: error: the folder {folder} hides the installed odbench from Python (it is imported in its place); "
        f"run odbench from another folder, or install that copy with `pip install -e {checkout}`"
    )


def _package_dir(spec_origin: str | None) -> Path | None:
    """The folder a found ``odbench`` comes from: its ``__init__.py``'s folder, ``None`` for a namespace package."""
    if spec_origin is None or not spec_origin.endswith("__init__.py"):
        return None
    return Path(spec_origin).parent.resolve()


def shadowing_folder(cwd: Path | None = None) -> Path | None:
    """``cwd/odbench`` when a process started in ``cwd`` with it first on ``sys.path`` would import it as odbench.

    ``None`` when it would import this very package (running from odbench's
    own checkout is fine) or when there is no such folder.
    """
    here = Path.cwd() if cwd is None else Path(cwd)
    folder = here / "odbench"
    if not folder.is_dir():
        return None
    installed = Path(odbench.__file__).parent.resolve() if getattr(odbench, "__file__", None) else None
    if installed is not None and folder.resolve() == installed:
        return None
    saved = list(sys.path)
    try:
        sys.path.insert(0, str(here))
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find("odbench", None) if find is not None else None
            if spec is not None:
                break
    finally:
        sys.path[:] = saved
    if spec is None:
        return None
    found = _package_dir(spec.origin)
    return None if found is not None and found == installed else folder


def refuse_shadowing() -> None:
    """Exit 2 with one line when a worker started here would import another ``odbench``; else nothing."""
    folder = shadowing_folder()
    if folder is not None:
        print(_advice(folder), file=sys.stderr)
        raise SystemExit(2)


def _this_process() -> None:
    """Exit 2 with one line when this process already imported a namespace package as ``odbench``."""
    if getattr(odbench, "__file__", None) is None:
        locations = list(getattr(odbench, "__path__", []))
        folder = Path(locations[0]) if locations else Path(os.getcwd()) / "odbench"
        print(_advice(folder), file=sys.stderr)
        raise SystemExit(2)


_this_process()
