"""Paper-style tables: mean ± std over repetitions, best per row in bold, oracle cells marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.engine.store import Store
from odbench.views.tables import render, tables


def _store(tmp_path: Path, rows: list[tuple]) -> Store:
    """Records written through the real store: (method, dataset, protocol, class, rep, metric, value, selection)."""
    store = Store(tmp_path)
    for i, (method, dataset, protocol, cls, rep, metric, value, selection) in enumerate(rows):
        record = {"key": f"k{i:03d}", "status": "ok", "method": method, "dataset": dataset, "protocol": protocol,
                  "normal_class": cls, "repetition": rep, "seed": rep, "selection": selection,
                  "headline_metric": metric, "metrics": {metric: value}, "created": f"2026-01-01T00:00:{i:02d}"}  # fmt: skip
        store.write(record, np.zeros(2), np.array([0, 1]))
    return store


def test_per_class_table(tmp_path: Path) -> None:
    rows = [
        ("ocsvm", "digits", "one_vs_all", "0", 0, "auroc", 0.90, "val"),
        ("ocsvm", "digits", "one_vs_all", "0", 1, "auroc", 0.80, "val"),
        ("deep", "digits", "one_vs_all", "0", 0, "auroc", 0.95, "oracle"),
        ("ocsvm", "digits", "one_vs_all", "1", 0, "auroc", 0.70, "val"),
        ("deep", "digits", "one_vs_all", "1", 0, "auroc", 0.60, "val"),
    ]
    (table,) = tables(_store(tmp_path, rows).frame(), method_order=["ocsvm", "deep"])
    assert table.title.startswith("digits (one_vs_all), auroc")
    lines = table.text.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["normal class", "ocsvm", "deep"]
    row0 = [c.strip() for c in lines[2].split("|")[1:-1]]
    row1 = [c.strip() for c in lines[3].split("|")[1:-1]]
    mean = [c.strip() for c in lines[4].split("|")[1:-1]]
    # two repetitions: mean ± sample std; one repetition: the mean alone
    assert row0 == ["0", "0.850 ± 0.071", "**0.950**†"]
    assert row1 == ["1", "**0.700**", "0.600"]
    assert mean == ["mean", "**0.775**", "**0.775**†"], "ties are all bold; oracle taints the mean"
    assert "† selected on test data (oracle)" in table.text


def test_single_task_table_is_methods_by_datasets(tmp_path: Path) -> None:
    rows = [
        ("knn", "thyroid", "contamination", None, 0, "f1@contamination", 0.5, "val"),
        ("lof", "thyroid", "contamination", None, 0, "f1@contamination", 0.6, "val"),
        ("knn", "sine2d", "contamination", None, 0, "f1@contamination", 0.9, "val"),
        ("lof", "sine2d", "contamination", None, 0, "f1@contamination", 0.7, "val"),
    ]
    (table,) = tables(_store(tmp_path, rows).frame(), fmt="latex", digits=2)
    assert table.title.startswith("contamination, f1@contamination: rows = method, columns = dataset")
    text = " ".join(table.text.split())
    assert r"knn & 0.50 & \textbf{0.90}" in text
    assert r"lof & \textbf{0.60} & 0.70" in text
    assert "oracle" not in table.text
    assert render([table], "latex").startswith("% contamination")
