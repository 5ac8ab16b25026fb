"""Protocols: no test row reaches train/validation; one split per seed for every method; balance as specified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from odbench.api import Dataset, LabeledData
from odbench.core.seeding import derive_seed
from odbench.engine.loading import load
from odbench.engine.plan import expand
from odbench.engine.registry import Registry
from odbench.engine.store import Store
from odbench.engine.suite import run_suite
from odbench.protocols import get_protocol


class _WithTestSet(Dataset):
    """Three Gaussian classes with an official test set and a close-negative generator."""

    name = "three_blobs"
    classes = ("a", "b", "c")

    def load(self, root: Path) -> LabeledData:
        rng = np.random.default_rng(0)
        y, y_test = np.repeat([0, 1, 2], 60), np.repeat([0, 1, 2], 20)
        X = rng.standard_normal((len(y), 4)) + 3 * y[:, None]
        X_test = rng.standard_normal((len(y_test), 4)) + 3 * y_test[:, None]
        return LabeledData(X.astype(np.float32), y, self.classes, X_test.astype(np.float32), y_test)

    def close_negatives(self, X_normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return X_normal + 0.5


def _disjoint(*indices: np.ndarray) -> bool:
    joined = np.concatenate(indices)
    return len(np.unique(joined)) == len(joined)


@pytest.mark.parametrize("normal_class", ["0", "7"])
def test_one_vs_all_without_official_test_set(registry: Registry, normal_class: str) -> None:
    dataset = registry.dataset("digits")
    data = load(dataset)
    task = get_protocol("one_vs_all").make_task(data, dataset, normal_class, seed=5)
    train, val, test = task.train, task.val, task.test
    # all three cut from the same arrays: no row may appear twice
    assert _disjoint(train.index, val.index, test.index)
    c = data.class_names.index(normal_class)
    assert np.all(data.y[train.index] == c) and np.all(train.y == 0)
    # validation: as many anomalies (other classes, from the pool) as held-out normals
    assert np.sum(val.y == 0) == np.sum(val.y == 1) > 0
    assert np.all(data.y[val.index[val.y == 0]] == c) and np.all(data.y[val.index[val.y == 1]] != c)
    np.testing.assert_array_equal(test.y, (data.y[test.index] != c).astype(int))
    # the test cut is stratified: about 20% of each class
    for k in range(10):
        n_k = np.sum(data.y == k)
        assert np.sum(data.y[test.index] == k) == round(0.2 * n_k)


def test_one_vs_all_with_official_test_set() -> None:
    dataset = _WithTestSet()
    data = dataset.load(Path("."))
    task = get_protocol("one_vs_all").make_task(data, dataset, "b", seed=1)
    assert _disjoint(task.train.index, task.val.index), "train and validation come from the pool"
    np.testing.assert_array_equal(task.test.index, np.arange(len(data.X_test)))
    np.testing.assert_array_equal(task.test.X, data.X_test)
    assert np.sum(task.val.y == 0) == np.sum(task.val.y == 1)


def test_contamination_keeps_every_anomaly_in_test(registry: Registry) -> None:
    dataset = registry.dataset("sine2d")
    data = load(dataset)
    task = get_protocol("contamination").make_task(data, dataset, None, seed=3)
    assert _disjoint(task.train.index, task.val.index, task.test.index)
    anomalies = np.flatnonzero(data.y == 1)
    assert set(anomalies) <= set(task.test.index)
    assert np.all(data.y[task.train.index] == 0) and np.all(data.y[task.val.index] == 0)
    assert np.all(task.val.y == 0), "validation holds no anomaly: all of them stay in test"
    n_normal = np.sum(data.y == 0)
    assert np.sum(task.test.y == 0) == n_normal - n_normal // 2, "the other half of the normals is tested"
    assert len(task.train) + len(task.val) == n_normal // 2


def test_ocln_limited_negatives_and_close_negatives() -> None:
    dataset = _WithTestSet()
    data = dataset.load(Path("."))
    task = get_protocol("ocln").make_task(data, dataset, "a", seed=2, negatives_fraction=0.5, val_fraction=0.25)
    val_close = task.val.close
    assert val_close is not None
    assert _disjoint(task.train.index, task.val.index[~val_close])
    assert task.info.has_negatives
    # half of the 120 pool negatives are kept; validation takes a quarter of each class
    assert np.sum(task.train.y == 1) + np.sum(task.val.y[~val_close] == 1) == 60
    assert np.sum(task.val.y == 0) == 15 and np.sum(task.val.y[~val_close] == 1) == 15
    # test: the official test rows plus one close negative per test positive
    n_close = int(np.sum(task.test.close))
    assert n_close == 20 and np.all(task.test.y[task.test.close] == 1)
    np.testing.assert_array_equal(task.test.X[~task.test.close], data.X_test[task.test.index[~task.test.close]])


def test_ocln_validation_has_close_negatives_made_from_validation_positives_only() -> None:
    """Honest OCLN selection must see close negatives, and none may come from a test row."""
    dataset = _WithTestSet()
    data = dataset.load(Path("."))
    task = get_protocol("ocln").make_task(data, dataset, "a", seed=2, val_fraction=0.25)
    close = task.val.close
    assert close is not None and close.sum() == 15 == task.notes["val_close_negatives"]
    assert np.all(task.val.y[close] == 1), "a close negative is a negative"
    sources = task.val.index[close]
    positives = task.val.index[~close][task.val.y[~close] == 0]
    assert set(sources) == set(positives), "made from the validation positives, each once"
    # each is made from the pool row it names (the generator adds 0.5), never from a row of the official test set
    np.testing.assert_allclose(task.val.X[close], data.X[sources] + 0.5)
    assert not set(map(bytes, task.val.X[close])) & set(map(bytes, (data.X_test + 0.5).astype(np.float32)))
    plain = get_protocol("ocln").make_task(data, dataset, "a", seed=2, val_fraction=0.25, val_close_negatives=False)
    assert plain.val.close is None and len(plain.val) == len(task.val) - 15


def test_same_seed_same_split_for_every_method(registry: Registry, tmp_path: Path) -> None:
    plan = expand(
        registry, ["knn", "lof"], ["digits"], classes=["2", "5"], repetitions=2, params={"knn": {"n_neighbors": 3}}
    )
    store = Store(tmp_path)
    summary = run_suite(plan, registry, store)
    assert summary.ok == 8
    splits: dict[tuple, dict[str, list[np.ndarray]]] = {}
    for record in store.records("ok"):
        arrays = store.scores(record["key"])
        assert record["seed"] == derive_seed(0, "digits", "one_vs_all", record["normal_class"], record["repetition"])
        splits.setdefault((record["normal_class"], record["repetition"]), {}).setdefault(record["method"], arrays)
    for (cls, rep), by_method in splits.items():
        knn, lof = by_method["knn"], by_method["lof"]
        for part in ("train_index", "val_index", "test_index", "labels"):
            np.testing.assert_array_equal(knn[part], lof[part], err_msg=f"{part} differs for class {cls} rep {rep}")
    # a different repetition is a different split
    assert not np.array_equal(splits[("2", 0)]["knn"]["val_index"], splits[("2", 1)]["knn"]["val_index"])


def test_the_split_and_the_fit_draw_from_independent_streams_of_the_job_seed(registry: Registry, tmp_path: Path) -> None:
    """The split is cut by one stream of the job's seed, the method seeded by another (not the same number)."""
    from odbench.core.seeding import split_and_fit_seeds
    from odbench.engine.execute import job_task

    plan = expand(registry, ["iforest"], ["digits"], classes=["2"])
    summary = run_suite(plan, registry, Store(tmp_path))
    assert summary.ok == 1
    (record,) = Store(tmp_path).records("ok")
    split_seed, fit_seed = split_and_fit_seeds(record["seed"])
    assert split_seed != fit_seed and record["fit_seed"] == fit_seed
    task, _ = job_task(registry, plan.jobs[0], plan.cache)
    dataset = registry.dataset("digits")
    direct = get_protocol("one_vs_all").make_task(load(dataset), dataset, "2", split_seed)
    np.testing.assert_array_equal(task.train.index, direct.train.index)
    np.testing.assert_array_equal(Store(tmp_path).scores(record["key"])["train_index"], direct.train.index)


