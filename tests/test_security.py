"""No unverified unpickling, and no trusted copy posing as the published data.

Drills from the issue: a forged ``cifar-10-python.tar.gz`` whose pickle would
create a marker file must be refused, with and without
``ODBENCH_TRUST_LOCAL_FILES=1``; a thyroid-like file with flipped labels,
used under that variable, must get a job key of its own.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from odbench.cli import main
from odbench.core import download
from odbench.core.contracts import DataError
from odbench.core.download import ChecksumError, file_hash
from odbench.data.formats import UnsafePickle, load_plain_pickle
from odbench.engine.plan import expand
from odbench.engine.registry import Registry
from odbench.engine.store import Store


class _Marker:
    """Pickles as ``open(path, "w")``: unpickling it creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _Reduce:
    """Pickles as ``function(*args)`` with ``state`` applied afterwards."""

    def __init__(self, function, args, state=None) -> None:
        self.value = (function, args) if state is None else (function, args, state)

    def __reduce__(self):
        return self.value


def _forged_cifar(path: Path, marker: Path) -> bytes:
    """A cifar-10-python.tar.gz whose first batch creates ``marker`` when unpickled."""
    forged = pickle.dumps({b"data": _Marker(marker), b"labels": [0]}, protocol=2)
    with tarfile.open(path, "w:gz") as tar:
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(forged)
            tar.addfile(info, io.BytesIO(forged))
    return forged


def test_the_forgery_is_potent_under_plain_pickle(tmp_path: Path) -> None:
    """The drill's archive really runs code through pickle.loads, so its refusal below means something."""
    marker = tmp_path / "pwned"
    blob = _forged_cifar(tmp_path / "cifar-10-python.tar.gz", marker)
    pickle.loads(blob, encoding="bytes")
    assert marker.exists()


@pytest.mark.parametrize("trust", [False, True], ids=["verified", "trusted"])
def test_forged_cifar_archive_runs_no_code(
    trust: bool, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data, marker = tmp_path / "data", tmp_path / "pwned"
    data.mkdir()
    _forged_cifar(data / "cifar-10-python.tar.gz", marker)
    monkeypatch.setenv("ODBENCH_DATA_DIR", str(data))
    if trust:
        monkeypatch.setenv("ODBENCH_TRUST_LOCAL_FILES", "1")
    dataset = registry.dataset("cifar10")
    with pytest.raises(
        UnsafePickle if trust else ChecksumError, match="refusing to load io.open" if trust else "sha256"
    ):
        dataset.load(tmp_path / "cache")
    assert not marker.exists()

    # the same through the command line: no traceback, no marker, nothing stored as a result
    results = tmp_path / "results"
    argv = ["run", "--methods", "knn", "--datasets", "cifar10", "--classes", "airplane", "--results", str(results),
            "--no-mlflow", "--device", "cpu"]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err
    assert not marker.exists() and "Traceback" not in err
    if trust:
        assert code == 1, "the job fails with the refusal"
        (record,) = Store(results).records()
        assert record["status"] == "failed" and "refusing to load io.open" in record["error"]["message"]
        assert "unverified because ODBENCH_TRUST_LOCAL_FILES=1" in err
    else:
        assert code == 2 and not results.exists()
        (line,) = err.strip().splitlines()
        assert line.index("delete the file") < line.index("ODBENCH_TRUST_LOCAL_FILES=1"), "the bypass comes last"
        assert "stored under its own hash" in line, "and with its consequence"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (np.array([1, "a"], dtype=object), "kind 'O'"),
        (np.zeros(2, dtype=[("a", "i4")]), "kind 'V'"),
        # a plain dtype whose forged state flags it as holding object pointers
        (_Reduce(np.dtype, ("u1", False, True), (3, "|", None, None, None, -1, -1, 63)), "dtype state"),
        (_Reduce(np.ndarray, ((2,), np.dtype("u1"))), None),  # allowed: a plain array
        (_Reduce(getattr, (b"x", "upper")), "refusing to load .*getattr"),
        (_Reduce(dict, ()), "refusing to load .*dict"),
    ],
)
def test_restricted_unpickler_admits_plain_arrays_only(payload, fragment: str | None) -> None:
    for protocol in (2, 5):
        blob = pickle.dumps({b"data": payload}, protocol=protocol)
        if fragment is None:
            assert load_plain_pickle(blob, "batch")[b"data"].shape == (2,)
        else:
            with pytest.raises(UnsafePickle, match=fragment):
                load_plain_pickle(blob, "batch")


def test_plain_batches_of_every_protocol_load() -> None:
    batch = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [3, 4], b"batch_label": b"x",
             b"filenames": [b"a.png", b"b.png"], b"big_endian": np.arange(3.0).astype(">f8")}  # fmt: skip
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        loaded = load_plain_pickle(pickle.dumps(batch, protocol=protocol), "batch")
        assert loaded.keys() == batch.keys()
        for key, value in batch.items():
            np.testing.assert_array_equal(loaded[key], value)
    for broken in (pickle.dumps(batch)[:-9], b"\x80\x05K"):  # truncated: one line naming the batch
        with pytest.raises(DataError, match="^batch: .*delete"):
            load_plain_pickle(broken, "batch")


def test_scores_files_are_never_unpickled(tmp_path: Path) -> None:
    """The store reads .npz with allow_pickle=False: a forged object array is quarantined, not run."""
    warned: list[str] = []
    store = Store(tmp_path, warn=warned.append)
    key, marker = "a" * 64, tmp_path / "pwned"
    store.write({"key": key, "status": "ok"}, np.zeros(2), np.array([0, 1]))
    np.savez(store.scores_path(key), scores=np.array([_Marker(marker)], dtype=object))
    assert not store.done(key) and not marker.exists()
    assert "unreadable" in warned[0]


