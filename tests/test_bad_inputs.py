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


def _csv(tmp: Path, text: str) -> str:
    (tmp / "table.csv").write_text(text)
    return f"csv:{tmp / 'table.csv'}"


def _npz(tmp: Path, **arrays: np.ndarray) -> str:
    np.savez(tmp / "arrays.npz", **arrays)
    return f"npz:{tmp / 'arrays.npz'}"


def _not_zip(tmp: Path) -> str:
    (tmp / "arrays.npz").write_bytes(b"\x80\x04 this is a pickle, not a zip")
    return f"npz:{tmp / 'arrays.npz'}"


def _rows(n: int = 20) -> str:
    rng = np.random.default_rng(0)
    return "".join(f"{a:.3f},{b:.3f},{i % 2}\n" for i, (a, b) in enumerate(rng.random((n, 2))))


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
TUNE = ["tune", *KNN]
X20, Y20 = np.random.default_rng(0).random((20, 3)), np.array([0, 1] * 10)
BROKEN_IMPORT = "import os\nimport odbench_no_such_module\nfrom odbench.api import Method\n\nclass Foo(Method):\n    name = 'foo'\n"


def _counts(flag: str, argv: list[str], values: list[tuple[str, str]]) -> list[tuple[str, Callable[[Path], list[str]], str]]:
    """One case per bad value of a count: (value, fragment of its error)."""
    return [(f"{' '.join(argv[:1])} {flag} {value}", lambda t, v=value: [*argv, flag, v], fragment) for value, fragment in values]


