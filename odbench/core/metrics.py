"""Evaluation metrics, looked up by name and returned as a dict.

Every metric takes test labels ``y`` (0 normal, 1 anomalous) and anomaly
scores (higher = more anomalous).  Names carry their threshold policy, so a
table never mixes conventions: ``f1@contamination`` sets the threshold at the
test anomaly ratio and scores the anomaly class (DAGMM/GOAD); ``f1@p20``
is the DROCC authors' EdgeML convention (see ``_f1_edgeml``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# scikit-learn is imported where a metric is computed, not with this module: the command line
# names the metrics in its --help, and importing scikit-learn costs about a second


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    """The area under the ROC curve, as the Mann-Whitney statistic: P(anomaly scores above normal), ties half.

    That is scikit-learn's ``roc_auc_score``; computed from average ranks, as
    ``binary_f1`` is, because sklearn's validation of its arguments (about
    2.5 ms a call) was most of the per-epoch selection cost of a seed group.
    Non-finite scores go to sklearn, which says what is wrong with them.
    """
    if not np.all(np.isfinite(s)):
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(y, s))
    from scipy.stats import rankdata

    anomalous = y == 1
    n_anomalous = int(np.count_nonzero(anomalous))
    n_normal = len(y) - n_anomalous
    rank_sum = float(rankdata(s)[anomalous].sum())
    return (rank_sum - n_anomalous * (n_anomalous + 1) / 2) / (n_anomalous * n_normal)


def _aupr(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    # average precision with anomalies as the positive class
    return float(average_precision_score(y, s))


def binary_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of the class marked True: ``2 TP / (2 TP + FP + FN)``, 0 when there is none in either.

    scikit-learn's ``f1_score(truth, predicted, zero_division=0)``, in numpy:
    sklearn validates its arguments on every call (about 2.3 ms here), and a
    deep method's model selection computes F1 after every epoch, for every
    member of a seed group (``tests/test_protocols_extra.py`` checks the two agree).
    """
    truth, predicted = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    true_positives = int(np.count_nonzero(truth & predicted))
    wrong = int(np.count_nonzero(truth != predicted))  # FP + FN
    return 2 * true_positives / (2 * true_positives + wrong) if true_positives else 0.0


def f1_at_anomaly_fraction(y: np.ndarray, s: np.ndarray, fraction: float) -> float:
    """F1 of the anomaly class when the top ``fraction`` of scores are flagged.

    Ties at the threshold are all flagged (``s >= t``).
    """
    threshold = np.quantile(s, 1.0 - fraction)
    return binary_f1(y == 1, s >= threshold)


def _f1_contamination(y: np.ndarray, s: np.ndarray) -> float:
    return f1_at_anomaly_fraction(y, s, float(np.mean(y)))


def _f1_edgeml(y: np.ndarray, s: np.ndarray) -> float:
    # The DROCC authors' scripts: threshold at the 20th percentile of the
    # normality scores, so 80% of the test set is predicted normal, and F1
    # is that of the *normal* class.  On their 50/50 test sets its ceiling
    # is 2 * 0.5 / (0.8 + 0.5) = 0.769 (see odbench.protocols).
    normality = -s
    predicted_normal = normality >= np.quantile(normality, 0.2)
    return binary_f1(y == 0, predicted_normal)


def recall_at_fpr(y: np.ndarray, s: np.ndarray, fpr: float) -> float:
    """Recall of *normal* points (the paper's positives) at a fixed FPR.

    The threshold is the lowest score that lets at most ``fpr`` of the
    anomalous points (all negatives, close ones included) be accepted as
    normal: a point is accepted when its score is strictly below the
    threshold, so tied scores at the threshold are all rejected (the
    conservative reading: the FPR bound always holds).
    """
    neg = np.sort(s[y == 1])
    pos = s[y == 0]
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    k = int(np.floor(fpr * len(neg)))  # negatives we may accept
    threshold = neg[k] if k < len(neg) else np.inf
    return float(np.mean(pos < threshold))


def recall_at_fpr_edgeml(y: np.ndarray, s: np.ndarray, fpr: float) -> float:
    """Recall at a fixed FPR as the DROCC authors' ``cal_precision_recall`` (EdgeML ``drocclf_trainer.py``) counts it.

    Their scores say "higher = normal": the negatives' scores sorted
    ascending, the threshold is the one at position ``int((1 - fpr) * n_neg)``
    and a positive counts when its score is strictly above it.  In anomaly
    scores (higher = anomalous) that is the negated order.  It differs from
    :func:`recall_at_fpr` only in how the threshold's index is rounded
    (``int`` of ``(1 - fpr) n`` against ``floor(fpr n)`` negatives accepted).
    """
    normality = -np.asarray(s, dtype=np.float64)
    neg = np.sort(normality[y == 1])
    pos = normality[y == 0]
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    threshold = neg[min(int((1 - fpr) * len(neg)), len(neg) - 1)]
    return float(np.mean(pos > threshold))


#: the one-sided test behind :func:`inversion_test`, named in records and captions
INVERSION_TEST = "one-sided Mann-Whitney U: validation anomalies score below normals"
#: its significance level
INVERSION_ALPHA = 0.01


def inversion_test(y: np.ndarray, s: np.ndarray, alpha: float = INVERSION_ALPHA) -> dict[str, float | bool | str]:
    """Whether the scores are significantly *inverted* on a labelled split: AUROC below 0.5 beyond chance.

    The Mann-Whitney U test, one-sided: H0 says an anomaly's score is as
    likely above a normal point's as below; the alternative, that anomalies
    score lower (AUROC < 0.5).  ``inverted`` when its p-value is below
    ``alpha``.  AUROC is U / (n_anomalous n_normal), so the test is exactly
    about the AUROC the tables show.
    """
    from scipy.stats import mannwhitneyu

    y = np.asarray(y).astype(int)
    s = np.asarray(s, dtype=np.float64)
    anomalous, normal = s[y == 1], s[y == 0]
    if len(anomalous) == 0 or len(normal) == 0:
        return {}
    p_value = float(mannwhitneyu(anomalous, normal, alternative="less").pvalue)
    return {"auroc": _auroc(y, s), "p_value": p_value, "inverted": bool(p_value < alpha), "test": INVERSION_TEST,
            "alpha": alpha}


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auroc": _auroc,
    "aupr": _aupr,
    "f1@contamination": _f1_contamination,
    "f1@p20": _f1_edgeml,
    "recall@fpr3": lambda y, s: recall_at_fpr(y, s, 0.03),
    "recall@fpr5": lambda y, s: recall_at_fpr(y, s, 0.05),
    # the DROCC authors' counting (cal_precision_recall): the OCLN variant 'edgeml'
    "recall@fpr3_edgeml": lambda y, s: recall_at_fpr_edgeml(y, s, 0.03),
    "recall@fpr5_edgeml": lambda y, s: recall_at_fpr_edgeml(y, s, 0.05),
}


def evaluate(names: tuple[str, ...] | list[str], y: np.ndarray | None, scores: np.ndarray) -> dict[str, float]:
    """Compute each named metric; a metric undefined on this data is NaN.

    ``y`` is a split's labels (``Split.y``); an unlabeled split (``None``)
    has nothing to evaluate against and raises ``ValueError``.
    """
    if y is None:
        raise ValueError("cannot evaluate scores on an unlabeled split (its y is None)")
    y = np.asarray(y).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    out: dict[str, float] = {}
    for name in names:
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        if len(np.unique(y)) < 2:
            out[name] = float("nan")
        else:
            out[name] = METRICS[name](y, scores)
    return out
