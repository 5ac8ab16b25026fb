"""Errors that lead with the fix: one line, exit 2, the cause short (issue 27 §7)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from odbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    """A local port nobody listens on: bound, then released (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_failed_download_says_the_fix_first_and_leaves_no_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    url = f"http://127.0.0.1:{_closed_port()}/remote.npz"
    (plugins / "remote_set.py").write_text(textwrap.dedent(f'''
        from odbench.api import Dataset
        from odbench.core.download import RemoteFile

        class RemoteSet(Dataset):
            name = "remote_set"
            modality = "tabular"
            classes = ("a", "b")
            default_protocol = "one_vs_all"
            files = (RemoteFile(url="{url}", filename="remote.npz", sha256="0" * 64),)

            def load(self, root):
                raise AssertionError("never reached: the file cannot be downloaded")
    '''))
    cache = tmp_path / "cache"  # not there yet: the download would create it and the dataset's folder in it
    monkeypatch.setenv("ODBENCH_CACHE", str(cache))
    argv = ["run", "--methods", "knn", "--datasets", "remote_set", "--plugin-dir", str(plugins),
            "--results", str(tmp_path / "results"), "--no-mlflow"]  # fmt: skip
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"odbench: error: download remote.npz yourself from {url} and put it in {cache / 'remote_set'}"), line
    assert "--data-dir" in line and line.endswith("could not download it: Connection refused"), line
    assert len(line) < 400 and "HTTPConnectionPool" not in line and "Max retries" not in line, line
    # the cache may hold the plugin index (odbench.engine.plugin_index), never a folder the download made
    left = [p.name for p in cache.iterdir()] if cache.exists() else []
    assert left in ([], ["plugin_index.json"]), f"the folders the failed download made are gone: {left}"


def test_executor_ray_without_ray_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    # a folder on PYTHONPATH whose `ray` fails to import, as an environment without Ray does
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "odbench.cli", "run", "--methods", "knn", "--datasets", "sine2d", "--executor", "ray",
         "--results", str(results), "--no-mlflow"],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": f"{fake.parent}:{REPO}", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == ["odbench: error: --executor ray needs Ray: pip install 'odbench[cluster]' (or run without --executor ray)"], lines
    assert not results.exists(), "refused before planning: nothing written"


# What `pip install -e` adds (setuptools' editable finder): after the path search, a finder that maps `odbench` and
# its submodules to the checkout.  A folder `odbench/` in the working directory is then found first, by the path
# search, as a namespace package, while `odbench.cli` and the rest still resolve to the checkout.
EDITABLE_FINDER = f'''
import sys
from importlib.machinery import PathFinder

class EditableFinder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname == "odbench":
            return PathFinder.find_spec(fullname, path=[{str(REPO)!r}])
        parent, _, child = fullname.rpartition(".")
        if parent == "odbench":
            return PathFinder.find_spec(fullname, path=[{str(REPO / "odbench")!r}])
        return None

sys.meta_path.append(EditableFinder)
'''


@pytest.mark.parametrize("how", ["python -m odbench.cli", "console script"])
def test_a_folder_that_hides_odbench_is_one_line_saying_what_to_do(tmp_path: Path, how: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(EDITABLE_FINDER)
    script = site / "odbench_script.py"  # as pip writes a console script: its own folder first on sys.path
    script.write_text("import sys\nfrom odbench.cli import main\nsys.exit(main())\n")
    here = tmp_path / "here"
    (here / "odbench" / "odbench").mkdir(parents=True)  # a clone of odbench: its root holds no __init__.py
    (here / "odbench" / "README.md").write_text("a clone\n")
    argv = [sys.executable, "-m", "odbench.cli"] if how.startswith("python") else [sys.executable, str(script)]
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*argv, "--version"], capture_output=True, text=True, cwd=here, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"odbench: error: the folder {here / 'odbench'} hides the installed odbench from Python (it is imported in its "
        f"place); run odbench from another folder, or install that copy with `pip install -e {here / 'odbench'}`"
    ], done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([*argv, "--version"], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("odbench "), done.stderr
