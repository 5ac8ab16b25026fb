"""The Ray executor on a real Ray head: the store's guarantees, progress, shared arrays, and the worker-kill drills."""

from __future__ import annotations

import collections
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from odbench.core.download import dataset_root
from odbench.engine.execute import JobEvent, WorkItem
from odbench.engine.executors import SequentialExecutor
from odbench.engine.grouping import GroupItem, group_items
from odbench.engine.options import Where
from odbench.engine.plan import Plan, UsageError, expand
from odbench.engine.ray_executor import TIMED_OUT, RayExecutor, gpu_share, item_gpu_share
from odbench.engine.registry import Registry
from odbench.engine.store import FAILED, OK, Store
from odbench.engine.suite import run_suite

DRILL = Path(__file__).parent / "drill_plugins"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


class Collector:
    wants_events = True

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.keys: list[str] = []

    def start(self, items, already_done) -> None:
        pass

    def event(self, event: JobEvent) -> None:
        self.events.append(event)

    def finished(self, outcome) -> None:
        self.keys.append(outcome.key)

    def close(self) -> None:
        pass


@pytest.fixture
def drill_registry() -> Registry:
    return Registry([DRILL])


def _leftovers(store: Store) -> list[str]:
    """Files in the store that are not a finished record or its arrays (a partial write)."""
    return sorted(p.name for p in store.jobs.iterdir() if p.suffix not in (".json", ".npz"))


def test_suite_on_ray_keeps_the_store_guarantees(ray_address, drill_registry, tmp_path):
    registry = drill_registry
    plan = expand(registry, ["sleepy", "knn"], ["counted"], classes=["0", "1", "2"], params={"sleepy": {"seconds": 0.2}})
    broken = expand(registry, ["sleepy"], ["counted"], classes=["3"], params={"sleepy": {"fail": True}}, cache=plan.cache)
    plan = Plan(plan.jobs + broken.jobs, cache=plan.cache)
    store, seen = Store(tmp_path / "ray"), Collector()

    summary = run_suite(plan, registry, store, executor=RayExecutor(ray_address, cache=plan.cache), reporter=seen)

    assert (summary.ok, summary.failed) == (6, 1), [r["error"]["message"] for r in store.records(FAILED)]
    assert len(store.records(OK)) == 6 and len(store.records(FAILED)) == 1
    failed = store.records(FAILED)[0]
    assert failed["error"]["type"] == "RuntimeError" and not store.done(failed["key"])  # recorded, not cached
    assert _leftovers(store) == []
    # progress: every job's start, the sleepy jobs' plans and epochs, from the workers
    kinds = collections.Counter(e.kind for e in seen.events)
    assert {e.key for e in seen.events if e.kind == "start"} == {job.key(registry, plan.cache) for job in plan.jobs}
    assert kinds["epoch"] == 3 * 2 and kinds["plan"] == 3  # the failing sleepy job fails before its plan
    # the arrays were read once, by the driver, and reached the workers through the object store
    loads = (dataset_root("counted") / "loads.log").read_text().split()
    assert loads == [str(os.getpid())]
    # the numbers are the sequential executor's
    knn = Plan([j for j in plan.jobs if j.method == "knn"], cache=plan.cache)
    local = Store(tmp_path / "local")
    run_suite(knn, registry, local, executor=SequentialExecutor(plan.cache))
    for record in local.records(OK):
        # where each ran: this process locally, a Ray worker of this node on Ray (not part of what is compared)
        assert record["ran_on"] == {"host": platform.node(), "pid": os.getpid(), "node_id": None}
        on_ray = store.read(record["key"])["ran_on"]
        assert on_ray["node_id"] == ray_node_id() and on_ray["pid"] != os.getpid() and on_ray["host"] == platform.node()
        assert store.read(record["key"])["metrics"] == record["metrics"]
        assert (store.scores(record["key"])["scores"] == local.scores(record["key"])["scores"]).all()

    again = run_suite(plan, registry, store, executor=RayExecutor(ray_address, cache=plan.cache))
    assert (again.already_done, again.ok, again.failed) == (6, 0, 1)  # resume: only the failed job runs again


