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
from pathlib import Path

import pytest

# the session's MLflow schema template (autouse)
from test_tracking import _schema_template, mlflow_schema, subprocess_env  # noqa: F401

from odbench.cli import main
from odbench.engine.store import Store
from odbench.views.mlflow_ui import runs_page

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
        assert "drocc/digits/0/r0" in dom and "deepsvdd/digits/0/r0" in dom, "both runs in the runs table"
        assert "Sort: auroc" in dom.replace("<!-- -->", ""), "ordered by AUROC"
        # the AUROC behind that order, from the same server's REST API
        query = json.dumps({"experiment_ids": [experiment_id], "filter": "tags.`odbench.kind` = 'job'"}).encode()
        request = urllib.request.Request(f"{url}/ajax-api/2.0/mlflow/runs/search", query, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            served = json.load(answer)["runs"]
        shown = {r["info"]["run_name"].split("/")[0]: {m["key"]: m["value"] for m in r["data"]["metrics"]} for r in served}
        assert {method: metrics["auroc"] for method, metrics in shown.items()} == pytest.approx(auroc)
        assert screenshot.is_file() and screenshot.stat().st_size > 10_000
        assert _listeners(port), "the server runs while odbench ui does"
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(30)
    deadline = time.monotonic() + 15
    while _listeners(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _listeners(port) == [], "SIGTERM to odbench ui stopped its server too"
