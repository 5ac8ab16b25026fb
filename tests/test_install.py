"""A non-editable install ships the bundled plugins (as ``odbench_plugins.*``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_lists_every_bundled_plugin(tmp_path: Path) -> None:
    # build from a copy so the checkout gets no build/ or egg-info litter
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for folder in ("odbench", "methods", "datasets", "results"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)  # reuses torch & co. (and pip) from here
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ODBENCH_PLUGIN_PATH")}
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        check=True, env=env, cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing may come from the source tree
    elsewhere.mkdir()

    def run(*argv: str) -> str:
        return subprocess.run(argv, env=env, cwd=elsewhere, check=True, capture_output=True, text=True).stdout

    where = run(str(python), "-c", "import odbench; print(odbench.__file__)")
    assert str(env_dir) in where, f"odbench imported from {where}, not from the fresh install"
    listing = run(str(env_dir / "bin" / "odbench"), "list")
    bundled = [(kind, p.stem) for kind in ("methods", "datasets") for p in sorted((REPO / kind).glob("[!_]*.py"))]
    assert len(bundled) >= 7
    for kind, stem in bundled:
        assert f"odbench_plugins/{kind}/{stem}.py" in listing, f"{kind}/{stem}.py missing from the installed package"
    experiments = run(str(python), "-c", "from odbench.views.reproduce import available, paper_folder; print(paper_folder(), available())")
    assert str(env_dir) in experiments and "table2" in experiments, "the paper's experiment files are not installed"
