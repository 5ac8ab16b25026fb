"""Paper-style tables: mean ± std over repetitions, best per row in bold, oracle cells marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from odbench.engine.store import Store
from odbench.views.results import results
from odbench.views.tables import render, summary, tables


def _store(tmp_path: Path, rows: list[tuple], params: list[dict] | None = None) -> Store:
    """Records written through the real store: (method, dataset, protocol, class, rep, metric, value, selection)."""
    store = Store(tmp_path)
    for i, (method, dataset, protocol, cls, rep, metric, value, selection) in enumerate(rows):
        record = {"key": f"k{i:03d}", "status": "ok", "method": method, "dataset": dataset, "protocol": protocol,
                  "normal_class": cls, "repetition": rep, "seed": rep, "selection": selection,
                  "headline_metric": metric, "metrics": {metric: value}, "created": f"2026-01-01T00:00:{i:02d}",
                  "params": (params or [{}] * len(rows))[i]}  # fmt: skip
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
    assert "† selected on test data (oracle)" in table.notes[0] and "† selected" in render([table])


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
    assert render([table], "latex").startswith("\\begin{table}")


def _cells(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("|")]


def test_two_configurations_of_a_cell_get_two_columns(tmp_path: Path) -> None:
    """epochs=5 and epochs=100 in one cell: two columns with their own means, never their average."""
    rows = [("drocc", "digits", "one_vs_all", "0", r, "auroc", v, "val") for r, v in enumerate([0.9, 0.8, 0.5, 0.4])]
    rows.append(("knn", "digits", "one_vs_all", "0", 0, "auroc", 0.7, "val"))
    params = [{"epochs": 5, "lr": 0.1}, {"epochs": 5, "lr": 0.1}, {"epochs": 100, "lr": 0.1}, {"epochs": 100, "lr": 0.1}, {"k": 3}]
    frame = results(_store(tmp_path, rows, params), ci=False)
    (table,) = tables(frame)
    cells = _cells(table.text)
    assert cells[0] == ["normal class", "drocc[epochs=5]", "drocc[epochs=100]", "knn"]
    assert cells[2] == ["0", "**0.850 ± 0.071**", "0.450 ± 0.071", "0.700"]
    assert "0.650" not in table.text, "the pooled mean of both configurations"
    assert table.notes == ("drocc: 2 configurations differ in epochs; one column each, never averaged",)
    agg = summary(frame)
    drocc = agg[agg["method"] == "drocc"].set_index("column")
    assert drocc.loc["drocc[epochs=5]", "mean"] == pytest.approx(0.85) and drocc.loc["drocc[epochs=100]", "n"] == 2


def test_parameters_differing_only_between_classes_keep_one_column(tmp_path: Path) -> None:
    """Per-class tuned parameters are one method, one column: no cell mixes configurations."""
    rows = [("drocc", "digits", "one_vs_all", str(c), 0, "auroc", 0.6 + c / 10, "val") for c in range(2)]
    frame = results(_store(tmp_path, rows, [{"radius": 1.0}, {"radius": 4.0}]), ci=False)
    (table,) = tables(frame)
    assert _cells(table.text)[0] == ["normal class", "drocc"] and table.notes == ()
