"""A user's image folder: ``folder:PATH``.

``PATH/train/<class>/*.png`` and ``PATH/test/<class>/*`` (or ``PATH/<class>/*``
for one pool the protocol splits).  Decoded once into a uint8 cache; image
size and channels come from the data.  Used one-vs-all.
"""

from __future__ import annotations

from pathlib import Path

from odbench.api import DataError, Dataset, LabeledData
from odbench.sources import fingerprint_path, load_folder, parse_argument


class Folder(Dataset):
    name = "folder"
    modality = "image"
    backbone = "lenet_cifar"
    takes_argument = True
    bundled = True

    def prepare(self, root: Path) -> None:
        path, _ = parse_argument(self.argument, self.name)
        if not path.is_dir():
            raise DataError(f"folder: {path} is not a folder")

    def fingerprint(self) -> str:
        return fingerprint_path(parse_argument(self.argument, self.name)[0])

    def load(self, root: Path) -> LabeledData:
        path, _ = parse_argument(self.argument, self.name)
        return load_folder(path, root)
