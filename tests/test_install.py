"""A non-editable install ships the bundled plugins (as ``odbench_plugins.*``).

The wheel is built by the interpreter running the tests (the one whose
environment holds setuptools, torch & co.: a fresh virtual environment made
for the README's test command, say) and installed into a bare virtual
environment that borrows that environment's packages but not its odbench.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
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
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ODBENCH_PLUGIN_PATH")}

    def run(*argv: str, cwd: Path = tmp_path) -> str:
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    # build with the running interpreter: the base interpreter a venv is made from may lack setuptools
    offline = importlib.util.find_spec("setuptools") is not None  # else pip fetches the build backend
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", *(["--no-build-isolation"] if offline else []),
        "--wheel-dir", str(dist), str(source))  # fmt: skip
    (wheel,) = dist.glob("odbench-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=False, with_pip=False)
    python = env_dir / "bin" / "python"
    # the new environment sees this one's packages (pip, torch & co.) through a .pth file; the
    # .pth files *in* them, among which this checkout's editable odbench, are not read from there
    borrowed = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    purelib = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (purelib / "borrowed.pth").write_text("\n".join(borrowed) + "\n")
    run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel))
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing may come from the source tree
    elsewhere.mkdir()
    where = run(str(python), "-c", "import odbench; print(odbench.__file__)", cwd=elsewhere)
    assert str(env_dir) in where, f"odbench imported from {where}, not from the fresh install"
    listing = run(str(env_dir / "bin" / "odbench"), "list", cwd=elsewhere)
    bundled = [(kind, p.stem) for kind in ("methods", "datasets") for p in sorted((REPO / kind).glob("[!_]*.py"))]
    assert len(bundled) >= 7
    for kind, stem in bundled:
        assert f"odbench_plugins/{kind}/{stem}.py" in listing, f"{kind}/{stem}.py missing from the installed package"
    experiments = run(str(python), "-c", "from odbench.views.reproduce import available, paper_folder; print(paper_folder(), available())",
                      cwd=elsewhere)  # fmt: skip
    assert str(env_dir) in experiments and "table2" in experiments, "the paper's experiment files are not installed"