HUGE = "99999999999999999999"
NOT_POSITIVE = [("0", "expected a positive integer, got '0'"), ("-1", "expected a positive integer, got '-1'"),
                ("abc", "expected a positive integer, got 'abc'"), ("1.5", "expected a positive integer, got '1.5'"),
                ("", "expected a positive integer, got ''")]  # fmt: skip

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
    # issue 29 §4: every count bounded by what a machine can hold, refused at once (--seeds HUGE grew to 8 GB)
    *_counts("--seeds", KNN, [*NOT_POSITIVE, ("10001", "seeds must be at most 10000, got 10001"),
                              (HUGE, f"seeds must be at most 10000, got {HUGE}")]),
    *_counts("--jobs", KNN, [*NOT_POSITIVE, ("100000", "as worker processes on this machine (8 per CPU core"),
                             (HUGE, f"as worker processes on this machine (8 per CPU core, 256 MiB of memory each), got {HUGE}")]),
    *_counts("--jobs", [*KNN, "--executor", "ray", "--ray-address", "auto"], [("4097", "jobs must be at most 4096 on a cluster, got 4097")]),
    *_counts("--trials", TUNE, [*NOT_POSITIVE, ("100001", "trials must be at most 100000"), (HUGE, "trials must be at most 100000")]),
    *_counts("--heartbeat", TUNE, [("0", "expected a positive integer"), ("3601", "heartbeat must be at most 3600")]),
    *_counts("--worker", TUNE, [("-1", "worker must be from 0 to 1000000 (this process's number among the tuning workers), got -1"), (HUGE, "worker must be from 0 to 1000000"),
                                ("x", "expected an integer, got 'x'")]),
    *_counts("--tune-workers", TUNE, [("0", "expected a positive integer"), ("100000", "--tune-workers (processes on this machine) must be at most")]),
    *_counts("--repetitions", ["reproduce", "table2"], [("0", "expected a positive integer"), ("10001", "repetitions must be at most 10000"),
                                                        (HUGE, "repetitions must be at most 10000")]),
    *_counts("--digits", ["report"], [("0", "expected a positive integer"), ("16", "up to 15, got '16'")]),
    *_counts("--seed", KNN, [("abc", "expected an integer, got 'abc'"), ("1.5", "expected an integer, got '1.5'")]),
    *_counts("--gpu-per-job", [*KNN, "--executor", "ray"], [("0", "expected a GPU fraction above 0"), ("65", "expected a GPU fraction above 0"),
                                                            ("abc", "expected a GPU fraction such as 0.25")]),
    ("gpu-per-job without ray", lambda t: [*KNN, "--gpu-per-job", "0.5"], "applies to Ray only; add --executor ray"),
    ("ray-address without ray", lambda t: [*KNN, "--ray-address", "auto"], "applies to Ray only; add --executor ray"),
    ("gpu-per-job on cpu", lambda t: [*KNN, "--executor", "ray", "--gpu-per-job", "0.5", "--device", "cpu"], "needs --device cuda"),
    # choices and names
    ("executor nosuch", lambda t: [*KNN, "--executor", "nosuch"], "invalid choice: 'nosuch'"),
    ("device tpu", lambda t: [*KNN, "--device", "tpu"], "invalid choice: 'tpu'"),
    ("protocol nosuch", lambda t: [*KNN, "--protocol", "nosuch"], "invalid choice: 'nosuch'"),
    ("selection nosuch", lambda t: [*KNN, "--selection", "nosuch"], "invalid choice: 'nosuch'"),
    ("format nosuch", lambda t: [*KNN, "--format", "nosuch"], "invalid choice: 'nosuch'"),
    ("metric nosuch", lambda t: [*TUNE, "--metric", "nosuch"], "invalid choice: 'nosuch'"),
    ("method nosuch", lambda t: ["--methods", "nosuch", "--datasets", "sine2d"], "unknown method 'nosuch'"),
    ("method wildcard matches nothing", lambda t: ["--methods", "zz*", "--datasets", "sine2d"], "no method matches 'zz*'"),
    ("dataset nosuch", lambda t: ["--methods", "knn", "--datasets", "nosuch"], "unknown dataset 'nosuch'"),
    ("class nosuch", lambda t: ["--methods", "knn", "--datasets", "digits", "--classes", "nosuch"], "unknown class 'nosuch'"),
    ("class id too big", lambda t: ["--methods", "knn", "--datasets", "digits", "--classes", "10"], "unknown class '10'"),
    ("experiment nosuch", lambda t: ["reproduce", "nosuch"], "nosuch"),
    ("budget nosuch", lambda t: ["reproduce", "table2", "--budget", "nosuch"], "invalid choice: 'nosuch'"),
    ("tune without methods", lambda t: ["tune", "--datasets", "sine2d"], "the following arguments are required: --methods"),
    ("tune grid of a method without one", lambda t: ["tune", "--methods", "iforest", "--datasets", "digits", "--classes", "0", "--grid"],
     "has no parameter grid"),
    # parameters and options in every malformed shape
    ("param without =", lambda t: [*KNN, "--param", "knn.n_neighbors"], "--param expects METHOD.KEY=VALUE"),
    ("param without method", lambda t: [*KNN, "--param", "n_neighbors=3"], "--param expects METHOD.KEY=VALUE"),
    ("param with empty key", lambda t: [*KNN, "--param", "knn.=3"], "--param expects METHOD.KEY=VALUE"),
    ("param with empty method", lambda t: [*KNN, "--param", ".n_neighbors=3"], "--param expects METHOD.KEY=VALUE"),
    ("param of an unknown method", lambda t: [*KNN, "--param", "nosuch.k=3"], "nosuch"),
    ("param n_neighbors=true", lambda t: [*KNN, "--param", "knn.n_neighbors=true"], "must be an integer, got True"),
    ("param n_neighbors=[1]", lambda t: [*KNN, "--param", "knn.n_neighbors=[1]"], "must be an integer, got [1]"),
    ("param n_neighbors=-3", lambda t: [*KNN, "--param", "knn.n_neighbors=-3"], "must be at least 1, got -3"),
    ("param method=nosuch", lambda t: [*KNN, "--param", "knn.method=nosuch"], "knn.method must be one of"),
    ("param epochs=0", lambda t: [*DROCC, "--param", "drocc.epochs=0"], "drocc.epochs must be at least 1"),
    ("param lr=-1", lambda t: [*DROCC, "--param", "drocc.lr=-1"], "drocc.lr must be"),
    ("param lr=nan", lambda t: [*DROCC, "--param", "drocc.lr=NaN"], "drocc.lr must be a finite number, got nan"),
    ("param lr=inf", lambda t: [*DROCC, "--param", "drocc.lr=Infinity"], "drocc.lr must be a finite number, got inf"),
    ("protocol option without =", lambda t: [*KNN, "--protocol-option", "max_train"], "--protocol-option expects KEY=VALUE"),
    ("protocol option unknown", lambda t: [*KNN, "--protocol-option", "nosuch=1"], "nosuch"),
    ("max_train=-5", lambda t: [*KNN, "--protocol-option", "max_train=-5"], "max_train must be at least 1"),
    ("val_fraction=-0.1", lambda t: ["--methods", "knn", "--datasets", "digits", "--protocol-option", "val_fraction=-0.1"],
     "val_fraction must be"),
    ("val_fraction=abc", lambda t: ["--methods", "knn", "--datasets", "digits", "--protocol-option", "val_fraction=abc"],
     "val_fraction must be a number"),
    # a plugin that cannot import: its file, line and error when its name is asked for (was "unknown method")
    ("plugin import fails, its name asked", lambda t: ["--methods", "foo", "--datasets", "sine2d", "--plugin-dir", _plugin(t, BROKEN_IMPORT)],
     "broken.py, line 2: ModuleNotFoundError: No module named 'odbench_no_such_module' (that file may define it)"),
    ("plugin import fails, its file's name asked", lambda t: ["--methods", "broken", "--datasets", "sine2d", "--plugin-dir", _plugin(t, BROKEN_IMPORT)],
     "is unavailable: import failed: "),
    ("plugin folder missing", lambda t: [*KNN, "--plugin-dir", str(t / "no_plugins")], "no_plugins does not exist"),
    # a user's CSV
    ("csv duplicate column names", lambda t: ["--methods", "knn", "--datasets", _csv(t, "a,a,label\n" + _rows())],
     "column names 'a' appear more than once"),
    ("csv features all constant", lambda t: ["--methods", "knn", "--datasets", _csv(t, "a,b,label\n" + "1,2,0\n1,2,1\n" * 10)],
     "every feature is constant"),
    ("csv an all-NaN column", lambda t: ["--methods", "knn", "--datasets", _csv(t, "a,b,label\n" + "".join(f"{i},,{i % 2}\n" for i in range(20)))],
     "NaN or inf values in 20 rows (first: row 0)"),
    ("csv no label column", lambda t: ["--methods", "knn", "--datasets", _csv(t, "a,b,c\n" + _rows())], "no label column"),
    ("csv named label missing", lambda t: ["--methods", "knn", "--datasets", _csv(t, "a,b,label\n" + _rows()) + "?label=nosuch"],
     "no label column 'nosuch'"),
    ("csv a text column", lambda t: ["--methods", "knn", "--datasets", _csv(t, "a,b,label\n" + "x,1,0\ny,2,1\n" * 10)],
     "non-numeric feature columns a"),
    ("csv header only", lambda t: ["--methods", "knn", "--datasets", _csv(t, "a,b,label\n")], "no rows"),
    ("csv one label", lambda t: ["--methods", "knn", "--datasets", _csv(t, "a,b,label\n" + "".join(f"{i},{i * 2},0\n" for i in range(20)))],
     "every row has the label 0; need at least two classes"),
    ("csv missing label", lambda t: ["--methods", "knn", "--datasets", _csv(t, "a,b,label\n1,2,\n" + _rows())], "1 rows have no label"),
    ("csv missing file", lambda t: ["--methods", "knn", "--datasets", f"csv:{t / 'nosuch.csv'}"], "nosuch.csv"),
    # a user's .npz
    ("npz not a zip", lambda t: ["--methods", "knn", "--datasets", _not_zip(t)], "not an .npz file (a zip of arrays"),
    ("npz missing file", lambda t: ["--methods", "knn", "--datasets", f"npz:{t / 'nosuch.npz'}"], "nosuch.npz"),
    ("npz without y", lambda t: ["--methods", "knn", "--datasets", _npz(t, X=X20)], "need X and y"),
    ("npz rows differ", lambda t: ["--methods", "knn", "--datasets", _npz(t, X=X20, y=Y20[:10])], "X has 20 rows but y has 10"),
    ("npz 1-D X", lambda t: ["--methods", "knn", "--datasets", _npz(t, X=X20[:, 0], y=Y20)], "features have shape (20,)"),
    ("npz no features", lambda t: ["--methods", "knn", "--datasets", _npz(t, X=X20[:, :0], y=Y20)], "features have shape (20, 0)"),
    ("npz constant X", lambda t: ["--methods", "knn", "--datasets", _npz(t, X=np.ones((20, 3)), y=Y20)], "every feature is constant"),
    ("npz NaN X", lambda t: ["--methods", "knn", "--datasets", _npz(t, X=np.where(X20 > 0.9, np.nan, X20), y=Y20)], "NaN or inf values"),
    ("npz inf X", lambda t: ["--methods", "knn", "--datasets", _npz(t, X=np.where(X20 > 0.9, np.inf, X20), y=Y20)], "NaN or inf values"),
    ("npz one class (plain number)", lambda t: ["--methods", "knn", "--datasets", _npz(t, X=X20, y=np.zeros(20, dtype=np.int64))],
     "every row has the label 0; need"),
    ("npz text X", lambda t: ["--methods", "knn", "--datasets", _npz(t, X=np.array([["a"] * 3] * 20), y=Y20)], "features must be numeric"),
    ("npz test shape differs", lambda t: ["--methods", "knn", "--datasets", _npz(t, X_train=X20, y_train=Y20, X_test=X20[:, :2], y_test=Y20)],
     "X_test rows have shape (2,) but X_train rows (3,)"),
    ("npz empty", lambda t: ["--methods", "knn", "--datasets", _npz(t, X=X20[:0], y=Y20[:0])], "features have shape (0, 3)"),
    # folders of images
    ("folder one class", lambda t: ["--methods", "knn", "--datasets", f"folder:{_images(t / 'one', classes=('cats',))}"],
     "needs at least two class folders"),
    ("folder missing", lambda t: ["--methods", "knn", "--datasets", f"folder:{t / 'nosuch'}"], "nosuch"),
]


