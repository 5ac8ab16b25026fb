"""The runs table ``odbench ui`` opens: AUROC and the other headline metrics shown, best AUROC first.

MLflow's UI keeps a runs table's columns in the browser only, and by default
shows none of a run's metrics.  What it does read from the server is a
*shared view*: an experiment tag ``mlflow.sharedViewState.<key>`` holding
JSON with the search facets (order, filter) and the table's state (columns,
their order and widths), applied when the page's address carries
``viewStateShareKey=<key>``.  odbench writes one such view, under its own
key, on the experiments it mirrors to (:func:`odbench.observers.tracking.connect`,
and ``odbench ui`` for a mirror written before there was one).

Checked in Chromium against MLflow 3.17.2's UI (``tests/test_tracking_ui.py``):
a metric column no run has is left out, so every metric odbench computes can
be named; the view is ignored when the address also names a search facet
(``orderByKey``, ``searchFilter``...), so the order lives in the view too;
``workflowType=machine_learning`` is not a facet, and without it MLflow opens
its GenAI navigation.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from odbench.core.metrics import METRICS
from odbench.observers.mlflow_runs import mlflow_name

#: the key of odbench's view in the page's address and in the experiment tag's name
VIEW_KEY = "odbench"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"

#: the tags of a job's run shown beside its metrics (its name already reads method/dataset/class/rN)
_TAG_COLUMNS = ("method", "dataset", "normal_class", "seed")

#: pixels: wide enough for a metric's full digits (MLflow's default of 100 cuts them to "0.99957...")
_METRIC_WIDTH = 160


def column(kind: str, name: str) -> str:
    """A column's key in MLflow's table state: ``metrics.`auroc```, ``tags.`method```, ``attributes.`Source```."""
    return f"{kind}.`{name}`"


def headline_metrics() -> list[str]:
    """The metric names a job's run can carry, as logged to MLflow: ``auroc`` first, then the others odbench computes."""
    names = [mlflow_name(name) for name in METRICS]
    return ["auroc", *(name for name in names if name != "auroc"), "fit_seconds"]


def runs_view() -> dict[str, Any]:
    """The shared view state: search facets and table state, as MLflow's UI reads them."""
    metrics = [column("metrics", name) for name in headline_metrics()]
    return {
        "orderByKey": column("metrics", "auroc"),
        "orderByAsc": False,
        "selectedColumns": [*metrics, *(column("tags", name) for name in _TAG_COLUMNS)],
        "columnOrder": metrics,  # the metrics right after the run's name, before MLflow's own columns
        "columnWidths": dict.fromkeys(metrics, _METRIC_WIDTH),
    }


def view_tag_value() -> str:
    """The tag's value: plain JSON (MLflow's UI tries to decompress it, then reads it as JSON)."""
    return json.dumps(runs_view(), sort_keys=True)


def runs_page(url: str, experiment_id: str | None, shared_view: bool = True) -> str:
    """The address of the experiment's runs table in MLflow's model-training view, with odbench's view.

    ``shared_view=False``: the same table ordered by AUROC but with MLflow's
    default columns, for an experiment that lacks the view's tag (the page
    would otherwise say the share key does not exist).
    """
    if experiment_id is None:
        return f"{url}/#/?workflowType=machine_learning"
    page = f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if shared_view:
        return f"{page}&viewStateShareKey={VIEW_KEY}"
    return f"{page}&orderByKey=metrics.%60auroc%60&orderByAsc=false"


def _call(url: str, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One call of MLflow's REST API (a GET without ``body``); raises ``OSError`` (``HTTPError`` included)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/ajax-api/2.0/mlflow/{endpoint}", data, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        result: dict[str, Any] = json.load(answer)
    return result


def ensure_view(url: str, experiment: str) -> tuple[str | None, bool]:
    """The id of the experiment named ``experiment`` on the server at ``url``, and whether it has odbench's view.

    A mirror written before odbench kept a view gets it here, through the
    server's REST API: the command serving the UI never imports MLflow
    (seconds).  ``(None, False)`` when there is no such experiment.
    """
    try:
        found = _call(url, f"experiments/get-by-name?experiment_name={urllib.parse.quote(experiment)}")["experiment"]
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None, False
        raise
    experiment_id = str(found["experiment_id"])
    tags = {tag["key"]: tag.get("value") for tag in found.get("tags", [])}
    value = view_tag_value()
    if tags.get(VIEW_TAG) != value:
        try:
            _call(
                url, "experiments/set-experiment-tag", {"experiment_id": experiment_id, "key": VIEW_TAG, "value": value}
            )
        except OSError:  # a read-only database, say: the table opens with MLflow's default columns
            return experiment_id, tags.get(VIEW_TAG) is not None
    return experiment_id, True
