"""``odbench ui`` in a real browser: the runs table shows DROCC and DeepSVDD with their AUROC; SIGTERM leaves no server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

# the session's MLflow schema template (autouse)
from test_tracking import _schema_template, mlflow_schema, subprocess_env  # noqa: F401

from odbench.cli import main
from odbench.engine.store import Store
from odbench.observers.mlflow_db import default_tracking_uri
from odbench.observers.mlflow_view import VIEW_TAG, runs_page

CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listeners(port: int) -> list[int]:
    """Pids whose command line serves ``port`` (what an orphaned server would be)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and b"--port" in args and str(port).encode() in args:
            found.append(int(proc.name))
    return found


class _RunsTable(HTMLParser):
    """The cells of MLflow's runs table in a dumped DOM: ``rows[row-id][col-id]`` is a cell's text.

    The table is an ag-grid: a row's pinned columns (the run's name) and its
    scrolled ones (the metrics) are separate elements sharing its ``row-id``;
    ``row-index`` is its place on screen.
    """

    _VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.places: dict[str, int] = {}
        self._open: list[tuple[str | None, str | None]] = []  # per open element: the row and the cell it starts

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._VOID:
            return
        found = dict(attrs)
        row = found.get("row-id") if found.get("role") == "row" else None
        if row is not None:
            self.places[row] = int(found.get("row-index") or 0)
        self._open.append((row, found.get("col-id") if found.get("role") == "gridcell" else None))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self._VOID and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        rows = [row for row, _ in self._open if row]
        cells = [cell for _, cell in self._open if cell]
        if rows and cells:
            row = self.rows.setdefault(rows[-1], {})
            row[cells[-1]] = row.get(cells[-1], "") + data


def _shown_auroc(dom: str) -> list[tuple[str, str]]:
    """``(run name cell, AUROC cell)`` of each row of the rendered table, top row first."""
    table = _RunsTable()
    table.feed(dom)
    rows = sorted(table.rows, key=lambda row: table.places.get(row, 0))
    name, auroc = "attributes.`Run Name`", "metrics.`auroc`"
    return [(table.rows[r].get(name, ""), table.rows[r].get(auroc, "").strip()) for r in rows]


def _chromium(*args: str, user_dir: Path) -> None:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={user_dir}",
                    "--window-size=1600,1000", "--virtual-time-budget=30000", *args],
                   capture_output=True, timeout=180, check=False)  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"headless Chromium ({CHROMIUM}) is not installed")
