"""Time the job keys of a 1,000-job plan: library versions read when each key is made, against reading them once.

Usage: python scripts/bench_keys.py [--rounds 3]

knn and ocsvm on the 10 digits classes, 50 repetitions each (1,000 jobs,
nothing downloaded, nothing fitted).  Three ways of reading the libraries'
versions, interleaved round by round:

* ``stamped`` (odbench's): each key stats the import path folders and reads
  the versions again only when one changed;
* ``per call``: each key reads every library's metadata file again;
* ``once``: read once for the life of the process (no upgrade is ever seen).
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

from odbench.engine import fingerprint
from odbench.engine.plan import expand
from odbench.engine.registry import Registry


def keys_seconds(plan, registry: Registry) -> float:
    started = time.perf_counter()
    keys = {job.key(registry, plan.cache) for job in plan.jobs}
    assert len(keys) == len(plan.jobs)
    return time.perf_counter() - started


def per_call(self: fingerprint._Installed, dist: str) -> str | None:
    self.versions.pop(dist, None)  # forget what was read: the metadata file is parsed again
    return original(self, dist)


original = fingerprint._Installed.version

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    registry = Registry()
    plan = expand(registry, ["knn", "ocsvm"], ["digits"], repetitions=50)
    print(f"{len(plan.jobs)} jobs")
    keys_seconds(plan, registry)  # warm: parsed modules, the data's identity
    times: dict[str, list[float]] = {"stamped": [], "per call": [], "once": []}
    frozen = fingerprint.installation_stamp()
    for _ in range(args.rounds):
        times["stamped"].append(keys_seconds(plan, registry))
        with mock.patch.object(fingerprint._Installed, "version", per_call):
            times["per call"].append(keys_seconds(plan, registry))
        with mock.patch.object(fingerprint, "installation_stamp", lambda: frozen):
            times["once"].append(keys_seconds(plan, registry))
    for name, seconds in times.items():
        print(f"{name:>9}: {statistics.median(seconds):.3f} s for {len(plan.jobs)} keys (median of {args.rounds})")
