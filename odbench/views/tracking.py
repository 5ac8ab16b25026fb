"""An MLflow mirror of the results store, for browsing (``odbench ui``).

The store is the source of truth; MLflow is a view.  Each job becomes one run
nested under a parent run per suite invocation, with tags (method, dataset,
protocol, normal class, seed, repetition, job key, status, selection),
parameters, final metrics, per-epoch history as stepped metrics, and the
job's scores ``.npz`` as an artifact.  Only the main process logs, after each
job finishes.  If MLflow raises, one warning line is printed and logging
stops for the rest of the suite; results are unaffected.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

# Quiet, offline MLflow: no telemetry, no progress bars, no INFO chatter.
# setdefault leaves a user's explicit choice alone.
_QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}

# log_batch's documented limits per call
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100
_MAX_PARAM_CHARS = 6000


def quiet_mlflow() -> None:
    """Set the environment that keeps MLflow quiet; call before importing it."""
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def default_tracking_uri(results: Path) -> str:
    """``sqlite:///<results>/mlflow.db`` (absolute path)."""
    return f"sqlite:///{Path(results).resolve() / 'mlflow.db'}"


def artifact_root(results: Path) -> str:
    return (Path(results).resolve() / "mlartifacts").as_uri()


def mlflow_name(name: str) -> str:
    """A metric/param name MLflow accepts (``f1@contamination`` -> ``f1_at_contamination``)."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


class Tracker:
    """Logs finished jobs to MLflow; never raises.

    ``uri`` defaults to a SQLite database in ``results`` (artifacts in
    ``results/mlartifacts``).  The parent run is created with the first job
    logged, so a suite that finds everything already done leaves no empty
    run behind.
    """

    def __init__(
        self, results: Path, uri: str | None = None, experiment: str = "odbench", suite: str = "suite",
        stream: Any = None,
    ) -> None:  # fmt: skip
        self.results = Path(results)
        self.uri = uri or default_tracking_uri(self.results)
        self.experiment = experiment
        self.suite = suite
        self.stream = stream or sys.stderr
        self.enabled = True
        self.client: Any = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.logged = 0
        self._studies: dict[str, str] = {}  # study name -> its MLflow run

    wants_events = False  # runs are logged when their job ends

    def event(self, event: Any) -> None:
        pass

    def _warn(self, err: BaseException) -> None:
        self.enabled = False
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(
            f"odbench: warning: MLflow logging disabled ({type(err).__name__}: {first[:200]}); results are in the store",
            file=self.stream,
        )

    def _connect(self) -> None:
        quiet_mlflow()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = artifact_root(self.results) if self.uri == default_tracking_uri(self.results) else None
            self.experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
        parent = self.client.create_run(self.experiment_id, run_name=self.suite, tags={"odbench.kind": "suite"})
        self.parent_id = parent.info.run_id

    def log_job(self, record: dict[str, Any], scores_path: Path | None) -> None:
        """One MLflow run for one finished (ok or failed) job."""
        if not self.enabled:
            return
        try:
            if self.client is None:
                self._connect()
            self._log(record, scores_path)
            self.logged += 1
        except Exception as err:  # MLflow is a view: never let it stop a suite
            self._warn(err)

    def _log(self, record: dict[str, Any], scores_path: Path | None) -> None:
        from mlflow.entities import Metric, Param

        cls = record.get("normal_class")
        name = (
            f"{record['method']}/{record['dataset']}"
            + (f"/{cls}" if cls is not None else "")
            + f"/r{record['repetition']}"
        )
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "method": record["method"],
            "dataset": record["dataset"],
            "protocol": record["protocol"],
            "normal_class": str(cls),
            "seed": str(record.get("seed")),
            "repetition": str(record["repetition"]),
            "job_key": record["key"],
            "status": record["status"],
            "selection": record.get("selection", "val"),
            "device": str(record.get("device")),
        }
        if record.get("error"):
            tags["error"] = f"{record['error']['type']}: {record['error']['message']}"[:5000]
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        params = {f"param.{mlflow_name(k)}": v for k, v in record.get("params", {}).items()}
        params.update({f"protocol.{mlflow_name(k)}": v for k, v in record.get("protocol_options", {}).items()})
        params["base_seed"] = record.get("base_seed")
        param_list = [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]
        metrics = [
            Metric(mlflow_name(k), float("nan") if v is None else float(v), now, 0)
            for k, v in record.get("metrics", {}).items()
        ]
        for extra in ("fit_seconds", "score_seconds", "peak_rss_mb"):
            if record.get(extra) is not None:
                metrics.append(Metric(extra, float(record[extra]), now, 0))
        for row in record.get("history", []):
            step = int(row["epoch"])
            metrics += [Metric(f"epoch/{mlflow_name(k)}", float(v), now, step) for k, v in row.items() if k != "epoch"]
        metric_chunks, param_chunks = _chunks(metrics, _MAX_METRICS), _chunks(param_list, _MAX_PARAMS)
        for i in range(max(len(metric_chunks), len(param_chunks))):  # usually one call per job
            self.client.log_batch(
                run_id,
                metrics=metric_chunks[i] if i < len(metric_chunks) else [],
                params=param_chunks[i] if i < len(param_chunks) else [],
            )
        if scores_path is not None and Path(scores_path).is_file():
            self.client.log_artifact(run_id, str(scores_path))
        self.client.set_terminated(run_id, status="FINISHED" if record["status"] == "ok" else "FAILED")

    def log_trial(self, study: str, number: int, params: dict[str, Any], value: float | None, state: str) -> None:
        """One Optuna trial as an MLflow run, nested under its study's run."""
        if not self.enabled:
            return
        try:
            if self.client is None:
                self._connect()
            if study not in self._studies:
                run = self.client.create_run(
                    self.experiment_id, run_name=f"study {study}",
                    tags={"mlflow.parentRunId": self.parent_id, "odbench.kind": "study", "study": study},
                )  # fmt: skip
                self._studies[study] = run.info.run_id
            tags = {"mlflow.parentRunId": self._studies[study], "odbench.kind": "trial", "study": study, "state": state}
            run = self.client.create_run(self.experiment_id, run_name=f"trial {number}", tags=tags)
            from mlflow.entities import Metric, Param

            now = int(time.time() * 1000)
            metrics = [Metric("validation_value", float(value), now, 0)] if value is not None else []
            self.client.log_batch(
                run.info.run_id, metrics=metrics, params=[Param(mlflow_name(k), str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]
            )
            self.client.set_terminated(run.info.run_id, status="FINISHED" if state == "COMPLETE" else "KILLED")
        except Exception as err:  # MLflow is a view: never let it stop a study
            self._warn(err)

    def finish(self, status: str = "FINISHED") -> None:
        """Close the parent run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if self.parent_id is None:
            return
        try:
            for run_id in self._studies.values():
                self.client.set_terminated(run_id, status=status if self.enabled else "FAILED")
            self.client.set_terminated(self.parent_id, status=status if self.enabled else "FAILED")
        except Exception as err:
            if self.enabled:
                self._warn(err)
