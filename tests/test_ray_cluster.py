"""A real two-node Ray cluster on 127.0.0.1 loses a node mid-suite: every job still ends once, the log names the node.

The cluster runs in a helper process (``two_node_ray.py``): a head and a
second node of one CPU each, so two jobs at once put one job on each node.
Killing the second node (SIGKILL of its raylet, object store and workers)
loses the job running there; the driver must run it again on the head.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from odbench.engine.store import OK, Store

HERE = Path(__file__).parent
DRILL = HERE / "drill_plugins"
ROOT = HERE.parent

pytestmark = pytest.mark.slow


@dataclass
class TwoNodes:
    address: str
    worker: str  # the second node's id
    env: dict[str, str]
    process: subprocess.Popen[str]

    def kill_worker(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("kill\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "killed"


def _line(process: subprocess.Popen[str], prefix: str, seconds: float) -> str:
    """The next stdout line of ``process``, which must start with ``prefix``; within ``seconds``."""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(seconds)
    if not found or not found[0].startswith(prefix):
        raise RuntimeError(f"no {prefix!r} line from the cluster helper within {seconds:.0f} s (got {found})")
    return found[0].split(maxsplit=1)[1].strip()


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[TwoNodes]:
    from services import LOOPBACK_RAY

    # Ray's files of its own (short: its socket paths are bounded), so no other Ray here sees this cluster
    temp = tempfile.mkdtemp(prefix="odb-ray-")
    env = {**os.environ, **LOOPBACK_RAY, "RAY_TMPDIR": temp, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    log = open(tmp_path / "cluster.log", "w")
    process = subprocess.Popen(
        [sys.executable, str(HERE / "two_node_ray.py"), "1", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=log, text=True, env=env, cwd=HERE, start_new_session=True,
    )  # fmt: skip
    try:
        cluster = TwoNodes(_line(process, "address", 180), _line(process, "worker", 180), env, process)
    except RuntimeError as err:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"{err}\n{(tmp_path / 'cluster.log').read_text()[-2000:]}")
    yield cluster
    assert process.stdin is not None
    process.stdin.close()  # the helper stops the cluster
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


def _placed(pid_dir: Path) -> list[dict]:
    return [{**json.loads(p.read_text()), "pid": int(p.name.split("-")[0]), "seed": p.name.split("-")[1]} for p in pid_dir.iterdir()]


def test_a_node_killed_mid_suite_loses_no_job_and_the_log_names_it(two_nodes, tmp_path):
    pids, results = tmp_path / "pids", tmp_path / "results"
    pids.mkdir()
    command = [
        sys.executable, "-m", "odbench.cli", "run", "--executor", "ray", "--ray-address", two_nodes.address,
        "--plugin-dir", str(DRILL), "--methods", "sleepy", "--datasets", "counted", "--classes", "0,1",
        "--param", "sleepy.seconds=6", "--param", f"sleepy.pid_dir={pids}", "--device", "cpu",
        "--results", str(results), "--no-mlflow",
    ]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=two_nodes.env, cwd=ROOT)
    deadline = time.monotonic() + 180
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.1)
    placed = _placed(pids)
    assert len(placed) == 2, (placed, driver.poll())
    (lost,) = [p for p in placed if p["node_id"] == two_nodes.worker]  # one CPU a node: one job on each
    two_nodes.kill_worker()

    _, err = driver.communicate(timeout=240)
    assert driver.returncode == 0, err[-3000:]
    assert "2 ok, 0 failed" in err, err[-3000:]
    assert "[3/2]" not in err  # the job run again keeps its number in the progress lines
    store = Store(results)
    records = store.records()
    assert len(records) == 2 and {r["status"] for r in records} == {OK}
    assert sorted(p.name for p in store.jobs.iterdir()) == sorted(r["key"] + ext for r in records for ext in (".json", ".npz"))
    (retried,) = [r for r in records if str(r["fit_seed"]) == lost["seed"]]  # the file names the fit seed
    assert f"node {two_nodes.worker} (127.0.0.1) lost; retrying jobs {retried['method']} on counted/{retried['normal_class']} rep 0" in err
    # the record says where the job finally ran: the head, in a process that started the job after the loss
    final = [p for p in _placed(pids) if p["seed"] == lost["seed"] and p["pid"] != lost["pid"]]
    assert len(final) == 1 and retried["ran_on"]["node_id"] == final[0]["node_id"] != two_nodes.worker
    assert retried["ran_on"]["pid"] == final[0]["pid"] and retried["ran_on"]["host"]
    print(f"node killed mid-suite: 2/2 jobs done once, the lost one retried on {final[0]['node_id'][:8]}")
