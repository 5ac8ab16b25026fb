"""The local pool's warm workers: reused across jobs, each job starting from the process state a fresh worker has,
its own peak memory, retired after N items or when they hold too much memory, and a dead worker costs only its job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from odbench.engine.execute import WorkItem
from odbench.engine.executors import LocalPoolExecutor
from odbench.engine.plan import expand
from odbench.engine.registry import Registry
from odbench.engine.store import Store
from odbench.engine.suite import run_suite

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc: peak memory, resident memory"),
]

# Its fit notes what it sees of the process, then changes it: the next job of the same worker must not see the change.
# probe_hog holds 300 MiB while it fits; probe_crash kills its own process.
PROBE = """
import json, logging, os, signal, sys
import numpy as np
from odbench.api import Method
from odbench.engine import devices


class Probe(Method):
    name = "probe"

    def fit(self, task, ctx):
        torch = sys.modules.get("torch")
        seen = {"pid": os.getpid(), "litter": os.environ.get("ODBENCH_LITTER"), "optuna": logging.getLogger("optuna").level,
                "malloc_kept": devices.keeping_freed_memory,
                "deterministic": torch.are_deterministic_algorithms_enabled() if torch else None}
        with open(os.environ["ODBENCH_PROBE_LOG"], "a") as log:
            log.write(json.dumps(seen) + "\\n")
        os.environ["ODBENCH_LITTER"] = "left by a job"
        logging.getLogger("optuna").setLevel(logging.DEBUG)
        devices.keep_freed_memory()
        if torch:
            torch.use_deterministic_algorithms(True)
        if self.name == "probe_hog":
            hog = np.ones(300 * 2**20 // 8)
            hog.sum()
        if self.name == "probe_crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.name == "probe_stuck":
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
            while True:  # never ends by itself
                pass
        self.mean_ = task.train.normal.reshape(len(task.train.normal), -1).mean(0)
        return self

    def anomaly_score(self, X):
        return np.linalg.norm(X.reshape(len(X), -1) - self.mean_, axis=1)


class ProbeHog(Probe):
    name = "probe_hog"


class ProbeCrash(Probe):
    name = "probe_crash"


class ProbeStuck(Probe):
    name = "probe_stuck"
"""


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, methods: list[str], classes: list[str], executor: LocalPoolExecutor
) -> tuple[list[dict], Store]:
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "probe.py").write_text(PROBE)
    log = tmp_path / f"probe-{len(list(tmp_path.iterdir()))}.jsonl"
    monkeypatch.setenv("ODBENCH_PROBE_LOG", str(log))
    registry = Registry([plugins])
    store = Store(tmp_path / f"results-{log.stem}")
    plan = expand(registry, methods, ["digits"], classes=classes)
    run_suite(plan, registry, store, executor=executor, seed_groups=False)
    return [json.loads(line) for line in log.read_text().splitlines()], store


def test_one_worker_runs_every_job_each_from_a_fresh_state_with_its_own_peak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen, store = _run(tmp_path, monkeypatch, ["probe_hog", "probe"], ["1", "2"], LocalPoolExecutor(1))
    assert len(seen) == 4 and len({s["pid"] for s in seen}) == 1, "one warm worker ran the four jobs"
    fresh = seen[0]
    assert fresh["litter"] is None and not fresh["malloc_kept"] and fresh["optuna"] != 10
    assert seen[1:] == [fresh] * 3, "each job sees the process as the first one did, not as the job before left it"
    records = store.records("ok")
    assert len(records) == 4 and {r["peak_rss_scope"] for r in records} == {"job"}
    # probe_hog held 300 MiB; probe ran after it in the same process, and its peak is its own
    peaks = {r["method"]: r["peak_rss_mb"] for r in records}
    assert peaks["probe_hog"] - peaks["probe"] > 250, peaks


def test_a_worker_retires_after_its_items_or_when_it_holds_too_much(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen, _ = _run(tmp_path, monkeypatch, ["probe"], ["1", "2", "4", "5"], LocalPoolExecutor(1, max_items=2))
    pids = [s["pid"] for s in seen]
    assert pids[0] == pids[1] != pids[2] == pids[3], "a fresh worker after two items"
    seen, _ = _run(tmp_path, monkeypatch, ["probe"], ["1", "2"], LocalPoolExecutor(1, max_idle_mb=1))
    assert seen[0]["pid"] != seen[1]["pid"], "a worker holding more than its bound between jobs is replaced"


def test_a_dead_worker_fails_only_its_own_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    executor = LocalPoolExecutor(1, max_retries=0)
    seen, store = _run(tmp_path, monkeypatch, ["probe", "probe_crash", "probe_hog"], ["1"], executor)
    assert sorted(r["method"] for r in store.records("ok")) == ["probe", "probe_hog"], "the run went on after the crash"
    assert store.records("failed") == [], "a crashed job is not cached: the next run retries it"
    assert executor.started == 2 and seen[0]["pid"] == seen[1]["pid"] != seen[2]["pid"]


def test_a_job_whose_worker_died_runs_again_in_a_fresh_one_as_often_as_retries_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    seen, store = _run(tmp_path, monkeypatch, ["probe_crash", "probe"], ["1"], LocalPoolExecutor(1, max_retries=2))
    assert len(seen) == 4 and len({s["pid"] for s in seen}) == 4, "three tries of the crashing job, each in a fresh worker"
    err = capfd.readouterr().err
    assert err.count("while running it; retrying probe_crash on digits") == 2 and "(retry 2 of 2)" in err, err
    assert [r["method"] for r in store.records("ok")] == ["probe"], "the run went on after the retries were spent"


def test_a_job_past_its_timeout_is_stopped_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "probe.py").write_text(PROBE)
    monkeypatch.setenv("ODBENCH_PROBE_LOG", str(tmp_path / "probe.jsonl"))
    registry = Registry([plugins])
    store = Store(tmp_path / "results")
    plan = expand(registry, ["probe_stuck", "probe"], ["digits"], classes=["1"])
    items = [WorkItem(job, job.key(registry), str(store.root), "cpu", (str(plugins),)) for job in plan.jobs]
    started = time.monotonic()
    outcomes = {o.job.method: o for o in LocalPoolExecutor(1, job_timeout=3).run(items)}
    assert time.monotonic() - started < 60, "the stuck job was stopped, not waited for"
    assert outcomes["probe"].status == "ok", outcomes["probe"].note
    stopped = outcomes["probe_stuck"]
    assert stopped.status == "failed" and stopped.note == "JobTimeout: stopped after 3 s (--job-timeout 3 s per job)"
    assert not store.done(stopped.key), "the next run tries it again"
