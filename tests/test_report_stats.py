"""Statistics of the report: the ranking behind the critical-difference diagram, and the reproduction gap table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scikit_posthocs as sp
from scipy.stats import friedmanchisquare

from odbench.views.ranks import rank_methods
from odbench.views.reproduce import gap_table, load_experiment, render_gap, save_gap, saved_gaps


def test_ranking_uses_friedman_and_nemenyi_and_ranks_best_first() -> None:
    rng = np.random.default_rng(0)
    values = pd.DataFrame({"good": 0.9 + rng.normal(0, 0.01, 8), "mid": 0.7 + rng.normal(0, 0.01, 8),
                           "bad": 0.5 + rng.normal(0, 0.01, 8), "sparse": [0.99] + [np.nan] * 7},
                          index=[f"task{i}" for i in range(8)])  # fmt: skip
    ranking = rank_methods(values)
    assert ranking is not None and ranking.dropped == ["sparse"]
    assert list(ranking.average_ranks.index) == ["good", "mid", "bad"] and list(ranking.average_ranks) == [1.0, 2.0, 3.0]
    full = values.drop(columns="sparse")
    assert ranking.friedman_p == pytest.approx(friedmanchisquare(*[full[c] for c in full]).pvalue)
    assert ranking.nemenyi_p.loc["good", "bad"] == pytest.approx(sp.posthoc_nemenyi_friedman(full.to_numpy()).iloc[0, 2])
    assert ranking.friedman_p < 0.01 and ranking.nemenyi_p.loc["good", "bad"] < 0.05
    assert rank_methods(full.iloc[:4]) is None, "fewer than 5 tasks"
    assert rank_methods(full[["good", "mid"]]) is None, "fewer than 3 methods"


def _ours(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"column": c, "dataset": "thyroid", "normal_class": "", "value": v, "oracle": False, "ceiling": np.nan}
            for c, vs in values.items() for v in vs]  # fmt: skip
    return pd.DataFrame(rows)


def test_gap_table_shows_honest_oracle_paper_and_both_gaps(tmp_path: Path) -> None:
    experiment = load_experiment("table2")
    honest = _ours({"drocc": [0.70, 0.72], "ocsvm": [0.40]})
    oracle = _ours({"drocc": [0.76, 0.78]})
    gaps = gap_table(experiment, honest, oracle, "quick").set_index("column")
    drocc = gaps.loc["drocc"]
    assert drocc["honest_mean"] == pytest.approx(0.71) and drocc["oracle_mean"] == pytest.approx(0.77)
    assert drocc["paper_mean"] == pytest.approx(0.78)  # results/paper: DROCC on Thyroid, Table 2
    assert drocc["paper_minus_honest"] == pytest.approx(0.07) and drocc["oracle_minus_honest"] == pytest.approx(0.06)
    assert np.isnan(gaps.loc["ocsvm", "oracle_mean"]) and gaps.loc["ocsvm", "oracle_n"] == 0
    text = render_gap(gaps.reset_index(), "markdown")
    row = next(line for line in text.splitlines() if "| drocc " in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # dataset, class, column, honest, selected by (none recorded here), oracle, paper, paper − honest, oracle − honest, why
    assert cells[:9] == ["thyroid", "", "drocc", "0.71 ± 0.01", "", "0.77 ± 0.01", "0.78 ± 0.03", "+0.07", "+0.06"]
    assert "metric: the paper's DROCC column used the authors' scripts" in cells[9]
    assert r"\toprule" in render_gap(gaps.reset_index(), "latex")
    save_gap(tmp_path, gaps.reset_index(), experiment, "quick")
    (back,) = saved_gaps(tmp_path)
    assert back.set_index("column").loc["drocc", "oracle_minus_honest"] == pytest.approx(0.06)
