"""The command line: one-line user errors, a tiny suite mirrored to MLflow, the report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from odbench.cli import main


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--methods", "knnn"], "unknown method 'knnn'; known: "),
        (["--datasets", "digitz"], "unknown dataset 'digitz'; known: "),
        (["--methods", "nomethod*"], "no method matches 'nomethod*'"),
        (["--jobs", "abc"], "argument --jobs: expected a positive integer, got 'abc'"),
        (["--seeds", "0"], "argument --seeds: expected a positive integer, got '0'"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--protocol", "nope"], "argument --protocol: invalid choice"),
        (["--datasets", "digits", "--classes", "3,11"], "unknown class '11' for dataset 'digits'"),
        (["--datasets", "digits", "--protocol", "contamination"], "defines no anomaly classes"),
        (["--param", "knn.n_neighbors"], "--param expects METHOD.KEY=VALUE"),
        (["--param", "lof.n_neighbors=3"], "--param given for method 'lof', which is not in this suite"),
        (["--protocol-option", "bogus=1"], "has no option 'bogus'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results = tmp_path / "results"
    base = ["run", "--results", str(results), "--methods", "knn", "--datasets", "sine2d"]
    assert main([*base, *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("odbench: error: ") and fragment in lines[0], lines[0]
    assert captured.out == ""
    assert not results.exists(), "a user mistake must not touch the store"


def test_report_and_prepare_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "--results", str(tmp_path / "empty")]) == 2
    assert main(["prepare", "nosuchdata"]) == 2
    assert main(["report", "--format", "docx"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("odbench: error: ") for line in lines)
    assert "no finished jobs" in lines[0] and "unknown dataset 'nosuchdata'" in lines[1]


def test_prepare_missing_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    # an empty data folder and a cache with a corrupt copy: the pinned checksum refuses it
    cache = Path(os.environ["ODBENCH_CACHE"]) / "thyroid"
    cache.mkdir(parents=True)
    (cache / "38_thyroid.npz").write_bytes(b"not the real file")
    assert main(["prepare", "thyroid"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("odbench: error: ") and "sha256" in line


def test_tiny_suite_is_mirrored_to_mlflow_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    argv = ["run", "--methods", "knn,lof", "--datasets", "digits", "--classes", "0,4", "--seeds", "2",
            "--results", str(results), "--device", "cpu", "--param", "knn.n_neighbors=3"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "digits (one_vs_all), auroc" in out and "±" in out and "**" in out

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("odbench")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 8, "one run per job: 2 methods x 2 classes x 2 repetitions"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    knn = next(r for r in children if r.data.tags["method"] == "knn")
    assert knn.data.params["param.n_neighbors"] == "3"
    assert {"auroc", "aupr", "fit_seconds"} <= set(knn.data.metrics)
    assert {"dataset", "protocol", "normal_class", "seed", "repetition", "job_key", "selection"} <= set(knn.data.tags)
    assert {a.path for a in client.list_artifacts(knn.info.run_id)} == {"record.json", "roc.png", "scores"}
    assert [a.path for a in client.list_artifacts(knn.info.run_id, "scores")] == [f"scores/{knn.data.tags['job_key']}.npz"]

    # a second identical command redoes nothing and logs nothing new
    assert main(argv) == 0
    assert "0 ok, 0 failed, 0 skipped, 8 already done" in capsys.readouterr().err
    assert len(client.search_runs([experiment.experiment_id])) == 9

    assert main(["report", "--results", str(results), "--methods", "knn", "--format", "csv"]) == 0
    csv = capsys.readouterr().out.splitlines()  # the aggregated table: numbers, not "mean ± std" text
    assert csv[0].startswith("dataset,protocol,metric,normal_class,method,column,config_fingerprint") and " ± " not in "".join(csv)
    assert csv[1].startswith("digits,one_vs_all,aupr,0,knn,knn,") and csv[1].endswith(",2,0")


def test_bf16_on_a_cpu_without_native_bf16_is_noted_before_the_jobs_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from odbench.deep.precision import cpu_has_native_bf16

    argv = ["run", "--methods", "drocc", "--datasets", "sine2d", "--device", "cpu", "--no-mlflow",
            "--results", str(tmp_path / "r"), "--param", "drocc.epochs=1", "--param", "drocc.only_ce_epochs=0",
            "--param", "drocc.ascent_num_steps=1", "--param", 'drocc.precision="bf16"']  # fmt: skip
    assert main(argv) == 0
    noted = "precision=bf16 on a CPU without native bfloat16" in capsys.readouterr().err
    assert noted is not cpu_has_native_bf16()


def test_the_command_leaves_no_fork_server_holding_its_output(tmp_path: Path) -> None:
    """A resume runs no job, but its pool's fork server starts importing at once (scikit-learn, pyod's base):
    the ``odbench`` command stops it as it exits, so a reader of its output (a pipe, ``| tee``) gets EOF then,
    not seconds later when the server's imports end."""
    import subprocess
    import sys
    import time

    run = [sys.executable, "-m", "odbench.cli", "run", "--methods", "drocc", "--datasets", "sine2d", "--no-mlflow",
           "--no-report", "--results", str(tmp_path / "r"), "--param", "drocc.epochs=2", "--param",
           "drocc.only_ce_epochs=1", "--param", "drocc.ascent_num_steps=1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    assert subprocess.run(run, env=env, capture_output=True, timeout=300).returncode == 0
    resume = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert resume.wait(timeout=300) == 0
    exited = time.monotonic()
    assert resume.stdout is not None
    output = resume.stdout.read()  # EOF only once every process holding the pipe has gone
    assert time.monotonic() - exited < 0.5, "the fork server outlived the command, holding its output open"
    assert b"1 already done" in output
