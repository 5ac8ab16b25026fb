"""Protocols: the only code that turns class ids into normal / anomalous.

A protocol cuts a dataset's :class:`~odbench.api.LabeledData` into a
:class:`~odbench.api.Task` (train / validation / test) as a deterministic
function of one seed, so that every method sees the same split.  Test labels
are used here and by the evaluator only.

* ``one_vs_all`` — each class in turn is normal; train on it alone.
* ``contamination`` — tabular outlier sets as in DAGMM / GOAD.
* ``contamination_edgeml`` — the DROCC authors' scripts' tabular split.
* ``unsupervised`` — PyOD / ADBench: train on a contaminated, unlabelled part.
* ``ocln`` — one-class classification with limited negatives (paper §5.2).

Where a protocol's headline metric cannot reach 1 even for a perfect
ranking, the task records the ceiling in ``task.notes["ceilings"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from odbench.core.contracts import ANOMALY, NORMAL, DataInfo, Dataset, LabeledData, Split, Task
from odbench.core.metrics import METRICS


class ProtocolError(ValueError):
    """The protocol cannot be applied to this dataset (a user error)."""


def _take(X: np.ndarray, index: np.ndarray, y: np.ndarray | None) -> Split:
    return Split(X=X[index], y=y, index=index)


def _cut_test(data: LabeledData, rng: np.random.Generator, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Pool and test row numbers: the official test set, or a stratified cut.

    Returns (pool_index, test_index); with an official test set the test
    index refers to ``data.X_test``, otherwise to ``data.X``.
    """
    if data.X_test is not None:
        return np.arange(len(data.X)), np.arange(len(data.X_test))
    test = []
    for c in np.unique(data.y):
        rows = rng.permutation(np.flatnonzero(data.y == c))
        test.append(rows[: int(round(test_fraction * len(rows)))])
    test_index = np.sort(np.concatenate(test))
    pool_index = np.setdiff1d(np.arange(len(data.X)), test_index)
    return pool_index, test_index


def _test_arrays(data: LabeledData) -> tuple[np.ndarray, np.ndarray]:
    if data.X_test is not None:
        return data.X_test, data.y_test
    return data.X, data.y


def _info(dataset: Dataset, train: Split, has_negatives: bool = False) -> DataInfo:
    return DataInfo(
        dataset=dataset.id,
        modality=dataset.modality,
        shape=tuple(train.X.shape[1:]),
        n_train=len(train),
        backbone=dataset.backbone,
        has_negatives=has_negatives,
    )


