"""odbench's ``pyod:<Name>`` detectors under ``--protocol adbench`` against ADBench's published AUCROC.

ADBench (Han et al., NeurIPS 2022) publishes, in its paper's Appendix D
Table D4, the test AUCROC of 14 unsupervised detectors on 57 sets, each the
mean over 3 seeds of its protocol (resample to 1,000-10,000 rows, stratified
70/30 split, min-max scaling, pyod defaults, unlabelled contaminated
training).  ``scripts/adbench_published_aucroc.csv`` holds the rows of the
12 sets in ``shared/data/adbench`` (transcribed from
``paper/ADBench_paper.pdf`` of github.com/Minqi824/ADBench at commit
6345a6b35d66b460bd5a590f6db9774e59e71487, "Update paper for NeurIPS 2022").

Run the jobs with odbench first, then compare::

    odbench run --methods pyod:PCA,pyod:OCSVM,pyod:LOF,pyod:CBLOF,pyod:HBOS,pyod:KNN,pyod:COPOD,pyod:ECOD,\\
        pyod:LODA,pyod:IForest --datasets adbench:glass,...  --protocol adbench --seeds 3 \\
        --data-dir shared/data --no-mlflow --results RESULTS
    python scripts/compare_adbench_pyod.py RESULTS --out results/reproduced/adbench-pyod-zoo.md

Per detector: mean |Δ| (ours minus published, AUROC points) over the sets
both have, against what seed noise alone would give.  Both sides are means
of 3 seeds; if ADBench's seeds spread as ours do (σ per cell, ADBench does
not publish its own), their difference is normal with variance 2σ²/3, so
its expected size is √(2/π)·√(2/3)·σ ≈ 0.65σ, and a cell is "within noise"
when |Δ| ≤ 2·√(2/3)·σ.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from tabulate import tabulate

from odbench.engine.store import Store

#: E|Δ| / σ for the difference of two independent 3-seed means with per-seed spread σ
NOISE_SIZE = float(np.sqrt(2 / np.pi) * np.sqrt(2 / 3))

PUBLISHED = Path(__file__).with_name("adbench_published_aucroc.csv")


def published() -> dict[tuple[str, str], float]:
    """(detector, dataset) -> AUROC in [0, 1]; N/A cells are absent."""
    table = {}
    with open(PUBLISHED, newline="") as f:
        for row in csv.DictReader(f):
            for detector, value in row.items():
                if detector != "dataset" and value:
                    table[(detector, row["dataset"].lower())] = float(value) / 100
    return table


def ours(results: Path) -> dict[tuple[str, str], list[float]]:
    """(detector, dataset) -> test AUROC per seed, from the store's ok records of the adbench protocol.

    Where a cell ran more than once (an earlier code version), the latest record of each repetition counts.
    """
    latest: dict[tuple[str, str, int], dict] = {}
    for record in sorted(Store(results).records(), key=lambda r: r.get("created", "")):
        if record.get("status") != "ok" or record.get("protocol") != "adbench":
            continue
        method, dataset = record["method"], record["dataset"]
        if not method.startswith("pyod:") or not dataset.startswith("adbench:"):
            continue
        latest[(method.removeprefix("pyod:"), dataset.removeprefix("adbench:").lower(), record["repetition"])] = record
    cells: dict[tuple[str, str], list[float]] = {}
    for (detector, dataset, _), record in sorted(latest.items()):
        cells.setdefault((detector, dataset), []).append(float(record["metrics"]["auroc"]))
    return cells


def compare(results: Path) -> tuple[list[list[object]], list[list[object]]]:
    paper, mine = published(), ours(results)
    cells, summary = [], []
    for detector in sorted({d for d, _ in mine}):
        deltas, spreads = [], []
        for (d, dataset), values in sorted(mine.items()):
            if d != detector:
                continue
            mean, std = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
            ref = paper.get((detector, dataset))
            delta = None if ref is None else 100 * (mean - ref)
            cells.append([detector, dataset, len(values), f"{100 * mean:.2f}", f"{100 * std:.2f}",
                          "" if ref is None else f"{100 * ref:.2f}", "" if delta is None else f"{delta:+.2f}"])  # fmt: skip
            if delta is not None:
                deltas.append(abs(delta))
                spreads.append(100 * std)
        if deltas:
            noise = NOISE_SIZE * float(np.nanmean(spreads))
            within = sum(d <= 2 * np.sqrt(2 / 3) * s for d, s in zip(deltas, spreads, strict=True))
            summary.append([detector, len(deltas), f"{np.mean(deltas):.2f}", f"{np.median(deltas):.2f}",
                            f"{np.nanmean(spreads):.2f}", f"{noise:.2f}", f"{within}/{len(deltas)}"])  # fmt: skip
    return summary, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the results folder of the odbench run")
    parser.add_argument("--out", type=Path, help="write the tables as markdown here")
    parser.add_argument("--header", default="", help="text put above the tables (command, machine, time)")
    args = parser.parse_args()
    summary, cells = compare(args.results)
    text = (
        args.header
        + "\n## Per detector (AUROC points, 0-100)\n\n"
        + tabulate(
            summary,
            headers=[
                "detector",
                "sets",
                "mean |Δ|",
                "median |Δ|",
                "seed std (ours, mean)",
                "|Δ| from seed noise alone",
                "cells within noise",
            ],
            tablefmt="github",
        )  # fmt: skip
        + "\n\n## Per cell\n\n"
        + tabulate(
            cells, headers=["detector", "dataset", "seeds", "ours", "seed std", "ADBench", "Δ"], tablefmt="github"
        )
        + "\n"
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
