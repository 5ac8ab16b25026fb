from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from odbench.engine.registry import Registry

# One math thread, in this process and in every job (ODBENCH_THREADS): the tests' networks are tiny,
# and with several threads a busy machine makes them spin-wait on each other (a 10 s test took 6 min).
torch.set_num_threads(1)
os.environ["ODBENCH_THREADS"] = "1"

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


# --- real servers for the integration tests (tests/services.py): CI's, or started here once per session ---


def _service(name: str, env: str, start: object, request: pytest.FixtureRequest) -> str:
    """The URL in ``env`` (CI started the service), else start it here; skip, saying why, when that cannot be done."""
    if os.environ.get(env):
        return os.environ[env]
    try:
        server, url = start()  # type: ignore[operator]
    except (FileNotFoundError, KeyError, OSError, RuntimeError) as err:
        pytest.skip(f"{name} unavailable: ${env} is not set and it cannot be started here ({str(err)[:300]})")
    request.addfinalizer(server.stop)
    return url


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    """A PostgreSQL server (databases ``mlflow`` and ``optuna``): ``$ODBENCH_TEST_POSTGRES_URL`` or a throwaway cluster."""
    from services import Postgres

    def start() -> tuple[Postgres, str]:
        server = Postgres()
        return server, server.start()

    return _service("PostgreSQL", "ODBENCH_TEST_POSTGRES_URL", start, request)


@pytest.fixture(scope="session")
def mlflow_uri(postgres_url: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    """An ``mlflow server`` backed by PostgreSQL: ``$ODBENCH_TEST_MLFLOW_URI`` or one started here."""
    from services import mlflow_server

    return _service(
        "MLflow server", "ODBENCH_TEST_MLFLOW_URI", lambda: mlflow_server(postgres_url, tmp_path_factory.mktemp("mlflow")), request
    )


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    """A Ray head on 127.0.0.1 (2 CPUs), joined by this process: ``$ODBENCH_TEST_RAY_ADDRESS`` or one started here."""
    from services import LOOPBACK_RAY, ray_head

    os.environ.update(LOOPBACK_RAY)  # before ray is imported; CI's .ci/run exports the same
    address = _service("Ray head", "ODBENCH_TEST_RAY_ADDRESS", lambda: ray_head(tmp_path_factory.mktemp("ray")), request)
    import logging

    import ray

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    request.addfinalizer(ray.shutdown)
    return address
