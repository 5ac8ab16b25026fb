"""Identity: a job re-runs when the code that decides it changes, and only then; studies never cross splits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from odbench.cli import main
from odbench.core.params import declared_defaults
from odbench.engine import fingerprint
from odbench.engine.fingerprint import code_fingerprint
from odbench.engine.plan import Job
from odbench.engine.registry import Registry

REPO = Path(__file__).resolve().parents[1]


def _run(copy: Path, results: Path) -> str:
    argv = [sys.executable, "-m", "odbench.cli", "run", "--methods", "drocc", "--datasets", "sine2d", "--no-mlflow",
            "--results", str(results), "--param", "drocc.epochs=2", "--param", "drocc.only_ce_epochs=1",
            "--param", "drocc.ascent_num_steps=1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.slow
def test_an_engine_edit_reruns_the_job_and_a_comment_does_not(tmp_path: Path) -> None:
    """A scratch copy of odbench: a docstring/comment edit keeps the key; a changed engine default re-runs the job.

    The edited default (the MLP backbone's width) is not a method parameter,
    so only the code fingerprint can see it.
    """
    copy = tmp_path / "checkout"
    for part in ("odbench", "methods", "datasets"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    results = tmp_path / "results"
    assert "1 ok" in _run(copy, results)

    engine = copy / "odbench" / "deep" / "nets.py"
    text = engine.read_text()
    engine.write_text(text.replace('"""One hidden layer', '"""Edited docstring. One hidden layer', 1) + "\n# a comment\n")
    assert "1 already done" in _run(copy, results)

    mlp = text.index("class MLP")
    old = "hidden: int = 128) -> None:"
    at = text.index(old, mlp)
    engine.write_text(text[:at] + "hidden: int = 64) -> None:" + text[at + len(old):])
    assert "1 ok" in _run(copy, results)
    records = [json.loads(p.read_text()) for p in (results / "jobs").glob("*.json")]
    assert len(records) == 2 and len({r["code_fingerprint"] for r in records}) == 2
    assert records[0]["params"] == records[1]["params"]  # the parameters alone could not have told them apart


def test_the_fingerprint_follows_each_method_s_own_code(registry: Registry) -> None:
    """DROCC's closure holds the ascent and torch; knn's holds pyod and not the deep engine; both hold the job runner."""
    drocc = code_fingerprint(Path(registry.get("method", "drocc").file), Path(registry.get("dataset", "sine2d").file))
    knn = code_fingerprint(Path(registry.get("method", "knn").file), Path(registry.get("dataset", "sine2d").file))
    assert {"odbench.drocc.ascent", "odbench.drocc.projections", "odbench.deep.training"} <= set(drocc["modules"])
    assert "odbench.drocc.ascent" not in knn["modules"] and "odbench.classical.pyod_adapter" in knn["modules"]
    for fp in (drocc, knn):
        assert {"odbench.engine.execute", "odbench.protocols.splits", "odbench.protocols.scaling"} <= set(fp["modules"])
        assert {"python", "odbench", "numpy", "scikit-learn"} <= set(fp["versions"])
    assert "torch" in drocc["versions"] and "pyod" in knn["versions"]


def test_the_job_key_follows_the_user_s_parameters(registry: Registry) -> None:
    """A user's value makes another key; a default spelled out keeps the default's key (it is the same job)."""
    job = Job(method="knn", dataset="digits", protocol="one_vs_all", normal_class="3", repetition=0)
    default = declared_defaults(registry.method("knn").Params)["n_neighbors"]
    assert replace(job, params={"n_neighbors": 1}).key(registry) != job.key(registry)
    assert replace(job, params={"n_neighbors": default}).key(registry) == job.key(registry)


def test_a_run_with_a_param_is_not_served_the_default_s_result(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """End to end: ``--param knn.n_neighbors=1`` after a default run runs again, and its record holds the value."""
    results = tmp_path / "results"
    base = ["run", "--results", str(results), "--no-mlflow", "--methods", "knn", "--datasets", "digits", "--classes", "3"]
    assert main(base) == 0
    assert "1 ok" in capsys.readouterr().err
    assert main([*base, "--param", "knn.n_neighbors=1"]) == 0
    assert "1 ok, 0 failed, 0 skipped, 0 already done" in capsys.readouterr().err
    records = [json.loads(p.read_text()) for p in (results / "jobs").glob("*.json")]
    default = declared_defaults(registry.method("knn").Params)["n_neighbors"]
    assert sorted(r["params"]["n_neighbors"] for r in records) == sorted([1, default])


def test_report_says_when_a_cell_mixes_code_versions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    base = ["run", "--results", str(results), "--no-mlflow", "--methods", "knn", "--datasets", "digits", "--classes", "3"]
    assert main(base) == 0
    assert main(["report", "--results", str(results)]) == 0
    assert "mixes results" not in capsys.readouterr().err
    # the same cell, run by other code (as after an engine edit): a second record with another fingerprint
    (path,) = (results / "jobs").glob("*.json")
    record = json.loads(path.read_text())
    other = dict(record, key="0" * 64, code_fingerprint="f" * 64)
    (results / "jobs" / f"{'0' * 64}.json").write_text(json.dumps(other))
    shutil.copy(path.with_suffix(".npz"), results / "jobs" / f"{'0' * 64}.npz")
    assert main(["report", "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert "knn on digits/3 (one_vs_all) mixes results of 2 code versions" in err


def test_tuning_with_another_seed_makes_its_own_study(tmp_path: Path) -> None:
    """The two-seed sequence: seed 1 must not reuse seed 0's study (its test rows were seed 0's validation rows)."""
    results = tmp_path / "results"
    storage = f"sqlite:///{results / 'optuna.db'}"
    for seed in ("0", "1"):
        argv = ["tune", "--methods", "knn", "--datasets", "digits", "--classes", "3", "--trials", "3",
                "--seed", seed, "--results", str(results), "--no-mlflow"]  # fmt: skip
        assert main(argv) == 0
    names = optuna.get_all_study_names(storage)
    assert len(names) == 2
    assert [len(optuna.load_study(study_name=n, storage=storage).trials) for n in names] == [3, 3]
    # a changed fixed parameter is another study too
    argv = ["tune", "--methods", "knn", "--datasets", "digits", "--classes", "3", "--trials", "2",
            "--seed", "0", "--results", str(results), "--no-mlflow", "--param", "knn.method=mean"]  # fmt: skip
    assert main(argv) == 0
    assert len(optuna.get_all_study_names(storage)) == 3


def test_library_versions_are_read_when_a_key_is_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library upgraded after the process started keys with its new version (a notebook's ``pip install -U``).

    The library is a real distribution folder on the import path, upgraded
    the way pip does it: the ``<name>-<version>.dist-info`` folder replaced.
    While nothing is installed, the installed distributions are not scanned again.
    """
    site = tmp_path / "site"
    (site / "fakelib").mkdir(parents=True)
    (site / "fakelib" / "__init__.py").write_text("")

    def install(version: str) -> None:
        for old in site.glob("fakelib-*.dist-info"):
            shutil.rmtree(old)
        info = site / f"fakelib-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakelib\nVersion: {version}\n")
        (info / "top_level.txt").write_text("fakelib\n")

    plugin = tmp_path / "plugins" / "uses_fakelib.py"
    plugin.parent.mkdir()
    plugin.write_text("import fakelib\n")
    install("1.0")
    monkeypatch.syspath_prepend(str(site))
    first = code_fingerprint(plugin)
    scans = fingerprint._installed.cache_info().misses
    assert code_fingerprint(plugin) == first and fingerprint._installed.cache_info().misses == scans
    time.sleep(0.05)  # past the file system's clock tick: pip takes longer than that
    install("2.0")
    second = code_fingerprint(plugin)
    assert (first["versions"]["fakelib"], second["versions"]["fakelib"]) == ("1.0", "2.0")
    assert first["code"] != second["code"]


