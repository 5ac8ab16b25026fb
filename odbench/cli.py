"""The ``odbench`` command: list, run, report, prepare, ui.

User mistakes (unknown names, bad option values, a protocol that does not
fit a dataset, missing or corrupt data files) end with one line on stderr,
``odbench: error: ...``, and exit code 2, before anything is run or written.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from odbench.download import ChecksumError, DataUnavailable
from odbench.protocols import PROTOCOLS, ProtocolError
from odbench.registry import Registry, RegistryError
from odbench.runner import SELECTIONS, UsageError

#: the suite ``odbench run`` runs with no arguments: no download, well under 2 minutes on 2 cores
DEFAULT_METHODS = "ocsvm,iforest,lof,knn"
DEFAULT_DATASETS = "sine2d,digits"
USER_ERRORS = (RegistryError, ProtocolError, UsageError, ChecksumError, DataUnavailable)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        _fail(message)


def _fail(message: str) -> NoReturn:
    print(f"odbench: error: {_one_line(message)}", file=sys.stderr)
    raise SystemExit(2)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _literal(text: str) -> Any:
    """A JSON literal when the text is one (``3``, ``0.1``, ``true``, ``[1,2]``), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _assignments(items: list[str], flag: str, dotted: bool) -> dict[str, Any]:
    """``key=value`` (or ``method.key=value``) items into a (nested) dict."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} expects {'METHOD.KEY' if dotted else 'KEY'}=VALUE, got {item!r}")
        if dotted:
            method, dot, key = name.partition(".")
            if not dot or not method or not key:
                raise UsageError(f"{flag} expects METHOD.KEY=VALUE, got {item!r}")
            out.setdefault(method, {})[key] = _literal(value)
        else:
            out[name] = _literal(value)
    return out


def _results_default() -> Path:
    return Path(os.environ.get("ODBENCH_RESULTS", "odbench_results"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="odbench", description="Benchmark one-class / anomaly detectors, honestly.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,run,report,prepare,ui}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--plugin-dir",
            action="append",
            default=[],
            type=Path,
            metavar="DIR",
            help="extra plugin folder (repeatable)",
        )

    p = sub.add_parser("list", help="methods and datasets, with availability")
    common(p)

    p = sub.add_parser("run", help="run a suite (no arguments: the default suite)")
    common(p)
    p.add_argument("--methods", help=f"comma-separated names or wildcards (default {DEFAULT_METHODS})")
    p.add_argument("--datasets", help=f"comma-separated names (default {DEFAULT_DATASETS})")
    p.add_argument("--protocol", choices=list(PROTOCOLS), help="override each dataset's default protocol")
    p.add_argument(
        "--protocol-option", action="append", default=[], metavar="KEY=VALUE", help="protocol option (repeatable)"
    )
    p.add_argument("--classes", help="normal classes for per-class protocols, e.g. 0,3 (default: all)")
    p.add_argument("--seeds", type=_positive_int, default=1, metavar="N", help="repetitions per task (default 1)")
    p.add_argument("--seed", type=_int, default=0, metavar="BASE", help="base seed (default 0)")
    p.add_argument(
        "--jobs", type=_positive_int, default=1, metavar="N", help="parallel worker processes (default 1: in-process)"
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], default="auto", help="where deep methods train (default auto)"
    )
    p.add_argument(
        "--selection",
        choices=list(SELECTIONS),
        default="val",
        help="epoch selection: val (honest) or oracle (test; labelled)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="method parameter, JSON literal (repeatable)",
    )
    p.add_argument(
        "--results", type=Path, default=None, help="results folder (default ./odbench_results or $ODBENCH_RESULTS)"
    )
    p.add_argument(
        "--data-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="folder with dataset files (repeatable)",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<results>/mlflow.db)")
    p.add_argument("--experiment", default="odbench", help="MLflow experiment name (default odbench)")
    p.add_argument("--no-mlflow", action="store_true", help="do not mirror results to MLflow")
    p.add_argument("--format", choices=["markdown", "latex", "csv", "html"], default="markdown", help="table format")

    p = sub.add_parser("report", help="paper-style tables from the results folder")
    common(p)
    p.add_argument(
        "--results", type=Path, default=None, help="results folder (default ./odbench_results or $ODBENCH_RESULTS)"
    )
    p.add_argument("--format", choices=["markdown", "latex", "csv", "html"], default="markdown")
    p.add_argument("--metric", help="metric to show (default: each dataset's headline metric)")
    p.add_argument("--datasets", help="comma-separated names or wildcards")
    p.add_argument("--methods", help="comma-separated names or wildcards")
    p.add_argument("--digits", type=_positive_int, default=3, help="decimals (default 3)")

    p = sub.add_parser("prepare", help="download and verify datasets")
    common(p)
    p.add_argument("names", nargs="+", metavar="DATASET")
    p.add_argument(
        "--data-dir", action="append", default=[], type=Path, metavar="DIR", help="folder with dataset files"
    )

    p = sub.add_parser("ui", help="browse runs in the MLflow UI")
    p.add_argument(
        "--results", type=Path, default=None, help="results folder (default ./odbench_results or $ODBENCH_RESULTS)"
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<results>/mlflow.db)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_positive_int, default=5000)
    return parser


def _quiet_downloads() -> None:
    """pooch logs each download attempt; a failed one must stay a single error line."""
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)


def _use_data_dirs(dirs: list[Path]) -> None:
    if dirs:  # the download module and every worker read it from the environment
        existing = os.environ.get("ODBENCH_DATA_DIR", "")
        os.environ["ODBENCH_DATA_DIR"] = os.pathsep.join([*(str(d.resolve()) for d in dirs), *filter(None, [existing])])


def _cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    registry = Registry(args.plugin_dir)
    rows = []
    for p in registry.all("method"):
        cls = p.cls
        rows.append([
            p.name,
            "yes" if p.available else f"no: {p.unavailable}",
            ",".join(cls.modalities) if cls else "",
            "yes" if cls is not None and cls.deep else "",
            "yes" if cls is not None and cls.uses_negatives else "",
            p.source,
        ])  # fmt: skip
    print("Methods")
    print(tabulate(rows, headers=["name", "available", "modalities", "deep", "negatives", "source"]))
    rows = []
    for p in registry.all("dataset"):
        cls = p.cls
        rows.append([
            p.name + (":ARG" if cls is not None and cls.takes_argument else ""),
            "yes" if p.available else f"no: {p.unavailable}",
            cls.modality if cls else "",
            cls.default_protocol if cls else "",
            len(cls.classes) if cls is not None and cls.classes else "",
            ("bundled" if cls.bundled else "download") if cls else "",
            p.source,
        ])  # fmt: skip
    print("\nDatasets")
    print(tabulate(rows, headers=["name", "available", "modality", "protocol", "classes", "data", "source"]))
    return 0


def _class_order(registry: Registry, datasets: list[str]) -> dict[str, list[str]]:
    order = {}
    for name in datasets:
        try:
            order[name] = list(registry.dataset(name).classes)
        except RegistryError:
            pass  # a dataset whose plugin is gone still gets a table
    return order


def _cmd_run(args: argparse.Namespace) -> int:
    from odbench.progress import make_reporter
    from odbench.runner import LocalPoolExecutor, SequentialExecutor, expand, prepare, resolve_device, run_suite
    from odbench.store import Store
    from odbench.tables import render, tables

    _use_data_dirs(args.data_dir)
    registry = Registry(args.plugin_dir)
    methods = registry.select("method", args.methods or DEFAULT_METHODS)
    datasets = registry.select("dataset", args.datasets or DEFAULT_DATASETS)
    params = _assignments(args.param, "--param", dotted=True)
    options = _assignments(args.protocol_option, "--protocol-option", dotted=False)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    device = resolve_device(args.device)
    _quiet_downloads()
    for name in datasets:  # download / verify now, so a missing file stops us before any job
        prepare(registry.dataset(name))
    plan = expand(
        registry, methods, datasets, protocol=args.protocol, classes=classes, repetitions=args.seeds,
        base_seed=args.seed, params=params, protocol_options=options, selection=args.selection,
    )  # fmt: skip
    for note in plan.notes:
        print(f"odbench: {note}", file=sys.stderr)

    results = args.results or _results_default()
    store = Store(results)
    tracker = None
    if not args.no_mlflow:
        from odbench.tracking import Tracker

        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        tracker = Tracker(
            results,
            args.tracking_uri,
            args.experiment,
            suite=f"suite {stamp}: {','.join(methods)} on {','.join(datasets)}",
        )
    executor = SequentialExecutor() if args.jobs == 1 else LocalPoolExecutor(args.jobs)
    summary = run_suite(
        plan, registry, store, executor=executor, device=device,
        reporter=make_reporter(sys.stderr), tracker=tracker,
    )  # fmt: skip
    print(f"odbench: {len(plan.jobs)} jobs: {summary.line()}; results in {results}", file=sys.stderr)

    keys = {job.key(registry) for job in plan.jobs}
    frame = store.frame()
    frame = frame[frame["key"].isin(keys)] if not frame.empty else frame
    made = tables(frame, fmt=args.format, class_order=_class_order(registry, datasets), method_order=methods)
    if made:
        print(render(made, args.format))
    return 0 if summary.failed == 0 else 1


def _matches(values: Any, patterns: str | None) -> Any:
    chosen = [p.strip() for p in (patterns or "").split(",") if p.strip()]
    return values.map(lambda v: any(fnmatch.fnmatchcase(str(v), p) for p in chosen))


def _cmd_report(args: argparse.Namespace) -> int:
    from odbench.store import Store
    from odbench.tables import render, tables

    results = args.results or _results_default()
    frame = Store(results).frame()
    if frame.empty:
        raise UsageError(f"no finished jobs in {results}; run `odbench run` first")
    if args.datasets:
        frame = frame[_matches(frame["dataset"], args.datasets)]
    if args.methods:
        frame = frame[_matches(frame["method"], args.methods)]
    if frame.empty:
        raise UsageError("no finished jobs match --datasets/--methods")
    if args.metric is not None and args.metric not in frame.columns:
        known = sorted(c for c in frame.columns if c not in Store.COLUMNS)
        raise UsageError(f"no results for metric {args.metric!r}; known: {', '.join(known)}")
    registry = Registry(args.plugin_dir)
    made = tables(
        frame,
        metric=args.metric,
        fmt=args.format,
        digits=args.digits,
        class_order=_class_order(registry, list(frame["dataset"].unique())),
    )
    print(render(made, args.format))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from odbench.runner import prepare

    _use_data_dirs(args.data_dir)
    registry = Registry(args.plugin_dir)
    datasets = [registry.dataset(name) for name in args.names]  # every name checked before any download
    _quiet_downloads()
    for dataset in datasets:
        root = prepare(dataset)
        where = "bundled, nothing to download" if dataset.bundled else f"ready ({root})"
        print(f"{dataset.id}: {where}")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from odbench.tracking import artifact_root, default_tracking_uri, quiet_mlflow

    results = args.results or _results_default()
    uri = args.tracking_uri or default_tracking_uri(results)
    if args.tracking_uri is None and not (results / "mlflow.db").is_file():
        raise UsageError(f"no MLflow database at {results / 'mlflow.db'}; run `odbench run` first")
    quiet_mlflow()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    if args.tracking_uri is None:
        command += ["--default-artifact-root", artifact_root(results)]
    print(f"odbench: MLflow UI for {uri} at http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    return subprocess.call(command)


_COMMANDS = {"list": _cmd_list, "run": _cmd_run, "report": _cmd_report, "prepare": _cmd_prepare, "ui": _cmd_ui}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 some jobs failed, 2 usage error, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except USER_ERRORS as err:
        print(f"odbench: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "odbench: interrupted; finished jobs are in the store, run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