COMMANDS = ("run", "tune", "reproduce", "report")


def test_the_table_holds_a_hundred_distinct_cases() -> None:
    """Issue 29 §4 asked for at least 100; each id names one input."""
    ids = [case_id for case_id, _, _ in CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids), (len(ids), len(set(ids)))


@pytest.mark.parametrize(("make", "fragment"), [pytest.param(m, f, id=i) for i, m, f in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    make: Callable[[Path], list[str]], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = make(tmp_path)
    if "read_only" in " ".join(argv) and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the /proc case covers an unwritable folder")
    command, *argv = argv if argv[0] in COMMANDS else ["run", *argv]
    results = tmp_path / "results"
    if "--results" not in argv:
        argv += ["--results", str(results)]
    if command != "report":
        argv.append("--no-mlflow")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main([command, *argv]) == 2
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


def test_tune_refuses_a_combination_the_method_refuses_before_any_trial(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["tune", "--no-mlflow", *DROCC, "--param", "drocc.epochs=5", "--param", "drocc.only_ce_epochs=5",
            "--trials", "2", "--results", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("odbench: error: ") and "only_ce_epochs (5) must be below drocc.epochs (5)" in line
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


def test_odbench_list_shows_where_a_plugin_failed_to_import(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _plugin(tmp_path, BROKEN_IMPORT)
    assert main(["list", "--plugin-dir", folder]) == 0
    out = capsys.readouterr().out
    assert "broken.py, line 2: ModuleNotFoundError: No module named 'odbench_no_such_module'" in out


def test_a_constant_feature_is_flagged_in_the_record_and_under_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Some constant features are legal (the data still tells rows apart) but flagged; none gives no warning."""
    from odbench.cli import main
    from odbench.engine.store import Store

    rng = np.random.default_rng(0)
    rows = "\n".join(f"{x:.3f},7,{y:.3f},{int(i % 5 == 0)}" for i, (x, y) in enumerate(rng.normal(size=(60, 2))))
    data = _csv(tmp_path, "a,same,b,label\n" + rows + "\n")
    results = tmp_path / "results"
    assert main(["run", "--methods", "knn", "--datasets", data, "--no-mlflow", "--no-report", "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "1 feature(s) hold one value in every row" in err, err
    (record,) = Store(results).records("ok")
    assert record["constant_features"] == 1
    (tmp_path / "varied").mkdir()
    varied = _csv(tmp_path / "varied", "a,b,label\n" + rows.replace(",7,", ",") + "\n")
    assert main(["run", "--methods", "knn", "--datasets", varied, "--no-mlflow", "--no-report", "--results", str(results)]) == 0
    assert "hold one value" not in capsys.readouterr().err


def test_only_a_users_file_gets_the_constant_feature_warning() -> None:
    """digits' blank corner pixels are known; a constant column in the user's own CSV is news."""
    import pandas as pd

    from odbench.views.tables import constant_feature_notes

    frame = pd.DataFrame(
        {"status": "ok", "dataset": ["digits", "csv:/data/x.csv", "csv:/data/y.csv"], "constant_features": [7, 2, 0]}
    )
    assert constant_feature_notes(frame) == [
        "csv:/data/x.csv: 2 feature(s) hold one value in every row; they tell no rows apart "
        "(drop them, or check how the file was exported)"
    ]
