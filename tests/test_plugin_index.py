"""The plugin index: names, parameters and listing from recorded declarations, without importing a plugin.

A process that only lists or refuses a name must not import torch, pyod or
MLflow once the index is warm; an edited plugin file must be read again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from odbench.cli import main
from odbench.engine.plugin_index import INDEX_FILE
from odbench.engine.registry import Registry, RegistryError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pyod", "mlflow")

#: runs the command line in a fresh interpreter, then says which heavy modules it imported
PROBE = (
    "import sys\n"
    "from odbench.cli import main\n"
    "status = main(sys.argv[1:])\n"
    f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    "sys.exit(status)\n"
)

PLUGIN = '''
from dataclasses import dataclass

import numpy as np
from odbench.api import Method, param


class Centroid(Method):
    """Distance to the mean of the training normals."""

    name = "centroid"

    @dataclass
    class Params:
        shrink: float = param({default}, "pull towards zero", low=0)

    def fit(self, task, ctx):
        self.mu_ = task.train.normal.reshape(len(task.train.normal), -1).mean(0) * (1 - self.params.shrink)
        return self

    def anomaly_score(self, X):
        return np.linalg.norm(X.reshape(len(X), -1) - self.mu_, axis=1)
'''


def _probe(args: list[str], cache: Path) -> tuple[int, str, list[str]]:
    env = {**os.environ, "ODBENCH_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("ODBENCH_PLUGIN_PATH", None)
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)  # fmt: skip
    heavy_line = next(line for line in done.stderr.splitlines() if line.startswith("HEAVY:"))
    return done.returncode, done.stdout + done.stderr, [m for m in heavy_line[len("HEAVY:") :].split(",") if m]


def test_a_warm_index_lists_and_refuses_names_without_importing_torch_pyod_or_mlflow(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    status, _, heavy = _probe(["list"], cache)  # cold: the plugin files are imported once, and indexed
    assert status == 0 and (cache / INDEX_FILE).is_file()
    assert "torch" in heavy, "the cold run imports the plugin files (the probe would see nothing otherwise)"
    for args in (
        ["list"],
        ["list", "--params", "drocc"],
        ["run", "--methods", "nosuch", "--no-mlflow", "--results", str(tmp_path / "r")],
        ["run", "--methods", "knn", "--datasets", "digits", "--param", "knn.n_neighbors=zero", "--no-mlflow",
         "--results", str(tmp_path / "r")],
        ["run", "--methods", "knn", "--datasets", "digits", "--protocol-option", "nosuch=1", "--no-mlflow",
         "--results", str(tmp_path / "r")],
    ):  # fmt: skip
        status, output, heavy = _probe(args, cache)
        assert heavy == [], f"odbench {' '.join(args)} imported {heavy}"
        assert status == (0 if args[0] == "list" else 2), output
        assert not (tmp_path / "r").exists()
    assert "knn.n_neighbors must be an integer" in _probe(
        ["run", "--methods", "knn", "--datasets", "digits", "--param", "knn.n_neighbors=zero"], cache
    )[1]


def test_version_and_help_answer_before_numpy_loads(tmp_path: Path) -> None:
    for args in (["--version"], ["--help"], ["run", "--help"]):
        code = PROBE.replace("'torch', 'pyod', 'mlflow'", "'torch', 'numpy'") if len(args) == 1 else PROBE
        env = {**os.environ, "ODBENCH_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0 and "HEAVY:\n" in done.stderr, (args, done.stderr)


def test_an_edited_plugin_file_is_read_again(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    path = folder / "centroid.py"
    path.write_text(PLUGIN.format(default=0.0))
    Registry([folder])  # indexes the file (importing it)
    for module in [m for m in sys.modules if m.startswith("odbench_plugin_centroid_")]:
        del sys.modules[module]  # as a new process would start
    warm = Registry([folder]).check("method", "centroid")
    assert warm.loaded is None and not any(m.startswith("odbench_plugin_centroid_") for m in sys.modules)
    assert [p["default"] for p in warm.declared["params"]] == ["0.0"]

    path.write_text(PLUGIN.format(default=0.25).replace('"pull towards zero"', '"pull the centre towards zero"'))
    assert main(["list", "--params", "centroid", "--plugin-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "0.25" in out and "pull the centre towards zero" in out, out
    registry = Registry([folder])
    assert registry.check_params("centroid", {"shrink": "0.5"}) == {"shrink": 0.5}
    with pytest.raises(Exception, match="at least 0"):
        registry.check_params("centroid", {"shrink": -1})
    assert registry.method("centroid").Params().shrink == 0.25  # the class a job gets is the edited one


def test_a_failed_import_is_indexed_with_its_file_and_line_until_the_module_exists(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    runs = tmp_path / "runs.txt"
    path = folder / "needs_lib.py"
    path.write_text(f"open({str(runs)!r}, 'a').write('x')\n\nimport odbench_no_such_module_xyz\n")
    first = Registry([folder]).all("method")
    message = next(p.unavailable for p in first if p.name == "needs_lib")
    assert f"{path}, line 3" in str(message) and "odbench_no_such_module_xyz" in str(message)
    assert runs.read_text() == "x"

    warm = Registry([folder])  # from the index: the file does not run again, the reason is the same
    assert runs.read_text() == "x"
    with pytest.raises(RegistryError, match=rf"{path}, line 3.*\(that file may define it\)"):
        warm.check("method", "needs_lib2")

    (tmp_path / "odbench_no_such_module_xyz.py").write_text("")  # the missing module appears
    sys.path.insert(0, str(tmp_path))
    try:
        fixed = Registry([folder])
        assert runs.read_text() == "xx", "the file is imported again once its missing module exists"
        assert not any(p.name == "needs_lib" for p in fixed.all("method"))  # it defines no plugin after all
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("odbench_no_such_module_xyz", None)


def test_a_classical_run_never_imports_torch(tmp_path: Path) -> None:
    """``--device auto`` answers cpu without torch where no GPU driver exists; kNN's jobs need none of it."""
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia").exists() or Path("/dev/kfd").exists():
        pytest.skip("a GPU driver is here: auto asks torch, as it must")
    _probe(["list"], tmp_path / "cache")
    status, output, heavy = _probe(
        ["run", "--methods", "knn", "--datasets", "sine2d", "--no-mlflow", "--results", str(tmp_path / "r")], tmp_path / "cache"
    )
    assert status == 0 and "1 ok" in output, output
    assert "torch" not in heavy, heavy


