"""Bad input, tried as a user would: one line, exit 2, no traceback, nothing computed, store untouched.

Every case runs the real ``odbench`` command line: most through ``odbench.cli.main`` in this process
(an interpreter start costs seconds), a few as a subprocess, as a user types them.  Add new cases to
``CASES``.  The cases of issue 13 §7 that must *work* (class ids, the OCLN option) are at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def _images(root: Path, classes: tuple[str, ...] = ("cats", "dogs"), n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(root / name / f"{i}.png")
    return root


def _objects(tmp: Path, which: str) -> str:
    X, y = np.random.default_rng(0).random((20, 3)), np.array([0, 1] * 10)
    boxed = np.empty(20, dtype=object)
    boxed[:] = [[1.0, 2.0]] * 20
    arrays = {"X": boxed, "y": y} if which == "X" else {"X": X, "y": np.array(["a", None] * 10, dtype=object)}
    np.savez(tmp / f"objects_{which}.npz", **arrays)
    return f"npz:{tmp / f'objects_{which}.npz'}"


def _plugin(tmp: Path, source: str) -> str:
    folder = tmp / "plugins"
    folder.mkdir()
    (folder / "broken.py").write_text(source)
    return str(folder)


def _text_png(tmp: Path) -> str:
    root = _images(tmp / "imgs")
    (root / "cats" / "notes.png").write_text("this is not an image")
    return f"folder:{root}"


def _file(tmp: Path) -> str:
    (tmp / "a_file").write_text("x")
    return str(tmp / "a_file")


def _read_only(tmp: Path) -> str:
    folder = tmp / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "results")


KNN = ["--methods", "knn", "--datasets", "sine2d"]
DROCC = ["--methods", "drocc", "--datasets", "sine2d"]

#: (case id, argv after `odbench run` given the tmp folder, a fragment of the error line)
CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("epochs=-1", lambda t: [*DROCC, "--param", "drocc.epochs=-1"], "drocc.epochs must be at least 1"),
    ("n_neighbors=abc", lambda t: [*KNN, "--param", "knn.n_neighbors=abc"], "must be an integer, got 'abc'"),
    ("n_neighbors=0", lambda t: [*KNN, "--param", "knn.n_neighbors=0"], "must be at least 1, got 0"),
    ("n_neighbors=2.5", lambda t: [*KNN, "--param", "knn.n_neighbors=2.5"], "must be an integer, got 2.5"),
    ("n_neighbors=", lambda t: [*KNN, "--param", "knn.n_neighbors="], "must be an integer, got ''"),
    ("nosuch_key", lambda t: [*KNN, "--param", "knn.nosuch_key=3"], "has no parameter 'nosuch_key'"),
    ("lr=abc", lambda t: [*DROCC, "--param", "drocc.lr=abc"], "drocc.lr must be a number, got 'abc'"),
    ("max_train=abc", lambda t: [*KNN, "--protocol-option", "max_train=abc"], "max_train must be an integer"),
    ("max_train=0", lambda t: [*KNN, "--protocol-option", "max_train=0"], "max_train must be at least 1"),
    ("val_fraction=2", lambda t: ["--methods", "knn", "--datasets", "digits", "--protocol-option", "val_fraction=2"],
     "val_fraction must be at most 1"),
    ("plugin syntax error", lambda t: [*KNN, "--plugin-dir", _plugin(t, "x = 1\nclass X(:\n    pass\n")],
     "broken.py, line 2: SyntaxError"),
    ("plugin raises on import", lambda t: [*KNN, "--plugin-dir", _plugin(t, "import os\n\nraise RuntimeError('boom')\n")],
     "broken.py, line 3: RuntimeError: boom"),
    ("npz object X", lambda t: ["--methods", "knn", "--datasets", _objects(t, "X")], "array 'X' holds Python objects"),
    ("npz object y", lambda t: ["--methods", "knn", "--datasets", _objects(t, "y")], "array 'y' holds Python objects"),
    ("folder text .png", lambda t: ["--methods", "knn", "--datasets", _text_png(t)], "notes.png is not a readable image"),
    ("results is a file", lambda t: [*KNN, "--results", _file(t)], "is a file"),
    ("results under a file", lambda t: [*KNN, "--results", _file(t) + "/sub"], "cannot be made"),
    ("results read-only", lambda t: [*KNN, "--results", _read_only(t)], "is not writable"),
    ("classes ,", lambda t: ["--methods", "knn", "--datasets", "digits", "--classes", ","], "--classes ',' names nothing"),
    ("methods ''", lambda t: ["--methods", "", "--datasets", "sine2d"], "--methods '' names nothing"),
    ("datasets ' , '", lambda t: ["--methods", "knn", "--datasets", " , "], "--datasets ' , ' names nothing"),
    ("data-dir missing", lambda t: [*KNN, "--data-dir", str(t / "no_such_dir")], "no_such_dir does not exist"),
    # issue 13 §7: combinations refused before any job runs, the data's defaults included
    ("only_ce_epochs=epochs", lambda t: [*DROCC, "--param", "drocc.epochs=5", "--param", "drocc.only_ce_epochs=5"],
     "only_ce_epochs (5) must be below drocc.epochs (5)"),
    ("epochs below tabular CE default", lambda t: ["--methods", "drocc", "--datasets", "digits", "--param", "drocc.epochs=40"],
     "only_ce_epochs (50) must be below drocc.epochs (40)"),
    # the classes of an image folder are its sub-folders: a wrong one fails before decoding (the text .png
    # would fail decoding with another message)
    ("folder class before decoding", lambda t: ["--methods", "knn", "--datasets", _text_png(t), "--classes", "7"],
     "unknown class '7' for dataset 'folder:"),
]


@pytest.mark.parametrize(("make", "fragment"), [pytest.param(m, f, id=i) for i, m, f in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    make: Callable[[Path], list[str]], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = make(tmp_path)
    if "read_only" in " ".join(argv) and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the /proc case covers an unwritable folder")
    results = tmp_path / "results"
    if "--results" not in argv:
        argv += ["--results", str(results)]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["run", "--no-mlflow", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("odbench: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not results.exists(), "a bad input must not touch the store"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "nothing may be written anywhere"


def test_bad_input_from_a_real_shell_command(tmp_path: Path) -> None:
    """As typed in a shell, MLflow on: the same one line from the process's own exit path."""
    if not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = ["run", *KNN, "--results", "/proc/odbench_results"]
    done = subprocess.run([sys.executable, "-m", "odbench.cli", *argv], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("odbench: error: ") and "is not writable" in lines[0], done.stderr
    assert not list(tmp_path.iterdir())


def test_tune_refuses_a_list_that_names_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["tune", "--no-mlflow", "--methods", "knn", "--datasets", "digits", "--classes", ",", "--results", str(tmp_path / "r")]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("odbench: error: --classes ',' names nothing")
    assert not (tmp_path / "r").exists()


def test_a_broken_plugin_fails_odbench_check_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = Path(_plugin(tmp_path, "import os\n\nraise RuntimeError('boom')\n"))
    assert main(["check", str(folder / "broken.py")]) == 1
    err = capsys.readouterr().err
    assert "FAIL discovery" in err and "broken.py, line 3: RuntimeError: boom" in err and "Traceback" not in err


# ------------------------------------------------------------------ inputs that must work (issue 13 §7, 14 §5)


def _normal_classes(results: Path) -> list[str]:
    records = [json.loads(p.read_text()) for p in (results / "jobs").glob("*.json")]
    assert records and all(r["status"] == "ok" for r in records)
    return sorted(r["normal_class"] for r in records)


def test_class_ids_select_image_folder_classes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _images(tmp_path / "imgs", classes=("cats", "dogs"), n=6)
    results = tmp_path / "results"
    argv = ["run", "--no-mlflow", "--methods", "knn", "--datasets", f"folder:{root}", "--results", str(results)]
    assert main([*argv, "--classes", "1"]) == 0, capsys.readouterr().err
    assert _normal_classes(results) == ["dogs"]  # id 1 = the second sub-folder by name
    assert main([*argv, "--classes", "dogs"]) == 0
    assert "1 already done" in capsys.readouterr().err, "the id and the name are the same job"


def test_class_ids_select_named_classes_of_a_users_arrays(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pets.npz", X=rng.random((60, 3)), y=np.array(["cat", "dog", "eel"] * 20))
    results = tmp_path / "results"
    argv = ["run", "--no-mlflow", "--methods", "knn", "--datasets", f"npz:{tmp_path / 'pets.npz'}", "--results", str(results)]
    assert main([*argv, "--classes", "0,eel"]) == 0, capsys.readouterr().err
    assert _normal_classes(results) == ["cat", "eel"]


def test_ocln_negative_classes_as_a_bare_number_plans(tmp_path: Path) -> None:
    """``negative_classes=1`` parses as an integer: it means class 1 (was a TypeError traceback)."""
    from odbench.engine.plan import expand
    from odbench.engine.registry import Registry

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "three_blobs.py").write_text(
        "import numpy as np\n"
        "from odbench.api import Dataset, LabeledData\n\n"
        "class ThreeBlobs(Dataset):\n"
        "    name = 'three_blobs'\n"
        "    classes = ('a', 'b', 'c')\n"
        "    bundled = True\n"
        "    def prepare(self, root):\n        pass\n"
        "    def load(self, root):\n"
        "        rng = np.random.default_rng(0)\n"
        "        y = np.repeat(np.arange(3), 40)\n"
        "        return LabeledData(X=(rng.normal(size=(120, 2)) + y[:, None] * 4).astype('float32'), y=y, class_names=self.classes)\n"
        "    def close_negatives(self, X, rng):\n        return X + 0.5\n"
    )
    plan = expand(Registry([plugins]), ["drocc_oe"], ["three_blobs"], protocol="ocln", classes=["0"],
                  protocol_options={"negative_classes": 1})  # fmt: skip
    assert [job.normal_class for job in plan.jobs] == ["a"]
    assert plan.jobs[0].protocol_options == {"negative_classes": 1}
