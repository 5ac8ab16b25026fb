"""Plugin discovery: a user folder, duplicate names, unknown names, wildcards."""

from __future__ import annotations

from pathlib import Path

import pytest

from odbench.cli import main
from odbench.engine.registry import Registry, RegistryError

PLUGIN = '''
import numpy as np
from odbench.api import Method


class Centroid(Method):
    """Distance to the mean of the training normals."""

    name = "{name}"

    def fit(self, task, ctx):
        self.mu_ = task.train.normal.reshape(len(task.train.normal), -1).mean(0)
        return self

    def anomaly_score(self, X):
        return np.linalg.norm(X.reshape(len(X), -1) - self.mu_, axis=1)
'''


def _write(folder: Path, filename: str, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(PLUGIN.format(name=name))
    return path


def test_plugin_in_a_user_folder_is_discovered(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path / "plugins", "centroid.py", "centroid")
    registry = Registry([tmp_path / "plugins"])
    plugin = registry.get("method", "centroid")
    assert plugin.available and plugin.source == str(path) and len(plugin.file_hash) == 64
    assert registry.select("method", "cent*") == ["centroid"]
    # the same through the command line, and through the environment variable
    assert main(["list", "--plugin-dir", str(tmp_path / "plugins")]) == 0
    assert "centroid" in capsys.readouterr().out


def test_plugin_folder_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "env_plugins", "centroid_env.py", "centroid_env")
    monkeypatch.setenv("ODBENCH_PLUGIN_PATH", str(tmp_path / "env_plugins"))
    assert Registry().get("method", "centroid_env").available


def test_duplicate_name_names_both_files(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", "one.py", "twin")
    second = _write(tmp_path / "b", "two.py", "twin")
    with pytest.raises(RegistryError) as err:
        Registry([tmp_path / "a", tmp_path / "b"])
    assert str(first) in str(err.value) and str(second) in str(err.value)


def test_a_plugin_cannot_reuse_a_bundled_name(tmp_path: Path) -> None:
    _write(tmp_path / "p", "myknn.py", "knn")
    with pytest.raises(RegistryError, match=r"knn.*methods/knn\.py.*myknn\.py"):
        Registry([tmp_path / "p"])


def test_unknown_name_lists_known_names(registry: Registry) -> None:
    with pytest.raises(RegistryError) as err:
        registry.get("method", "knnn")
    message = str(err.value)
    assert "unknown method 'knnn'" in message
    for name in ("iforest", "knn", "lof", "ocsvm"):
        assert name in message
    with pytest.raises(RegistryError, match="no dataset matches 'zz\\*'; known: .*digits"):
        registry.select("dataset", "zz*")


def test_list_names_bundled_files_shortly_and_reasons_under_the_table(capsys) -> None:
    """Rows stay narrow: a bundled plugin's file as ``methods/knn.py``, a refusal's reason as a numbered note."""
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    knn = next(line for line in out.splitlines() if line.startswith("knn "))
    assert knn.rstrip().endswith(" methods/knn.py"), knn
    xgbod = next(line for line in out.splitlines() if line.startswith("pyod:XGBOD "))
    number = xgbod.split()[2].strip("[]")
    assert f"  [{number}] supervised" in out and len(xgbod.rstrip()) < 140, xgbod