def test_ocln_edgeml_is_the_authors_split() -> None:
    """Every pool row of the two classes trains, nothing validates; close negatives per test batch, in order."""
    dataset = _WithTestSet()
    data = dataset.load(Path("."))
    task = get_protocol("ocln_edgeml").make_task(data, dataset, "a", seed=0, negative_classes="b", close_batch=25)
    np.testing.assert_array_equal(task.train.index, np.flatnonzero(np.isin(data.y, [0, 1])))
    assert len(task.val) == 0 and task.metrics[0] == "recall@fpr3_edgeml"
    ordinary = ~task.test.close
    np.testing.assert_array_equal(task.test.index[ordinary], np.flatnonzero(np.isin(data.y_test, [0, 1])))  # file order
    # batches of 25 test rows: rows 0-24 hold positives 0-19, rows 25-39 none; each batch's positives made together
    np.testing.assert_array_equal(task.test.index[task.test.close], np.arange(20))
    np.testing.assert_allclose(task.test.X[task.test.close], data.X_test[:20] + 0.5)
    assert task.test.y[task.test.close].all() and (task.test.y[ordinary] == (data.y_test[task.test.index[ordinary]] == 1)).all()


def test_mnist_masks_per_image_or_over_the_whole_batch_as_the_authors(registry: Registry) -> None:
    mnist = registry.dataset("mnist")
    images = np.full((10, 1, 28, 28), 200, np.uint8)
    per_image = mnist.close_negatives(images, np.random.default_rng(0), fraction=0.5)
    assert ((per_image == 0).reshape(10, -1).sum(1) == 392).all()  # exactly half of each image
    together = mnist.close_negatives(images, np.random.default_rng(0), fraction=0.4, per_image=False)
    masked = (together == 0).reshape(10, -1).sum(1)
    assert masked.sum() == int(0.4 * images.size) and masked.min() != masked.max()  # the batch's share, unevenly
