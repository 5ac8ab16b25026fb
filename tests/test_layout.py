"""The layout table of docs/layout.md is the code's, and every package ships in the wheel and sits in a layer."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("layout_table", REPO / "scripts" / "layout_table.py")
assert spec is not None and spec.loader is not None
layout_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layout_table)

#: shipped under another name (``odbench_plugins``), imported by no layer
OUTSIDE_THE_LAYERS = {"odbench.plugins_pkg"}


def test_the_layout_table_is_made_from_the_code() -> None:
    """Every module is in docs/layout.md's table with its docstring's first line; fails when either drifts."""
    page = (REPO / layout_table.PAGE).read_text(encoding="utf-8")
    assert layout_table.marked_table(page) == layout_table.table(REPO), (
        f"{layout_table.PAGE}'s layout table is out of date: run `python scripts/layout_table.py --write`"
    )


def test_every_package_ships_and_sits_in_a_layer() -> None:
    """A new package must be named in pyproject.toml twice: in the wheel's packages and in the layers contract."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        "odbench." + p.parent.relative_to(REPO / "odbench").as_posix().replace("/", ".")
        for p in (REPO / "odbench").rglob("__init__.py")
        if p.parent != REPO / "odbench"
    }
    missing = packages - OUTSIDE_THE_LAYERS - set(config["tool"]["setuptools"]["packages"])
    assert not missing, f"not in [tool.setuptools] packages, so not in the wheel: {sorted(missing)}"
    top = {f"odbench.{p.stem}" for p in (REPO / "odbench").glob("*.py") if p.name != "__init__.py"}
    layered = set(layout_table.layers(REPO))
    assert not (packages | top) - OUTSIDE_THE_LAYERS - layered, "a package or module is in no layer of pyproject.toml"
