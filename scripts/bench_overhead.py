"""What odbench adds to a fit: many tiny kNN jobs through ``odbench.run`` against the same pyod fits in a plain loop.

    PYTHONPATH=. python scripts/bench_overhead.py                  # 1,000 jobs, one warm worker (--jobs 1)
    PYTHONPATH=. python scripts/bench_overhead.py --jobs-count 100 --jobs 2

The jobs are pyod's kNN (k=5) on scikit-learn's digits, one per normal class
and repetition (so ``--jobs-count`` is rounded to a multiple of 10), run the
way a user runs them: ``odbench.run`` on a fresh results folder, MLflow and
the progress display off.  The plain loop fits and scores the same detector on
the same standardized splits (built beforehand, outside its clock), in this
process.  Printed: the CPU and load average, the first-job latency (the call's
wall time for one job, the process's first call: imports, planning, the
worker's start), the total of both, their ratio (goal 1.2 or less) and the
harness's time per job beyond the fit (goal 50 ms or less on warm workers).
The plain loop runs before and after odbench, and its mean is the reference.

Last, the floor that one durable record per job puts under the ratio: the
store's own write (``Store.write``: the record's JSON and its compressed scores,
each written to a temporary file, fsync'd and renamed) of one of the records
just made, timed over many keys.  With fits this small, that write alone can
cost more than the fit.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from odbench.engine.devices import available_cores, cpu_description


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def suite_of(count: int, seed: int):  # type: ignore[no-untyped-def]
    import odbench

    repetitions = max(1, round(count / 10))
    return odbench.Suite(
        methods=("knn",), datasets=("digits",), seeds=repetitions, seed=seed, params={"knn": {"n_neighbors": 5}}
    )


def breakdown(root: Path) -> tuple[float, float]:
    """Summed over the jobs of a results folder: fit and test scoring, and each job's whole time in its worker."""
    import json
    from datetime import datetime

    fitting = whole = 0.0
    for path in (root / "jobs").glob("*.json"):
        record = json.loads(path.read_text())
        fitting += record["fit_seconds"] + record["score_seconds"]
        whole += (datetime.fromisoformat(record["created"]) - datetime.fromisoformat(record["started"])).total_seconds()
    return fitting, whole


def through_odbench(count: int, jobs: int, root: Path, seed: int) -> tuple[float, int]:
    import odbench

    start = time.perf_counter()
    frame = odbench.run(suite_of(count, seed), odbench.Where(jobs=jobs, device="cpu"), odbench.Tracking(mlflow=False),
                        odbench.Paths(results=root), progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    if not (frame["status"] == "ok").all():
        raise SystemExit(f"bench: some jobs did not finish: {frame['status'].value_counts().to_dict()}")
    return seconds, len(frame)


def tasks_of(count: int, seed: int) -> list:  # type: ignore[type-arg]
    """The standardized (train normals, test) arrays of each job, as odbench builds them."""
    from odbench.engine.execute import job_task
    from odbench.engine.loading import DataCache
    from odbench.engine.plan import expand
    from odbench.engine.registry import Registry

    registry, cache = Registry(), DataCache()
    suite = suite_of(count, seed)
    plan = expand(
        registry, ["knn"], ["digits"], repetitions=suite.seeds, base_seed=seed, params={"knn": {"n_neighbors": 5}}
    )
    found = []
    for job in plan.jobs:
        task, _ = job_task(registry, job, cache)
        found.append((task.train.normal.reshape(len(task.train.normal), -1), task.test.X.reshape(len(task.test), -1)))
    return found


def record_write_seconds(results: Path, repeat: int = 200) -> float:
    """Seconds per ``Store.write`` of one real record and its arrays, as a job writes it (into a fresh folder)."""
    import json

    from odbench.engine.store import Store

    path = next((results / "jobs").glob("*.json"))
    record = json.loads(path.read_text())
    arrays = Store(results).scores(record["key"])
    split_index = {name[: -len("_index")]: a for name, a in arrays.items() if name.endswith("_index")}
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder))
        start = time.perf_counter()
        for i in range(repeat):
            store.write(dict(record, key=f"{i:064x}"), arrays["scores"], arrays.get("labels"), split_index)
        return (time.perf_counter() - start) / repeat


def plain_loop(tasks: list) -> float:  # type: ignore[type-arg]
    from pyod.models.knn import KNN

    KNN(n_neighbors=5).fit(tasks[0][0]).decision_function(tasks[0][1])  # imports and thread pools warm, as in a worker
    start = time.perf_counter()
    for train, test in tasks:
        KNN(n_neighbors=min(5, len(train) - 1)).fit(train).decision_function(test)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs-count", type=int, default=1000, help="how many jobs (rounded to a multiple of 10; default 1000)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="odbench's worker processes (--jobs; default 1)")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}; {available_cores()} cores usable; load average {load()}")
    with tempfile.TemporaryDirectory() as folder:
        first, _ = through_odbench(1, args.jobs, Path(folder) / "first", seed=10_000)  # this process's first call
        tasks = tasks_of(args.jobs_count, seed=0)
        before = plain_loop(tasks)
        harness, count = through_odbench(args.jobs_count, args.jobs, Path(folder) / "many", seed=0)
        fitting, whole = breakdown(Path(folder) / "many")
        after = plain_loop(tasks)
        write = record_write_seconds(Path(folder) / "many")
    plain = (before + after) / 2
    print(f"first-job latency (one job, first call of this process, --jobs {args.jobs}): {first:.2f} s")
    print(
        f"{count} kNN jobs: odbench.run {harness:.2f} s; plain pyod loop {plain:.2f} s (before {before:.2f}, after {after:.2f})"
    )
    per_job = (harness - plain * (1 if args.jobs == 1 else 1 / min(args.jobs, len(os.sched_getaffinity(0))))) / count
    print(f"ratio {harness / plain:.2f} (goal <= 1.2); harness time per job {per_job * 1000:.1f} ms (goal <= 50 ms)")
    print(
        f"per job: fit and test scoring {fitting / count * 1000:.1f} ms, the rest of the job in its worker "
        f"(data, validation check, metrics, record) {(whole - fitting) / count * 1000:.1f} ms; "
        f"outside the jobs (planning, dispatch, table) {(harness - whole / args.jobs) / count * 1000:.1f} ms"
    )
    floor = (plain + write * count) / plain
    print(
        f"one durable record (Store.write: JSON and scores, fsync'd, renamed) {write * 1000:.1f} ms per job: "
        f"with one record per job the ratio cannot fall below {floor:.2f} here"
    )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
