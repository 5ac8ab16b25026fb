"""The committed verdict of one reproduction: a tidy CSV and, beside it, how it was made.

``odbench reproduce EXPERIMENT --verdict DIR`` writes ``DIR/<name>.csv``
(``odbench.views.reproduce.verdict_table``: one row per cell, ours beside
the paper's number, Δ and why they differ) and ``DIR/<name>.md``: the table
as the command printed it, the command itself, the commit, the machine and
the wall time, so that a figure in ``results/reproduced/`` can be traced to
what made it.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from odbench import __version__
from odbench.views.reproduce import Experiment, verdict_name


def commit() -> str:
    """The checkout's commit (with ``+changes`` when the tree differs from it), or the installed version."""
    here = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "odbench", "methods", "datasets", "results/paper")
    except (OSError, subprocess.SubprocessError):
        head, dirty = "", ""
    return f"{head}{' +changes' if dirty else ''}" if head else f"odbench {__version__} (no git checkout)"


def machine() -> str:
    """The CPU model, its core count and the vector extensions that decide speed and bf16, as lscpu says."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(wanted) or 'no AVX2'}; {platform.system()} {platform.release()}"


def write_verdict(
    folder: Path, experiment: Experiment, table: pd.DataFrame, printed: str, started: float, fit_seconds: float
) -> list[Path]:
    """Write the verdict CSV and its ``.md`` companion into ``folder``; returns both paths.

    ``fit_seconds``: the summed fit time of the jobs behind the table (they may have run in earlier commands).
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = verdict_name(experiment)
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    table.to_csv(csv_path, index=False, float_format="%.4g")
    command = "odbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"# {experiment.title}" + (f" — variant '{experiment.variant}'" if experiment.variant else ""),
        "",
        printed,
        "",
        f"- command: `{command}`",
        f"- commit: {commit()}",
        f"- machine: {machine()}",
        f"- wall time of this command: {time.time() - started:.0f} s (jobs already in the store are read back, not rerun); "
        f"the jobs' summed fit time: {fit_seconds / 60:.0f} min",
        f"- tidy rows: [{csv_path.name}]({csv_path.name})",
    ]
    md_path.write_text("\n".join(lines) + "\n")
    return [csv_path, md_path]
