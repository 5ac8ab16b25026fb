"""Time the resume of a suite whose jobs are all done: ``odbench run`` over N stored records.

Usage: PYTHONPATH=. python scripts/bench_resume.py [--jobs 10000] [--results DIR] [--keep]

The suite is kNN on digits, every class, N/10 repetitions.  One job is
really run; its record and scores are copied under every other job's key
(the same split sizes, so each copy passes the store's check).  Then the
same ``odbench run`` command is timed as a fresh process, three times:

* ``no index``: the index of verified records removed first, so every record
  and scores file is read and hashed (what every start did before the index);
* ``index``: the index that the first start left is trusted;
* ``index, again``: a second start on the same index.

Prints each wall time with the load average, and the run's own summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from odbench.engine.plan import expand
from odbench.engine.registry import Registry
from odbench.engine.store import Store
from odbench.engine.store_index import INDEX_NAME, SETTLE_NS
from odbench.engine.suite import run_suite


def fill(results: Path, jobs: int) -> list[str]:
    """The command's arguments, after storing a done record for each of its ``jobs`` jobs."""
    repetitions = max(1, jobs // 10)
    argv = ["--methods", "knn", "--datasets", "digits", "--seeds", str(repetitions), "--results", str(results),
            "--no-mlflow", "--device", "cpu", "--jobs", "1"]  # fmt: skip
    registry = Registry()
    plan = expand(registry, ["knn"], ["digits"], repetitions=repetitions)
    store = Store(results)
    first = plan.jobs[0]
    run_suite(type(plan)([first], cache=plan.cache), registry, store)
    key = first.key(registry, plan.cache)
    record = json.loads(store.record_path(key).read_text())
    for job in plan.jobs[1:]:
        other = job.key(registry, plan.cache)
        copy = {**record, "key": other, "normal_class": job.normal_class, "repetition": job.repetition, "seed": job.seed}
        shutil.copyfile(store.scores_path(key), store.scores_path(other))
        store.record_path(other).write_text(json.dumps(copy, indent=1, sort_keys=True))
    time.sleep(SETTLE_NS / 1e9 + 0.5)  # files changed a moment ago are never trusted from the index
    return argv


def timed(label: str, argv: list[str]) -> None:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "odbench.cli", "run", *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = next((line for line in done.stderr.splitlines() if "already done" in line), done.stderr[-300:])
    load = os.getloadavg()[0]
    print(f"{label:>14}: {seconds:6.1f} s (load {load:.1f}, exit {done.returncode})  {summary.strip()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--results", type=Path, help="a folder to fill (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the results folder")
    args = parser.parse_args()
    results = args.results or Path(tempfile.mkdtemp(prefix="odbench-resume-"))
    try:
        started = time.perf_counter()
        argv = fill(results, args.jobs)
        print(f"{args.jobs} done jobs stored in {time.perf_counter() - started:.0f} s ({results})", flush=True)
        (results / INDEX_NAME).unlink(missing_ok=True)
        timed("no index", argv)
        timed("index", argv)
        timed("index, again", argv)
    finally:
        if not args.keep:
            shutil.rmtree(results, ignore_errors=True)


if __name__ == "__main__":
    main()
