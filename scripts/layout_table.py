"""The layout table of docs/layout.md, made from the code: every odbench module and the first line of its docstring.

Usage: python scripts/layout_table.py [--write]

Packages and top-level modules come in the order of the layers contract in
``pyproject.toml`` (``[tool.importlinter]``), top to bottom; siblings of a
layer in the order written there; modules outside every layer last.  A
package's row is followed by one row per module it holds.  ``--write``
replaces the table in ``docs/layout.md`` between its two markers;
``tests/test_layout.py`` fails when that table is not this one.
"""

from __future__ import annotations

import argparse
import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the page that holds the table, relative to the repository root
PAGE = Path("docs") / "layout.md"
BEGIN = "<!-- layout table: made by `python scripts/layout_table.py --write`; tests/test_layout.py checks it -->"
END = "<!-- end of layout table -->"


def layers(root: Path = ROOT) -> list[str]:
    """The layered modules, top to bottom (``odbench.views | odbench.observers`` gives both, in that order)."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [name.strip() for layer in contract["layers"] for name in re.split(r"[|:]", layer)]


def first_line(path: Path) -> str:
    """The first line of a module's docstring, as Markdown (RST's double backticks and roles made plain)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        raise ValueError(f"{path.relative_to(ROOT)} has no docstring: say in its first line what the module does")
    line = doc.strip().splitlines()[0]
    line = re.sub(r":(?:mod|class|func|meth|data|attr):`~?([^`]+)`", r"``\1``", line)
    return line.replace("``", "`").replace("|", "\\|")


def _modules(package: Path) -> list[Path]:
    """A package's modules, ``__init__`` left out, then its subpackages' (none today), by name."""
    return sorted(p for p in package.glob("*.py") if p.name != "__init__.py")


def table(root: Path = ROOT) -> str:
    """The Markdown table: ``odbench/views/`` (the package's line), then ``views/curves``, ... (each module's)."""
    base = root / "odbench"
    tops = [base / "__init__.py", *sorted(p for p in base.glob("*.py") if p.name != "__init__.py")]
    tops += sorted(p for p in base.iterdir() if (p / "__init__.py").is_file())
    by_name = {"odbench" if p.name == "__init__.py" else f"odbench.{p.stem}": p for p in tops}
    order = [name for name in layers(root) if name in by_name]
    order += [name for name in by_name if name not in order]
    rows = ["| module | what |", "|---|---|"]
    for name in order:
        path = by_name[name]
        if path.is_dir():
            rows.append(f"| **`odbench/{path.name}/`** | {first_line(path / '__init__.py')} |")
            rows += [f"| `{path.name}/{m.stem}` | {first_line(m)} |" for m in _modules(path)]
        else:
            shown = "odbench/__init__.py" if name == "odbench" else f"odbench/{path.name}"
            rows.append(f"| **`{shown}`** | {first_line(path)} |")
    return "\n".join(rows)


def marked_table(page: str) -> str:
    """The table between the page's markers."""
    start, end = page.index(BEGIN) + len(BEGIN), page.index(END)
    return page[start:end].strip("\n")


def write(root: Path = ROOT) -> None:
    """Replace the table between the markers of ``docs/layout.md`` with the code's."""
    path = root / PAGE
    page = path.read_text(encoding="utf-8")
    start, end = page.index(BEGIN) + len(BEGIN), page.index(END)
    path.write_text(page[:start] + "\n" + table(root) + "\n" + page[end:], encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the table in docs/layout.md")
    if parser.parse_args().write:
        write()
    else:
        print(table())
