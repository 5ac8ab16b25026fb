"""Throughput of one fixed suite under each executor: sequential, a pool of 2, and Ray with 2 workers.

The suite: 40 small jobs on scikit-learn's digits (one-vs-all), 20 classical
(kNN and Isolation Forest, every class) and 20 deep (a 2-epoch autoencoder,
every class, two seeds).  Each executor runs it into a fresh store, so none
reuses another's results.  Prints jobs per minute, and Ray's overhead per job
against the pool: (Ray's wall time - the pool's) x workers / jobs, with and
without starting the local Ray.

    PYTHONPATH=. python scripts/bench_scale.py [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from odbench.engine.executors import LocalPoolExecutor, SequentialExecutor
from odbench.engine.plan import Plan, expand
from odbench.engine.ray_executor import RayExecutor
from odbench.engine.registry import Registry
from odbench.engine.store import Store
from odbench.engine.suite import run_suite


def suite(registry: Registry) -> Plan:
    classical = expand(registry, ["knn", "iforest"], ["digits"])
    deep = expand(
        registry, ["autoencoder"], ["digits"], repetitions=2, cache=classical.cache,
        params={"autoencoder": {"epochs": 2, "batch_size": 64, "rep_dim": 8}},
    )  # fmt: skip
    plan = Plan(classical.jobs + deep.jobs, cache=classical.cache)
    assert len(plan.jobs) == 40, len(plan.jobs)
    return plan


def timed(name: str, plan: Plan, registry: Registry, executor, root: Path) -> float:
    started = time.perf_counter()
    summary = run_suite(plan, registry, Store(root / name), executor=executor, device="cpu")
    seconds = time.perf_counter() - started
    assert summary.ok == len(plan.jobs), summary.line()
    print(f"{name:<12} {seconds:7.1f} s  {60 * len(plan.jobs) / seconds:6.1f} jobs/min", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool-seconds", type=float, help="skip the sequential and pool runs; compare Ray with this pool time")
    args = parser.parse_args()
    registry = Registry()
    plan = suite(registry)
    n, w = len(plan.jobs), args.workers
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.pool_seconds is None:
            sequential = timed("sequential", plan, registry, SequentialExecutor(plan.cache), root)
            pool = timed(f"pool({w})", plan, registry, LocalPoolExecutor(w), root)
        else:
            sequential = pool = args.pool_seconds
        ray_executor = RayExecutor(num_cpus=w, cache=plan.cache)
        started = time.perf_counter()
        ray = ray_executor.connect()
        startup = time.perf_counter() - started
        ray_executor._started = False  # keep this Ray for the timed run; closed below
        on_ray = timed(f"ray({w})", plan, registry, ray_executor, root)
        ray.shutdown()
    print(f"ray startup (local, {w} CPUs): {startup:.1f} s")
    print(f"ray({w}) with startup: {60 * n / (on_ray + startup):.1f} jobs/min")
    if args.pool_seconds is None:
        print(f"speed-up over sequential: pool {sequential / pool:.2f}x, ray {sequential / on_ray:.2f}x")
    print(f"ray overhead per job vs pool: {(on_ray - pool) * w / n:+.2f} s (startup included: {(on_ray + startup - pool) * w / n:+.2f} s)")


if __name__ == "__main__":
    main()