# ------------------------------------------------------------- data identity in the key

_PLUGIN = """
from odbench.api import Dataset, RemoteFile
from odbench.data.formats import read_outlier_npz


class ThyroidLike(Dataset):
    name = "thyroid_like"
    classes = ("normal", "anomaly")
    default_protocol = "contamination"
    files = (RemoteFile(url="test://not-downloaded", filename="thyroid_like.npz", sha256="{sha256}"),)

    def load(self, root):
        return read_outlier_npz(self.path(root, "thyroid_like.npz"))
"""


def _thyroid_like(path: Path, flipped: int = 0) -> Path:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (300, 6)), rng.normal(4, 1, (20, 6))])
    y = np.r_[np.zeros(300), np.ones(20)].astype(np.int64)
    y[:flipped] = 1 - y[:flipped]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, X=X, y=y)
    return path


def _keys(registry: Registry, dataset: str) -> set[str]:
    return {job.key(registry) for job in expand(registry, ["knn"], [dataset]).jobs}


def test_trusted_copy_with_flipped_labels_gets_its_own_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    genuine = _thyroid_like(tmp_path / "genuine" / "thyroid_like.npz")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "thyroid_like.py").write_text(_PLUGIN.format(sha256=file_hash(genuine)))
    registry = Registry([plugins])
    published = _keys(registry, "thyroid_like")  # no copy yet: what the verified download would be keyed as

    monkeypatch.setenv("ODBENCH_DATA_DIR", str(genuine.parent))
    assert _keys(registry, "thyroid_like") == published
    monkeypatch.setenv("ODBENCH_TRUST_LOCAL_FILES", "1")
    assert _keys(registry, "thyroid_like") == published, "trusting changes nothing for the published file"

    flipped = _thyroid_like(tmp_path / "flipped" / "thyroid_like.npz", flipped=200)
    other = _thyroid_like(tmp_path / "other" / "thyroid_like.npz", flipped=199)
    monkeypatch.setenv("ODBENCH_DATA_DIR", str(flipped.parent))
    (flipped_key,) = _keys(registry, "thyroid_like")
    assert flipped_key not in published
    monkeypatch.setenv("ODBENCH_DATA_DIR", str(other.parent))
    assert _keys(registry, "thyroid_like") != {flipped_key}, "each trusted copy by its own hash"
    monkeypatch.setenv("ODBENCH_DATA_DIR", f"{flipped.parent}:{genuine.parent}")
    assert _keys(registry, "thyroid_like") == published, "a verified copy is preferred over a trusted one"

    # end to end: the flipped copy's results are stored beside the genuine one's, never in its place
    results = tmp_path / "results"
    argv = ["run", "--plugin-dir", str(plugins), "--methods", "knn", "--datasets", "thyroid_like",
            "--results", str(results), "--no-mlflow", "--device", "cpu"]  # fmt: skip
    monkeypatch.delenv("ODBENCH_TRUST_LOCAL_FILES")
    monkeypatch.delenv("ODBENCH_DATA_DIR")
    assert main([*argv, "--data-dir", str(genuine.parent)]) == 0
    monkeypatch.setenv("ODBENCH_TRUST_LOCAL_FILES", "1")
    monkeypatch.delenv("ODBENCH_DATA_DIR")  # --data-dir joins the environment's folders
    monkeypatch.setattr(download, "_warned", set())  # warned once per process: this is a fresh one
    capsys.readouterr()
    assert main([*argv, "--data-dir", str(flipped.parent)]) == 0
    err = capsys.readouterr().err
    assert "1 ok, 0 failed, 0 skipped, 0 already done" in err, "the genuine file's result is not reused"
    assert "unverified because ODBENCH_TRUST_LOCAL_FILES=1" in err
    records = Store(results).records()
    assert {r["key"] for r in records} == published | {flipped_key}
    assert len({r["metrics"]["auroc"] for r in records}) == 2


def test_real_thyroid_flipped_copy_is_keyed_apart(
    shared_data: Path, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    genuine = _keys(registry, "thyroid")
    copy = tmp_path / "flipped" / "38_thyroid.npz"
    copy.parent.mkdir()
    with np.load(shared_data / "adbench" / "38_thyroid.npz") as npz:
        y = npz["y"].copy()
        y[:200] = 1 - y[:200]
        np.savez(copy, X=npz["X"], y=y)
    monkeypatch.setenv("ODBENCH_DATA_DIR", str(copy.parent))
    with pytest.raises(ChecksumError):
        registry.dataset("thyroid").prepare(tmp_path / "cache")
    monkeypatch.setenv("ODBENCH_TRUST_LOCAL_FILES", "1")
    assert _keys(registry, "thyroid").isdisjoint(genuine)
    monkeypatch.setenv("ODBENCH_DATA_DIR", str(shared_data))
    assert _keys(registry, "thyroid") == genuine


def test_augmented_cifar_cache_is_not_shared_between_copies(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cifar10_aug caches its arrays beside the archive: a trusted copy's arrays never serve another copy."""
    from tests.test_datasets import _cifar_archive

    monkeypatch.setenv("ODBENCH_TRUST_LOCAL_FILES", "1")  # neither test archive has the pinned hash
    data, root = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    monkeypatch.setenv("ODBENCH_DATA_DIR", str(data))
    loaded = []
    for seed in (1, 2):
        _cifar_archive(data / "cifar-10-python.tar.gz", np.random.default_rng(seed))
        loaded.append(registry.dataset("cifar10_aug").load(root))
    assert not np.array_equal(loaded[0].X, loaded[1].X)
    assert len(list(root.glob("cifar10_aug_*.npz"))) == 2
