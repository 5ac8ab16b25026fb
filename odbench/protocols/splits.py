"""Protocols: the only code that turns class ids into normal / anomalous.

A protocol cuts a dataset's :class:`~odbench.api.LabeledData` into a
:class:`~odbench.api.Task` (train / validation / test) as a deterministic
function of one seed, so that every method sees the same split.  Test labels
are used here and by the evaluator only.

* ``one_vs_all`` — each class in turn is normal; train on it alone.
* ``contamination`` — tabular outlier sets as in DAGMM / GOAD.
* ``contamination_edgeml`` — the DROCC authors' scripts' tabular split.
* ``unsupervised`` — PyOD's benchmark: train on a contaminated, unlabelled 60%.
* ``adbench`` — ADBench's benchmark: resampled to 1,000-10,000 rows, 70/30, min-max.
* ``ocln`` — one-class classification with limited negatives (paper §5.2).
* ``ocln_edgeml`` — the DROCC authors' OCLN split (no validation, 40% masks per test batch).

Where a protocol's headline metric cannot reach 1 even for a perfect
ranking, the task records the ceiling in ``task.notes["ceilings"]``.  A
protocol that scales its inputs otherwise than by z-scores on the training
split says so in ``task.notes["scaling"]`` (``odbench.protocols.scaling``).

A validation split exists only where something can use it: it holds both
classes (tuning and epoch selection need labelled anomalies), or it is
empty and its points train.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from odbench.core.contracts import ANOMALY, NORMAL, DataInfo, Dataset, LabeledData, Split, Task
from odbench.core.metrics import METRICS
from odbench.core.params import ParamError, Spec, coerce


class ProtocolError(ValueError):
    """The protocol cannot be applied to this dataset (a user error)."""


def _take(X: np.ndarray, index: np.ndarray, y: np.ndarray | None) -> Split:
    return Split(X=X[index], y=y, index=index)


def _empty(X: np.ndarray) -> Split:
    """A labelled split with no rows: the validation split of a protocol that needs none."""
    return Split(X=X[:0], y=np.zeros(0, int), index=np.zeros(0, int))


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
    if data.X_test is not None and data.y_test is not None:  # given together (LabeledData checks)
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
    if data.X_test is not None and data.y_test is not None:  # these protocols re-cut: pool everything
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


def resolve_class(spec: str | int, known_names: Sequence[str], dataset_id: str | None = None) -> str:
    """The class name that ``spec`` denotes: a name, or an id (its position in ``known_names``).

    ``"Sandal"`` and ``"5"`` (or ``5``) both give Fashion-MNIST's sandal
    class.  A name always wins; where some names are themselves numbers
    (MNIST's ``"0"`` ... ``"9"``, image folders called ``3`` and ``7``) only
    names are accepted, so ``"1"`` never silently means the second folder.
    """
    known = [str(n) for n in known_names]
    name = str(spec).strip()
    if name in known:
        return name
    numeric_names = any(n.strip().isdigit() for n in known)
    if name.isdigit() and not numeric_names and int(name) < len(known):
        return known[int(name)]
    ids = "" if numeric_names or not known else f" (or an id 0-{len(known) - 1})"
    where = "" if dataset_id is None else f" for dataset {dataset_id!r}"
    raise ProtocolError(f"unknown class {spec!r}{where}; known: {', '.join(known)}{ids}")


def _class_ids(data: LabeledData, spec: str | int | Iterable[int | str] | None) -> tuple[int, ...] | None:
    """Class ids from names or ids (``"1"``, ``"1,7"``, ``(1, 7)``, ``("cat",)``)."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else [spec] if isinstance(spec, int) else list(spec)
    return tuple(data.class_names.index(resolve_class(item, data.class_names)) for item in items)


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
    all anomalies; F1 with the threshold at the test anomaly ratio.  By
    default every anomaly stays in test, as in the published protocol, so
    no validation split could select or tune anything: it is empty, and
    training gets the whole half (GOAD's 50% of the normals).  Tuning needs
    labelled anomalies in validation: ``val_anomaly_fraction > 0`` moves that
    fraction of the anomalies from test to validation and joins them with a
    ``val_fraction`` of the training half's normals — a smaller training set
    and a different (smaller) test set, recorded in the job's protocol
    options.  ``val_fraction`` applies only then.
    """
    X, y = _pooled(data, dataset)
    rng = np.random.default_rng(seed)
    normal_rows = rng.permutation(np.flatnonzero(y == NORMAL))
    half = len(normal_rows) // 2
    train_half, test_normal = normal_rows[:half], normal_rows[half:]
    anomalies = rng.permutation(np.flatnonzero(y == ANOMALY))
    n_val_anomalies = int(round(val_anomaly_fraction * len(anomalies)))
    n_val = int(round(val_fraction * len(train_half))) if n_val_anomalies else 0
    val_rows = np.sort(np.concatenate([train_half[:n_val], anomalies[:n_val_anomalies]]))
    train_rows = np.sort(train_half[n_val:])
    test_rows = np.sort(np.concatenate([test_normal, anomalies[n_val_anomalies:]]))
    train = _take(X, train_rows, np.zeros(len(train_rows), int))
    return Task(
        dataset=dataset.id,
        protocol="contamination",
        normal_class=None,
        train=train,
        val=_take(X, val_rows, y[val_rows]) if len(val_rows) else _empty(X),
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
) -> Task:
    """The DROCC authors' tabular split (EdgeML ``process_odds.py`` & co.).

    Test: every anomaly plus as many randomly drawn normals; train: all the
    remaining normals.  The authors had no validation split, and one made
    of normals only could select nothing, so validation is empty (deep
    methods keep their last epoch; tuning refuses this protocol).  Headline
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
    test_normal, train_rows = normal_rows[: len(anomalies)], np.sort(normal_rows[len(anomalies) :])
    test_rows = np.sort(np.concatenate([test_normal, anomalies]))
    train = _take(X, train_rows, np.zeros(len(train_rows), int))
    return Task(
        dataset=dataset.id,
        protocol="contamination_edgeml",
        normal_class=None,
        train=train,
        val=_empty(X),
        test=_take(X, test_rows, y[test_rows]),
        info=_info(dataset, train),
        metrics=("f1@p20", "auroc", "aupr"),
        notes={"ceilings": metric_ceilings(("f1@p20",), y[test_rows])},
    )


def _unlabelled_task(name: str, X: np.ndarray, y: np.ndarray, rows: np.ndarray, train_part: np.ndarray,
                     test_part: np.ndarray, rng: np.random.Generator, val_fraction: float, dataset: Dataset,
                     notes: dict[str, Any]) -> Task:
    """Train blind on ``rows[train_part]`` (less a labelled validation cut if asked); test on ``rows[test_part]``.

    ``rows`` maps positions to row numbers of ``X`` and may repeat rows
    (ADBench's resampling), so the cuts work on positions.
    """
    train_part, val_part = _stratified_cut(y[rows], train_part, rng, val_fraction)
    train_rows, val_rows, test_rows = rows[train_part], rows[val_part], rows[test_part]
    train = _take(X, train_rows, None)
    return Task(
        dataset=dataset.id,
        protocol=name,
        normal_class=None,
        train=train,
        val=_take(X, val_rows, y[val_rows]) if len(val_rows) else _empty(X),
        test=_take(X, test_rows, y[test_rows]),
        info=_info(dataset, train),
        metrics=("auroc", "aupr"),
        notes=notes,
    )


def unsupervised(
    data: LabeledData,
    dataset: Dataset,
    normal_class: None,
    seed: int,
    *,
    test_fraction: float = 0.4,
    stratify: bool = False,
    val_fraction: float = 0.0,
) -> Task:
    """PyOD's benchmark protocol (``notebooks/benchmark.py``): unsupervised, contaminated training.

    A random ``1 - test_fraction`` / ``test_fraction`` split of all rows —
    60/40 and not stratified, as PyOD's ``train_test_split`` (the test part
    has ``ceil(test_fraction * n)`` rows); ``stratify=True`` keeps each
    label's share in both parts.  Training rows keep their anomalies but
    lose their labels (``train.y is None``); methods fit on all of them,
    blind, and inputs are z-scored on them.  Test: AUROC and AUPR.  There is
    no validation split unless ``val_fraction > 0`` asks for one (tuning,
    epoch selection): a stratified, labelled cut of the training part,
    which then trains on less than PyOD's 60%.
    """
    X, y = _pooled(data, dataset)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(y))
    if stratify:
        train_part, test_part = _stratified_cut(y, rows, rng, test_fraction)
    else:
        shuffled = rng.permutation(rows)
        n_test = int(np.ceil(test_fraction * len(rows)))
        test_part, train_part = np.sort(shuffled[:n_test]), np.sort(shuffled[n_test:])
    if len(np.unique(y[test_part])) < 2:
        raise ProtocolError(
            f"the random test part of {dataset.id!r} (seed {seed}) holds one class only; "
            "use --protocol-option stratify=true"
        )
    return _unlabelled_task("unsupervised", X, y, rows, train_part, test_part, rng, val_fraction, dataset, {})


def adbench(
    data: LabeledData,
    dataset: Dataset,
    normal_class: None,
    seed: int,
    *,
    test_fraction: float = 0.3,
    min_rows: int = 1000,
    max_rows: int = 10000,
    val_fraction: float = 0.0,
) -> Task:
    """ADBench's benchmark protocol (Han et al., 2022), unsupervised setting.

    As ADBench's ``adbench/datasets/data_generator.py`` does it:

    1. A set with fewer than ``min_rows`` (1,000) rows is **resampled with
       replacement** to 1,000 rows.  Small sets (Glass, 214 rows; WBC, 223)
       then hold each point about five times, and copies of one point land
       on both sides of the split: test points are also training points,
       which flatters detectors that memorise their training data (kNN,
       LOF).  A set with more than ``max_rows`` (10,000) rows is subsampled
       without replacement to 10,000.
    2. A stratified ``1 - test_fraction`` / ``test_fraction`` split (70/30).
    3. Min-max scaling fitted on the training part (``notes["scaling"]``).

    Training is unlabelled and contaminated, as in ``unsupervised``; test
    AUROC and AUPR.  Use it to reproduce ADBench's published numbers;
    ``unsupervised`` is the clean protocol (every row once, no overlap).
    Split indices repeat where rows do.  ``val_fraction`` as in
    ``unsupervised``.
    """
    X, y = _pooled(data, dataset)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(y))
    notes: dict[str, Any] = {"scaling": "minmax"}
    if len(rows) < min_rows:
        rows = rng.choice(rows, size=min_rows, replace=True)
        notes["resampled"] = {"from": len(y), "to": min_rows, "replace": True}
    elif len(rows) > max_rows:
        rows = rng.choice(rows, size=max_rows, replace=False)
        notes["resampled"] = {"from": len(y), "to": max_rows, "replace": False}
    train_part, test_part = _stratified_cut(y[rows], np.arange(len(rows)), rng, test_fraction)
    return _unlabelled_task("adbench", X, y, rows, train_part, test_part, rng, val_fraction, dataset, notes)


