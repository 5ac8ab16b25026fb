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
    assert not cache.exists(), "the folders the failed download made are gone"


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
