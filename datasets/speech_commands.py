"""Google Speech Commands v0.01 (Warden, 2018): one-second clips of 30 words.

The official tarball (sha256 pinned, as torchaudio pins it), extracted
into the cache after its checksum passes; or an extracted
``speech_commands_v0.01/`` folder in a data directory.  Each clip becomes
98 x 32 MFCC features (32 filters, 25 ms windows, 10 ms stride;
``odbench.data.audio``), cached after the first load.  The official
``testing_list.txt`` is the test set; every other clip (the official
training and validation clips) forms the pool the protocol cuts from.

The paper (Table 3, Figure 3) treats one keyword as normal, ``marvin``
by default (``default_classes``).  For OCLN, close negatives are
recordings of near-words ("Mar", "Marvelous", ...) that the user
supplies: ``close_options={"folder": PATH}``; without one, OCLN refuses.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import numpy as np

from odbench.api import Dataset, LabeledData, RemoteFile
from odbench.core.download import DataUnavailable, fetch, locate_folder
from odbench.data.audio import MfccConfig, mfcc
from odbench.data.cache import cached_arrays
from odbench.data.formats import read_wav

ARCHIVE = RemoteFile(
    url="http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
    filename="speech_commands_v0.01.tar.gz",
    sha256="743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    size=1489096277,
)
FOLDER = "speech_commands_v0.01"
CLIP_SAMPLES = 16000


class SpeechCommands(Dataset):
    name = "speech_commands"
    modality = "sequence"
    classes = ("bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy", "house", "left",
               "marvin", "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six", "stop", "three",
               "tree", "two", "up", "wow", "yes", "zero")
    default_classes = ("marvin",)
    default_protocol = "one_vs_all"
    paper_metric = "auroc"
    backbone = "lstm"
    files = (ARCHIVE,)
    local_folders = ((FOLDER, "testing_list.txt"),)  # the extracted archive does as well (``prepare``)
    features = MfccConfig()
    close_negatives_from_sources = False  # read from recordings, not made from test clips

    def _folder(self, root: Path) -> Path | None:
        name, marker = self.local_folders[0]
        return locate_folder(name, Path(root), marker)

    def prepare(self, root: Path) -> None:
        if self._folder(root) is not None:
            return
        archive = fetch(self.files[0], Path(root))  # verified before we open it
        partial = Path(root) / f"{FOLDER}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(partial, filter="data")  # no links or paths out of the folder
        partial.replace(Path(root) / FOLDER)

    def load(self, root: Path) -> LabeledData:
        """Features ``(N, 98, 32)`` float32; official test list as the test set."""
        folder = self._folder(root)
        if folder is None:
            raise DataUnavailable(f"{FOLDER}/ is missing; run `odbench prepare {self.name}` first")
        testing = set((folder / "testing_list.txt").read_text().split())
        clips = [p for word in self.classes for p in sorted((folder / word).glob("*.wav"))]
        names = [f"{p.parent.name}/{p.name}" for p in clips]
        y = np.array([self.classes.index(p.parent.name) for p in clips], dtype=np.int64)
        X = self._cached_features(clips, names, folder, Path(root))
        test = np.array([n in testing for n in names], dtype=bool)
        return LabeledData(X=X[~test], y=y[~test], X_test=X[test], y_test=y[test], class_names=self.classes)

    def featurize(self, clips: list[Path]) -> np.ndarray:
        """MFCC features of wav files, ``(len(clips), 98, 32)`` float32."""
        out = np.empty((len(clips), self.features.n_frames(CLIP_SAMPLES), self.features.n_filters), np.float32)
        for start in range(0, len(clips), 256):
            chunk = clips[start : start + 256]  # bounded memory: ~0.1 GB of frames per chunk
            waves = np.stack([self._wave(p) for p in chunk]) if chunk else np.zeros((0, CLIP_SAMPLES))
            out[start : start + len(chunk)] = mfcc(waves, self.features)
        return out

    def _wave(self, path: Path) -> np.ndarray:
        samples, rate = read_wav(path, CLIP_SAMPLES)
        if rate != self.features.sample_rate:
            raise ValueError(f"{path}: {rate} Hz, expected {self.features.sample_rate} Hz")
        return samples

    def _cached_features(self, clips: list[Path], names: list[str], folder: Path, root: Path) -> np.ndarray:
        # keyed on the source folder, the clip list and the featurizer settings
        key = hashlib.sha256(repr((str(folder.resolve()), names, self.features)).encode()).hexdigest()[:16]
        return cached_arrays(root / f"features_{key}.npz", lambda: {"X": self.featurize(clips)})["X"]

    def close_negatives(self, X_normal: np.ndarray, rng: np.random.Generator, *, folder: str | None = None
                        ) -> np.ndarray:
        """Featurized clips of near-words from ``folder`` (every ``*.wav`` below it)."""
        if folder is None:
            raise ValueError(
                "speech_commands has no close-negative generator: OCLN needs recordings of words close to "
                "the keyword (the paper synthesized 'Mar', 'Vin', 'Marvelous', ...); pass "
                "close_options={'folder': '/path/to/clips'}"
            )
        clips = sorted(Path(folder).rglob("*.wav"))
        if not clips:
            raise ValueError(f"no .wav clips found under {folder}")
        return self.featurize(clips)
