"""ADBench's classical tabular datasets (Han et al., 2022), one per argument.

``adbench:cardio`` or ``adbench:6_cardio`` selects ``6_cardio.npz`` from
ADBench's repository (keys ``X``, ``y``, y = 1 anomaly).  File sizes and
sha256 are pinned in ``adbench_classical_files.csv`` beside this file
(shipped with the plugins); a file not listed there has no pinned hash and
is refused rather than loaded unverified.

The default protocol is ``unsupervised``: PyOD's clean 60/40 split, every
row once.  ``--protocol adbench`` is ADBench's own protocol, for
reproducing its published numbers: sets under 1,000 rows are resampled
with replacement to 1,000 (so copies of a point sit in train and test),
sets over 10,000 are subsampled, then a stratified 70/30 split with
min-max scaling (``odbench.protocols.splits.adbench``).  Some files are
not the ODDS sets of the same name (``WBC`` is 223 x 9, ODDS's 378 x 30;
``glass`` has 7 of ODDS's 9 features), so numbers on them are not PyOD's.
"""

from __future__ import annotations

import csv
from pathlib import Path

from odbench.api import DataError, Dataset, LabeledData, RemoteFile
from odbench.data.formats import read_outlier_npz

_BASE = "https://github.com/Minqi824/ADBench/raw/main/adbench/datasets/Classical/"
_TABLE = Path(__file__).with_name("adbench_classical_files.csv")


def catalogue() -> dict[str, dict[str, str]]:
    """Rows of the pinned table keyed by file stem (``6_cardio``)."""
    with open(_TABLE, newline="") as f:
        return {row["file"].removesuffix(".npz"): row for row in csv.DictReader(f)}


def resolve(argument: str) -> str:
    """The file stem for ``cardio``, ``Cardio`` or ``6_cardio``."""
    table = catalogue()
    by_name = {stem.split("_", 1)[1].lower(): stem for stem in table}
    stem = argument if argument in table else by_name.get(argument.lower())
    if stem is None:
        known = ", ".join(sorted(by_name))
        raise DataError(f"unknown ADBench dataset {argument!r}; known (with pinned checksums): {known}")
    return stem


class ADBench(Dataset):
    name = "adbench"
    modality = "tabular"
    classes = ("normal", "anomaly")
    default_protocol = "unsupervised"  # PyOD's benchmark split; "adbench" is ADBench's own
    paper_metric = "auroc"
    takes_argument = True

    def __init__(self, argument: str | None = None) -> None:
        if argument is None:
            raise DataError("adbench needs a dataset name, e.g. adbench:cardio")
        super().__init__(argument)
        row = catalogue()[resolve(argument)]
        self.files = (RemoteFile(url=_BASE + row["file"], filename=row["file"], sha256=row["sha256"]),)
        self.expected = (int(row["n_samples"]), int(row["n_features"]), int(row["n_anomalies"]))

    @classmethod
    def arguments(cls) -> list[str]:
        """What ``adbench:*`` expands to: every set with a pinned checksum, by name (``cardio``)."""
        return [stem.split("_", 1)[1] for stem in catalogue()]

    def load(self, root: Path) -> LabeledData:
        return read_outlier_npz(self.path(root, self.files[0].filename))
