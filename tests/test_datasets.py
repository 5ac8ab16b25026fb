"""Dataset loaders on small files of their real formats, and on the real data.

Each synthetic test writes a tiny file in the publisher's format into the
dataset's folder and pins *that file's* hash explicitly (``_pin``): the
plugin's real hashes cannot match a synthetic file, and the env escape
hatch is never used.  Real-data tests run only when ../shared/data exists.
"""

from __future__ import annotations

import csv
import gzip
import io
import pickle
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat, wavfile

from odbench.api import Dataset, LabeledData, RemoteFile
from odbench.core.download import ChecksumError, DataUnavailable, file_hash
from odbench.data.audio import MfccConfig, mel_filterbank, mfcc
from odbench.data.augment import flip_rotate

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "adbench_classical_files.csv"


def _pin(monkeypatch: pytest.MonkeyPatch, dataset: Dataset, root: Path, algorithm: str = "sha256") -> None:
    """Replace the plugin's pinned files by the test-written files in ``root``, hashed here."""
    pinned = []
    for remote in dataset.files:
        digest = file_hash(root / remote.filename, algorithm)
        pinned.append(RemoteFile(url="test://not-downloaded", filename=remote.filename, **{algorithm: digest}))
    monkeypatch.setattr(dataset, "files", tuple(pinned))


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _write_idx_set(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.array([0, 1, 2, 0, 9, 5]),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (3, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.array([7, 0, 1]),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (root / name).write_bytes(_idx(array))
    return arrays


# --------------------------------------------------------------- image sets


@pytest.mark.parametrize(("name", "algorithm"), [("mnist", "sha256"), ("fashion_mnist", "md5")])
def test_idx_datasets_parse_real_format(registry, monkeypatch, tmp_path, name, algorithm) -> None:
    dataset = registry.dataset(name)
    arrays = _write_idx_set(tmp_path, np.random.default_rng(0))
    _pin(monkeypatch, dataset, tmp_path, algorithm)
    data = dataset.load(tmp_path)
    assert data.X.shape == (6, 1, 28, 28) and data.X.dtype == np.uint8
    np.testing.assert_array_equal(data.X[:, 0], arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(data.y, arrays["train-labels-idx1-ubyte.gz"])
    np.testing.assert_array_equal(data.y_test, [7, 0, 1])
    assert data.X_test.shape == (3, 1, 28, 28)


def _cifar_archive(path: Path, rng: np.random.Generator, per_batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    with tarfile.open(path, "w:gz") as tar:
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            lab = rng.integers(0, 10, per_batch).tolist()
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(lab)
            blob = pickle.dumps({b"data": data, b"labels": lab, b"batch_label": name.encode()})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return np.concatenate(images), np.concatenate(labels)


def test_cifar10_parses_python_batches(registry, monkeypatch, tmp_path) -> None:
    dataset = registry.dataset("cifar10")
    images, labels = _cifar_archive(tmp_path / "cifar-10-python.tar.gz", np.random.default_rng(1))
    _pin(monkeypatch, dataset, tmp_path)
    data = dataset.load(tmp_path)
    assert data.X.shape == (10, 3, 32, 32) and data.X.dtype == np.uint8
    np.testing.assert_array_equal(data.X, images[:10])
    np.testing.assert_array_equal(data.X_test, images[10:])
    np.testing.assert_array_equal(np.r_[data.y, data.y_test], labels)
    assert dataset.channel_stats == ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))


def test_cifar10_aug_is_augmented_and_deterministic(registry, monkeypatch, tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    images, _ = _cifar_archive(tmp_path / "a" / "cifar-10-python.tar.gz", np.random.default_rng(2))
    (tmp_path / "b" / "cifar-10-python.tar.gz").write_bytes((tmp_path / "a" / "cifar-10-python.tar.gz").read_bytes())
    loaded = []
    for folder in ("a", "b"):  # two cache folders: the second cannot reuse the first's cache
        dataset = registry.dataset("cifar10_aug")
        _pin(monkeypatch, dataset, tmp_path / folder)
        loaded.append(dataset.load(tmp_path / folder))
    assert loaded[0].X.shape == (10, 3, 32, 32) and loaded[0].X.dtype == np.uint8
    np.testing.assert_array_equal(loaded[0].X, loaded[1].X)
    np.testing.assert_array_equal(loaded[0].X_test, loaded[1].X_test)
    assert not np.array_equal(loaded[0].X, images[:10])


def test_flip_rotate_without_rotation_flips_about_half() -> None:
    images = np.random.default_rng(0).integers(0, 256, (200, 3, 8, 8), dtype=np.uint8)
    out = flip_rotate(images, np.random.default_rng(0), max_degrees=0.0)
    same = np.all(out == images, axis=(1, 2, 3))
    mirrored = np.all(out == images[..., ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert 70 < mirrored.sum() < 130


def test_flip_rotate_rotates_within_bounds() -> None:
    # a horizontal bar stays a bar tilted by at most 30 degrees: rows far
    # from the centre stay dark at the image's centre column
    image = np.zeros((1, 1, 33, 33), np.uint8)
    image[0, 0, 15:18, :] = 255
    out = flip_rotate(np.repeat(image, 50, 0), np.random.default_rng(3), max_degrees=30.0)
    assert np.all(out[:, 0, 16, 16] > 200)  # the centre does not move
    assert np.all(out[:, 0, :8, 16] < 30) and np.all(out[:, 0, 26:, 16] < 30)
    assert len({o.tobytes() for o in out}) > 40  # the angles differ


def test_imagenet10_reads_a_user_folder(registry, monkeypatch, tmp_path) -> None:
    from PIL import Image

    dataset = registry.dataset("imagenet10")
    wnids = sys.modules[type(dataset).__module__].WNIDS
    folder = tmp_path / "imagenet"
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        for wnid in wnids.values():
            (folder / split / wnid).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # landscape, not square
                Image.fromarray(pixels).save(folder / split / wnid / f"{wnid}_{i}.JPEG", format="PNG")
    monkeypatch.setenv("ODBENCH_DATA_DIR", str(tmp_path))
    data = dataset.load(tmp_path / "cache")
    assert data.X.shape == (20, 3, 224, 224) and data.X.dtype == np.uint8
    assert data.X_test.shape == (10, 3, 224, 224)
    np.testing.assert_array_equal(np.bincount(data.y), [2] * 10)
    assert data.class_names[5] == "French horn"
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # decoded once, then cached


def test_imagenet10_without_a_folder_says_what_to_do(registry, tmp_path) -> None:
    with pytest.raises(DataUnavailable, match="ODBENCH_IMAGENET_DIR"):
        registry.dataset("imagenet10").prepare(tmp_path)


# ------------------------------------------------------------- tabular sets


def _write_npz(root: Path, name: str, n: int = 20, d: int = 6) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    y = (np.arange(n) % 5 == 0).astype(int)
    np.savez(root / name, X=rng.standard_normal((n, d)), y=y)


@pytest.mark.parametrize(("name", "filename"), [
    ("thyroid", "38_thyroid.npz"), ("annthyroid", "2_annthyroid.npz"), ("adbench:cardio", "6_cardio.npz"),
])
def test_npz_datasets_parse(registry, monkeypatch, tmp_path, name, filename) -> None:
    dataset = registry.dataset(name)
    _write_npz(tmp_path, filename)
    _pin(monkeypatch, dataset, tmp_path)
    data = dataset.load(tmp_path)
    assert data.X.shape == (20, 6) and data.anomaly_classes == (1,)
    assert data.y.sum() == 4


def test_arrhythmia_parses_mat(registry, monkeypatch, tmp_path) -> None:
    dataset = registry.dataset("arrhythmia")
    X = np.random.default_rng(0).standard_normal((8, 274))
    savemat(tmp_path / "arrhythmia.mat", {"X": X, "y": np.array([[0], [1], [0], [0], [1], [0], [0], [0]])})
    _pin(monkeypatch, dataset, tmp_path)
    data = dataset.load(tmp_path)
    assert data.X.shape == (8, 274) and data.y.tolist() == [0, 1, 0, 0, 1, 0, 0, 0]
    np.testing.assert_allclose(data.X, X, rtol=1e-6)


def test_abalone_keeps_the_paper_rings_and_one_hot_sex(registry, monkeypatch, tmp_path) -> None:
    rows = ["M,0.455,0.365,0.095,0.514,0.2245,0.101,0.15,15", "F,0.53,0.42,0.135,0.677,0.2565,0.1415,0.21,9",
            "I,0.33,0.255,0.08,0.205,0.0895,0.0395,0.055,3", "M,0.44,0.365,0.125,0.516,0.2155,0.114,0.155,10",
            "F,0.6,0.5,0.2,1.2,0.5,0.3,0.4,21", "I,0.4,0.3,0.1,0.3,0.1,0.06,0.1,8"]
    (tmp_path / "abalone.data").write_text("\n".join(rows) + "\n")
    dataset = registry.dataset("abalone")
    _pin(monkeypatch, dataset, tmp_path)
    data = dataset.load(tmp_path)
    assert data.X.shape == (5, 10)  # the 15-ring row is dropped
    assert data.y.tolist() == [0, 1, 0, 1, 0]  # rings 9, 3, 10, 21, 8
    np.testing.assert_array_equal(data.X[:, :3], [[0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(data.X[0, 3:], [0.53, 0.42, 0.135, 0.677, 0.2565, 0.1415, 0.21], rtol=1e-6)


@pytest.mark.parametrize("first_column", ["id", ""])  # the rebuilt copy's header, UCI's empty one
def test_epileptic_csv_gives_sequences(registry, monkeypatch, tmp_path, first_column) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(-500, 500, (5, 178))
    with open(tmp_path / "data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([first_column, *(f"X{i}" for i in range(1, 179)), "y"])
        for i, (row, label) in enumerate(zip(values, [1, 2, 3, 4, 5])):
            writer.writerow([f"X{i}.V1.{i}", *row, label])
    dataset = registry.dataset("epileptic_seizure")
    _pin(monkeypatch, dataset, tmp_path)
    data = dataset.load(tmp_path)
    assert data.X.shape == (5, 178, 1)
    np.testing.assert_array_equal(data.X[:, :, 0], values)
    assert data.y.tolist() == [0, 1, 2, 3, 4] and data.anomaly_classes == (0,)


def test_epileptic_content_hash_ignores_row_order_and_ids_but_not_values(registry, monkeypatch, tmp_path) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(-500, 500, (6, 178))
    labels = [1, 2, 3, 4, 5, 1]

    def write(order, ids, bump=0):
        with open(tmp_path / "data.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", *(f"X{i}" for i in range(1, 179)), "y"])
            for i in order:
                writer.writerow([ids[i], *(values[i] + bump * (i == 0)), labels[i]])

    dataset = registry.dataset("epileptic_seizure")
    module = sys.modules[type(dataset).__module__]
    write(range(6), [f"a{i}" for i in range(6)])
    digest = module.content_digest(np.column_stack([values, labels]).astype("<i8"))
    remote = RemoteFile(url="test://not-downloaded", filename="data.csv", content_sha256=digest)
    monkeypatch.setattr(dataset, "files", (remote,))
    assert dataset.load(tmp_path).X.shape == (6, 178, 1)
    write([5, 3, 1, 0, 2, 4], [f"other{i}" for i in range(6)])  # another faithful copy
    assert dataset.load(tmp_path).X.shape == (6, 178, 1)
    write(range(6), [f"a{i}" for i in range(6)], bump=1)  # one value changed
    with pytest.raises(ChecksumError, match=f"content sha256 is .*, expected {digest}"):
        dataset.load(tmp_path)


def test_adbench_names_resolve_and_the_table_is_complete(registry) -> None:
    assert registry.dataset("adbench:cardio").files == registry.dataset("adbench:6_cardio").files
    assert registry.dataset("adbench:Cardio").files[0].filename == "6_cardio.npz"
    with pytest.raises(ValueError, match="unknown ADBench dataset 'nope'; known .*cardio"):
        registry.dataset("adbench:nope")
    module = sys.modules[type(registry.dataset("adbench:cardio")).__module__]
    table = module.catalogue()
    assert len(table) == 43
    assert all(len(row["sha256"]) == 64 for row in table.values())
    if REFERENCE.is_file():  # the shipped copy is the reference table
        assert (Path(module.__file__).with_name("adbench_classical_files.csv")).read_bytes() == REFERENCE.read_bytes()


# ------------------------------------------------------------------- audio


def _write_clip(path: Path, rng: np.random.Generator, n: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, 16000, (rng.standard_normal(n) * 3000).astype(np.int16))


def _speech_tarball(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    rng = np.random.default_rng(0)
    for word in ("marvin", "yes"):
        for i in range(3):
            _write_clip(source / word / f"abc{i}_nohash_0.wav", rng, 16000 if i else 12000)  # one short clip
    (source / "testing_list.txt").write_text("marvin/abc2_nohash_0.wav\nyes/abc0_nohash_0.wav\n")
    (source / "validation_list.txt").write_text("yes/abc1_nohash_0.wav\n")
    archive = tmp_path / "cache" / "speech_commands_v0.01.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:  # the official tarball has no top folder
        for path in sorted(source.rglob("*")):
            tar.add(path, arcname=f"./{path.relative_to(source)}", recursive=False)
    return archive


def test_speech_commands_extracts_featurizes_and_caches(registry, monkeypatch, tmp_path) -> None:
    archive = _speech_tarball(tmp_path)
    dataset = registry.dataset("speech_commands")
    _pin(monkeypatch, dataset, archive.parent)
    dataset.prepare(archive.parent)
    data = dataset.load(archive.parent)
    assert data.X.shape == (4, 98, 32) and data.X_test.shape == (2, 98, 32)
    assert data.X.dtype == np.float32 and np.all(np.isfinite(data.X))
    marvin, yes = dataset.classes.index("marvin"), dataset.classes.index("yes")
    assert sorted(data.y_test.tolist()) == sorted([marvin, yes])
    assert len(list(archive.parent.glob("features_*.npz"))) == 1
    again = dataset.load(archive.parent)
    np.testing.assert_array_equal(again.X, data.X)


def test_speech_commands_refuses_a_corrupt_tarball_before_extracting(registry, monkeypatch, tmp_path) -> None:
    archive = _speech_tarball(tmp_path)
    dataset = registry.dataset("speech_commands")
    _pin(monkeypatch, dataset, archive.parent)
    _corrupt(archive)
    with pytest.raises(ChecksumError):
        dataset.prepare(archive.parent)
    assert not (archive.parent / "speech_commands_v0.01").exists()


def test_mfcc_shape_and_a_tone_lands_in_its_filter() -> None:
    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    logfbank = mfcc(tone[None], MfccConfig(kind="logfbank", preemphasis=0.0))
    assert logfbank.shape == (1, 98, 32)
    bank = mel_filterbank(MfccConfig())
    freqs = np.linspace(0, 8000, bank.shape[1])
    assert np.all(logfbank[0].argmax(axis=1) == bank[:, np.argmin(np.abs(freqs - 1000))].argmax())
    coefficients = mfcc(tone[None])
    # MFCC = orthonormal DCT of the (pre-emphasized) log filterbank: norms agree
    emphasized = mfcc(tone[None], MfccConfig(kind="logfbank"))
    np.testing.assert_allclose(np.linalg.norm(coefficients, axis=-1), np.linalg.norm(emphasized, axis=-1), rtol=1e-4)


# ------------------------------------------------------- checksum failures


def _writers() -> dict[str, object]:
    return {
        "mnist": lambda root: _write_idx_set(root, np.random.default_rng(0)),
        "cifar10": lambda root: _cifar_archive(root / "cifar-10-python.tar.gz", np.random.default_rng(0)),
        "arrhythmia": lambda root: savemat(root / "arrhythmia.mat", {"X": np.ones((3, 274)), "y": np.zeros((3, 1))}),
        "annthyroid": lambda root: _write_npz(root, "2_annthyroid.npz"),
        "abalone": lambda root: (root / "abalone.data").write_text("M,1,1,1,1,1,1,1,9\n"),
        "epileptic_seizure": lambda root: (root / "data.csv").write_text("id," + ",".join(f"X{i}" for i in range(1, 179))
                                                                         + ",y\na," + ",".join(["1"] * 178) + ",1\n"),
    }


@pytest.mark.parametrize("name", list(_writers()))
def test_corrupted_file_is_refused_naming_file_and_hashes(registry, monkeypatch, tmp_path, name) -> None:
    dataset = registry.dataset(name)
    tmp_path.mkdir(exist_ok=True)
    _writers()[name](tmp_path)
    _pin(monkeypatch, dataset, tmp_path)
    victim = tmp_path / dataset.files[0].filename
    expected = dataset.files[0].sha256
    _corrupt(victim)
    with pytest.raises(ChecksumError) as err:
        dataset.load(tmp_path)
    message = str(err.value)
    assert str(victim) in message and expected in message and file_hash(victim) in message
    assert "delete the file" in message


def test_real_pinned_hash_rejects_a_stranger(registry, tmp_path) -> None:
    # no pin override: the shipped hash itself must refuse a synthetic file
    _write_npz(tmp_path, "2_annthyroid.npz")
    with pytest.raises(ChecksumError, match="e738f7c58a8740d2c4aac4c71ff49ce5e1d1aa16f44178135fc9c09df05fad1b"):
        registry.dataset("annthyroid").load(tmp_path)


# ---------------------------------------------------------------- real data


def _real(registry, name: str) -> LabeledData:
    from odbench.core.download import dataset_root

    dataset = registry.dataset(name)
    root = dataset_root(dataset.name)
    dataset.prepare(root)
    return dataset.load(root)


def test_real_mnist_has_the_official_counts(registry, shared_data) -> None:
    data = _real(registry, "mnist")
    assert data.X.shape == (60000, 1, 28, 28) and data.X_test.shape == (10000, 1, 28, 28)
    # per-digit counts as published (e.g. 5,923 zeros / 980 test zeros; 6,742 / 1,135 ones)
    assert np.bincount(data.y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(data.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(("name", "shape", "anomalies"), [
    ("abalone", (1920, 10), 29), ("arrhythmia", (452, 274), 66), ("thyroid", (3772, 6), 93),
    ("annthyroid", (7200, 6), 534), ("epileptic_seizure", (11500, 178, 1), 2300),
])
def test_real_tabular_shapes_and_anomaly_counts(registry, shared_data, name, shape, anomalies) -> None:
    data = _real(registry, name)
    assert data.X.shape == shape
    assert int(np.isin(data.y, data.anomaly_classes).sum()) == anomalies
    assert np.all(np.isfinite(data.X))


def test_real_adbench_files_match_the_pinned_table(registry, shared_data) -> None:
    module = sys.modules[type(registry.dataset("adbench:cardio")).__module__]
    table = module.catalogue()
    present = sorted(p.stem for p in (shared_data / "adbench").glob("*.npz"))
    assert present
    for stem in present:
        row = table[stem]
        data = _real(registry, f"adbench:{stem}")
        assert data.X.shape == (int(row["n_samples"]), int(row["n_features"]))
        assert int(data.y.sum()) == int(row["n_anomalies"])


def test_real_speech_commands_subset_featurizes(registry, shared_data) -> None:
    data = _real(registry, "speech_commands")
    assert len(data.X) + len(data.X_test) == 300
    assert data.X.shape[1:] == (98, 32) and data.X_test.shape[1:] == (98, 32)
    assert np.all(np.isfinite(data.X))
    assert np.bincount(np.r_[data.y, data.y_test], minlength=30).tolist() == [10] * 30


def test_same_file_names_in_one_data_dir_are_told_apart_by_hash(registry, monkeypatch, tmp_path) -> None:
    # MNIST and Fashion-MNIST share file names; a data directory may hold both
    mnist_arrays = _write_idx_set(tmp_path / "data" / "mnist", np.random.default_rng(1))
    fashion_arrays = _write_idx_set(tmp_path / "data" / "fashion", np.random.default_rng(2))
    mnist, fashion = registry.dataset("mnist"), registry.dataset("fashion_mnist")
    _pin(monkeypatch, mnist, tmp_path / "data" / "mnist")
    _pin(monkeypatch, fashion, tmp_path / "data" / "fashion", "md5")
    monkeypatch.setenv("ODBENCH_DATA_DIR", str(tmp_path / "data"))
    np.testing.assert_array_equal(mnist.load(tmp_path / "c1").X[:, 0], mnist_arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(fashion.load(tmp_path / "c2").X[:, 0], fashion_arrays["train-images-idx3-ubyte.gz"])
