"""The protocols added for the paper's and the benchmarks' conventions.

``contamination_edgeml`` (the DROCC authors' scripts), ``unsupervised``
(PyOD / ADBench), ``ocln`` options, metric ceilings, and the metrics these
protocols name, checked on hand-worked examples and on real data when
../shared/data is present.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import wavfile
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

from odbench.api import Dataset, LabeledData
from odbench.core.metrics import binary_f1, evaluate, recall_at_fpr
from odbench.protocols import PROTOCOLS, ProtocolError, get_protocol
from odbench.protocols.splits import metric_ceilings


def _tabular(n_normal: int, n_anomaly: int, seed: int = 0) -> LabeledData:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_normal + n_anomaly, 4)).astype(np.float32)
    y = np.r_[np.zeros(n_normal, int), np.ones(n_anomaly, int)]
    return LabeledData(X=X, y=y, class_names=("normal", "anomaly"), anomaly_classes=(1,))


# ------------------------------------------------------------------ metrics


def test_recall_at_fpr_hand_checked() -> None:
    # negatives score 1, 2, 3, 4; FPR 25% lets one negative through: the
    # threshold is 2 and a point is accepted only when strictly below it
    y = np.r_[np.zeros(4, int), np.ones(4, int)]
    s = np.array([0.5, 1.5, 2.0, 2.5, 1.0, 2.0, 3.0, 4.0])
    assert recall_at_fpr(y, s, 0.25) == 0.5  # 0.5 and 1.5 accepted; 2.0 ties the threshold: rejected
    assert recall_at_fpr(y, s, 0.0) == 0.25  # no negative may pass: threshold 1, only 0.5 accepted
    # 100 negatives scored 0..99: 3% lets scores 0, 1, 2 pass, threshold 3
    y = np.r_[np.zeros(4, int), np.ones(100, int)]
    s = np.r_[[0.5, 2.9, 3.0, 10.0], np.arange(100.0)]
    metrics = evaluate(("recall@fpr3", "recall@fpr5"), y, s)
    assert metrics == {"recall@fpr3": 0.5, "recall@fpr5": 0.75}  # at 5% the threshold is 5


def test_our_f1_is_scikit_learns() -> None:
    """binary_f1 (numpy, for per-epoch validation) against sklearn's f1_score, empty and one-sided cases included."""
    rng = np.random.default_rng(1)
    sizes, rates = (1, 7, 300), (0.0, 0.1, 0.5, 1.0)
    cases = [(rng.random(n) < p, rng.random(n) < q) for n in sizes for p in rates for q in rates]
    for truth, predicted in cases:
        theirs = f1_score(truth.astype(int), predicted.astype(int), zero_division=0)
        assert binary_f1(truth, predicted) == pytest.approx(theirs, abs=1e-12)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.standard_normal(500) + y, 1)  # ties at the threshold: all flagged
    flagged = s >= np.quantile(s, 1 - y.mean())
    assert evaluate(("f1@contamination",), y, s)["f1@contamination"] == pytest.approx(f1_score(y, flagged), abs=1e-12)


