"""ImageNet-10: the ten ImageNet classes of the paper's Table 5.

No download (ImageNet's licence requires each user to obtain it): point a
data directory, or ``ODBENCH_IMAGENET_DIR``, at an ImageNet copy laid out
as ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (the usual
ImageFolder layout; fast.ai's Imagenette, which has exactly these ten
classes, has the same layout).  The folder is found under the names
``imagenet``, ``ILSVRC2012``, ``imagenette2`` or ``imagenette2-320``.
Only the ten class folders are read.  Images are resized so the shorter
side is 224 and centre-cropped to 224 x 224, kept uint8 ``(N, 3, 224,
224)``, and cached after the first load.  Normalization uses ImageNet's
channel statistics, as MobileNetV2 (the paper's backbone; needs
torchvision: ``pip install odbench[vision]``) was trained with.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData
from odbench.core.download import DataUnavailable, data_dirs
from odbench.data.cache import cached_arrays

# Table 5's classes, with their WordNet ids (ImageNet's folder names)
WNIDS = {
    "tench": "n01440764", "English springer": "n02102040", "cassette player": "n02979186",
    "chainsaw": "n03000684", "church": "n03028079", "French horn": "n03394916",
    "garbage truck": "n03417042", "gas pump": "n03425413", "golf ball": "n03445777", "parachute": "n03888605",
}
FOLDER_NAMES = ("imagenet", "ILSVRC2012", "imagenette2", "imagenette2-320")
SIZE = 224


def _is_imagenet(folder: Path) -> bool:
    return all((folder / split / wnid).is_dir() for split in ("train", "val") for wnid in WNIDS.values())


def find_imagenet() -> Path | None:
    """The user's ImageNet folder (``ODBENCH_IMAGENET_DIR``, then data directories)."""
    env = os.environ.get("ODBENCH_IMAGENET_DIR")
    candidates = [Path(env)] if env else []
    for base in data_dirs():
        for name in FOLDER_NAMES:
            candidates += [base / name, *sorted(base.glob(f"*/{name}"))]
    return next((folder for folder in candidates if _is_imagenet(folder)), None)


def load_image(path: Path) -> np.ndarray:
    """One image as uint8 ``(3, 224, 224)``: shorter side to 224, centre crop."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = SIZE / min(im.size)
        w, h = max(SIZE, round(im.width * scale)), max(SIZE, round(im.height * scale))
        im = im.resize((w, h), Image.Resampling.BILINEAR)
        left, top = (w - SIZE) // 2, (h - SIZE) // 2
        im = im.crop((left, top, left + SIZE, top + SIZE))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


class ImageNet10(Dataset):
    name = "imagenet10"
    modality = "image"
    classes = tuple(WNIDS)
    default_protocol = "one_vs_all"
    paper_metric = "auroc"
    channel_stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    backbone = "mobilenet_v2"
    requires = ("PIL",)
    # where `odbench list` looks for the user's copy (``find_imagenet`` checks every class folder)
    local_folders = tuple((name, f"val/{WNIDS['parachute']}") for name in FOLDER_NAMES)
    folder_variable = "ODBENCH_IMAGENET_DIR"

    def prepare(self, root: Path) -> None:
        if find_imagenet() is None:
            raise DataUnavailable(
                "imagenet10 needs a local ImageNet copy (no download: ImageNet's terms require you to obtain it). "
                "Set ODBENCH_IMAGENET_DIR to a folder holding train/<wnid>/ and val/<wnid>/ for the wnids "
                f"{', '.join(WNIDS.values())}, or put such a folder named one of {', '.join(FOLDER_NAMES)} in "
                "a directory listed in ODBENCH_DATA_DIR"
            )

    def load(self, root: Path) -> LabeledData:
        """Images ``(N, 3, 224, 224)`` uint8; ImageNet's train / val as pool / test."""
        self.prepare(root)
        folder = find_imagenet()
        assert folder is not None
        arrays = {}
        for split in ("train", "val"):
            files = [(c, p) for c, wnid in enumerate(WNIDS.values()) for p in sorted((folder / split / wnid).iterdir())
                     if p.is_file()]
            arrays[split] = self._cached(files, folder, Path(root), split)
        (X, y), (X_test, y_test) = arrays["train"], arrays["val"]
        return LabeledData(X=X, y=y, X_test=X_test, y_test=y_test, class_names=self.classes)

    def _cached(self, files: list[tuple[int, Path]], folder: Path, root: Path, split: str
                ) -> tuple[np.ndarray, np.ndarray]:
        key = hashlib.sha256(repr((str(folder.resolve()), [str(p) for _, p in files], SIZE)).encode()).hexdigest()[:16]

        def decode() -> dict[str, np.ndarray]:
            X = np.empty((len(files), 3, SIZE, SIZE), np.uint8)
            for i, (_, path) in enumerate(files):
                X[i] = load_image(path)
            return {"X": X, "y": np.array([c for c, _ in files], np.int64)}

        arrays = cached_arrays(root / f"{split}_{key}.npz", decode)
        return arrays["X"], arrays["y"]
