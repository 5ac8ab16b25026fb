"""A user's CSV table: ``csv:PATH[?label=COLUMN&encode=onehot]``.

One row per example; the label column holds classes (one-vs-all) or a 0/1
anomaly flag (contamination).  See ``odbench.sources``.
"""

from __future__ import annotations

from pathlib import Path

from odbench.api import Dataset, LabeledData
from odbench.sources import fingerprint_path, load_table, parse_argument


class CSV(Dataset):
    name = "csv"
    modality = "tabular"
    takes_argument = True
    bundled = True  # nothing to download: the file is the user's

    def prepare(self, root: Path) -> None:
        parse_argument(self.argument, self.name)  # fails early on a missing file

    def fingerprint(self) -> str:
        return fingerprint_path(parse_argument(self.argument, self.name)[0])

    def load(self, root: Path) -> LabeledData:
        path, options = parse_argument(self.argument, self.name)
        data = load_table(path, options, self.name)
        self.default_protocol = "contamination" if data.anomaly_classes else "one_vs_all"
        return data