def _pooled(data: LabeledData, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All rows (pool and official test) with binary labels; 1 = the dataset's anomalies."""
    if not data.anomaly_classes:
        raise ProtocolError(f"dataset {dataset.id!r} defines no anomaly classes; use --protocol one_vs_all")
    X, y = data.X, np.isin(data.y, data.anomaly_classes).astype(int)
    if data.X_test is not None:  # these protocols re-cut: pool everything
        X = np.concatenate([data.X, data.X_test])
        y = np.r_[y, np.isin(data.y_test, data.anomaly_classes).astype(int)]
    return X, y


def _stratified_cut(y: np.ndarray, rows: np.ndarray, rng: np.random.Generator, fraction: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (rest, cut) with ``fraction`` of each label of ``y[rows]`` in cut."""
    cut = []
    for label in np.unique(y[rows]):
        members = rng.permutation(rows[y[rows] == label])
        cut.append(members[: int(round(fraction * len(members)))])
    cut_rows = np.sort(np.concatenate(cut)) if cut else rows[:0]
    return np.setdiff1d(rows, cut_rows), cut_rows


def metric_ceilings(metrics: Iterable[str], y: np.ndarray) -> dict[str, float]:
    """Metrics that a perfect ranking of ``y`` still scores below 1.

    The best any detector can do is rank every anomaly above every normal
    (distinct scores); for threshold-at-a-fixed-rank metrics such as
    ``f1@p20`` that is also the best F1, since the number of flagged points
    is fixed and a perfect ranking puts the most true points in it.
    """
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        return {}
    perfect = y + np.arange(len(y)) / (2.0 * len(y))  # anomalies above normals, no ties
    ceilings = {name: float(METRICS[name](y, perfect)) for name in metrics}
    return {name: value for name, value in ceilings.items() if value < 1.0 - 1e-12}


def _class_ids(data: LabeledData, spec: str | Iterable[int | str] | None) -> tuple[int, ...] | None:
    """Class ids from names or ids (``"1"``, ``"1,7"``, ``(1, 7)``, ``("cat",)``)."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    ids = []
    for item in items:
        name = str(item).strip()
        if name in data.class_names:
            ids.append(data.class_names.index(name))
        elif isinstance(item, (int, np.integer)) and 0 <= int(item) < len(data.class_names):
            ids.append(int(item))
        else:
            raise ProtocolError(f"unknown class {item!r}; known: {', '.join(data.class_names)}")
    return tuple(ids)


def one_vs_all(
    data: LabeledData,
    dataset: Dataset,
    normal_class: int,
    seed: int,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> Task:
    """Class ``normal_class`` is normal, every other class anomalous.

    Train: ``1 - val_fraction`` of the normal class's pool.  Validation: the
    rest of the normal pool plus as many anomalies, drawn uniformly from the
    other classes' *pool* (never from test).  Test: the official test set, or
    a stratified ``test_fraction`` cut of the data when there is none (the
    paper's 60-20-20).
    """
    rng = np.random.default_rng(seed)
    pool_index, test_index = _cut_test(data, rng, test_fraction)
    pool_y = data.y[pool_index]
    normal_rows = rng.permutation(pool_index[pool_y == normal_class])
    if len(normal_rows) < 2:
        raise ProtocolError(f"class {data.class_names[normal_class]!r} has {len(normal_rows)} training points; need at least 2")
    n_val = max(1, int(round(val_fraction * len(normal_rows))))
    val_normal, train_rows = normal_rows[:n_val], np.sort(normal_rows[n_val:])
    others = pool_index[pool_y != normal_class]
    val_anomalies = rng.choice(others, size=min(n_val, len(others)), replace=False)
    val_rows = np.concatenate([val_normal, val_anomalies])
    val_y = np.r_[np.zeros(len(val_normal), int), np.ones(len(val_anomalies), int)]

    X_test, y_test = _test_arrays(data)
    test_y = (y_test[test_index] != normal_class).astype(int)
    train = _take(data.X, train_rows, np.zeros(len(train_rows), int))
    return Task(
        dataset=dataset.id,
        protocol="one_vs_all",
        normal_class=data.class_names[normal_class],
        train=train,
        val=_take(data.X, val_rows, val_y),
        test=_take(X_test, test_index, test_y),
        info=_info(dataset, train),
        metrics=("auroc", "aupr"),
    )


def contamination(
    data: LabeledData,
    dataset: Dataset,
    normal_class: None,
    seed: int,
    *,
    val_fraction: float = 0.2,
    val_anomaly_fraction: float = 0.0,
) -> Task:
    """Tabular outlier sets, DAGMM / GOAD style (the paper's Table 2).

    Train on a random half of the normal points; test on the other half plus
    all anomalies; F1 with the threshold at the test anomaly ratio.  A
    ``val_fraction`` of the training half is held out as a validation split
    (for selection).  By default every anomaly stays in test, as in the
    published protocol, so validation is normal-only; tuning needs labelled
    anomalies there, and ``val_anomaly_fraction > 0`` moves that fraction of
    the anomalies from test to validation — a different (smaller) test set,
    recorded in the job's protocol options.
    """
    X, y = _pooled(data, dataset)
    rng = np.random.default_rng(seed)
    normal_rows = rng.permutation(np.flatnonzero(y == NORMAL))
    half = len(normal_rows) // 2
    train_half, test_normal = normal_rows[:half], normal_rows[half:]
    n_val = int(round(val_fraction * len(train_half)))
    val_rows, train_rows = np.sort(train_half[:n_val]), np.sort(train_half[n_val:])
    anomalies = rng.permutation(np.flatnonzero(y == ANOMALY))
    n_val_anomalies = int(round(val_anomaly_fraction * len(anomalies)))
    val_rows = np.sort(np.concatenate([val_rows, anomalies[:n_val_anomalies]]))
    test_rows = np.sort(np.concatenate([test_normal, anomalies[n_val_anomalies:]]))
    train = _take(X, train_rows, np.zeros(len(train_rows), int))
    return Task(
        dataset=dataset.id,
        protocol="contamination",
        normal_class=None,
        train=train,
        val=_take(X, val_rows, y[val_rows]),
        test=_take(X, test_rows, y[test_rows]),
        info=_info(dataset, train),
        metrics=("f1@contamination", "auroc", "aupr"),
        notes={"ceilings": metric_ceilings(("f1@contamination",), y[test_rows])},
    )


def contamination_edgeml(
    data: LabeledData,
    dataset: Dataset,
    normal_class: None,
    seed: int,
    *,
    val_fraction: float = 0.2,
) -> Task:
    """The DROCC authors' tabular split (EdgeML ``process_odds.py`` & co.).

    Test: every anomaly plus as many randomly drawn normals; train: the
    remaining normals (less a normal-only ``val_fraction`` held out for
    loss-based selection; the authors had no validation split).  Headline
    metric ``f1@p20``: F1 of the *normal* class with the threshold at the
    20th percentile of normality scores, the authors' convention.  On a
    50/50 test set 80% of the points are predicted normal, so even a
    perfect ranking has precision 1/2 / 0.8: F1 is capped near
    2 * 0.5 / (0.8 + 0.5) = 0.769 (exactly 186/242 = 0.7686 on Thyroid's
    93 + 93 test points); the exact cap is in ``notes["ceilings"]``.
    """
    X, y = _pooled(data, dataset)
    rng = np.random.default_rng(seed)
    anomalies = np.flatnonzero(y == ANOMALY)
    normal_rows = rng.permutation(np.flatnonzero(y == NORMAL))
    if len(normal_rows) <= len(anomalies):
        raise ProtocolError(
            f"dataset {dataset.id!r} has {len(anomalies)} anomalies but only {len(normal_rows)} normals; "
            "contamination_edgeml needs more normals than anomalies"
        )
    test_normal, train_pool = normal_rows[: len(anomalies)], normal_rows[len(anomalies) :]
    n_val = int(round(val_fraction * len(train_pool)))
    val_rows, train_rows = np.sort(train_pool[:n_val]), np.sort(train_pool[n_val:])
    test_rows = np.sort(np.concatenate([test_normal, anomalies]))
    train = _take(X, train_rows, np.zeros(len(train_rows), int))
    return Task(
        dataset=dataset.id,
        protocol="contamination_edgeml",
        normal_class=None,
        train=train,
        val=_take(X, val_rows, np.zeros(len(val_rows), int)),
        test=_take(X, test_rows, y[test_rows]),
        info=_info(dataset, train),
        metrics=("f1@p20", "auroc", "aupr"),
        notes={"ceilings": metric_ceilings(("f1@p20",), y[test_rows])},
    )


def unsupervised(
    data: LabeledData,
    dataset: Dataset,
    normal_class: None,
    seed: int,
    *,
    test_fraction: float = 0.4,
    val_fraction: float = 0.2,
) -> Task:
    """The PyOD / ADBench benchmark protocol: unsupervised, contaminated training.

    A stratified random ``1 - test_fraction`` / ``test_fraction`` split of
    all rows (60/40 by default, PyOD's benchmark).  Training rows keep
    their anomalies but lose their labels (``train.y is None``); methods
    fit on them blind.  Validation: a stratified ``val_fraction`` of the
    training part, carved out of it and labelled, for model selection and
    tuning only (``val_fraction=0`` gives PyOD's exact 60% training part
    and an empty validation split).  Test: AUROC and AUPR.
    """
    X, y = _pooled(data, dataset)
    rng = np.random.default_rng(seed)
    train_part, test_rows = _stratified_cut(y, np.arange(len(y)), rng, test_fraction)
    train_rows, val_rows = _stratified_cut(y, train_part, rng, val_fraction)
    train = _take(X, train_rows, None)
    return Task(
        dataset=dataset.id,
        protocol="unsupervised",
        normal_class=None,
        train=train,
        val=_take(X, val_rows, y[val_rows]),
        test=_take(X, test_rows, y[test_rows]),
        info=_info(dataset, train),
        metrics=("auroc", "aupr"),
    )


def ocln(
    data: LabeledData,
    dataset: Dataset,
    normal_class: int,
    seed: int,
    *,
    negative_classes: str | Iterable[int | str] | None = None,
    negatives_fraction: float = 1.0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    close_fraction: float = 1.0,
    close_options: dict[str, Any] | None = None,
) -> Task:
    """One-class classification with limited negatives (paper §4.1, §5.2).

    Positives (label 0) are ``normal_class``; negatives (label 1) are
    ``negative_classes`` (names or ids, e.g. ``"1"`` for MNIST's digit-0-vs-1
    experiment; default every other class; the positive class is never its
    own negative).  Train and validation hold the positives of the pool plus
    a ``negatives_fraction`` of the pool's negatives (the *limited*
    negatives).  Test holds the test positives and negatives plus *close
    negatives* from the dataset's ``close_negatives`` generator, made from
    ``close_fraction`` of the test positives and called with
    ``**close_options`` (MNIST: ``{"fraction": 0.5}``, the share of pixels
    blanked; Speech Commands: ``{"folder": PATH}``, recorded near-words).

    Metric: recall of positives at the score threshold where at most 3%
    (5%) of *all* test negatives, close ones included, are accepted; a
    score tied with the threshold is rejected, so the FPR bound always
    holds (``odbench.core.metrics.recall_at_fpr``).
    """
    rng = np.random.default_rng(seed)
    negatives = _class_ids(data, negative_classes)
    if negatives is None:
        negatives = tuple(c for c in range(len(data.class_names)) if c != normal_class)
    negatives = tuple(c for c in negatives if c != normal_class)
    if not negatives:
        raise ProtocolError(f"no negative classes left for positive class {data.class_names[normal_class]!r}")
    pool_index, test_index = _cut_test(data, rng, test_fraction)
    pool_y = data.y[pool_index]
    pos = rng.permutation(pool_index[pool_y == normal_class])
    neg = rng.permutation(pool_index[np.isin(pool_y, negatives)])
    neg = neg[: int(round(negatives_fraction * len(neg)))]
    n_val_pos, n_val_neg = int(round(val_fraction * len(pos))), int(round(val_fraction * len(neg)))
    train_rows = np.r_[pos[n_val_pos:], neg[n_val_neg:]]
    train_y = np.r_[np.zeros(len(pos) - n_val_pos, int), np.ones(len(neg) - n_val_neg, int)]
    val_rows = np.r_[pos[:n_val_pos], neg[:n_val_neg]]
    val_y = np.r_[np.zeros(n_val_pos, int), np.ones(n_val_neg, int)]

    X_test, y_test = _test_arrays(data)
    t_y = y_test[test_index]
    keep = (t_y == normal_class) | np.isin(t_y, negatives)
    test_index = test_index[keep]
    t_pos = test_index[t_y[keep] == normal_class]
    sources = np.sort(rng.permutation(t_pos)[: int(round(close_fraction * len(t_pos)))])
    try:
        close_X = dataset.close_negatives(X_test[sources], rng, **(close_options or {}))
    except (NotImplementedError, ValueError, TypeError) as err:
        raise ProtocolError(f"ocln on {dataset.id!r}: {err}") from None
    # a close negative's index is the test row it was made from; negatives
    # read from elsewhere (a folder of recordings) are numbered -1, -2, ...
    from_sources = getattr(dataset, "close_negatives_from_sources", True)
    if from_sources and len(close_X) != len(sources):
        raise ProtocolError(f"{dataset.id!r} made {len(close_X)} close negatives from {len(sources)} test positives")
    close_index = sources if from_sources else -1 - np.arange(len(close_X))
    test_X = np.concatenate([X_test[test_index], close_X.astype(X_test.dtype, copy=False)])
    test_y = np.r_[(y_test[test_index] != normal_class).astype(int), np.ones(len(close_X), int)]
    close = np.r_[np.zeros(len(test_index), bool), np.ones(len(close_X), bool)]
    train = _take(data.X, train_rows, train_y)
    return Task(
        dataset=dataset.id,
        protocol="ocln",
        normal_class=data.class_names[normal_class],
        train=train,
        val=_take(data.X, val_rows, val_y),
        test=Split(X=test_X, y=test_y, index=np.r_[test_index, close_index], close=close),
        info=_info(dataset, train, has_negatives=True),
        metrics=("recall@fpr3", "recall@fpr5", "auroc"),
        notes={
            "close_negatives": int(len(close_X)),
            "negative_classes": [data.class_names[c] for c in negatives],
            "close_options": dict(close_options or {}),
        },
    )


@dataclass(frozen=True)
class Protocol:
    """A named protocol and the normal classes it iterates over."""

    name: str
    build: Callable[..., Task]
    per_class: bool  # True: one task per normal class; False: one task

    def normal_classes(self, dataset: Dataset, data_classes: tuple[str, ...]) -> list[str | None]:
        if not self.per_class:
            return [None]
        # a dataset may restrict which classes make sense as normal (OCLN data
        # whose "negative" class is a catch-all): attribute ``normal_classes``
        allowed = getattr(dataset, "normal_classes", None)
        return [c for c in data_classes if allowed is None or c in allowed]

    def make_task(
        self,
        data: LabeledData,
        dataset: Dataset,
        normal_class: str | None,
        seed: int,
        max_train: int | None = None,
        **options: Any,
    ) -> Task:
        """The task for one normal class; ``options`` go to the protocol.

        ``max_train`` (any protocol) keeps a random subset of that many
        training points — a reduced budget for quick runs; validation and
        test are untouched, so numbers stay comparable in kind.
        """
        cls = None
        if self.per_class:
            if normal_class not in data.class_names:
                raise ProtocolError(
                    f"unknown class {normal_class!r} for dataset {dataset.id!r}; known: {', '.join(data.class_names)}"
                )
            cls = data.class_names.index(normal_class)
        task = self.build(data, dataset, cls, seed, **options)
        if max_train is not None and len(task.train) > max_train:
            keep = np.sort(np.random.default_rng(seed + 1).choice(len(task.train), size=max_train, replace=False))
            train = task.train
            train = Split(X=train.X[keep], y=None if train.y is None else train.y[keep], index=train.index[keep])
            task = replace(task, train=train, info=replace(task.info, n_train=max_train))
        return task


PROTOCOLS: dict[str, Protocol] = {
    "one_vs_all": Protocol("one_vs_all", one_vs_all, per_class=True),
    "contamination": Protocol("contamination", contamination, per_class=False),
    "contamination_edgeml": Protocol("contamination_edgeml", contamination_edgeml, per_class=False),
    "unsupervised": Protocol("unsupervised", unsupervised, per_class=False),
    "ocln": Protocol("ocln", ocln, per_class=True),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
