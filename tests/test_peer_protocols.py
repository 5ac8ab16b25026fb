"""Protocols and defaults that match the peers they name: PyOD's benchmark, ADBench's, GOAD's.

Each test pins one mechanism: ``unsupervised`` trains on PyOD's whole 60%,
``adbench`` resamples, splits and scales as ADBench's data generator,
``contamination`` gives normal-only validation back to training, the
classical plugins keep pyod's defaults, and classes resolve by name or id.
"""

from __future__ import annotations

import inspect
from importlib import import_module

import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from odbench.api import Dataset, FitContext, LabeledData
from odbench.core.contracts import DataInfo
from odbench.deep.training import selection_split
from odbench.engine.loading import load
from odbench.protocols import ProtocolError, get_protocol, resolve_class
from odbench.protocols.scaling import standardize


class Toy(Dataset):
    name = "toy"
    modality = "tabular"


def _tabular(n_normal: int, n_anomaly: int, d: int = 4, seed: int = 0) -> LabeledData:
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n_normal + n_anomaly, d)) * 3 + 5).astype(np.float32)
    y = np.r_[np.zeros(n_normal, int), np.ones(n_anomaly, int)]
    return LabeledData(X=X, y=y, class_names=("normal", "anomaly"), anomaly_classes=(1,))


# ------------------------------------------------------------ unsupervised (PyOD)


def test_unsupervised_trains_on_the_whole_60_percent_by_default() -> None:
    data = _tabular(900, 100)
    task = get_protocol("unsupervised").make_task(data, Toy(), None, seed=0)
    assert len(task.train) == 600 and len(task.test) == 400
    assert len(task.val) == 0  # no validation carve-out unless asked for
    assert task.train.y is None


def test_unsupervised_split_is_not_stratified_unless_asked() -> None:
    data = _tabular(900, 100)
    plain = {int(get_protocol("unsupervised").make_task(data, Toy(), None, seed=s).test.y.sum()) for s in range(8)}
    strat = {
        int(get_protocol("unsupervised").make_task(data, Toy(), None, seed=s, stratify=True).test.y.sum())
        for s in range(8)
    }
    assert strat == {40}  # exactly 40% of the anomalies
    assert len(plain) > 1  # a plain random split, as PyOD's train_test_split


def test_unsupervised_z_scores_on_the_training_part_like_pyods_standardizer() -> None:
    data = _tabular(900, 100)
    task = get_protocol("unsupervised").make_task(data, Toy(), None, seed=2)
    scaled = standardize(task)
    scaler = StandardScaler().fit(data.X[task.train.index])  # pyod.utils.utility.standardizer
    np.testing.assert_allclose(scaled.test.X, scaler.transform(data.X[task.test.index]), atol=1e-5)


def test_unsupervised_refuses_a_one_class_test_part() -> None:
    data = _tabular(200, 1)  # a lone anomaly lands in train for most seeds
    with pytest.raises(ProtocolError, match="stratify=true"):
        for seed in range(20):
            get_protocol("unsupervised").make_task(data, Toy(), None, seed=seed)


# ------------------------------------------------------------------ adbench


def test_adbench_resamples_small_sets_to_1000_with_replacement() -> None:
    data = _tabular(200, 14)
    task = get_protocol("adbench").make_task(data, Toy(), None, seed=0)
    assert len(task.train) + len(task.test) == 1000
    assert len(task.test) == 300  # 30%
    rows = np.r_[task.train.index, task.test.index]
    assert len(np.unique(rows)) < 214 < len(rows)  # drawn with replacement: rows repeat, some are missed
    assert set(task.train.index) & set(task.test.index)  # copies of a point on both sides
    assert task.notes["resampled"] == {"from": 214, "to": 1000, "replace": True}


def test_adbench_split_is_stratified_70_30() -> None:
    data = _tabular(1800, 200)
    for seed in range(5):  # a plain random split would miss 60 for some seed
        task = get_protocol("adbench").make_task(data, Toy(), None, seed=seed)
        assert len(task.test) == 600 and task.test.y.sum() == 60
    assert sorted(np.r_[task.train.index, task.test.index].tolist()) == list(range(2000))  # every row once
    assert "resampled" not in task.notes


def test_adbench_subsamples_large_sets_to_10000() -> None:
    data = _tabular(11000, 1000, d=2)
    task = get_protocol("adbench").make_task(data, Toy(), None, seed=0)
    rows = np.r_[task.train.index, task.test.index]
    assert len(rows) == len(np.unique(rows)) == 10000


