"""`odbench new`, `odbench check`, and user data sources through `odbench run`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from odbench.cli import main

INVERTED = '''
import numpy as np
from odbench.api import Method


class Inverted(Method):
    name = "inverted_distance"
    modalities = ("tabular",)

    def fit(self, task, ctx):
        self.mean_ = task.train.normal.mean(axis=0)
        return self

    def anomaly_score(self, X):
        return -np.linalg.norm(X - self.mean_, axis=1)  # normality, not anomaly: the classic sign slip
'''


def test_new_method_passes_check_as_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "plugins"
    assert main(["new", "method", "foo", "--dir", str(folder)]) == 0
    assert main(["check", str(folder / "foo.py")]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "PASS end-to-end job" in out
    # the skeleton runs as a plugin like any other
    assert main(["run", "--plugin-dir", str(folder), "--methods", "foo", "--datasets", "digits", "--classes", "1",
                 "--results", str(tmp_path / "r"), "--no-mlflow"]) == 0  # fmt: skip


def test_new_dataset_passes_check_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "plugins"
    assert main(["new", "dataset", "blobs", "--dir", str(folder)]) == 0
    assert main(["check", str(folder / "blobs.py")]) == 0
    assert main(["new", "dataset", "blobs", "--dir", str(folder)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_check_names_an_inverted_score(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "inverted.py"
    path.write_text(INVERTED)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL score direction [tabular]" in out
    assert "higher for MORE anomalous points" in out


def test_check_on_a_file_without_plugins(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    assert main(["check", str(path)]) == 1
    assert main(["check", str(tmp_path / "missing.py")]) == 2


def _csv(path: Path, n: int = 120) -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(n, 3))
    anomalies = rng.normal(loc=5.0, size=(12, 3))
    frame = pd.DataFrame(np.concatenate([normal, anomalies]), columns=["a", "b", "c"])
    frame["label"] = np.r_[np.zeros(n, int), np.ones(12, int)]
    frame.to_csv(path, index=False)


def test_contamination_run_on_a_csv_makes_a_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "mine.csv"
    _csv(path)
    argv = ["run", "--methods", "knn,iforest", "--datasets", f"csv:{path}", "--results", str(tmp_path / "r"), "--no-mlflow"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "### contamination, f1@contamination" in out and f"csv:{path}" in out and "| knn" in out
    # a changed file is new data: its jobs run again instead of reusing stale results
    _csv(path, n=100)
    assert main(argv) == 0
    assert "2 ok" in capsys.readouterr().err


def test_one_vs_all_run_on_an_image_folder_makes_a_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 6)):
        for name, level in (("dark", 40), ("light", 210)):
            folder = tmp_path / "imgs" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(level, 10, (8, 8)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "L").save(folder / f"{i}.png")
    argv = ["run", "--methods", "knn", "--datasets", f"folder:{tmp_path / 'imgs'}", "--results", str(tmp_path / "r"), "--no-mlflow"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(one_vs_all), auroc" in out and "| dark" in out and "| light" in out


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("a,b,label\n1,2,0\n3,4,0\n", "at least two classes"),
        ("a,b,label\n1,x,0\n3,4,1\n", "non-numeric feature columns b"),
        ("a,b,label\n1,,0\n3,4,1\n", "NaN or inf values"),
    ],
)
def test_bad_user_data_is_one_line_exit_2_and_nothing_stored(
    content: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    results = tmp_path / "r"
    assert main(["run", "--methods", "knn", "--datasets", f"csv:{path}", "--results", str(results)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("odbench: error: ") and fragment in line
    assert not results.exists()
