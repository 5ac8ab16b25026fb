from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from odbench.engine.registry import Registry

# One math thread: the tests' networks are tiny, and with several threads a
# busy machine makes them spin-wait on each other (a 10 s test took 6 min).
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry()


@pytest.fixture
def shared_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real offline datasets (../shared/data or ODBENCH_TEST_DATA); skip when absent."""
    folder = Path(os.environ.get("ODBENCH_TEST_DATA", SHARED_DATA))
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} not present")
    monkeypatch.setenv("ODBENCH_DATA_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # no test may write to (or read stale files from) the user's cache
    monkeypatch.setenv("ODBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("ODBENCH_DATA_DIR", raising=False)
    monkeypatch.delenv("ODBENCH_PLUGIN_PATH", raising=False)
