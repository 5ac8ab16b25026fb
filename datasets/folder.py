"""A user's image folder: ``folder:PATH``.

``PATH/train/<class>/*.png`` and ``PATH/test/<class>/*`` (or ``PATH/<class>/*``
for one pool the protocol splits).  Decoded once into a uint8 cache; image
size and channels come from the data.  Used one-vs-all.
"""

from __future__ import annotations

from pathlib import Path

from odbench.api import DataError, LabeledData
from odbench.data.sources import UserSource, folder_classes, load_folder


class Folder(UserSource):
    name = "folder"
    modality = "image"
    backbone = "lenet_cifar"

    def prepare(self, root: Path) -> None:
        if not self.location()[0].is_dir():
            raise DataError(f"folder: {self.location()[0]} is not a folder")

    def classes_before_loading(self) -> tuple[str, ...]:
        """The sub-folder names: ``--classes`` is checked against them before minutes of decoding."""
        return folder_classes(self.location()[0])

    def load(self, root: Path) -> LabeledData:
        return load_folder(self.location()[0], root)
