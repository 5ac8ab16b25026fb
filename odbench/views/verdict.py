"""The committed verdict of one reproduction: a tidy CSV and, beside it, how it was made.

``odbench reproduce EXPERIMENT --verdict DIR`` writes ``DIR/<name>.csv``
(``odbench.views.reproduce.verdict_table``: one row per cell, ours beside
the paper's number, Δ and why they differ) and ``DIR/<name>.md``: the table
as the command printed it, the command itself, the commit, the machine and
the wall time, so that a figure in ``results/reproduced/`` can be traced to
what made it.
"""

from __future__ import annotations

import platform
import shlex
import subprocess
import time
from pathlib import Path

import pandas as pd

from odbench import __version__
from odbench.engine.devices import cpu_description
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
    """The CPU (``odbench.engine.devices.cpu_description``) and the operating system."""
    return f"{cpu_description()}; {platform.system()} {platform.release()}"


def write_verdict(
    folder: Path,
    experiment: Experiment,
    table: pd.DataFrame,
    printed: str,
    started: float,
    fit_seconds: float,
    argv: list[str],
) -> list[Path]:
    """Write the verdict CSV and its ``.md`` companion into ``folder``; returns both paths.

    ``fit_seconds``: the summed fit time of the jobs behind the table (they may have run in earlier commands);
    ``argv``: the command's arguments after ``odbench``, as the command line parsed them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = verdict_name(experiment)
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    table.to_csv(csv_path, index=False, float_format="%.4g")
    command = "odbench " + " ".join(shlex.quote(a) for a in argv)
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
