"""The runner: resume after an interrupt, failures recorded and retried, skips, the process pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from odbench.cli import main
from odbench.engine.execute import job_task
from odbench.engine.executors import LocalPoolExecutor, SequentialExecutor
from odbench.engine.loading import DataCache
from odbench.engine.plan import Job, Plan, expand
from odbench.engine.registry import Registry
from odbench.engine.store import Store
from odbench.engine.suite import run_suite

# A real detector (distance to the training mean) that misbehaves on demand:
# it raises the exception named by ODBENCH_TEST_RAISE when fitted on the normal
# class named by ODBENCH_TEST_CLASS, and reports per-epoch numbers like a deep method.
PLUGIN = """
import os

import numpy as np

from odbench.api import Method


class Moody(Method):
    name = "moody"

    def fit(self, task, ctx):
        if task.normal_class == os.environ.get("ODBENCH_TEST_CLASS"):
            raise {"interrupt": KeyboardInterrupt, "error": ValueError}[os.environ["ODBENCH_TEST_RAISE"]]("on purpose")
        self.mu_ = task.train.normal.reshape(len(task.train.normal), -1).mean(0)
        for epoch in range(3):
            ctx.report(epoch, {"loss": 1.0 / (epoch + 1)})
        return self

    def anomaly_score(self, X):
        return np.linalg.norm(X.reshape(len(X), -1) - self.mu_, axis=1)


class ImagesOnly(Moody):
    name = "images_only"
    modalities = ("image",)


class NeedsNegatives(Moody):
    name = "needs_negatives"
    uses_negatives = True


class Witness(Moody):  # writes down the splits fit was handed, to the file ODBENCH_TEST_SEEN names
    name = "witness"

    def fit(self, task, ctx):
        lent = getattr(task, "oracle_test", None) is not None or hasattr(task, "test")
        np.savez(os.environ["ODBENCH_TEST_SEEN"], train_X=task.train.X, train_y=task.train.y,
                 val_X=task.val.X, val_y=task.val.y, lent_test=lent)
        return super().fit(task, ctx)