def _close_negatives(dataset: Dataset, X: np.ndarray, rng: np.random.Generator, options: dict[str, Any] | None
                     ) -> np.ndarray:
    """``dataset.close_negatives`` made from the positives ``X``; a generator's refusal is a ProtocolError."""
    try:
        made = dataset.close_negatives(X, rng, **(options or {}))
    except (NotImplementedError, ValueError, TypeError) as err:
        raise ProtocolError(f"ocln on {dataset.id!r}: {err}") from None
    if getattr(dataset, "close_negatives_from_sources", True) and len(made) != len(X):
        raise ProtocolError(f"{dataset.id!r} made {len(made)} close negatives from {len(X)} positives")
    return made


def _with_close(split: Split, close_X: np.ndarray, close_index: np.ndarray) -> Split:
    """``split`` followed by close negatives (label 1, marked in ``close``)."""
    assert split.y is not None
    return Split(
        X=np.concatenate([split.X, close_X.astype(split.X.dtype, copy=False)]),
        y=np.r_[split.y, np.ones(len(close_X), int)],
        index=np.r_[split.index, close_index],
        close=np.r_[np.zeros(len(split), bool), np.ones(len(close_X), bool)],
    )


def _ocln_classes(data: LabeledData, normal_class: int, negative_classes: str | int | Sequence[int | str] | None
                  ) -> tuple[int, ...]:
    negatives = _class_ids(data, negative_classes)
    if negatives is None:
        negatives = tuple(c for c in range(len(data.class_names)) if c != normal_class)
    negatives = tuple(c for c in negatives if c != normal_class)
    if not negatives:
        raise ProtocolError(f"no negative classes left for positive class {data.class_names[normal_class]!r}")
    return negatives