def test_our_auroc_is_scikit_learns() -> None:
    rng = np.random.default_rng(2)
    for n, decimals in ((2, 3), (30, 0), (30, 1), (1000, 2), (1000, 8)):  # few decimals: many ties
        y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
        s = np.round(rng.standard_normal(n) + 0.7 * y, decimals)
        assert evaluate(("auroc",), y, s)["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):  # sklearn's own message for scores it cannot rank
        evaluate(("auroc",), np.array([0, 1]), np.array([0.0, np.nan]))


def test_f1_p20_is_the_authors_convention() -> None:
    # the EdgeML trainer: normality = sigmoid(logit), threshold at its 20th
    # percentile, F1 of the normal class (label 1 there)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 301)
    logits = rng.standard_normal(301) + 1.5 * (y == 0)
    normality = 1 / (1 + np.exp(-logits))
    predicted_normal = normality >= np.percentile(normality, 20)
    _, _, theirs, _ = precision_recall_fscore_support((y == 0).astype(int), predicted_normal.astype(int),
                                                      average="binary")
    ours = evaluate(("f1@p20",), y, -logits)["f1@p20"]  # our score: higher = more anomalous
    assert ours == pytest.approx(theirs, abs=1e-12)


# --------------------------------------------------------- edgeml variant


def test_edgeml_ceiling_on_thyroid_sized_test_set() -> None:
    # 93 anomalies + 93 normals: 149 points are predicted normal, at most
    # 93 of them rightly: F1 <= 2 * 93 / (149 + 93) = 0.7686
    y = np.r_[np.zeros(93, int), np.ones(93, int)]
    ceiling = metric_ceilings(("f1@p20", "auroc"), y)
    assert ceiling == {"f1@p20": pytest.approx(186 / 242)}
    n = 186
    closed_form = 2 * min(93, 0.8 * n) / (0.8 * n + 93)
    assert round(ceiling["f1@p20"], 3) == round(closed_form, 3) == 0.769


def test_contamination_edgeml_split() -> None:
    data = _tabular(400, 50)
    task = get_protocol("contamination_edgeml").make_task(data, Toy(), None, seed=3)
    assert task.metrics[0] == "f1@p20"
    assert np.bincount(task.test.y).tolist() == [50, 50]
    assert task.train.y.sum() == 0 and task.val.y.sum() == 0
    rows = np.r_[task.train.index, task.val.index, task.test.index]
    assert sorted(rows.tolist()) == list(range(450))  # a partition of every row
    assert len(task.val) == 0 and len(task.train) == 350  # no normal-only validation: every normal left trains
    assert task.notes["ceilings"]["f1@p20"] == pytest.approx(metric_ceilings(("f1@p20",), task.test.y)["f1@p20"])
    again = get_protocol("contamination_edgeml").make_task(data, Toy(), None, seed=3)
    np.testing.assert_array_equal(again.test.index, task.test.index)


def test_contamination_can_lend_anomalies_to_validation_for_tuning() -> None:
    data = _tabular(400, 50)
    plain = get_protocol("contamination").make_task(data, Toy(), None, seed=3)
    lent = get_protocol("contamination").make_task(data, Toy(), None, seed=3, val_anomaly_fraction=0.2)
    assert len(plain.val) == 0 and plain.test.y.sum() == 50  # the published protocol
    assert len(plain.train) == 200  # half the normals, as GOAD
    assert lent.val.y.sum() == 10 and lent.test.y.sum() == 40
    assert np.sum(lent.val.y == 0) == 40  # 20% of the training half joins the anomalies
    assert not set(lent.val.index) & set(lent.test.index)
    lent_normals = np.r_[lent.train.index, lent.val.index[lent.val.y == 0]]
    np.testing.assert_array_equal(np.sort(lent_normals), plain.train.index)  # the same half either way


def test_contamination_edgeml_needs_more_normals_than_anomalies() -> None:
    with pytest.raises(ProtocolError, match="more normals than anomalies"):
        get_protocol("contamination_edgeml").make_task(_tabular(30, 30), Toy(), None, seed=0)


# ------------------------------------------------------------ unsupervised


def test_unsupervised_is_unlabelled_and_a_partition() -> None:
    data = _tabular(900, 100)
    task = get_protocol("unsupervised").make_task(data, Toy(), None, seed=1)
    assert task.train.y is None  # trained blind
    assert task.metrics == ("auroc", "aupr")
    rows = np.r_[task.train.index, task.val.index, task.test.index]
    assert sorted(rows.tolist()) == list(range(1000))
    tuned = get_protocol("unsupervised").make_task(data, Toy(), None, seed=1, stratify=True, val_fraction=0.2)
    assert len(tuned.test) == 400 and tuned.test.y.sum() == 40  # 40% of each label
    assert len(tuned.val) == 120 and tuned.val.y.sum() == 12  # 20% of the 60% part, labelled
    assert len(tuned.train) == 480 and data.y[tuned.train.index].sum() == 48  # contaminated like the data


# -------------------------------------------------------------------- ocln


def test_mnist_close_negatives_blank_the_stated_fraction(registry) -> None:
    mnist = registry.dataset("mnist")
    ink = np.full((20, 1, 28, 28), 255, np.uint8)  # every pixel is ink: every mask hit shows
    for fraction in (0.5, 0.4):
        close = mnist.close_negatives(ink, np.random.default_rng(0), fraction=fraction)
        assert close.shape == ink.shape and close.dtype == np.uint8
        zeros = (close == 0).reshape(20, -1).sum(axis=1)
        assert np.all(zeros == round(fraction * 784))
        assert set(np.unique(close)) == {0, 255}
    default = mnist.close_negatives(ink, np.random.default_rng(0))
    assert np.all((default == 0).reshape(20, -1).sum(axis=1) == 392)  # the paper's 50% by default


def test_real_mnist_ocln_task(registry, shared_data) -> None:
    from odbench.core.download import dataset_root

    mnist = registry.dataset("mnist")
    root = dataset_root(mnist.name)
    mnist.prepare(root)
    data = mnist.load(root)
    task = get_protocol("ocln").make_task(data, mnist, "0", seed=0, negative_classes="1")
    assert set(data.y[task.train.index][task.train.y == 1]) == {1}  # negatives are ones only
    assert set(data.y[task.train.index][task.train.y == 0]) == {0}
    test = task.test
    assert test.close.sum() == 980 and np.bincount(test.y[~test.close]).tolist() == [980, 1135]
    close, source = test.X[test.close], data.X_test[test.index[test.close]]
    assert np.all(data.y_test[test.index[test.close]] == 0)  # made from test zeros
    changed = close != source
    assert np.all(close[changed] == 0)  # only blanked, never altered otherwise
    ink = source > 0
    blanked_ink = (changed & ink).sum() / ink.sum()
    assert blanked_ink == pytest.approx(0.5, abs=0.01)  # half of every digit's ink, on average


def test_ocln_negatives_by_name_exclude_the_positive() -> None:
    rng = np.random.default_rng(0)
    data = LabeledData(X=rng.standard_normal((300, 3)), y=np.arange(300) % 3, class_names=("a", "b", "c"))
    ds = CloseByNoise()
    task = get_protocol("ocln").make_task(data, ds, "a", seed=0, negative_classes=("a", "c"))
    assert task.notes["negative_classes"] == ["c"]
    assert set(data.y[task.train.index]) == {0, 2}
    with pytest.raises(ProtocolError, match="no negative classes"):
        get_protocol("ocln").make_task(data, ds, "a", seed=0, negative_classes="a")
    with pytest.raises(ProtocolError, match="unknown class 'z'"):
        get_protocol("ocln").make_task(data, ds, "a", seed=0, negative_classes="z")


def test_speech_ocln_needs_a_folder_and_reads_it(registry, tmp_path) -> None:
    speech = registry.dataset("speech_commands")
    rng = np.random.default_rng(0)
    marvin = speech.classes.index("marvin")
    y = np.arange(60) % 3 + marvin - 1
    data = LabeledData(X=rng.standard_normal((60, 98, 32)).astype(np.float32), y=y, class_names=speech.classes)
    with pytest.raises(ProtocolError, match="close_options=\\{'folder'"):
        get_protocol("ocln").make_task(data, speech, "marvin", seed=0)
    for i in range(3):
        wavfile.write(tmp_path / f"marv_{i}.wav", 16000, (rng.standard_normal(16000) * 1000).astype(np.int16))
    task = get_protocol("ocln").make_task(data, speech, "marvin", seed=0, close_options={"folder": str(tmp_path)})
    assert task.test.close.sum() == 3
    assert task.test.index[task.test.close].tolist() == [-1, -2, -3]
    assert task.test.X.shape[1:] == (98, 32)


def test_new_protocols_are_registered() -> None:
    assert {"contamination_edgeml", "unsupervised", "adbench"} <= set(PROTOCOLS)
    assert not PROTOCOLS["unsupervised"].per_class and not PROTOCOLS["adbench"].per_class


# ------------------------------------------------------------------ helpers


class Toy(Dataset):
    """A dataset plugin for arrays built in the test."""

    name = "toy"
    modality = "tabular"


class CloseByNoise(Toy):
    """A toy generator: each close negative is its source plus noise."""

    def close_negatives(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return X + rng.standard_normal(X.shape)


def test_max_train_subsamples_training_only() -> None:
    data = _tabular(400, 50)
    full = get_protocol("contamination").make_task(data, Toy(), None, seed=3)
    small = get_protocol("contamination").make_task(data, Toy(), None, seed=3, max_train=50)
    assert len(small.train) == small.info.n_train == 50
    assert set(small.train.index) <= set(full.train.index)
    np.testing.assert_array_equal(small.test.index, full.test.index)
    np.testing.assert_array_equal(small.val.index, full.val.index)