def test_adbench_scales_min_max_on_the_training_part() -> None:
    data = _tabular(1800, 200)
    task = get_protocol("adbench").make_task(data, Toy(), None, seed=3)
    assert task.notes["scaling"] == "minmax"
    scaled = standardize(task)
    np.testing.assert_allclose(scaled.train.X.min(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(scaled.train.X.max(axis=0), 1, atol=1e-6)
    scaler = MinMaxScaler().fit(data.X[task.train.index])  # ADBench's scaler, fitted on X_train
    np.testing.assert_allclose(scaled.test.X, scaler.transform(data.X[task.test.index]), atol=1e-5)


def test_adbench_protocol_on_real_glass(registry, shared_data) -> None:
    dataset = registry.dataset("adbench:glass")
    data = load(dataset)
    assert len(data.y) == 214
    task = get_protocol("adbench").make_task(data, dataset, None, seed=0)
    assert len(task.train) == 700 and len(task.test) == 300


# -------------------------------------------------------- contamination (GOAD)


def test_contamination_trains_on_half_the_normals_when_validation_is_normal_only() -> None:
    data = _tabular(400, 50)
    task = get_protocol("contamination").make_task(data, Toy(), None, seed=0)
    assert len(task.train) == 200 and len(task.val) == 0
    assert selection_split(task, FitContext(seed=0)) == (None, "last")


def test_contamination_tuning_keeps_a_validation_split_with_both_classes() -> None:
    data = _tabular(400, 50)
    task = get_protocol("contamination").make_task(data, Toy(), None, seed=0, val_anomaly_fraction=0.2)
    split, label = selection_split(task, FitContext(seed=0))
    assert label == "val" and set(split.y.tolist()) == {0, 1}
    assert len(task.train) == 160  # 20% of the training half went to validation


def test_contamination_edgeml_trains_on_every_normal_outside_test() -> None:
    data = _tabular(400, 50)
    task = get_protocol("contamination_edgeml").make_task(data, Toy(), None, seed=0)
    assert len(task.train) == 350 and len(task.val) == 0


# ------------------------------------------------------- classical defaults


_PYOD = {
    "ocsvm": ("pyod.models.ocsvm", "OCSVM"),
    "iforest": ("pyod.models.iforest", "IForest"),
    "lof": ("pyod.models.lof", "LOF"),
    "knn": ("pyod.models.knn", "KNN"),
}


@pytest.mark.parametrize("name", sorted(_PYOD))
def test_classical_defaults_are_pyods(registry, name: str) -> None:
    module, class_name = _PYOD[name]
    pyod_class = getattr(import_module(module), class_name)
    pyod_defaults = {k: p.default for k, p in inspect.signature(pyod_class.__init__).parameters.items()}
    cls = registry.method(name)
    params = cls.default_params(DataInfo(dataset="toy", modality="tabular", shape=(4,), n_train=100))
    assert params, f"{name} states its defaults"
    for key, value in params.items():
        assert pyod_defaults[key] == value, f"{name}.{key}: ours {value!r}, pyod's {pyod_defaults[key]!r}"


# --------------------------------------------------------- class names or ids


def test_resolve_class_accepts_names_and_ids() -> None:
    names = ("T-shirt", "Trouser", "Pullover")
    assert resolve_class("Trouser", names) == "Trouser"
    assert resolve_class("1", names) == "Trouser"
    assert resolve_class(2, names) == "Pullover"
    with pytest.raises(ProtocolError, match=r"unknown class '3' for dataset 'fm'; known: .* \(or an id 0-2\)"):
        resolve_class("3", names, "fm")


def test_resolve_class_names_win_and_numeric_names_take_no_ids() -> None:
    assert resolve_class("1", ("0", "1", "2")) == "1"
    assert resolve_class("7", ("3", "7")) == "7"
    with pytest.raises(ProtocolError, match="unknown class '1'"):
        resolve_class("1", ("3", "7"))  # not "the second folder"


def test_protocols_take_class_ids() -> None:
    rng = np.random.default_rng(0)
    data = LabeledData(X=rng.standard_normal((300, 3)), y=np.arange(300) % 3, class_names=("cat", "dog", "cow"))
    task = get_protocol("one_vs_all").make_task(data, Toy(), "1", seed=0)
    assert task.normal_class == "dog"
    assert np.all(data.y[task.train.index] == 1)
