"""Generic sources (csv:, parquet:, npz:, folder:) on small files, good and bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from odbench.api import DataError
from odbench.engine.registry import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def _load(registry: Registry, name: str, tmp_path: Path):
    dataset = registry.dataset(name)
    dataset.prepare(tmp_path / "cache")
    return dataset, dataset.load(tmp_path / "cache")


def _table(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "label": np.r_[np.zeros(n - 5), np.ones(5)].astype(int)})


def test_csv_anomaly_flag_means_contamination(registry, tmp_path) -> None:
    path = tmp_path / "d.csv"
    _table().to_csv(path, index=False)
    dataset, data = _load(registry, f"csv:{path}", tmp_path)
    assert data.X.shape == (40, 2) and data.anomaly_classes == (1,)
    assert dataset.default_protocol == "contamination"
    assert len(dataset.fingerprint()) == 64


def test_csv_classes_mean_one_vs_all_and_label_option(registry, tmp_path) -> None:
    frame = _table().rename(columns={"label": "kind"})
    frame["kind"] = np.where(frame["a"] > 0, "cat", "dog")
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    dataset, data = _load(registry, f"csv:{path}?label=kind", tmp_path)
    assert data.class_names == ("cat", "dog") and dataset.default_protocol == "one_vs_all"


def test_parquet(registry, tmp_path) -> None:
    path = tmp_path / "d.parquet"
    _table().to_parquet(path)
    _, data = _load(registry, f"parquet:{path}", tmp_path)
    assert data.X.shape == (40, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(label=0), "at least two classes"),
        (lambda f: f.assign(a=f["a"].where(f.index != 3)), "NaN or inf values in 1 rows"),
        (lambda f: f.assign(colour="red"), "non-numeric feature columns colour"),
        (lambda f: f.rename(columns={"label": "tag"}), "no label column"),
        (lambda f: f.iloc[:0], "no rows"),
    ],
)
def test_csv_bad_input_says_what_is_wrong(registry, tmp_path, change, message) -> None:
    path = tmp_path / "d.csv"
    change(_table()).to_csv(path, index=False)
    with pytest.raises(DataError, match=message):
        _load(registry, f"csv:{path}", tmp_path)


def test_csv_onehot_encoding_on_request(registry, tmp_path) -> None:
    path = tmp_path / "d.csv"
    _table().assign(colour=["red", "blue"] * 20).to_csv(path, index=False)
    _, data = _load(registry, f"csv:{path}?encode=onehot", tmp_path)
    assert data.X.shape == (40, 4)


def test_missing_file(registry, tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        _load(registry, f"csv:{tmp_path / 'nope.csv'}", tmp_path)


def test_npz_layouts_and_errors(registry, tmp_path) -> None:
    X, y = np.random.default_rng(0).normal(size=(30, 4)), np.r_[np.zeros(25), np.ones(5)]
    np.savez(tmp_path / "a.npz", X=X, y=y)
    _, data = _load(registry, f"npz:{tmp_path / 'a.npz'}", tmp_path)
    assert data.X.shape == (30, 4) and data.anomaly_classes == (1,)
    np.savez(tmp_path / "b.npz", X_train=X, y_train=y, X_test=X[:10], y_test=y[:10])
    _, data = _load(registry, f"npz:{tmp_path / 'b.npz'}", tmp_path)
    assert data.X_test.shape == (10, 4)
    np.savez(tmp_path / "c.npz", X=X, y=y[:20])
    with pytest.raises(DataError, match="30 rows but y has 20"):
        _load(registry, f"npz:{tmp_path / 'c.npz'}", tmp_path)
    np.savez(tmp_path / "d.npz", X_train=X, y_train=y, X_test=X[:10, :3], y_test=y[:10])
    with pytest.raises(DataError, match="X_test rows have shape"):
        _load(registry, f"npz:{tmp_path / 'd.npz'}", tmp_path)
    np.savez(tmp_path / "e.npz", features=X)
    with pytest.raises(DataError, match="need X and y"):
        _load(registry, f"npz:{tmp_path / 'e.npz'}", tmp_path)


def _write_images(root: Path, classes: dict[str, int], size=(8, 8), mode: str = "RGB") -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (*size, 3) if mode == "RGB" else size
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / name / f"{i}.png")


def test_folder_with_train_and_test(registry, tmp_path) -> None:
    _write_images(tmp_path / "imgs" / "train", {"cat": 4, "dog": 3})
    _write_images(tmp_path / "imgs" / "test", {"cat": 2, "dog": 2})
    dataset, data = _load(registry, f"folder:{tmp_path / 'imgs'}", tmp_path)
    assert data.X.shape == (7, 3, 8, 8) and data.X.dtype == np.uint8
    assert data.X_test.shape == (4, 3, 8, 8) and data.class_names == ("cat", "dog")
    assert list((tmp_path / "cache").glob("folder-*.npz"))  # decoded once, cached
    _, again = _load(registry, f"folder:{tmp_path / 'imgs'}", tmp_path)
    np.testing.assert_array_equal(again.X, data.X)


def test_folder_errors(registry, tmp_path) -> None:
    _write_images(tmp_path / "one", {"cat": 3})
    with pytest.raises(DataError, match="at least two class folders"):
        _load(registry, f"folder:{tmp_path / 'one'}", tmp_path)
    _write_images(tmp_path / "sizes", {"cat": 2})
    _write_images(tmp_path / "sizes", {"dog": 2}, size=(9, 9))
    with pytest.raises(DataError, match="different sizes"):
        _load(registry, f"folder:{tmp_path / 'sizes'}", tmp_path)
    _write_images(tmp_path / "empty", {"cat": 2})
    (tmp_path / "empty" / "dog").mkdir()
    with pytest.raises(DataError, match="has no images"):
        _load(registry, f"folder:{tmp_path / 'empty'}", tmp_path)
    _write_images(tmp_path / "grey", {"cat": 2, "dog": 2}, mode="L")
    _, data = _load(registry, f"folder:{tmp_path / 'grey'}", tmp_path)
    assert data.X.shape == (4, 1, 8, 8)
