"""What one job's MLflow run holds, written from its store record.

A run is identified by its tags, never by MLflow's run id: ``job_key`` (the
job's key in the store), ``odbench.created`` (which record of that key: a
failed job re-run writes a new one), ``odbench.kind`` (``job``, ``suite``,
``study``, ``trial``) and ``odbench.owner`` (the process that opened it, so
a run left ``RUNNING`` by a dead process can be told from a live one).
Artifacts: the record as ``record.json``, a ROC curve ``roc.png`` for a
finished job, the traceback ``traceback.txt`` for a failed one, and the raw
scores under ``scores/``.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

KEY, CREATED, KIND, OWNER = "job_key", "odbench.created", "odbench.kind", "odbench.owner"

# log_batch's documented limits per call
_MAX_METRICS, _MAX_PARAMS = 1000, 100
_MAX_PARAM_CHARS = 6000


def mlflow_name(name: str) -> str:
    """A metric/param name MLflow accepts (``f1@contamination`` -> ``f1_at_contamination``)."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))


def _process_start(pid: int) -> str:
    """The kernel's start tick of ``pid`` (``/proc``), so a reused pid is not mistaken for its predecessor."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_id() -> str:
    """``host:pid:start`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def owner_alive(owner: str) -> bool | None:
    """Whether the process named by :func:`owner_id` still runs; ``None`` when it ran on another host."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return None
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    return not start or _process_start(pid) in ("", start)


def millis(stamp: str | float | None) -> int | None:
    """Epoch milliseconds of an ISO time (a record's ``started``/``created``) or of ``time.time()`` seconds."""
    if stamp is None:
        return None
    if isinstance(stamp, (int, float)):
        return int(stamp * 1000)
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000)
    except ValueError:
        return None


def run_name(job: Any) -> str:
    """``method/dataset/class/rN`` from a record (dict) or a planned job."""
    get = job.get if isinstance(job, dict) else lambda name: getattr(job, name)
    cls = get("normal_class")
    return f"{get('method')}/{get('dataset')}" + (f"/{cls}" if cls is not None else "") + f"/r{get('repetition')}"


def job_tags(job: Any, key: str) -> dict[str, str]:
    """The tags a job's run has from its start: what it is and whose it is."""
    get = job.get if isinstance(job, dict) else lambda name: getattr(job, name, None)
    return {
        KIND: "job",
        KEY: key,
        OWNER: owner_id(),
        "method": str(get("method")),
        "dataset": str(get("dataset")),
        "protocol": str(get("protocol")),
        "normal_class": str(get("normal_class")),
        "seed": str(get("seed")),
        "repetition": str(get("repetition")),
        "selection": str(get("selection") or "val"),
    }


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


def log_epochs(client: Any, run_id: str, rows: list[dict[str, float]], stamp_ms: int) -> None:
    """History rows (``{"epoch": e, name: value, ...}``) as stepped ``epoch/<name>`` metrics."""
    from mlflow.entities import Metric

    metrics = [
        Metric(f"epoch/{mlflow_name(k)}", float(v), stamp_ms, int(row["epoch"]))
        for row in rows
        for k, v in row.items()
        if k != "epoch" and v is not None
    ]
    for chunk in _chunks(metrics, _MAX_METRICS):
        if chunk:
            client.log_batch(run_id, metrics=chunk)


def complete_run(client: Any, run_id: str, record: dict[str, Any], scores_path: Path | None, epochs_logged: int = 0) -> None:
    """Write a finished job's record into its run and close it with the job's real end time.

    ``epochs_logged``: history rows already logged live while the job ran.
    """
    from mlflow.entities import Metric, Param

    end = millis(record.get("created")) or int(datetime.now().timestamp() * 1000)
    tags = {**job_tags(record, record["key"]), CREATED: str(record.get("created")), "status": record["status"]}
    tags.pop(OWNER)  # the run keeps the owner that opened it
    tags["device"] = str(record.get("device"))
    if record.get("error"):
        tags["error"] = f"{record['error']['type']}: {record['error']['message']}"[:5000]
    params = {f"param.{mlflow_name(k)}": v for k, v in record.get("params", {}).items()}
    params.update({f"protocol.{mlflow_name(k)}": v for k, v in record.get("protocol_options", {}).items()})
    params["base_seed"] = record.get("base_seed")
    param_list = [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]
    metrics = [
        Metric(mlflow_name(k), float("nan") if v is None else float(v), end, 0) for k, v in record.get("metrics", {}).items()
    ]
    for extra in ("fit_seconds", "score_seconds", "peak_rss_mb"):
        if record.get(extra) is not None:
            metrics.append(Metric(extra, float(record[extra]), end, 0))
    metric_chunks, param_chunks = _chunks(metrics, _MAX_METRICS), _chunks(param_list, _MAX_PARAMS)
    for i in range(max(len(metric_chunks), len(param_chunks))):  # usually one call per job
        client.log_batch(
            run_id,
            metrics=metric_chunks[i] if i < len(metric_chunks) else [],
            params=param_chunks[i] if i < len(param_chunks) else [],
            tags=[_tag(k, v) for k, v in tags.items()] if i == 0 else [],
        )
    log_epochs(client, run_id, record.get("history", [])[epochs_logged:], end)
    client.log_dict(run_id, record, "record.json")
    if record.get("error", {}).get("traceback"):
        client.log_text(run_id, record["error"]["traceback"], "traceback.txt")
    if scores_path is not None and Path(scores_path).is_file():
        client.log_artifact(run_id, str(scores_path), "scores")
        figure = roc_figure(scores_path, run_name(record), record.get("metrics", {}).get("auroc"))
        if figure is not None:
            client.log_figure(run_id, figure, "roc.png")
    client.set_terminated(run_id, status="FINISHED" if record["status"] == "ok" else "FAILED", end_time=end)


def _tag(key: str, value: str) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value)


def roc_figure(scores_path: Path, title: str, auroc: float | None) -> Any:
    """A matplotlib figure of the test ROC curve from a job's scores (``None`` without two classes)."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: safe off the main thread, no display needed
    from sklearn.metrics import roc_curve

    with np.load(scores_path, allow_pickle=False) as npz:
        if "labels" not in npz.files:
            return None
        scores, labels = npz["scores"], npz["labels"]
    if len(np.unique(labels)) < 2:
        return None
    fpr, tpr, _ = roc_curve(labels, scores)  # labels: 1 = anomalous, scores: higher = more anomalous
    figure = Figure(figsize=(4, 4), dpi=80)
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, label=f"AUROC {auroc:.3f}" if auroc is not None else None)
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(xlabel="false positive rate", ylabel="true positive rate (anomalies found)", title=title)
    if auroc is not None:
        axes.legend(loc="lower right")
    figure.subplots_adjust(left=0.16, bottom=0.13, right=0.96, top=0.9)  # tight_layout costs 0.2 s a job
    return figure