def test_ui_shows_drocc_and_deepsvdd_runs_with_auroc_and_stops_with_sigterm(tmp_path: Path) -> None:
    results = tmp_path / "results"
    argv = ["run", "--methods", "drocc,deepsvdd", "--datasets", "digits", "--classes", "0", "--device", "cpu",
            "--param", "drocc.epochs=2", "--param", "drocc.only_ce_epochs=1", "--param", "deepsvdd.epochs=2",
            "--param", "deepsvdd.pretrain_epochs=0", "--results", str(results)]  # fmt: skip
    assert main(argv) == 0
    auroc = {r["method"]: r["metrics"]["auroc"] for r in Store(results).records("ok")}
    # as a mirror written before odbench kept its view: `odbench ui` sets the view itself
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=default_tracking_uri(results))
    experiment = client.get_experiment_by_name("odbench")
    assert experiment is not None and VIEW_TAG in experiment.tags, "odbench run keeps the view on its experiment"
    client.delete_experiment_tag(experiment.experiment_id, VIEW_TAG)
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "odbench.cli", "ui", "--results", str(results), "--port", str(port)],
                          env=subprocess_env(), stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=odbench", timeout=2) as answer:
                    experiment_id = json.load(answer)["experiment"]["experiment_id"]
                break
            except OSError:
                assert ui.poll() is None, ui.stderr.read() if ui.stderr else ""
                time.sleep(0.3)
        else:
            pytest.fail("odbench ui did not answer")
        page = runs_page(url, experiment_id)
        assert ui.stderr is not None
        printed = [ui.stderr.readline() for _ in range(1)]
        while "MLflow UI at" not in printed[-1] and printed[-1] and len(printed) < 50:
            printed.append(ui.stderr.readline())
        assert page in printed[-1], f"odbench ui prints the runs table's address: {printed}"
        dom_file = tmp_path / "dom.html"
        with open(dom_file, "w") as out:
            subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--no-first-run",
                            f"--user-data-dir={tmp_path / 'chrome-dom'}", "--window-size=1600,1000",
                            "--virtual-time-budget=30000", "--dump-dom", page],
                           stdout=out, stderr=subprocess.DEVNULL, timeout=180, check=False)  # fmt: skip
        dom = dom_file.read_text()
        screenshot = tmp_path / "runs.png"
        _chromium(f"--screenshot={screenshot}", page, user_dir=tmp_path / "chrome-shot")
        keep = os.environ.get("ODBENCH_UI_SCREENSHOT")
        if keep and screenshot.is_file():
            shutil.copy(screenshot, keep)
            shutil.copy(dom_file, Path(keep).with_suffix(".html"))
        assert "Sort: auroc" in dom.replace("<!-- -->", ""), "ordered by AUROC"
        # the AUROC column is on screen: each run's value beside its name (MLflow's UI writes a number's
        # shortest round-trip digits, as repr does), the best first
        shown = _shown_auroc(dom)
        jobs = [(name, value) for name, value in shown if name.endswith("/digits/0/r0")]
        best_first = sorted(auroc, key=lambda method: -auroc[method])
        assert len(jobs) == len(best_first) == 2, shown
        for (name, value), method in zip(jobs, best_first):
            assert name.endswith(f"{method}/digits/0/r0") and value == repr(auroc[method]), shown
        assert screenshot.is_file() and screenshot.stat().st_size > 10_000
        assert _listeners(port), "the server runs while odbench ui does"
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(30)
    deadline = time.monotonic() + 15
    while _listeners(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _listeners(port) == [], "SIGTERM to odbench ui stopped its server too"


def _api(url: str, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/ajax-api/2.0/mlflow/{endpoint}", data, {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        return dict(json.load(answer))


def _started_at(pid: int) -> float:
    """Epoch seconds at which process ``pid`` started (``/proc``)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    lines = Path("/proc/stat").read_text().splitlines()
    boot = next(int(line.split()[1]) for line in lines if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_ui_on_a_store_without_a_mirror_fills_it_while_the_server_starts(tmp_path: Path) -> None:
    results = tmp_path / "results"
    argv = ["run", "--methods", "knn", "--datasets", "digits", "--classes", "0", "--device", "cpu", "--no-mlflow",
            "--results", str(results)]  # fmt: skip
    assert main(argv) == 0 and not (results / "mlflow.db").exists()
    [record] = Store(results).records("ok")
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "odbench.cli", "ui", "--results", str(results), "--port", str(port)],
                          env=subprocess_env(), stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert ui.stderr is not None
        printed = [ui.stderr.readline()]
        while "MLflow UI at" not in printed[-1] and printed[-1] and len(printed) < 50:
            printed.append(ui.stderr.readline())
        assert "MLflow UI at" in printed[-1], printed
        servers = [pid for pid in _listeners(port) if b"uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert servers, "the server runs while odbench ui does"
        # the address comes once the mirror is filled: the job's run is there, with its AUROC, and the view
        experiment = _api(url, "experiments/get-by-name?experiment_name=odbench")["experiment"]
        assert VIEW_TAG in {tag["key"] for tag in experiment["tags"]}
        assert runs_page(url, experiment["experiment_id"]) in printed[-1]
        query = {"experiment_ids": [experiment["experiment_id"]], "filter": "tags.`odbench.kind` = 'job'"}
        [run] = _api(url, "runs/search", query)["runs"]
        assert {m["key"]: m["value"] for m in run["data"]["metrics"]}["auroc"] == record["metrics"]["auroc"]
        # ... filled while the server started, not before: the server is older than the experiment the filling made
        assert min(_started_at(pid) for pid in servers) < int(experiment["creation_time"]) / 1000
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(30)
