"""The tidy results table: one row per job of a results folder, every column documented.

``results(path)`` reads the store's records (``Store.records()``) and raw
scores (``Store.scores()``) and returns a ``pandas.DataFrame``.  Every
aggregate a report shows can be recomputed from it, and rows of one
configuration share a ``config_fingerprint``.

Schema (one row per job, failed ones included):

=======================  ========  ==================================================================
column                   type      meaning
=======================  ========  ==================================================================
key                      str       the job's content hash (its file name in ``<results>/jobs``)
status                   str       ``ok`` or ``failed``
method                   str       method plugin name
dataset                  str       dataset name as typed (``digits``, ``csv:data.csv``)
protocol                 str       protocol that cut train / validation / test
normal_class             str/None  the class treated as normal; None for single-task protocols
repetition               int       repetition index (0, 1, ...)
seed                     int       the job's seed (derived from base seed, dataset, protocol, class, repetition)
base_seed                int       the suite's base seed (``--seed``)
fit_seed                 int       the seed of the fit stream (weights, batches); None if it failed before
selection                str       ``val`` (honest: chosen on validation data) or ``oracle`` (on test)
selected_epoch           int/None  the epoch a deep method kept (0-based); None for classical methods
selected_by              str/None  what chose it: ``val``, ``oracle`` or ``last`` (no selection split)
scoring                  str       how scores were read: ``eval`` (always, unless an experiment variant
                                   asked for the authors' ``batchnorm_train_mode_per_source``)
config_fingerprint       str       12 hex digits over method, resolved parameters, protocol options,
                                   selection and a non-eval scoring: equal values = same configuration
code_fingerprint         str       hash of the code that ran the job (engine and plugin)
headline_metric          str       the protocol's first metric (what tables show by default)
<metric>                 float     one column per metric (``auroc``, ``aupr``, ``f1@contamination``,
                                   ...); NaN where undefined or failed
val_auroc                float     the fitted model's validation AUROC (eval mode); NaN without a
                                   validation split holding both classes
inverted                 bool      validation AUROC significantly below 0.5: a one-sided Mann-Whitney U
                                   test, p < 0.01 (``odbench.core.metrics.inversion_test``)
constant_features        int       tabular features holding one value in every row of the job's splits
                                   (they tell no rows apart; flagged under the tables)
auroc_ci_low/high        float     95% stratified bootstrap interval of AUROC from the stored test
                                   scores (1000 resamples, seeded by the job key); NaN without scores
fit_seconds              float     wall time of ``fit``
score_seconds            float     wall time of scoring the test split
peak_rss_mb              float     peak resident memory (MiB) of the process (see ``peak_rss_scope``)
peak_rss_scope           str       ``job`` (a process ran only this job) or ``process``
device                   str       where it ran (``cpu``, ``cuda``)
started, created         str       ISO-8601 UTC times the job started and its record was written
n_train, n_val, n_test   int       split sizes; ``n_test_anomalies``: anomalies in the test split
error                    str/None  ``Type: message`` of a failed job
param.<name>             any       one column per resolved parameter (defaults merged), e.g. ``param.epochs``
protocol.<name>          any       one column per protocol option given (``protocol.max_train``)
=======================  ========  ==================================================================
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from odbench.core.files import replace_whole
from odbench.engine.store import OK, Store, to_json_safe

#: columns before the metric and parameter columns, in this order
COLUMNS = [
    "key", "status", "method", "dataset", "protocol", "normal_class", "repetition", "seed", "base_seed",
    "fit_seed", "selection", "selected_epoch", "selected_by", "scoring", "config_fingerprint", "code_fingerprint",
    "headline_metric",
]  # fmt: skip
TAIL = [
    "val_auroc", "inverted", "constant_features",
    "auroc_ci_low", "auroc_ci_high", "fit_seconds", "score_seconds", "peak_rss_mb", "peak_rss_scope", "device",
    "started", "created", "n_train", "n_val", "n_test", "n_test_anomalies", "error",
]  # fmt: skip
PARAM, PROTOCOL = "param.", "protocol."
RESAMPLES = 1000


def config_fingerprint(
    method: str, params: dict[str, Any], protocol_options: dict[str, Any], selection: str, scoring: str = "eval"
) -> str:
    """12 hex digits naming one configuration: everything but the task and the seed that decides a result.

    An authors' scoring mode (``odbench.deep.scoring_modes``) is another
    configuration, so its numbers never share a table cell with eval-mode ones.
    """
    parts: list[Any] = [method, params, protocol_options, selection] + ([scoring] if scoring != "eval" else [])
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """How often each of ``n`` points is drawn in each of ``resamples`` draws of ``n`` with replacement."""
    draws = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=n * resamples).reshape(resamples, n).astype(np.float32)


def bootstrap_auroc(labels: np.ndarray, scores: np.ndarray, seed: int, resamples: int = RESAMPLES) -> tuple[float, float]:
    """95% percentile interval of AUROC over ``resamples`` stratified bootstrap resamples.

    Normals and anomalies are resampled separately (their counts stay those
    of the test split, so no resample lacks a class).  ``labels``: 1 =
    anomalous; ``scores``: higher = more anomalous.  (nan, nan) if a class is empty.
    """
    labels = np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # a resample is a count per point (multinomial); its Mann-Whitney U is w . K . v, with
    # K[i, j] = [anomaly i scores above normal j] (+1/2 for a tie, as roc_auc_score counts it)
    w, v = _counts(rng, len(pos), resamples), _counts(rng, len(neg), resamples)
    wk = np.zeros((resamples, len(neg)), np.float32)
    rows = max(1, 10_000_000 // len(neg))  # K in blocks of ~40 MB
    for start in range(0, len(pos), rows):
        p = pos[start : start + rows, None]
        block = (p > neg[None, :]).astype(np.float32) + np.float32(0.5) * (p == neg[None, :])
        wk += w[:, start : start + rows] @ block
    aucs = np.einsum("bj,bj->b", wk.astype(np.float64), v) / (len(pos) * len(neg))
    low, high = np.quantile(aucs, [0.025, 0.975])
    return float(low), float(high)


class _IntervalCache:
    """Bootstrap intervals kept in ``<results>/auroc_ci.json``: 10,000 test points take seconds per job.

    An entry is reused only while the scores are the same (the record's
    ``scores_sha256``, or the file's size and modification time): a job
    written again is bootstrapped again.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / "auroc_ci.json"
        try:
            self.known: dict[str, list[Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def interval(self, store: Store, record: dict[str, Any]) -> tuple[float, float]:
        key = record["key"]
        path = store.scores_path(key)
        if not path.is_file():
            return float("nan"), float("nan")
        # the store's own hash of the scores when the record has one, else the file's size and time
        content = record.get("scores_sha256") or f"{path.stat().st_size}:{path.stat().st_mtime_ns}"
        stamp = f"{content}:{RESAMPLES}"
        entry = self.known.get(key)
        if entry is not None and entry[0] == stamp:
            return _nan(entry[1]), _nan(entry[2])
        arrays = store.scores(key)
        if "labels" not in arrays:
            return float("nan"), float("nan")
        low, high = bootstrap_auroc(arrays["labels"], arrays["scores"], seed=int(key[:8], 16))  # seeded by the job
        self.known[key], self.changed = [stamp, to_json_safe(low), to_json_safe(high)], True
        return low, high

    def save(self) -> None:
        if not self.changed:
            return
        with contextlib.suppress(OSError):  # a read-only results folder: the intervals are computed again next time
            replace_whole(self.path, json.dumps(self.known))


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _row(record: dict[str, Any], store: Store, cache: _IntervalCache | None) -> dict[str, Any]:
    params = record.get("params") or {}
    options = record.get("protocol_options") or {}
    split = record.get("split") or {}
    error = record.get("error")
    row: dict[str, Any] = {c: record.get(c) for c in COLUMNS}
    row["scoring"] = record.get("scoring") or "eval"
    row["config_fingerprint"] = config_fingerprint(
        record["method"], params, options, record.get("selection") or "val", row["scoring"]
    )
    check = record.get("validation_check") or {}
    row["val_auroc"], row["inverted"] = check.get("auroc", np.nan), bool(check.get("inverted", False))
    row["constant_features"] = int(record.get("constant_features") or 0)
    row.update({name: (np.nan if v is None else v) for name, v in (record.get("metrics") or {}).items()})
    row["auroc_ci_low"] = row["auroc_ci_high"] = np.nan
    if cache is not None and record.get("status") == OK:
        row["auroc_ci_low"], row["auroc_ci_high"] = cache.interval(store, record)
    row.update({c: record.get(c) for c in ("fit_seconds", "score_seconds", "peak_rss_mb", "peak_rss_scope", "device", "started", "created")})
    row.update(
        n_train=split.get("train"), n_val=split.get("val"), n_test=split.get("test"), n_test_anomalies=split.get("test_anomalies"),
        error=f"{error.get('type')}: {error.get('message')}" if error else None,
    )  # fmt: skip
    # lists (lr_steps) become JSON text: a cell of a DataFrame must compare and hash
    row.update({PARAM + k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in params.items()})
    row.update({PROTOCOL + k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in options.items()})
    return row


def results(path: Path | str | Store, ci: bool = True) -> pd.DataFrame:
    """The tidy table of a results folder (schema in this module's docstring), oldest job first.

    ``ci=False`` skips the bootstrap intervals (their columns stay, NaN):
    tables printed after a run do not need them.
    """
    store = path if isinstance(path, Store) else Store(path)
    records = store.records()
    cache = _IntervalCache(store.root) if ci and records else None
    rows = [_row(record, store, cache) for record in records]
    if cache is not None:
        cache.save()
    frame = pd.DataFrame(rows)
    settings = [c for c in frame.columns if c.startswith((PARAM, PROTOCOL))]
    if settings:  # as given: an integer parameter stays an integer beside methods that lack it
        frame[settings] = pd.DataFrame([{c: r.get(c) for c in settings} for r in rows], dtype=object, index=frame.index)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS + TAIL)
    metrics = sorted({m for r in records for m in (r.get("metrics") or {})})
    params = sorted(c for c in frame.columns if c.startswith(PARAM))
    options = sorted(c for c in frame.columns if c.startswith(PROTOCOL))
    return frame.reindex(columns=COLUMNS + metrics + TAIL + params + options)


def metric_names(frame: pd.DataFrame) -> list[str]:
    """The metric columns of a tidy frame (everything that is neither fixed, parameter nor option)."""
    fixed = set(COLUMNS) | set(TAIL)
    return [c for c in frame.columns if c not in fixed and not c.startswith((PARAM, PROTOCOL))]
