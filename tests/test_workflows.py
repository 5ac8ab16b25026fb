"""The workflows' set-up: data folders travel with each job, and the caller's process comes back as it was."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import odbench
from odbench.engine import devices
from odbench.engine.process_state import restored_process_state

QUIET = dict(tracking=odbench.Tracking(mlflow=False), progress=False)

#: a dataset whose file is found only through the data folders, noting what its loading process saw
IN_FOLDER = '''
import json, os
import numpy as np
from odbench.api import Dataset, LabeledData
from odbench.core.download import data_dirs


class InFolder(Dataset):
    name = "in_folder"
    modality = "tabular"
    classes = ("0", "1")
    default_protocol = "one_vs_all"
    paper_metric = "auroc"
    bundled = True

    def prepare(self, root):
        pass

    def load(self, root):
        found = [d / "points.npz" for d in data_dirs() if (d / "points.npz").is_file()]
        if not found:
            raise FileNotFoundError(f"points.npz is in none of {data_dirs()}")
        with open(found[0].parent / "loads.jsonl", "a") as log:
            log.write(json.dumps({"pid": os.getpid(), "env": os.environ.get("ODBENCH_DATA_DIR")}) + "\\n")
        with np.load(found[0]) as f:
            return LabeledData(X=f["X"], y=f["y"], class_names=self.classes)
'''


@pytest.mark.parametrize("given", ["paths", "environment"])
def test_data_folders_reach_pool_workers_with_each_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    """``Paths.data_dirs`` (or the user's ``$ODBENCH_DATA_DIR``) reach a pool worker with the job; odbench sets no variable."""
    plugins, data = tmp_path / "plugins", tmp_path / "data"
    plugins.mkdir(), data.mkdir()
    (plugins / "in_folder.py").write_text(IN_FOLDER)
    rng = np.random.default_rng(0)
    np.savez(data / "points.npz", X=rng.normal(size=(120, 3)).astype(np.float32), y=np.repeat([0, 1], 60))
    if given == "environment":  # a user's default: read, never written
        monkeypatch.setenv("ODBENCH_DATA_DIR", str(data))
    paths = odbench.Paths(tmp_path / "r", data_dirs=[data] if given == "paths" else (), plugin_dirs=[plugins])
    frame = odbench.run(odbench.Suite("knn", "in_folder", classes=["0"]), odbench.Where(jobs=2), paths=paths, **QUIET)
    assert list(frame["status"]) == ["ok"], frame["error"].tolist()
    loads = [json.loads(line) for line in (data / "loads.jsonl").read_text().splitlines()]
    assert loads and all(load["pid"] != os.getpid() for load in loads), "loaded in the worker"
    if given == "paths":  # (a worker's own variable is whatever its fork server started with: not relied on)
        assert all(load["env"] is None for load in loads), "the folders came with the job, not as a variable"
    assert os.environ.get("ODBENCH_DATA_DIR") == (str(data) if given == "environment" else None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc")
def test_run_gives_the_process_its_settings_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deep job (malloc kept in its worker, MLflow quieted here) and a tuning study (Optuna quieted): undone on return."""
    devices.release_freed_memory()  # an earlier test's job in this process may have kept it
    # glibc cannot be asked for its thresholds, and after a job the heap's own free blocks serve (and keep) any
    # probe allocation whatever the thresholds say: so the calls to the real mallopt are recorded as they pass
    real, calls = devices._mallopt(), []

    def recording(param: int, value: int) -> int:
        calls.append((param, value))
        return real(param, value)

    monkeypatch.setattr(devices, "_mallopt", lambda: recording)
    loggers = {"mlflow": logging.DEBUG, "alembic": logging.INFO, "optuna": logging.INFO, "pooch": logging.DEBUG}
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    environ = dict(os.environ)
    paths = odbench.Paths(tmp_path)
    drocc = {"epochs": 2, "only_ce_epochs": 1, "ascent_num_steps": 1, "hidden": 4}
    frame = odbench.run(odbench.Suite("drocc", "sine2d", params={"drocc": drocc}), paths=paths, progress=False)
    assert list(frame["status"]) == ["ok"] and (tmp_path / "mlflow.db").is_file(), "ran here, mirrored to MLflow"
    odbench.tune(odbench.Suite("knn", "digits", classes=[3]), odbench.Search(trials=1), paths=paths, **QUIET)
    assert {name: logging.getLogger(name).level for name in loggers} == loggers
    assert dict(os.environ) == environ, "MLflow's quiet settings were for the call only"
    assert not devices.keeping_freed_memory
    # the deep job kept freed memory in its worker, never here (a warm worker puts it back after each job:
    # tests/test_warm_workers.py)
    assert calls == [], "the caller's malloc is left alone"


def test_settings_a_gpu_job_makes_are_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic kernels and cuBLAS's workspace (set before a CUDA job's first call) last as long as the call."""
    import torch

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    with restored_process_state():
        devices.make_deterministic()
        assert torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" in os.environ
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