"""


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "moody.py").write_text(PLUGIN)
    return folder


def _snapshot(store: Store) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.jobs.iterdir())}


def test_interrupted_suite_resumes_without_redoing_finished_jobs(
    plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    results = tmp_path / "results"
    argv = ["run", "--methods", "knn,moody", "--datasets", "digits", "--classes", "1,2,3,4",
            "--plugin-dir", str(plugins), "--results", str(results), "--no-mlflow", "--device", "cpu"]  # fmt: skip
    monkeypatch.setenv("ODBENCH_TEST_RAISE", "interrupt")
    monkeypatch.setenv("ODBENCH_TEST_CLASS", "3")
    assert main(argv) == 130  # Ctrl-C during moody on class 3
    assert "interrupted" in capsys.readouterr().err
    store = Store(results)
    first = store.records()
    # knn on 4 classes, then moody on classes 1 and 2 finished before the interrupt
    assert sorted((r["method"], r["normal_class"]) for r in first) == [
        ("knn", "1"), ("knn", "2"), ("knn", "3"), ("knn", "4"), ("moody", "1"), ("moody", "2"),
    ]  # fmt: skip
    assert all(r["status"] == "ok" for r in first)
    assert [h["epoch"] for h in store.records()[-1]["history"]] == [0, 1, 2]
    before = _snapshot(store)

    monkeypatch.delenv("ODBENCH_TEST_CLASS")
    assert main(argv) == 0
    assert "2 ok, 0 failed, 0 skipped, 6 already done" in capsys.readouterr().err
    after = _snapshot(store)
    assert {k: v for k, v in after.items() if k in before} == before, "finished jobs were not redone"
    records = store.records()
    assert len(records) == 8 and len({(r["method"], r["normal_class"]) for r in records}) == 8


def test_failed_job_is_recorded_the_suite_continues_and_a_rerun_retries_it(
    plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry([plugins])
    plan = expand(registry, ["moody"], ["digits"], classes=["0", "5", "9"])
    store = Store(tmp_path)
    monkeypatch.setenv("ODBENCH_TEST_RAISE", "error")
    monkeypatch.setenv("ODBENCH_TEST_CLASS", "5")
    summary = run_suite(plan, registry, store)
    assert (summary.ok, summary.failed) == (2, 1)
    (failed,) = store.records("failed")
    assert failed["normal_class"] == "5" and failed["error"]["type"] == "ValueError"
    assert "on purpose" in failed["error"]["message"] and "Traceback" in failed["error"]["traceback"]
    assert not store.done(failed["key"])

    monkeypatch.delenv("ODBENCH_TEST_CLASS")
    summary = run_suite(plan, registry, store)
    assert (summary.ok, summary.failed, summary.already_done) == (1, 0, 2)
    assert store.done(failed["key"]) and len(store.records()) == 3


def test_pairs_a_method_cannot_run_are_skipped_with_a_note(plugins: Path, tmp_path: Path) -> None:
    registry = Registry([plugins])
    plan = expand(registry, ["images_only", "needs_negatives"], ["sine2d"])
    assert any("skipping images_only on sine2d" in note for note in plan.notes)
    assert [job.method for job in plan.jobs] == ["needs_negatives"]
    summary = run_suite(plan, registry, Store(tmp_path))
    assert (summary.ok, summary.failed, summary.skipped) == (0, 0, 1)
    assert "needs labelled negatives" in summary.notes[-1]
    assert Store(tmp_path).records() == [], "a skipped job is not a result"


def test_process_pool_runs_jobs_in_fresh_processes(plugins: Path, tmp_path: Path) -> None:
    registry = Registry([plugins])
    plan = expand(registry, ["knn", "moody"], ["digits"], classes=["0", "1"])
    epochs: list[tuple[str, int]] = []
    starts: list[str] = []

    class Recorder:  # a real reporter that keeps what it is told
        wants_events = True

        def start(self, items, already_done): ...
        def event(self, event):
            if event.kind == "epoch":
                epochs.append((event.key, event.epoch))
            elif event.kind == "start":
                starts.append(event.key)

        def finished(self, outcome): ...
        def close(self): ...

    store = Store(tmp_path)
    summary = run_suite(plan, registry, store, executor=LocalPoolExecutor(2), reporter=Recorder())
    assert (summary.ok, summary.failed) == (4, 0)
    records = store.records("ok")
    assert {r["peak_rss_scope"] for r in records} == {"job"}
    moody_keys = {r["key"] for r in records if r["method"] == "moody"}
    assert sorted(epochs) == sorted((k, e) for k in moody_keys for e in range(3)), "epochs travel back from workers"
    assert sorted(starts) == sorted(r["key"] for r in records), "every job announces its start"


def test_the_data_cache_keeps_only_its_last_datasets(registry) -> None:
    """A sequential run's cache is bounded: the arrays of older datasets are let go (read again if needed)."""
    from odbench.engine.loading import DataCache

    cache = DataCache(max_arrays=1)
    digits, sine = cache.dataset(registry, "digits"), cache.dataset(registry, "sine2d")
    first = cache.load(digits)
    assert cache.load(digits) is first  # kept while it is the last one used
    cache.load(sine)
    assert cache.load(digits) is not first  # evicted by sine2d, loaded anew
    assert cache.dataset(registry, "digits") is digits  # instances (what a source learned) stay


CENTROID = '''
import numpy as np
from odbench.api import Method


class Centroid(Method):
    name = "centroid_env"

    def fit(self, task, ctx):
        self.mean_ = task.train.normal.reshape(len(task.train.normal), -1).mean(0)
        return self

    def anomaly_score(self, X):
        return np.linalg.norm(X.reshape(len(X), -1) - self.mean_, axis=1)
'''