def test_a_damaged_index_is_rebuilt_from_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODBENCH_CACHE", str(tmp_path))
    Registry()
    index = tmp_path / INDEX_FILE
    text = index.read_text()
    for damaged in ("{not json", "[1, 2]", text.replace('"requires"', '"needs"')):
        index.write_text(damaged)
        assert Registry().check("method", "knn").declared["name"] == "knn"
        assert '"requires"' in index.read_text()  # written again, whole


def test_a_resume_of_a_deep_suite_never_imports_torch(tmp_path: Path) -> None:
    """Keys, parameter checks and the resume come from declarations: torch loads only for a job that runs."""
    run = ["run", "--methods", "drocc", "--datasets", "sine2d", "--no-mlflow", "--no-report", "--results", str(tmp_path / "r"),
           "--param", "drocc.epochs=2", "--param", "drocc.only_ce_epochs=1", "--param", "drocc.ascent_num_steps=1"]  # fmt: skip
    status, output, heavy = _probe(run, tmp_path / "cache")
    assert status == 0 and "1 ok" in output and "torch" in heavy, output
    status, output, heavy = _probe(run, tmp_path / "cache")
    assert status == 0 and "1 already done" in output, output
    assert "torch" not in heavy, heavy
    # a combination DROCC refuses still fails before anything runs, once a job would run
    status, output, _ = _probe([*run, "--param", "drocc.only_ce_epochs=2"], tmp_path / "cache")
    assert status == 2 and "must be below drocc.epochs" in output, output


def test_the_index_makes_the_keys_the_classes_make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODBENCH_CACHE", str(tmp_path))
    Registry()  # builds the index
    indexed, imported = Registry(), Registry()
    names = [p.name for p in indexed.all("method") if p.available and not p.name.startswith("pyod:")]
    assert {"drocc", "deepsvdd", "knn", "ocsvm"} <= set(names)
    for name in names:
        declared = indexed.check("method", name).declared
        assert declared and declared["own_key_params"] is False, name  # the index makes its keys
        cls = imported.method(name)
        given = cls.check_params({"epochs": 3}) if "epochs" in {p["name"] for p in declared["params"]} else {}
        for params in ({}, given):  # as a job key reads them (odbench.engine.identity): a tuple is a list there
            as_key = [json.dumps(p, sort_keys=True, default=str) for p in (indexed.key_params(name, params), cls.key_params(params))]
            assert as_key[0] == as_key[1], name


KEYED_BY_ITS_CLASS = """
from dataclasses import dataclass

import numpy as np
from odbench.api import Method, param


class Rounded(Method):
    name = "rounded"

    @dataclass
    class Params:
        scale: float = param(1.0, "a scale, kept in the key to one decimal")

    @classmethod
    def key_params(cls, given):
        return {"scale": round(float(given.get("scale", 1.0)), 1)}

    def fit(self, task, ctx):
        return self

    def anomaly_score(self, X):
        return np.zeros(len(X))
"""


def test_a_method_that_makes_its_own_keys_is_asked_for_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "rounded.py").write_text(KEYED_BY_ITS_CLASS)
    Registry([tmp_path / "plugins"])  # indexes the file
    indexed = Registry([tmp_path / "plugins"])
    assert indexed.check("method", "rounded").declared["own_key_params"] is True
    assert indexed.key_params("rounded", {"scale": 1.04}) == {"scale": 1.0}  # the class's keys, not the declaration's
