"""The tidy results table's numbers: bootstrap intervals of AUROC and configuration fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from odbench.engine.store import Store
from odbench.views.results import bootstrap_auroc, config_fingerprint, results


def _data(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    return y, np.round(rng.normal(size=n) + 0.6 * y, 1)  # rounded: ties, as real detectors make


def test_bootstrap_interval_matches_a_plain_resampling_loop() -> None:
    """The vectorised count form equals resampling each class and calling roc_auc_score."""
    y, s = _data()
    low, high = bootstrap_auroc(y, s, seed=0)
    rng = np.random.default_rng(7)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    aucs = []
    for _ in range(400):  # a plain loop is slow; 400 resamples pin the quantiles to about 0.01
        i = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        aucs.append(roc_auc_score(y[i], s[i]))
    ref_low, ref_high = np.quantile(aucs, [0.025, 0.975])
    assert low < roc_auc_score(y, s) < high
    assert low == pytest.approx(ref_low, abs=0.02) and high == pytest.approx(ref_high, abs=0.02)
    assert bootstrap_auroc(y, s, seed=0) == (low, high), "seeded: the same interval on every call"
    assert bootstrap_auroc(y, s, seed=1) != (low, high)
    assert all(np.isnan(bootstrap_auroc(np.zeros(5), np.arange(5.0), seed=0))), "one class: no interval"


def test_intervals_are_cached_and_recomputed_when_scores_change(tmp_path: Path) -> None:
    y, s = _data()
    store = Store(tmp_path)
    record = {"key": "ab" * 32, "status": "ok", "method": "knn", "dataset": "d", "protocol": "p", "normal_class": None,
              "repetition": 0, "seed": 0, "selection": "val", "metrics": {"auroc": roc_auc_score(y, s)}, "params": {"k": 3}}  # fmt: skip
    store.write(record, s, y)
    first = results(tmp_path)
    assert (tmp_path / "auroc_ci.json").is_file()
    assert tuple(first.loc[0, ["auroc_ci_low", "auroc_ci_high"]]) == bootstrap_auroc(y, s, seed=int("abababab", 16))
    store.write(record, -s, y)  # the same key written again with other scores
    again = results(tmp_path)
    assert again.loc[0, "auroc_ci_high"] < 0.5 < first.loc[0, "auroc_ci_low"]
    assert results(tmp_path, ci=False)["auroc_ci_low"].isna().all()


def test_config_fingerprint_names_what_decides_a_result() -> None:
    base = config_fingerprint("drocc", {"epochs": 5, "lr": 0.1}, {}, "val")
    assert base == config_fingerprint("drocc", {"lr": 0.1, "epochs": 5}, {}, "val"), "order does not matter"
    for other in (
        config_fingerprint("drocc", {"epochs": 100, "lr": 0.1}, {}, "val"),
        config_fingerprint("deepsvdd", {"epochs": 5, "lr": 0.1}, {}, "val"),
        config_fingerprint("drocc", {"epochs": 5, "lr": 0.1}, {"max_train": 100}, "val"),
        config_fingerprint("drocc", {"epochs": 5, "lr": 0.1}, {}, "oracle"),
    ):
        assert other != base