def test_pool_workers_see_settings_made_after_the_fork_server_started(tmp_path, monkeypatch) -> None:
    """Workers take the main process's plugin path at start: the fork server may predate the setting."""
    from odbench.engine.registry import Registry

    first = expand(Registry(), ["knn"], ["sine2d"])
    assert run_suite(first, Registry(), Store(tmp_path / "a"), executor=LocalPoolExecutor(2)).ok == 1  # server up
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "centroid_env.py").write_text(CENTROID)
    monkeypatch.setenv("ODBENCH_PLUGIN_PATH", str(folder))  # after the server started
    registry = Registry()
    summary = run_suite(expand(registry, ["centroid_env"], ["sine2d"]), registry, Store(tmp_path / "b"),
                        executor=LocalPoolExecutor(2))  # fmt: skip
    assert summary.ok == 1, summary.line()


def test_a_deep_jobs_process_is_made_ready_before_its_clock_starts(tmp_path: Path) -> None:
    # in a fresh process: scikit-learn's metrics and torch._dynamo (torch.optim's constructors import it) are
    # imported by prepare, so the first job of a process does not record ~3 s of imports as fit time;
    # and large freed blocks stay in the heap (odbench.engine.devices.keep_freed_memory)
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from odbench.engine.execute import Prepared, WorkItem, prepare\n"
        "from odbench.engine.loading import DataCache\n"
        "from odbench.engine.plan import expand\n"
        "from odbench.engine.registry import Registry\n"
        "lazy = ('sklearn.metrics', 'torch._dynamo')\n"
        "assert not any(m in sys.modules for m in lazy), [m for m in lazy if m in sys.modules]\n"
        "job = expand(Registry(), ['drocc'], ['sine2d']).jobs[0]\n"
        f"prepared = prepare(WorkItem(job, 'k', {str(tmp_path)!r}, 'cpu'), None, 'process', DataCache())\n"
        "assert isinstance(prepared, Prepared), prepared\n"
        "print(all(m in sys.modules for m in lazy))\n"
        # and glibc keeps freed memory for the next activations: 200 MB of 20 MB blocks (conv activations) freed
        # go back to the heap, not to the kernel (glibc's default unmaps or trims them: their pages fault in again)
        "import os, torch\n"
        "def rss_mb(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20\n"
        "returned = []\n"
        "for size in (5, 6, 7):  # 20, 24 and 28 MB: glibc's default threshold, once raised by a free, lags a growing one\n"
        "    blocks = [torch.ones(size * 2**20) for _ in range(10)]\n"
        "    held = rss_mb()\n"
        "    del blocks\n"
        "    returned.append(round(held - rss_mb()))\n"
        "print(max(returned) < 20, returned)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["True", "True"], done.stdout


def test_fit_is_handed_the_training_and_validation_splits_and_no_test_row(
    plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The honest default where the runner makes it: ``fit`` gets exactly the task's training and validation splits.

    A plugin writes down the arrays ``fit`` received; they must equal the
    splits of the task the job was scored on, and hold no test row.  Fails
    when the engine feeds the test split to ``fit`` as training or validation
    data, mixes it in, or lends it (outside ``--selection oracle``).
    """
    seen = tmp_path / "seen.npz"
    monkeypatch.setenv("ODBENCH_TEST_SEEN", str(seen))
    registry = Registry([plugins])
    job = Job(method="witness", dataset="digits", protocol="one_vs_all", normal_class="3", repetition=0)
    store = Store(tmp_path / "results")
    summary = run_suite(Plan([job]), registry, store, executor=SequentialExecutor())
    assert summary.ok == 1, summary.line()
    task, _ = job_task(registry, job, DataCache())
    (record,) = store.records()
    np.testing.assert_array_equal(store.scores(record["key"])["labels"], task.test.y)  # the task the job was scored on
    got = np.load(seen)
    assert not got["lent_test"]
    for name in ("train", "val"):
        np.testing.assert_array_equal(got[f"{name}_X"], getattr(task, name).X, err_msg=name)
        np.testing.assert_array_equal(got[f"{name}_y"], getattr(task, name).y, err_msg=name)
    fitted_on = {row.tobytes() for row in np.concatenate([got["train_X"], got["val_X"]])}
    assert len(task.test) > 0 and not fitted_on & {row.tobytes() for row in task.test.X}