def test_a_new_process_reuses_what_fingerprinting_learnt_while_files_and_installs_are_unchanged(tmp_path: Path) -> None:
    """The memo on disk (``fingerprint_memo``): planted answers are believed; an edit or an install is read again."""
    from odbench.engine.fingerprint_memo import MEMO_FILE

    def new_process() -> None:
        fingerprint._parsed.cache_clear()
        fingerprint._installed.cache_clear()
        fingerprint._memos.clear()

    plugin = tmp_path / "plugins" / "plain.py"
    plugin.parent.mkdir()
    plugin.write_text("import numpy\nX = 1\n")
    name = "<plugin>plugins/plain.py"
    first = code_fingerprint(plugin)
    memo = Path(os.environ["ODBENCH_CACHE"]) / MEMO_FILE
    stored = json.loads(memo.read_text())
    stored["files"][str(plugin)][1] = "planted digest"
    stored["installed"]["versions"]["numpy"] = "0.0.planted"
    memo.write_text(json.dumps(stored))
    new_process()
    believed = code_fingerprint(plugin)
    assert believed["modules"][name] == "planted digest" and believed["versions"]["numpy"] == "0.0.planted"
    time.sleep(0.05)  # past the file system's clock tick
    plugin.write_text("import numpy\nX = 2\n")
    new_process()
    edited = code_fingerprint(plugin)
    assert edited["modules"][name] not in ("planted digest", first["modules"][name])
    stored = json.loads(memo.read_text())
    stored["installed"]["stamp"] = "another installation"
    stored["installed"]["versions"]["numpy"] = "0.0.planted"
    memo.write_text(json.dumps(stored))
    new_process()
    assert code_fingerprint(plugin)["versions"]["numpy"] == first["versions"]["numpy"]
