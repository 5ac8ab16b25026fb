"""Time what a user waits for at the command line, against Python's own start-up and torch's import.

Usage: python scripts/bench_cli.py [--rounds 5] [--resume-rounds 3] [--data-dir DIR] [--skip-resume]

Each measure is a fresh process, timed from its start to its exit (wall
clock), except the first job of a run, timed to the line that says it
started (``[1/N] start``):

* ``--version``, ``--help``;
* ``list`` with the plugin index warm (run once before the rounds, not timed
  in them; its cold time is printed apart);
* a one-line user error: ``run --methods nosuch``;
* the first job of ``run --methods knn --datasets digits --classes 0
  --no-mlflow`` (a fresh results folder each round);
* the resume of the default suite (``odbench run`` on a results folder that
  holds all its jobs; run once beforehand, not timed in the rounds).

Beside them, in the same rounds: ``python -c pass`` and ``python -c
"import torch"``.  The measures of one round run one after another, in
that order, and each is summarised as the median over the rounds, with
the ratios of the medians.  The CPU model, the cores this process may use
and the load average (before and after) are printed with the figures: a
loaded machine multiplies every fixed cost.  The plugin index, downloads
and results live in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from odbench.engine.devices import available_cores, cpu_description

ROOT = Path(__file__).resolve().parents[1]
ODBENCH = [sys.executable, "-m", "odbench.cli"]
FIRST_JOB = "] start "


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def wall(command: list[str], env: dict[str, str], expect: int | None = 0) -> float:
    """Seconds from start to exit; a status other than ``expect`` stops the benchmark (it would time an error)."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if expect is not None and done.returncode != expect:
        sys.exit(f"{' '.join(command)} ended with {done.returncode}, expected {expect}:\n{done.stderr[-2000:]}")
    return seconds


def first_job(command: list[str], env: dict[str, str]) -> float:
    """Seconds from start to the line that says the first job started; the run then finishes (untimed)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seconds = None
    tail = []
    for line in process.stderr:
        if seconds is None and FIRST_JOB in line:
            seconds = time.perf_counter() - started
        tail.append(line)
    process.wait()
    if seconds is None or process.returncode != 0:
        sys.exit(f"{' '.join(command)}: no job started (status {process.returncode}):\n{''.join(tail[-20:])}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the quick measures (default 5)")
    parser.add_argument("--resume-rounds", type=int, default=3, help="rounds of the default suite's resume (default 3)")
    parser.add_argument("--data-dir", type=Path, help="dataset folder, passed on as --data-dir (default: none)")
    parser.add_argument("--skip-resume", action="store_true", help="leave out the default suite (its first run takes minutes)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="odbench_bench_cli_"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "ODBENCH_CACHE": str(scratch / "cache")}  # fmt: skip
    env.pop("ODBENCH_PLUGIN_PATH", None)
    data = ["--data-dir", str(args.data_dir)] if args.data_dir else []
    print(f"CPU: {cpu_description()}; {available_cores()} cores usable; Python {platform.python_version()}; load average before: {load()}")

    cold_list = wall([*ODBENCH, "list"], env)  # builds the plugin index: each plugin file imported once
    default_results = scratch / "default"
    if not args.skip_resume:
        started = time.perf_counter()
        wall([*ODBENCH, "run", "--results", str(default_results), *data], env, expect=None)
        print(f"the default suite's first run (untimed in the rounds): {time.perf_counter() - started:.1f} s")

    measures: dict[str, Callable[[int], float]] = {
        "python -c pass": lambda r: wall([sys.executable, "-c", "pass"], env),
        "python -c 'import torch'": lambda r: wall([sys.executable, "-c", "import torch"], env),
        "odbench --version": lambda r: wall([*ODBENCH, "--version"], env),
        "odbench --help": lambda r: wall([*ODBENCH, "--help"], env),
        "odbench list (index warm)": lambda r: wall([*ODBENCH, "list"], env),
        "odbench run --methods nosuch (error)": lambda r: wall([*ODBENCH, "run", "--methods", "nosuch"], env, expect=2),
        "first job of odbench run (knn, digits/0)": lambda r: first_job(
            [*ODBENCH, "run", "--methods", "knn", "--datasets", "digits", "--classes", "0", "--no-mlflow",
             "--results", str(scratch / f"first_job_{r}"), *data], env),  # fmt: skip
    }
    if not args.skip_resume:
        measures["resume of the default suite, all done"] = lambda r: wall(
            [*ODBENCH, "run", "--results", str(default_results), *data], env, expect=None
        )
    times: dict[str, list[float]] = {name: [] for name in measures}
    for r in range(max(args.rounds, args.resume_rounds)):
        for name, measure in measures.items():
            if r >= (args.resume_rounds if name.startswith("resume") else args.rounds):
                continue
            times[name].append(measure(r))

    base, torch_import = statistics.median(times["python -c pass"]), statistics.median(times["python -c 'import torch'"])
    print(f"load average after: {load()}; cold `odbench list` (index built): {cold_list:.2f} s")
    print(f"\n{'what':44} {'median s':>9} {'min':>7} {'max':>7} {'x pass':>7} {'x torch':>8}  rounds")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:44} {median:9.2f} {min(values):7.2f} {max(values):7.2f} {median / base:7.1f} "
              f"{median / torch_import:8.2f}  {len(values)}")  # fmt: skip
    subprocess.run(["rm", "-rf", str(scratch)], check=False)


if __name__ == "__main__":
    main()
