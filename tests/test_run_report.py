"""Every `odbench run` writes its HTML report (``--no-report`` skips it), and slow steps after the jobs are never silent."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest

from odbench.cli import main
from odbench.observers.progress import Ticker


def test_a_named_run_writes_its_html_report_and_no_report_skips_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    base = ["run", "--methods", "knn", "--datasets", "sine2d", "--no-mlflow", "--results", str(results)]
    assert main(base) == 0
    err = capsys.readouterr().err
    html = results / "report.html"
    assert html.is_file() and "knn" in html.read_text(), "a run that names its methods writes report.html too"
    assert f"odbench: HTML report (tables, ROC/PR curves, rankings): {html}" in err, err
    assert "odbench: writing the HTML report" in err, "the report's start is said, so its wait is not silent"
    assert "odbench report --results" not in err, "no command that reads like a path"

    skipped = tmp_path / "skipped"
    assert main(["run", "--methods", "knn", "--datasets", "sine2d", "--no-mlflow", "--results", str(skipped), "--no-report"]) == 0
    err = capsys.readouterr().err
    assert not (skipped / "report.html").exists() and "HTML report" not in err, err


def test_a_ticker_says_what_runs_every_few_seconds_until_it_ends() -> None:
    stream = io.StringIO()
    with Ticker("mirroring to MLflow", stream, every=0.05) as ticker:
        ticker.update("3/42 runs")
        time.sleep(0.3)
    time.sleep(0.1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "odbench: mirroring to MLflow"
    ticks = [line for line in lines[1:] if re.fullmatch(r"odbench: mirroring to MLflow: 3/42 runs \(0:00:\d\d\)", line)]
    assert len(ticks) >= 2 and len(ticks) == len(lines) - 1, lines
    count = len(lines)
    time.sleep(0.2)
    assert len(stream.getvalue().splitlines()) == count, "nothing after the step ended"
    quiet = Ticker("anything", None, every=0.01)
    with quiet:
        time.sleep(0.05)  # no stream: silent, and no error


def test_a_report_of_the_same_jobs_is_not_drawn_again(tmp_path: Path) -> None:
    """A resume whose jobs were all done leaves report.html as it was; a new job or another option redraws it."""
    from odbench.views.report import report

    results = tmp_path / "results"
    assert main(["run", "--methods", "knn", "--datasets", "sine2d", "--no-mlflow", "--no-report", "--results", str(results)]) == 0
    html = results / "report.html"
    assert not report(results, html=html).html_unchanged
    drawn = html.read_bytes()
    html.write_bytes(drawn.replace(b"<body>", b"<body><!-- touched -->", 1))  # a redraw would lose this mark
    again = report(results, html=html)
    assert again.html_unchanged and b"<!-- touched -->" in html.read_bytes(), "the same jobs were drawn again"
    assert not report(results, html=html, digits=2).html_unchanged, "another option is another page"
    assert main(["run", "--methods", "lof", "--datasets", "sine2d", "--no-mlflow", "--no-report", "--results", str(results)]) == 0
    assert not report(results, html=html, digits=2).html_unchanged, "a new job is drawn"
    assert "lof" in html.read_text()