def ocln(
    data: LabeledData,
    dataset: Dataset,
    normal_class: int,
    seed: int,
    *,
    negative_classes: str | int | Sequence[int | str] | None = None,
    negatives_fraction: float = 1.0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    close_fraction: float = 1.0,
    close_options: dict[str, Any] | None = None,
    val_close_negatives: bool = True,
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

    Validation is built like test (``val_close_negatives``): beside its
    positives and held-out negatives it holds close negatives made the same
    way from ``close_fraction`` of the *validation* positives, so that epoch
    selection and tuning see the kind of negative the metric is about.
    Without them, validation recall at 3% FPR is near 1 at every epoch and
    selection keeps the first.  They are made only where the generator
    works from its sources; a generator that reads negatives from elsewhere
    (a folder of recordings) could hand validation the test's own.

    Metric: recall of positives at the score threshold where at most 3%
    (5%) of *all* test negatives, close ones included, are accepted; a
    score tied with the threshold is rejected, so the FPR bound always
    holds (``odbench.core.metrics.recall_at_fpr``).
    """
    rng = np.random.default_rng(seed)
    negatives = _ocln_classes(data, normal_class, negative_classes)
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
    close_X = _close_negatives(dataset, X_test[sources], rng, close_options)
    # a close negative's index is the row it was made from; negatives read from elsewhere are numbered -1, -2, ...
    from_sources = getattr(dataset, "close_negatives_from_sources", True)
    close_index = sources if from_sources else -1 - np.arange(len(close_X))
    test = _with_close(_take(X_test, test_index, (y_test[test_index] != normal_class).astype(int)), close_X, close_index)
    val = _take(data.X, val_rows, val_y)
    val_close = 0
    if val_close_negatives and from_sources and n_val_pos:
        # drawn from the validation positives only (pool rows): no test row reaches validation
        val_sources = np.sort(rng.permutation(pos[:n_val_pos])[: int(round(close_fraction * n_val_pos))])
        val = _with_close(val, _close_negatives(dataset, data.X[val_sources], rng, close_options), val_sources)
        val_close = len(val_sources)
    train = _take(data.X, train_rows, train_y)
    return Task(
        dataset=dataset.id,
        protocol="ocln",
        normal_class=data.class_names[normal_class],
        train=train,
        val=val,
        test=test,
        info=_info(dataset, train, has_negatives=True),
        metrics=("recall@fpr3", "recall@fpr5", "auroc"),
        notes={
            "close_negatives": int(len(close_X)),
            "val_close_negatives": int(val_close),
            "negative_classes": [data.class_names[c] for c in negatives],
            "close_options": dict(close_options or {}),
        },
    )


def ocln_edgeml(
    data: LabeledData,
    dataset: Dataset,
    normal_class: int,
    seed: int,
    *,
    negative_classes: str | int | Sequence[int | str] | None = None,
    close_batch: int = 256,
    close_options: dict[str, Any] | None = None,
) -> Task:
    """The DROCC authors' OCLN split (EdgeML ``main_drocclf_mnist.py``, ``process_mnist.py``).

    Train: every pool row of the positive and the negative classes (the
    negatives are not subsampled) and no validation split: the authors pick
    the epoch on test, so a run of this protocol selects by ``--selection
    oracle`` or keeps its last epoch.  Test: the official test rows of those
    classes in file order, then close negatives made as ``get_close_negs``
    makes them: the test rows cut into batches of ``close_batch``
    consecutive rows, the positives of each batch masked together by the
    dataset's generator (MNIST with ``{"fraction": 0.4, "per_image":
    false}``: 40% of the batch's pixel positions).  Metrics: recall at 3%
    (5%) FPR counted as their ``cal_precision_recall`` (``recall@fpr3_edgeml``).
    """
    rng = np.random.default_rng(seed)
    negatives = _ocln_classes(data, normal_class, negative_classes)
    if data.X_test is None or data.y_test is None:
        raise ProtocolError(f"ocln_edgeml needs an official test set; {dataset.id!r} has none (use ocln)")
    keep = np.isin(data.y, (normal_class, *negatives))
    train_rows = np.flatnonzero(keep)
    train = _take(data.X, train_rows, (data.y[train_rows] != normal_class).astype(int))
    test_index = np.flatnonzero(np.isin(data.y_test, (normal_class, *negatives)))
    made, sources = [], []
    for start in range(0, len(test_index), close_batch):
        rows = test_index[start : start + close_batch]
        positives = rows[data.y_test[rows] == normal_class]
        if len(positives):
            made.append(_close_negatives(dataset, data.X_test[positives], rng, close_options))
            sources.append(positives)
    close_X = np.concatenate(made) if made else data.X_test[:0]
    test_y = (data.y_test[test_index] != normal_class).astype(int)
    test = _with_close(_take(data.X_test, test_index, test_y), close_X, np.concatenate(sources) if sources else test_index[:0])
    return Task(
        dataset=dataset.id,
        protocol="ocln_edgeml",
        normal_class=data.class_names[normal_class],
        train=train,
        val=_empty(data.X),
        test=test,
        info=_info(dataset, train, has_negatives=True),
        metrics=("recall@fpr3_edgeml", "recall@fpr5_edgeml", "auroc"),
        notes={
            "close_negatives": int(len(close_X)),
            "negative_classes": [data.class_names[c] for c in negatives],
            "close_options": dict(close_options or {}),
        },
    )


#: the inclusive ranges of the protocols' numeric options; their types and defaults are the build functions'
_OPTION_RANGES: dict[str, tuple[float | None, float | None]] = {
    "max_train": (1, None),
    "min_rows": (1, None),
    "max_rows": (1, None),
    "val_fraction": (0, 1),
    "test_fraction": (0, 1),
    "val_anomaly_fraction": (0, 1),
    "negatives_fraction": (0, 1),
    "close_fraction": (0, 1),
    "close_batch": (1, None),
}


_FOR_TEST_CUT = "share of the data cut (stratified) into test when the dataset has no official test set"
_LABELLED_VAL = "share of the training part cut into a labelled, stratified validation split, for tuning and epoch selection (0: none)"
#: what each ``--protocol-option`` means, for ``odbench list --protocols``: (protocol, option), else the option alone
_OPTION_MEANINGS: dict[tuple[str, str] | str, str] = {
    "max_train": "keep a random subset of this many training points, for a quick run (validation and test unchanged; none: all)",
    ("one_vs_all", "val_fraction"): "share of the normal class's pool held out for validation, joined by as many anomalies from the other classes' pool",
    ("one_vs_all", "test_fraction"): _FOR_TEST_CUT,
    ("contamination", "val_fraction"): "share of the training half's normals moved to validation; used only with val_anomaly_fraction above 0",
    ("contamination", "val_anomaly_fraction"): "share of the anomalies moved from test to validation, so that tuning can see some (0: every anomaly stays in test, as published)",
    ("unsupervised", "test_fraction"): "share of all rows in the random test part (PyOD's benchmark: 0.4)",
    ("unsupervised", "stratify"): "keep each label's share in both parts (PyOD's split does not)",
    ("unsupervised", "val_fraction"): _LABELLED_VAL,
    ("adbench", "test_fraction"): "share of the rows in the stratified test part (ADBench: 0.3)",
    ("adbench", "min_rows"): "a set with fewer rows is resampled with replacement up to this many (ADBench: 1000)",
    ("adbench", "max_rows"): "a set with more rows is subsampled without replacement to this many (ADBench: 10000)",
    ("adbench", "val_fraction"): _LABELLED_VAL,
    "negative_classes": "the classes that give the negatives: names or ids, comma-separated (none: every other class)",
    ("ocln", "negatives_fraction"): "share of the pool's negatives that training and validation keep (the limited negatives)",
    ("ocln", "val_fraction"): "share of the pool's positives and kept negatives held out for validation",
    ("ocln", "test_fraction"): _FOR_TEST_CUT,
    ("ocln", "close_fraction"): "share of the test (and validation) positives each made into a close negative",
    "close_options": 'settings of the dataset\'s close-negative maker as a JSON object, e.g. {"fraction": 0.5} for MNIST (share of pixels blanked)',
    ("ocln", "val_close_negatives"): "validation holds close negatives made from its own positives too, as test does, so that selection sees them",
    ("ocln_edgeml", "close_batch"): "close negatives are made from consecutive test rows in batches of this many, as the authors' script does",
}


def option_meaning(protocol: str, option: str) -> str:
    return _OPTION_MEANINGS.get((protocol, option)) or _OPTION_MEANINGS.get(option, "")


@dataclass(frozen=True)
class Protocol:
    """A named protocol and the normal classes it iterates over."""

    name: str
    build: Callable[..., Task]
    per_class: bool  # True: one task per normal class; False: one task

    def options(self) -> dict[str, Spec]:
        """The options ``--protocol-option`` may set: the build function's keyword arguments and ``max_train``."""
        declared = [("max_train", inspect.signature(self.make_task).parameters["max_train"], self.make_task)]
        for p in inspect.signature(self.build).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                declared.append((p.name, p, self.build))
        found = {}
        for name, p, where in declared:
            low, high = _OPTION_RANGES.get(name, (None, None))
            annotation = typing.get_type_hints(where)[name]
            found[name] = Spec(name, p.default, option_meaning(self.name, name), annotation, low=low, high=high)
        return found

    def summary(self) -> str:
        """The first line of the protocol's description, for ``odbench list --protocols``."""
        first = (self.build.__doc__ or "").strip().splitlines()[0] if self.build.__doc__ else ""
        return first.replace("``", "")

    def check_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` with each value as its option declares it; :class:`ProtocolError` on an unknown or bad one."""
        known = self.options()
        checked = {}
        for name, value in given.items():
            if name not in known:
                raise ProtocolError(f"protocol {self.name!r} has no option {name!r}; known: {', '.join(known)}")
            try:
                checked[name] = coerce(f"protocol option {name}", known[name], value)
            except ParamError as err:
                raise ProtocolError(f"{err} (protocol {self.name!r})") from None
        return checked

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
            if normal_class is None:
                raise ProtocolError(f"protocol {self.name!r} needs a normal class for dataset {dataset.id!r}")
            cls = data.class_names.index(resolve_class(normal_class, data.class_names, dataset.id))
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
    "adbench": Protocol("adbench", adbench, per_class=False),
    "ocln": Protocol("ocln", ocln, per_class=True),
    "ocln_edgeml": Protocol("ocln_edgeml", ocln_edgeml, per_class=True),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
