"""Methods ranked across tasks: Friedman's test, Nemenyi's post-hoc test, average ranks.

A *task* is one (dataset, protocol, normal class); its value for a method
is the mean of the headline metric over repetitions (higher is better, so
rank 1 is the best).  The statistics are scipy's
(``scipy.stats.friedmanchisquare``) and scikit-posthocs'
(``posthoc_nemenyi_friedman``), not written here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: the least a critical-difference diagram needs (below it the test says little)
MIN_METHODS, MIN_TASKS = 3, 5


@dataclass(frozen=True)
class Ranking:
    """Average ranks (1 = best) of ``methods`` over ``tasks`` and the tests behind the diagram."""

    values: pd.DataFrame  # tasks x methods, the metric
    average_ranks: pd.Series  # method -> average rank, best first
    friedman_statistic: float
    friedman_p: float
    nemenyi_p: pd.DataFrame  # methods x methods, p-values
    dropped: list[str]  # methods left out: results on too few of the tasks

    @property
    def n_tasks(self) -> int:
        return len(self.values)

    def lines(self) -> list[str]:
        """The ranking in words: the Friedman result, then one method per line, best first."""
        out = [
            f"Friedman test over {self.n_tasks} tasks and {len(self.average_ranks)} methods: "
            f"chi2 = {self.friedman_statistic:.2f}, p = {self.friedman_p:.3g}"
        ]
        out += [f"{rank:5.2f}  {method}" for method, rank in self.average_ranks.items()]
        if self.dropped:
            out.append(f"left out (results on fewer than half of the tasks): {', '.join(self.dropped)}")
        return out


def task_values(frame: pd.DataFrame, column: pd.Series) -> pd.DataFrame:
    """Tasks x columns: each task's headline metric, averaged over repetitions.

    ``frame``: successful rows of the tidy table; ``column``: each row's
    table column (method, or method[config]).
    """
    rows = []
    for index, row in frame.iterrows():
        metric = row["headline_metric"]
        value = row.get(metric) if isinstance(metric, str) else None
        if value is None or pd.isna(value):
            continue
        cls = "" if pd.isna(row["normal_class"]) else f"/{row['normal_class']}"
        rows.append({"task": f"{row['dataset']}{cls} ({row['protocol']})", "column": column[index], "value": float(value)})
    if not rows:
        return pd.DataFrame()
    long = pd.DataFrame(rows)
    return long.pivot_table(index="task", columns="column", values="value", aggfunc="mean")


def rank_methods(values: pd.DataFrame) -> Ranking | None:
    """The ranking of ``values`` (tasks x methods), or None below 3 methods on 5 complete tasks.

    Methods with results on fewer than half of the tasks are dropped first,
    then tasks that miss any remaining method (Friedman's test needs
    complete blocks).
    """
    import scikit_posthocs as sp
    from scipy.stats import friedmanchisquare

    if values.empty:
        return None
    coverage = values.notna().mean()
    dropped = sorted(coverage.index[coverage < 0.5])
    complete = values.drop(columns=dropped).dropna()
    if complete.shape[1] < MIN_METHODS or complete.shape[0] < MIN_TASKS:
        return None
    statistic, p = friedmanchisquare(*[complete[c].to_numpy() for c in complete.columns])
    ranks = complete.rank(axis=1, ascending=False).mean().sort_values()
    nemenyi = sp.posthoc_nemenyi_friedman(complete.to_numpy())
    nemenyi.index = nemenyi.columns = list(complete.columns)
    return Ranking(complete, ranks, float(statistic), float(p), nemenyi, dropped)