def _kill_first_worker(pid_dir: Path, killed: list[tuple[int, str]], after: float = 0.5) -> threading.Thread:
    """SIGKILL the process that starts the first job (its file names it), once, mid-job."""

    def kill() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            files = sorted(pid_dir.iterdir(), key=lambda p: int(p.name.split("-")[2]))
            if files:
                time.sleep(after)
                pid, seed, _ = files[0].name.split("-")
                killed.append((int(pid), seed))
                os.kill(int(pid), signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_worker_killed_mid_job_is_retried_and_every_job_is_done_once(ray_address, drill_registry, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    plan = expand(
        drill_registry, ["sleepy"], ["counted"], classes=["0", "1", "2", "3"],
        params={"sleepy": {"seconds": 3.0, "pid_dir": str(pids)}},
    )  # fmt: skip
    store, seen, killed, said = Store(tmp_path / "store"), Collector(), [], []
    killer = _kill_first_worker(pids, killed)

    summary = run_suite(plan, drill_registry, store, executor=RayExecutor(ray_address, max_retries=2, warn=said.append), reporter=seen)
    killer.join(5)

    assert killed, "no worker was killed"
    assert (summary.ok, summary.failed) == (4, 0)
    assert sorted(seen.keys) == sorted({job.key(drill_registry) for job in plan.jobs})  # each job once
    assert len(store.records(OK)) == 4 and _leftovers(store) == []
    starts = collections.Counter(name.split("-")[1] for name in os.listdir(pids))
    assert starts[killed[0][1]] == 2  # the killed job ran again, on another worker
    assert sorted(starts.values()) == [1, 1, 1, 2]
    # the log names the node and the dead worker, and the job retried; the record says which process ran it
    (line,) = said
    node = ray_node_id()
    (retried,) = [r for r in store.records(OK) if str(r["fit_seed"]) == killed[0][1]]
    assert line == f"node {node} (127.0.0.1): worker {killed[0][0]} lost; retrying jobs {retried['method']} on counted/{retried['normal_class']} rep 0"
    assert retried["ran_on"]["node_id"] == node and retried["ran_on"]["pid"] != killed[0][0]
    assert {r["ran_on"]["pid"] for r in store.records(OK)} <= {int(name.split("-")[0]) for name in os.listdir(pids)}
    print(f"worker killed at job 1 (pid {killed[0][0]}): 4/4 done once, the killed job retried once")


def test_worker_killed_without_retries_is_recorded_failed_and_retried_next_run(ray_address, drill_registry, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    plan = expand(drill_registry, ["sleepy"], ["counted"], classes=["0"], params={"sleepy": {"seconds": 3.0, "pid_dir": str(pids)}})
    store, killed = Store(tmp_path / "store"), []
    killer = _kill_first_worker(pids, killed)

    summary = run_suite(plan, drill_registry, store, executor=RayExecutor(ray_address, max_retries=0))
    killer.join(5)

    assert killed and (summary.ok, summary.failed) == (0, 1)
    (record,) = store.records()
    assert record["status"] == FAILED and record["error"]["type"] == "WorkerCrashedError"
    assert not store.scores_path(record["key"]).exists() and not store.done(record["key"])
    again = run_suite(plan, drill_registry, store, executor=RayExecutor(ray_address, max_retries=0))
    assert again.ok == 1 and store.done(record["key"])


def ray_node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def test_the_helper_actor_killed_mid_suite_is_replaced_and_the_suite_finishes(ray_address, drill_registry, tmp_path):
    """The mailbox (events, placements) dies twice mid-suite: Ray restarts it; every job ends once, events keep coming."""
    import ray

    plan = expand(drill_registry, ["sleepy"], ["counted"], classes=["0", "1", "2"], params={"sleepy": {"seconds": 3.0}})
    store, seen = Store(tmp_path / "store"), Collector()
    executor = RayExecutor(ray_address, max_retries=0)
    kills: list[float] = []

    def kill_the_mailbox() -> None:
        while len(kills) < 2:
            mailbox = getattr(executor, "_mailbox", None)
            if mailbox is not None and seen.events:
                ray.kill(mailbox, no_restart=False)  # its process dies; Ray starts it again
                kills.append(time.monotonic())
                time.sleep(1.0)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_mailbox, daemon=True)
    killer.start()
    summary = run_suite(plan, drill_registry, store, executor=executor, reporter=seen)
    killer.join(10)

    assert len(kills) == 2 and (summary.ok, summary.failed) == (3, 0)
    assert sorted(seen.keys) == sorted({job.key(drill_registry) for job in plan.jobs})
    assert any(e.kind == "epoch" for e in seen.events[-3:])  # news kept coming after the kills


def test_a_job_past_its_timeout_is_stopped_and_recorded_failed(ray_address, drill_registry, tmp_path):
    slow = expand(drill_registry, ["sleepy"], ["counted"], classes=["0"], params={"sleepy": {"seconds": 120.0}})
    quick = expand(drill_registry, ["sleepy"], ["counted"], classes=["1"], params={"sleepy": {"seconds": 0.2}}, cache=slow.cache)
    plan = Plan(slow.jobs + quick.jobs, cache=slow.cache)
    store = Store(tmp_path / "store")
    started = time.monotonic()

    summary = run_suite(plan, drill_registry, store, executor=RayExecutor(ray_address, job_timeout=4))

    assert time.monotonic() - started < 60  # not the 120 s the slow job asks for
    assert (summary.ok, summary.failed) == (1, 1)
    (stopped,) = store.records(FAILED)
    assert stopped["normal_class"] == "0" and stopped["error"]["type"] == TIMED_OUT
    assert "stopped after 4 s" in stopped["error"]["message"] and stopped["ran_on"]["node_id"] == ray_node_id()
    assert not store.done(stopped["key"])  # the next run tries it again


def test_retries_and_timeouts_are_options_of_every_executor():
    assert Where(executor="ray", retries=0, job_timeout=30).retries == 0
    assert Where(jobs=2, retries=3, job_timeout=60).job_timeout == 60
    for bad, match in (({"retries": -1}, "retries must be from 0"), ({"job_timeout": 0}, "job_timeout must be seconds")):
        for executor in ("ray", "local"):
            with pytest.raises(UsageError, match=match):
                Where(executor=executor, **bad)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--retries", "-1"], "--retries: expected 0 or more"),
        (["--job-timeout", "0"], "--job-timeout: expected seconds above 0"),
        (["--retries", "101", "--executor", "ray"], "retries must be from 0 to 100"),
        (["--job-timeout", "nan"], "--job-timeout: expected seconds above 0"),
    ],
)
def test_bad_retries_and_timeouts_are_refused_in_one_line(options, says, tmp_path):
    command = [sys.executable, "-m", "odbench.cli", "run", "--methods", "knn", "--datasets", "thyroid", "--results", str(tmp_path), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not any(tmp_path.iterdir())  # nothing computed


def test_a_seed_group_declares_the_gpu_share_of_its_members():
    """A group of K stacked networks holds K members' memory: it asks Ray for K shares, at most a whole GPU."""
    registry = Registry()
    plan = expand(registry, ["drocc"], ["thyroid"], repetitions=6)
    items = [WorkItem(job, f"key{i}", "/tmp/store", "cuda") for i, job in enumerate(plan.jobs)]
    (group,) = group_items(items, registry)
    assert isinstance(group, GroupItem) and len(group.members) == 6
    executor = RayExecutor()  # nothing connects: the share is planned before Ray is asked
    assert executor.declared_gpus(items[0]) == 0.25
    assert executor.declared_gpus(group) == 1.0  # 6 x 0.25, capped at one GPU
    (three,) = group_items(items[:3], registry)
    assert executor.declared_gpus(three) == 0.75
    assert RayExecutor(gpu_per_job=0.1).declared_gpus(three) == pytest.approx(0.3)
    assert item_gpu_share(0.0, group) == 0.0  # a CPU job stays off the GPU whatever its group
    cpu = [WorkItem(job, f"key{i}", "/tmp/store", "cpu") for i, job in enumerate(plan.jobs[:3])]
    (on_cpu,) = group_items(cpu, registry)
    assert executor.declared_gpus(on_cpu) == 0.0


def test_gpu_shares_by_method_and_modality():
    registry = Registry()
    knn, drocc = registry.method("knn"), registry.method("drocc")
    cifar, thyroid, imagenet = (registry.dataset(name) for name in ("cifar10", "thyroid", "imagenet10"))
    assert gpu_share(drocc, thyroid, "cuda") == 0.25
    assert gpu_share(drocc, cifar, "cuda") == 0.125  # 8 LeNet jobs to a GPU: docs/performance.md's GPU plan
    assert gpu_share(drocc, imagenet, "cuda") == 1.0
    assert gpu_share(knn, cifar, "cuda") == 0.0  # classical: a CPU only
    assert gpu_share(registry.method("pyod:ECOD"), thyroid, "cuda") == 0.0
    assert gpu_share(registry.method("pyod:AutoEncoder"), thyroid, "cuda") == 0.25  # pyod's deep ones train on it
    assert gpu_share(drocc, cifar, "cpu") == 0.0
    assert gpu_share(drocc, cifar, "cuda", override=0.5) == 0.5


def test_cuda_on_a_cluster_without_gpus_is_a_usage_error(ray_address):
    executor = RayExecutor(ray_address)
    assert executor.resolve_device("auto") == "cpu"
    with pytest.raises(UsageError, match="no GPU"):
        executor.resolve_device("cuda")


def test_the_cli_does_not_import_ray_unless_asked():
    code = (
        "import sys, odbench.cli as c, odbench.engine.suite, odbench.engine.executors;"
        "c.build_parser().parse_args(['run']); print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_cli_suite_on_ray_into_the_mlflow_server(ray_address, mlflow_uri, tmp_path):
    """A real suite through Ray (`--ray-address`) into the PostgreSQL-backed MLflow server."""
    from mlflow.tracking import MlflowClient

    experiment = f"ray-{tmp_path.name}"
    command = [
        sys.executable, "-m", "odbench.cli", "run", "--executor", "ray", "--ray-address", ray_address,
        "--plugin-dir", str(DRILL), "--methods", "sleepy", "--datasets", "counted", "--classes", "0,1",
        "--param", "sleepy.seconds=0.2", "--device", "cpu", "--results", str(tmp_path / "r"),
        "--tracking-uri", mlflow_uri, "--experiment", experiment,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 ok, 0 failed" in done.stderr and "warning" not in done.stderr
    store = Store(tmp_path / "r")
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    jobs = [r for r in runs if "job_key" in r.data.tags]
    assert sorted(r.data.tags["job_key"] for r in jobs) == sorted(r["key"] for r in store.records(OK))
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.fixture(scope="module")
def one_gpu_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second Ray head: 4 CPUs and one logical GPU, which Ray schedules by though no GPU exists."""
    from services import ray_head

    try:
        server, address = ray_head(tmp_path_factory.mktemp("ray-gpu"), cpus=4, gpus=1)
    except (FileNotFoundError, OSError, RuntimeError) as err:
        pytest.skip(f"a second Ray head cannot start here ({str(err)[:300]})")
    yield address
    server.stop()


def test_jobs_pack_onto_one_gpu_by_their_share(one_gpu_ray, tmp_path):
    """Four GPU jobs of half a GPU each, on a cluster of one GPU and four CPUs: two at a time, both on GPU 0."""
    seconds, pid_dir = 8.0, tmp_path / "pids"  # long enough that the two of a wave overlap however slowly they start
    pid_dir.mkdir()
    command = [
        sys.executable, "-m", "odbench.cli", "run", "--executor", "ray", "--ray-address", one_gpu_ray,
        "--plugin-dir", str(DRILL), "--methods", "sleepy", "--datasets", "counted", "--classes", "0,1,2,3",
        "--param", f"sleepy.seconds={seconds}", "--param", f"sleepy.pid_dir={pid_dir}", "--device", "cuda",
        "--gpu-per-job", "0.5", "--results", str(tmp_path / "results"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]

    files = list(pid_dir.iterdir())
    placed = [json.loads(p.read_text()) for p in files]
    assert len(placed) == 4 and all(p["resources"].get("GPU") == 0.5 for p in placed), placed
    assert all(p["visible_gpus"] == "0" and p["device"] == "cuda" for p in placed)
    starts = sorted(int(p.name.split("-")[2]) / 1e9 for p in files)  # each job sleeps `seconds` from its start
    at_once = max(sum(1 for s in starts if t <= s < t + seconds) for t in starts)
    assert at_once == 2  # two halves share the GPU; the other two jobs waited for it, though CPUs were free


def test_a_job_out_of_gpu_memory_runs_again_alone_on_a_whole_gpu_then_fails_with_the_reason(one_gpu_ray, tmp_path):
    """The drill raises torch.cuda.OutOfMemoryError on each job's first attempt: class 0's job reruns alone on the whole
    (logical) GPU and ends ok; class 1's runs out there too and is recorded failed with the reason."""
    marks = tmp_path / "marks"
    marks.mkdir()
    command = [
        sys.executable, "-m", "odbench.cli", "run", "--executor", "ray", "--ray-address", one_gpu_ray,
        "--plugin-dir", str(DRILL), "--methods", "gobbler", "--datasets", "counted", "--classes", "0,1",
        "--param", f"gobbler.marks={marks}", "--param", 'gobbler.always="1"', "--device", "cuda", "--gpu-per-job", "0.25",
        "--results", str(tmp_path / "results"), "--no-mlflow",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "1 ok, 1 failed" in done.stderr, done.stderr[-3000:]
    assert done.stderr.count("ran out of GPU memory on 0.25 GPU; running it again alone on a whole GPU") == 2
    attempts = {p.name: json.loads(p.read_text()) for p in marks.glob("*.*")}
    assert len(attempts) == 4  # each job: once on its share, once alone, then no more
    assert all(attempts[name]["resources"]["GPU"] == (1.0 if name.endswith(".1") else 0.25) for name in attempts)
    store = Store(tmp_path / "results")
    (ok,) = store.records(OK)
    assert ok["normal_class"] == "0" and ok["ran_on"]["gpu_share"] == 1.0
    (failed,) = store.records(FAILED)
    assert failed["normal_class"] == "1" and failed["error"]["type"] == "OutOfMemoryError"
    assert failed["error"]["message"].startswith("out of GPU memory alone on a whole GPU: CUDA out of memory")
    assert failed["ran_on"]["gpu_share"] == 1.0
