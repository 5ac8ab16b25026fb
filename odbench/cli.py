"""The ``odbench`` command: list, run, report, prepare, ui.

User mistakes (unknown names, bad option values, a protocol that does not
fit a dataset, missing or corrupt data files) end with one line on stderr,
``odbench: error: ...``, and exit code 2, before anything is run or written.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import odbench.shadowing  # first: a folder here that hides odbench is said in one line, before its names are read
from odbench import __version__

if TYPE_CHECKING:  # imported where used: `odbench --version`, `--help` and a user's mistake answer before torch loads
    from odbench import workflows
    from odbench.engine.registry import Registry


def user_errors() -> tuple[type[Exception], ...]:
    """The mistakes a user fixes (one line, exit 2), imported only once one is raised."""
    from odbench.core.contracts import DataError
    from odbench.core.download import ChecksumError, DataUnavailable
    from odbench.core.params import ParamError
    from odbench.engine.plan import UsageError
    from odbench.engine.registry import RegistryError
    from odbench.protocols import ProtocolError

    return (RegistryError, ProtocolError, UsageError, ParamError, ChecksumError, DataUnavailable, DataError)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        _fail(message)


def _fail(message: str) -> NoReturn:
    print(f"odbench: error: {_one_line(message)}", file=sys.stderr)
    raise SystemExit(2)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _whole_number(least: int) -> Any:
    """An argparse type: an integer of ``least`` or more (1: ``--jobs``, ``--seeds``; 0: ``--retries``)."""
    wanted = "a positive integer" if least == 1 else f"{least} or more"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


_positive_int = _whole_number(1)


def _seconds(zero_allowed: bool) -> Any:
    """An argparse type: a finite number of seconds, above 0 (``--job-timeout``) or 0 and more (``--mlflow-wait``)."""
    wanted = "a number of seconds, 0 or more" if zero_allowed else "seconds above 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not (0 <= value if zero_allowed else 0 < value) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


def _at_most(most: int) -> Any:
    """An argparse type: a positive integer up to ``most``."""

    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"expected a positive integer up to {most}, got {text!r}")
        return value

    return parse


def _gpu_share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a GPU fraction such as 0.25, got {text!r}") from None
    if not 0 < value <= 64:
        raise argparse.ArgumentTypeError(f"expected a GPU fraction above 0 (e.g. 0.25, or 1 for a whole GPU), got {text!r}")
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
    from odbench.engine.plan import UsageError

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
    from odbench import workflows

    return workflows.default_results()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``command``, only that sub-command gets its options (the others keep name and help).

    ``run``, ``tune`` and ``reproduce`` list the protocols, metrics and the
    default suite in their options, which imports them (numpy and more):
    ``odbench --help`` and ``odbench list`` need none of it.
    """

    def wanted(name: str) -> bool:
        return command is None or command == name

    parser = _Parser(prog="odbench", description="Benchmark one-class / anomaly detectors, honestly.")
    parser.add_argument("--version", action="version", version=f"odbench {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{list,run,report,tune,reproduce,check,new,prepare,ui,sync-mlflow,verify}"
    )

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
    p.add_argument("--params", metavar="METHOD", help="a method's parameters: type, default and meaning")
    p.add_argument("--methods", metavar="NAMES", help="only these methods: names, wildcards, or a source (pyod)")
    p.add_argument("--protocols", action="store_true", help="the protocols, with the keys --protocol-option sets")
    p.add_argument(
        "--data-dir", action="append", default=[], type=Path, metavar="DIR",
        help="folder with dataset files, for the available column (repeatable)",
    )  # fmt: skip
    common(p)

    def suite_options(p: argparse.ArgumentParser, methods_required: bool = False) -> None:
        """What selects jobs: methods x datasets x classes x seeds, protocol, parameters."""
        from odbench.protocols import PROTOCOLS
        from odbench.workflows import DEFAULT_SUITE

        p.add_argument(
            "--methods", required=methods_required,
            help="comma-separated names or wildcards" + ("" if methods_required else f" (default {','.join(DEFAULT_SUITE.methods)}, deep ones on small budgets)"),
        )  # fmt: skip
        p.add_argument(
            "--datasets", required=methods_required,
            help="comma-separated names" + ("" if methods_required else f" (default {','.join(DEFAULT_SUITE.datasets)})"),
        )  # fmt: skip
        p.add_argument("--protocol", choices=list(PROTOCOLS), help="override each dataset's default protocol")
        p.add_argument(
            "--protocol-option", action="append", default=[], metavar="KEY=VALUE",
            help="protocol option (repeatable); each protocol's keys: odbench list --protocols",
        )  # fmt: skip
        p.add_argument("--classes", help="normal classes for per-class protocols, e.g. 0,3 (default: all)")
        p.add_argument("--seeds", type=_positive_int, default=1, metavar="N", help="repetitions per task (default 1)")
        p.add_argument(
            "--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
            help="method parameter, JSON literal (repeatable)",
        )  # fmt: skip
        run_options(p)

    def run_options(p: argparse.ArgumentParser) -> None:
        """Where and how jobs run, and where results go."""
        from odbench import workflows

        p.add_argument("--seed", type=_int, default=0, metavar="BASE", help="base seed (default 0)")
        p.add_argument(
            "--jobs", type=_positive_int, default=1, metavar="N", help="parallel worker processes, reused across jobs (default 1)"
        )
        p.add_argument(
            "--threads", type=_positive_int, metavar="N",
            help="torch threads per job (default: its share of the cores, all for --jobs 1); same threads, same bits",
        )  # fmt: skip
        p.add_argument(
            "--device", choices=["cpu", "cuda", "auto"], default="auto", help="where deep methods train (default auto)"
        )
        p.add_argument(
            "--executor", choices=workflows.EXECUTORS, default="local",
            help="local: --jobs N worker processes on this machine (default); ray: every job a Ray task",
        )  # fmt: skip
        p.add_argument(
            "--ray-address", metavar="ADDR",
            help="Ray cluster to join: auto (the one started by `ray start` here) or ray://HOST:PORT (default: a local Ray of --jobs CPUs)",
        )  # fmt: skip
        p.add_argument(
            "--gpu-per-job", type=_gpu_share, metavar="F",
            help="GPU fraction per deep job on Ray with --device cuda (default by modality: tabular 0.25, 32x32 images 0.125, ImageNet 1)",
        )  # fmt: skip
        p.add_argument(
            "--retries", type=_whole_number(0), metavar="N",
            help="reruns of a job whose worker process (or Ray node) was lost, each named in the log (default 2)",
        )  # fmt: skip
        p.add_argument(
            "--job-timeout", type=_seconds(zero_allowed=False), metavar="SECONDS",
            help="stop a job running longer and record it failed (a seed group of K jobs: K times as long)",
        )  # fmt: skip
        p.add_argument(
            "--results", type=Path, default=None, help="results folder (default ./odbench_results or $ODBENCH_RESULTS)"
        )
        p.add_argument(
            "--data-dir", action="append", default=[], type=Path, metavar="DIR",
            help="folder with dataset files (repeatable)",
        )  # fmt: skip
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<results>/mlflow.db)")
        p.add_argument(
            "--experiment", dest="mlflow_experiment", default="odbench", help="MLflow experiment name (default odbench)"
        )
        p.add_argument("--no-mlflow", action="store_true", help="do not mirror results to MLflow")
        p.add_argument(
            "--mlflow-wait", type=_seconds(zero_allowed=True), default=600.0, metavar="SECONDS",
            help="at the end, wait up to this long for MLflow to hold every job (default 600); "
            "what is left is mirrored by the next run or `odbench sync-mlflow`",
        )  # fmt: skip
        p.add_argument(
            "--no-seed-groups", action="store_true",
            help="train each job on its own (default: DROCC's repetitions and tuning trials on tabular data train together)",
        )  # fmt: skip
        p.add_argument("--format", choices=["markdown", "latex", "csv", "html"], default="markdown", help="table format")

    p = sub.add_parser("run", help="run a suite (no arguments: the default suite)")
    if wanted("run"):
        from odbench.engine.plan import SELECTIONS

        common(p)
        suite_options(p)
        p.add_argument(
            "--selection", choices=list(SELECTIONS), default="val",
            help="epoch selection: val (honest) or oracle (test; labelled)",
        )  # fmt: skip
        p.add_argument("--no-report", action="store_true", help="do not write report.html into the results folder")

    p = sub.add_parser("report", help="paper-style tables from the results folder")
    common(p)
    p.add_argument(
        "--results", type=Path, default=None, help="results folder (default ./odbench_results or $ODBENCH_RESULTS)"
    )
    p.add_argument("--format", choices=["markdown", "latex", "csv", "html"], default="markdown")
    p.add_argument("--metric", help="metric to show (default: each dataset's headline metric)")
    p.add_argument("--datasets", help="comma-separated names or wildcards")
    p.add_argument("--methods", help="comma-separated names or wildcards")
    p.add_argument("--digits", type=_at_most(15), default=3, help="decimals (default 3)")
    p.add_argument("--html", type=Path, metavar="OUT.html", help="also write a self-contained HTML report with figures")
    p.add_argument("--plots", type=Path, metavar="DIR", help="also write the report's figures as PNG and PDF into DIR")
    p.add_argument(
        "--output", type=Path, metavar="DIR",
        help="where --format csv writes results.csv (one row per job) and summary.csv (default: the results folder)",
    )  # fmt: skip

    p = sub.add_parser("prepare", help="download and verify datasets")
    common(p)
    p.add_argument("names", nargs="+", metavar="DATASET")
    p.add_argument(
        "--data-dir", action="append", default=[], type=Path, metavar="DIR", help="folder with dataset files"
    )

    p = sub.add_parser("tune", help="Optuna search on validation data, then evaluation of the best parameters")
    if wanted("tune"):
        from odbench.core.metrics import METRICS

        common(p)
        suite_options(p, methods_required=True)
        p.add_argument("--trials", type=_positive_int, default=20, metavar="N", help="trials per study (default 20)")
        p.add_argument("--grid", action="store_true", help="search each method's parameter grid exhaustively (e.g. the paper's)")
        p.add_argument(
            "--storage", help="Optuna storage URL, e.g. postgresql://USER@HOST/DB for workers on several machines (default sqlite:///<results>/optuna.db)"
        )
        p.add_argument(
            "--tune-workers", type=_positive_int, default=1, metavar="N",
            help="worker processes filling the studies at once, then this one evaluates (default 1)",
        )  # fmt: skip
        p.add_argument(
            "--trials-only", action="store_true",
            help="only add trials to the studies, evaluate nothing (a worker on another machine)",
        )  # fmt: skip
        p.add_argument(
            "--worker", type=_int, default=0, metavar="N",
            help="this process's number among the workers filling the studies, for its sampler's seed: give each "
            "--trials-only worker on another machine its own (default 0; --tune-workers N numbers its workers from this + 1)",
        )  # fmt: skip
        p.add_argument(
            "--heartbeat", type=_positive_int, default=10, metavar="SECONDS",
            help="on a database server: a trial silent for 3x this long is failed and run again (default 10)",
        )  # fmt: skip
        p.add_argument("--metric", choices=sorted(METRICS), help="validation metric to maximize (default: the protocol's headline metric)")

    p = sub.add_parser("reproduce", help="one of the paper's experiments, side by side with the paper's numbers")
    if wanted("reproduce"):
        from odbench.engine.plan import SELECTIONS

        common(p)
        p.add_argument("name", metavar="EXPERIMENT", help="table1 ... table5, ocln-mnist, figure1")
        p.add_argument("--budget", choices=["quick", "full"], default="quick", help="quick: a laptop CPU (default); full: the paper's schedule")
        p.add_argument(
            "--variant",
            help="a named variant: the authors' protocol (table2 'edgeml': their split and F1; ocln-mnist 'edgeml': their "
            "split, masks, train-mode BatchNorm scoring and test-selected epoch)",
        )  # fmt: skip
        p.add_argument("--repetitions", type=_positive_int, help="repetitions instead of the budget's (the full schedule on fewer seeds)")
        p.add_argument("--columns", help="comma-separated columns to run (default: every column odbench has)")
        p.add_argument(
            "--selection", choices=SELECTIONS,
            help="epoch selection: val (honest; the default) or oracle (on test, as the authors' trainers; marked †); "
            "a variant may name its own",
        )  # fmt: skip
        p.add_argument(
            "--from-store", action="store_true",
            help="run nothing: the tables from the jobs the results folder already holds (cells of jobs not run stay empty)",
        )  # fmt: skip
        p.add_argument(
            "--verdict", type=Path, metavar="DIR",
            help="also write DIR/<experiment>[_<variant>].csv (one tidy row per cell) and .md (the table, command, commit, "
            "machine, wall time)",
        )  # fmt: skip
        run_options(p)

    p = sub.add_parser("check", help="run the plugin contract checks on a plugin file")
    p.add_argument("path", type=Path, help="a method or dataset plugin file")

    p = sub.add_parser("new", help="write a plugin skeleton that passes `odbench check`")
    p.add_argument("kind", choices=["method", "dataset"])
    p.add_argument("name", help="plugin name: lower-case letters, digits and underscores")
    p.add_argument("--dir", type=Path, default=Path("plugins"), help="folder to write into (default ./plugins)")

    p = sub.add_parser("ui", help="browse runs in the MLflow UI")
    p.add_argument(
        "--results", type=Path, default=None, help="results folder (default ./odbench_results or $ODBENCH_RESULTS)"
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<results>/mlflow.db)")
    p.add_argument(
        "--experiment", dest="mlflow_experiment", default="odbench", help="MLflow experiment name (default odbench)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_at_most(65535), default=5000)

    p = sub.add_parser("sync-mlflow", help="mirror stored jobs MLflow missed; close runs left open by dead processes")
    p.add_argument(
        "--results", type=Path, default=None, help="results folder (default ./odbench_results or $ODBENCH_RESULTS)"
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<results>/mlflow.db)")
    p.add_argument(
        "--experiment", dest="mlflow_experiment", default="odbench", help="MLflow experiment name (default odbench)"
    )

    p = sub.add_parser("verify", help="check the results store: records parse, scores present and matching")
    p.add_argument(
        "--results", type=Path, default=None, help="results folder (default ./odbench_results or $ODBENCH_RESULTS)"
    )
    p.add_argument(
        "--fix", action="store_true",
        help="quarantine damaged records (their jobs then run again) and delete leftovers of interrupted writes",
    )  # fmt: skip
    return parser


def _listed(text: str, flag: str, omitted: str | None = "the default") -> list[str]:
    """The names of a comma-separated option; one that names nothing (``--classes ,``) is an error, not "all".

    ``omitted``: what leaving the option out gives, for the hint (None: it is required).
    """
    from odbench.engine.plan import UsageError

    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        otherwise = f", or leave {flag} out for {omitted}" if omitted else ""
        raise UsageError(f"{flag} {text!r} names nothing; give comma-separated names{otherwise}")
    return names


def _results_folder(args: argparse.Namespace) -> Path:
    """The results folder, checked writable before anything is computed; nothing is created here."""
    from odbench import workflows

    return workflows.check_results_folder(args.results or _results_default())


def _cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from odbench.engine.registry import Registry

    if args.protocols:
        return _list_protocols()
    registry = Registry(args.plugin_dir)
    if args.params is not None:
        return _list_params(registry, args.params)
    rows: list[list[object]] = []  # cells of both tables (the class count is a number)
    reasons = _Footnotes()
    for p in _listed_methods(registry, args.methods):  # read without building: pyod:NAME imports nothing here
        rows.append([
            p.name,
            "yes" if p.available else reasons.mark(p.unavailable),
            ",".join(p.modalities),
            "yes" if p.deep else "",
            "yes" if p.uses_negatives else "",
            _short_source(p.source),
        ])  # fmt: skip
    print("Methods")
    print(tabulate(rows, headers=["name", "available", "modalities", "deep", "negatives", "source"]))
    reasons.print()
    if args.methods is not None:
        return 0
    from odbench.core.download import environment_data_dirs
    from odbench.data.availability import availability

    data_dirs = [*args.data_dir, *environment_data_dirs()]
    rows, reasons, fixes = [], _Footnotes(), _Footnotes()
    for p in registry.all("dataset"):  # from the plugins' declarations: nothing is imported, no file is hashed
        d = p.declaration()
        here = availability(d, data_dirs) if d else None
        rows.append([
            p.name + (":ARG" if d.get("takes_argument") else ""),
            reasons.mark(p.unavailable) if not p.available else "yes" if here is None or here.on_disk else "no",
            d.get("modality", ""),
            ("by labels" if d.get("takes_argument") else d.get("default_protocol", "")),
            len(d.get("classes") or ()) or "",
            "" if here is None else here.what if here.note is None else fixes.mark(here.note, here.what),
            _short_source(p.source),
        ])  # fmt: skip
    print("\nDatasets (available: the data are on this machine, or bundled, or your own file)")
    print(tabulate(rows, headers=["name", "available", "modality", "protocol", "classes", "data", "source"]))
    reasons.print()
    fixes.print()
    return 0


def _list_protocols() -> int:
    """Each protocol, and the options ``--protocol-option KEY=VALUE`` may set for it: meaning and default."""
    from odbench.protocols import PROTOCOLS

    for protocol in PROTOCOLS.values():
        print(f"{protocol.name}: {protocol.summary()}")
        for spec in protocol.options().values():
            default = "none" if spec.default is None else json.dumps(spec.default)  # as typed: true, not True
            print(f"  {spec.name} ({spec.type_name}, default {default}): {spec.help}")
    print("\nset one with: odbench run --protocol NAME --protocol-option KEY=VALUE (a JSON literal; repeatable)")
    return 0


class _Footnotes:
    """Why a plugin cannot run, as numbered notes under the table: one reason can run to 200 characters."""

    def __init__(self) -> None:
        self.notes: dict[str, int] = {}

    def mark(self, reason: str | None, label: str = "no") -> str:
        reason = reason or "not available here"
        return f"{label} [{self.notes.setdefault(reason, len(self.notes) + 1)}]"

    def print(self) -> None:
        for reason, number in self.notes.items():
            print(f"  [{number}] {reason}")


def _short_source(source: str) -> str:
    """A bundled plugin file as ``methods/knn.py`` (``odbench_plugins/methods/knn.py`` when installed); others as they are."""
    path = Path(source)
    if path.is_absolute() and path.parent.name in ("methods", "datasets"):
        installed = "odbench_plugins/" if path.parent.parent.name == "odbench_plugins" else ""
        return f"{installed}{path.parent.name}/{path.name}"
    return source


def _listed_methods(registry: Registry, patterns: str | None) -> list[Any]:
    """The method plugins ``odbench list --methods`` names: names, wildcards, or a source (``pyod`` is ``pyod:*``)."""
    import fnmatch

    from odbench.engine.plan import UsageError

    plugins = registry.all("method")
    if patterns is None:
        return plugins
    wanted = _listed(patterns, "--methods", omitted="every method")
    chosen = [p for p in plugins if any(fnmatch.fnmatchcase(p.name, w) or p.name.startswith(w + ":") for w in wanted)]
    if not chosen:
        raise UsageError(f"--methods {patterns!r} names no method; see `odbench list` for the names")
    return chosen


def _list_params(registry: Registry, name: str) -> int:
    """A method's parameters, from its declarations (its file is imported only where the index cannot say)."""
    from tabulate import tabulate

    from odbench.core.params import specs

    plugin = registry.check("method", name)
    declared = plugin.declared.get("params")
    if declared is not None:
        rows = [[d["name"], d["type_name"], "(from the data)" if d["default_is_none"] else d["default"], d["help"]]
                for d in declared]  # fmt: skip
    else:
        cls = registry.method(name)
        rows = [[s.name, s.type_name, "(from the data)" if s.default is None else repr(s.default), s.help]
                for s in specs(cls.Params).values()]  # fmt: skip
    print(f"Parameters of {plugin.name} (set with --param {plugin.name}.NAME=VALUE)")
    print(tabulate(rows, headers=["name", "type", "default", "meaning"]))
    return 0


def _class_order(registry: Registry, datasets: list[str]) -> dict[str, list[str]]:
    from odbench.engine.registry import RegistryError

    order = {}
    for name in datasets:
        try:
            order[name] = list(registry.dataset(name).classes)
        except RegistryError:
            pass  # a dataset whose plugin is gone still gets a table
    return order


def _bundles(args: argparse.Namespace) -> tuple[workflows.Where, workflows.Tracking, workflows.Paths]:
    """Where jobs run, the MLflow mirror and the folders, as the options of ``run``, ``tune`` and ``reproduce`` say."""
    from odbench import workflows

    where = workflows.Where(
        executor=args.executor, jobs=args.jobs, device=args.device, ray_address=args.ray_address,
        gpu_per_job=args.gpu_per_job, seed_groups=not args.no_seed_groups, threads=args.threads,
        retries=args.retries, job_timeout=args.job_timeout,
    )  # fmt: skip
    tracking = workflows.Tracking(mlflow=not args.no_mlflow, tracking_uri=args.tracking_uri, experiment=args.mlflow_experiment,
                                  mlflow_wait=args.mlflow_wait)  # fmt: skip
    paths = workflows.Paths(results=args.results or _results_default(), data_dirs=tuple(args.data_dir),
                            plugin_dirs=tuple(args.plugin_dir))  # fmt: skip
    return where, tracking, paths


def _suite(args: argparse.Namespace) -> workflows.Suite:
    """What ``run`` and ``tune`` run, from their options.

    Lists that name nothing (``--classes ,``) are refused here, so the message names the flag.
    """
    from odbench import workflows

    required = args.command == "tune"
    omitted = None if required else "the default"
    return workflows.Suite(
        methods=None if args.methods is None else tuple(_listed(args.methods, "--methods", omitted=omitted)),
        datasets=None if args.datasets is None else tuple(_listed(args.datasets, "--datasets", omitted=omitted)),
        protocol=args.protocol,
        classes=None if args.classes is None else tuple(_listed(args.classes, "--classes", omitted="every class")),
        seeds=args.seeds, seed=args.seed, params=_assignments(args.param, "--param", dotted=True),
        protocol_options=_assignments(args.protocol_option, "--protocol-option", dotted=False),
        selection=getattr(args, "selection", None) or "val",
    )  # fmt: skip


def _check_early(args: argparse.Namespace, suite: workflows.Suite) -> None:
    """Names, ``--param`` values and protocol options checked from the plugins' declarations, before torch loads.

    The workflow checks all of them again (and what only the data can
    decide); this answers a typo in a second, without importing a plugin.
    """
    from odbench.engine.plan import UsageError
    from odbench.engine.registry import Registry
    from odbench.protocols import get_protocol
    from odbench.workflows import DEFAULT_SUITE

    registry = Registry(args.plugin_dir)
    methods = registry.select("method", list(suite.methods or DEFAULT_SUITE.methods))
    datasets = registry.select("dataset", list(suite.datasets or DEFAULT_SUITE.datasets))
    for name, given in suite.params.items():
        if name not in methods:
            registry.check("method", name)  # an unknown name says what exists
            raise UsageError(f"--param given for method {name!r}, which is not in this suite")
        registry.check_params(name, given)
    protocols = {suite.protocol} if suite.protocol else {
        registry.check("dataset", d).declared.get("default_protocol") for d in datasets
        if not registry.check("dataset", d).declared.get("takes_argument", True)
    }  # fmt: skip
    for protocol in sorted(p for p in protocols if p):
        get_protocol(protocol).check_options(dict(suite.protocol_options))


def _print_frame(args: argparse.Namespace, frame: Any) -> None:
    """The summary line (stderr) and the paper-style tables of these jobs (stdout), from their tidy rows."""
    from odbench.engine.registry import Registry
    from odbench.views.tables import constant_feature_notes, failed_jobs, render, summary, tables

    print(f"odbench: {len(frame)} jobs: {frame.attrs['summary'].line()}; results in {frame.attrs['results']}", file=sys.stderr)
    if frame.empty:
        return
    for line in constant_feature_notes(frame):
        print(f"odbench: warning: {line}", file=sys.stderr)
    if args.format == "csv":
        print(summary(frame).to_csv(index=False).rstrip("\n"))
        return
    methods, datasets = list(dict.fromkeys(frame["method"])), list(dict.fromkeys(frame["dataset"]))
    made = tables(frame, fmt=args.format, class_order=_class_order(Registry(args.plugin_dir), datasets), method_order=methods)
    if made:
        print(render(made, args.format, failed_jobs(frame)))


def _cmd_run(args: argparse.Namespace) -> int:
    from odbench import workflows
    from odbench.workflows import DEFAULT_SUITE

    default = args.methods is None
    suite = _suite(args)  # checked first: an empty --methods must not announce the default suite
    _check_early(args, suite)
    where, tracking, paths = _bundles(args)
    if default:
        what = "the default suite" if args.datasets is None else "the default suite's methods"
        print(f"odbench: running {what}: {DEFAULT_SUITE.describe()}", file=sys.stderr)
    html = None if args.no_report else paths.results / "report.html"  # every run writes its HTML report
    frame = workflows.run(suite, where, tracking, paths, html=html)
    if default and args.format == "markdown":
        print(f"## odbench default suite: {DEFAULT_SUITE.describe()}\n")
    _print_frame(args, frame)
    results = frame.attrs["results"]
    if "html" in frame.attrs:
        print(f"odbench: HTML report (tables, ROC/PR curves, rankings): {frame.attrs['html']}", file=sys.stderr)
    elif not args.no_report:
        print(f"odbench: no HTML report: no job of this run finished ok (results in {results})", file=sys.stderr)
    return 0 if frame.attrs["summary"].failed == 0 else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from odbench.engine.registry import Registry
    from odbench.views.report import report

    made = report(
        args.results or _results_default(), format=args.format, html=args.html, plots=args.plots, output=args.output,
        metric=args.metric, datasets=args.datasets, methods=args.methods, digits=args.digits,
        registry=Registry(args.plugin_dir),
    )  # fmt: skip
    for line in made.warnings:
        print(f"odbench: {line}", file=sys.stderr)
    print(made.text)
    for path in made.files:
        print(f"odbench: wrote {path}", file=sys.stderr)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0: nothing damaged; 1: damaged records found (quarantined with --fix); leftovers alone do not fail."""
    from odbench.engine.plan import UsageError
    from odbench.engine.store import Store

    results = args.results or _results_default()
    if not (results / "jobs").is_dir():
        raise UsageError(f"no results store at {results} (no jobs/ folder); pass --results DIR")
    store = Store(results, warn=lambda message: None)  # the report below names every record it moves
    check = store.verify(fix=args.fix)
    print(f"{results}: {check.ok + check.failed} records ({check.ok} ok, {check.failed} failed), "
          f"{len(check.damaged)} damaged, {len(check.strays)} leftover file(s) of interrupted writes")  # fmt: skip
    for damage in check.damaged:
        print(f"damaged: {damage.path}: {damage.reason}")
    for path in check.strays:
        print(f"leftover: {path}")
    if args.fix:
        if check.quarantined:
            print(f"quarantined {len(check.quarantined)} record(s) to {store.quarantine_dir}; "
                  "the same `odbench run` command runs their jobs again")  # fmt: skip
        if check.removed:
            print(f"deleted {len(check.removed)} leftover file(s)")
    elif check.damaged or check.strays:
        print("run `odbench verify --fix` to quarantine damaged records and delete leftovers "
              "(`odbench run` and `report` quarantine damaged records themselves too)")  # fmt: skip
    return 1 if check.damaged else 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from odbench import workflows
    from odbench.core.download import environment_data_dirs, using_data_dirs
    from odbench.engine.loading import prepare
    from odbench.engine.registry import Registry

    workflows.check_data_dirs(args.data_dir)
    registry = Registry(args.plugin_dir)
    datasets = [registry.dataset(name) for name in args.names]  # every name checked before any download
    workflows.quiet_downloads()
    with using_data_dirs([*(d.resolve() for d in args.data_dir), *environment_data_dirs()]):
        for dataset in datasets:
            root = prepare(dataset)
            where = "bundled, nothing to download" if dataset.bundled else f"ready ({root})"
            print(f"{dataset.id}: {where}")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from odbench.engine.plan import UsageError
    from odbench.engine.store import Store
    from odbench.observers.mlflow_db import artifact_root, default_tracking_uri, is_remote
    from odbench.observers.mlflow_ui import serve

    results = args.results or _results_default()
    uri = args.tracking_uri or default_tracking_uri(results)
    if is_remote(uri):
        raise UsageError(f"{uri} is a tracking server already; open it in a browser")
    # only whether there are any: checking every record reads every scores file (seconds for a large store)
    if args.tracking_uri is None and not Store(results).has_records():
        raise UsageError(f"no results in {results}; run `odbench run` first")
    fill = None
    if args.tracking_uri is None and not (results / "mlflow.db").is_file():
        # an empty mirror would show nothing: fill it while the server starts
        fill = functools.partial(_sync_mlflow, results, uri, args.mlflow_experiment)
    artifacts = artifact_root(results) if args.tracking_uri is None else None
    return serve(uri, artifacts, args.host, args.port, args.mlflow_experiment, while_starting=fill)


def _sync_mlflow(results: Path, uri: str, experiment: str) -> int:
    from odbench.engine.store import Store
    from odbench.observers.mlflow_sync import sync
    from odbench.observers.tracking import connect

    store = Store(results)
    try:
        client, experiment_id, warning = connect(uri, results, experiment)
    except ConnectionError as err:
        print(f"odbench: error: {err}; the results stay in {results}, try again when it answers", file=sys.stderr)
        return 1
    if warning:
        print(f"odbench: warning: {warning}", file=sys.stderr)
    from odbench.observers.progress import Ticker

    with Ticker("mirroring the store to MLflow", sys.stderr) as ticker:
        report = sync(store, client, experiment_id, on_progress=lambda done, total: ticker.update(f"{done}/{total} stored jobs"))
    if report is None:
        print(
            f"odbench: error: another odbench process is mirroring {results} right now; "
            "it catches MLflow up itself, or run this again after it ends",
            file=sys.stderr,
        )
        return 1
    print(f"odbench: MLflow ({uri}, experiment {experiment}): {report.line()}", file=sys.stderr)
    return 0


def _cmd_sync_mlflow(args: argparse.Namespace) -> int:
    """Mirror every stored job missing from MLflow, and close the runs that dead processes left open."""
    from odbench.engine.plan import UsageError
    from odbench.engine.store import Store

    results = args.results or _results_default()
    if not Store(results).jobs.is_dir():
        raise UsageError(f"no results in {results}; nothing to mirror")
    from odbench.observers.mlflow_db import default_tracking_uri

    return _sync_mlflow(results, args.tracking_uri or default_tracking_uri(results), args.mlflow_experiment)


def _cmd_tune(args: argparse.Namespace) -> int:
    """One study per (method, dataset, class) on validation data; then the best parameters on test."""
    from odbench import workflows

    suite = _suite(args)
    _check_early(args, suite)
    where, tracking, paths = _bundles(args)
    search = workflows.Search(trials=args.trials, grid=args.grid, metric=args.metric, storage=args.storage,
                              heartbeat=args.heartbeat, trials_only=args.trials_only, worker=args.worker)  # fmt: skip
    lost_workers = 0
    if args.tune_workers > 1:  # N processes fill the studies; this one then only evaluates
        from odbench.engine.options import machine_jobs, positive
        from odbench.engine.tuning import create_storage

        positive(args.tune_workers, "--tune-workers (processes on this machine)", machine_jobs())
        workflows.check_device(where)
        paths.results.mkdir(parents=True, exist_ok=True)
        search = replace(search, storage=search.storage or f"sqlite:///{paths.results.resolve() / 'optuna.db'}")
        create_storage(str(search.storage))  # once, here: workers opening an empty database together collided
        lost_workers = _tuning_workers(args.argv, args.tune_workers, search, args.worker)
    frame = workflows.tune(suite, search, where, tracking, paths)
    if args.trials_only:
        for study in frame.attrs["studies"]:
            print(f"odbench: {study.study}: {study.trials} trials", file=sys.stderr)
        return 0 if lost_workers == 0 else 1
    _print_frame(args, frame)
    unfinished = sum(study.job is None for study in frame.attrs["studies"])
    return 0 if frame.attrs["summary"].failed == 0 and unfinished == 0 and lost_workers == 0 else 1


def _tuning_workers(argv: list[str], count: int, search: workflows.Search, first: int) -> int:
    """Run ``count`` copies of this ``odbench tune`` with ``--trials-only`` on ``storage``, wait, and say who was lost.

    Each is a process of its own, as a worker on another machine would be,
    numbered from ``first + 1`` (its sampler's seed derives from it).  One
    that dies leaves its trial to the others (heartbeats, on a database
    server): a worker killed by a signal whose trials were queued again
    costs nothing and is a warning; one that ended with an error, or left
    a trial that was not queued again (SQLite has no heartbeats), is a
    warning and counts.  Returns that count.
    """
    import subprocess

    from odbench.engine.tuning import unretried_trials

    storage = str(search.storage)
    command = [sys.executable, "-m", "odbench.cli", *argv, "--tune-workers", "1", "--trials-only", "--storage", storage]
    numbers = [first + 1 + k for k in range(count)]
    workers = [subprocess.Popen([*command, "--worker", str(number)]) for number in numbers]
    lost = 0
    for number, worker in zip(numbers, workers):
        status = worker.wait()
        if status == 0:
            continue
        how = f"was killed by signal {-status}" if status < 0 else f"ended with status {status}"
        left = unretried_trials(storage, number, search.heartbeat)
        if status < 0 and not left:
            print(f"odbench: warning: tuning worker {number} {how} (status {status}); its trials were queued again for the others", file=sys.stderr)
            continue
        lost += 1
        unfinished = f"; {', '.join(left)} left unfinished" if left else ""
        print(f"odbench: warning: tuning worker {number} {how} (status {status}){unfinished}; the exit status will be 1", file=sys.stderr)
    return lost


def _cmd_reproduce(args: argparse.Namespace) -> int:
    """An experiment of the paper: run what odbench has, print it beside the paper's numbers (``odbench.reproduce``)."""
    from odbench import workflows
    from odbench.engine.experiments import load_experiment, with_variant
    from odbench.engine.plan import UsageError
    from odbench.engine.registry import Registry
    from odbench.views.reproduce import render, render_gap, verdict_table
    from odbench.views.verdict import write_verdict

    started = time.time()
    if args.name == "figure1":  # a figure, not a table: drawn from fresh fits on generated data
        from odbench.engine.figure1 import measure
        from odbench.views.plots import figure1

        results = _results_folder(args)
        results.mkdir(parents=True, exist_ok=True)
        print("\n".join(figure1(measure(args.seed, Registry(args.plugin_dir)), results / "figure1.png")))
        return 0
    asked = workflows.Reproduction(
        args.name, budget=args.budget, variant=args.variant, repetitions=args.repetitions,
        columns=None if args.columns is None else tuple(_listed(args.columns, "--columns", omitted="every column")),
        selection=args.selection, seed=args.seed, from_store=args.from_store,
    )  # fmt: skip
    if args.verdict is not None:
        with_variant(load_experiment(args.name), args.variant)  # a wrong name or variant fails before the folder is made
        try:  # the verdict's folder must take files before hours of jobs run
            args.verdict.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"--verdict {args.verdict}: cannot create the folder ({err.strerror}); give a writable one") from None
    gaps = workflows.reproduce(asked, *_bundles(args))
    made: workflows.Reproduced = gaps.attrs["reproduced"]
    ours, experiment = made.ours, made.experiment
    printed = render(made.table, made.caption, args.format)
    print(printed)
    print("\n" + render_gap(gaps, args.format))
    print(f"odbench: wrote {made.gap_path}", file=sys.stderr)
    if args.verdict is not None:
        fit = float(ours["fit_seconds"].sum()) if len(ours) else 0.0
        verdict = verdict_table(experiment, ours, args.budget)
        for path in write_verdict(args.verdict, experiment, verdict, printed, started, fit, args.argv):
            print(f"odbench: wrote {path}", file=sys.stderr)
    return 0 if made.summary is None or made.summary.failed == 0 else 1


def _cmd_check(args: argparse.Namespace) -> int:
    """The contract checks on one plugin file, with a hint for each failure."""
    from odbench.devkit.checks import check_dataset, check_method, end_to_end
    from odbench.engine.plan import UsageError
    from odbench.engine.registry import RegistryError, scan_file

    path = args.path
    if not path.is_file() or path.suffix != ".py":
        raise UsageError(f"{path} is not a Python file; give the path of a plugin file (e.g. plugins/my_method.py)")
    try:
        plugins = scan_file(path)
    except RegistryError as err:  # the file does not load: that is the first check's failure
        print(f"FAIL discovery: {_one_line(err)}", file=sys.stderr)
        return 1
    if not plugins:
        print(f"FAIL discovery: {path} defines no Method or Dataset subclass with a `name` attribute", file=sys.stderr)
        return 1
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for plugin in plugins:
            print(f"{plugin.kind} {plugin.name!r} ({path})")
            if plugin.cls is None or plugin.unavailable:
                print(f"  FAIL discovery: {plugin.unavailable}")
                failed += 1
                continue
            print("  PASS discovery")
            if plugin.kind == "method":
                results = check_method(plugin.cls)
            elif plugin.cls.takes_argument:
                results = []
                print("  SKIP data checks: this dataset takes an argument (name:VALUE); run it with odbench run")
            else:
                results = check_dataset(plugin.cls(), Path(tmp) / "data")
            if all(r.passed for r in results):
                results += end_to_end(path, plugin.kind, plugin.name, Path(tmp) / "results")
            for r in results:
                status = "SKIP" if r.skipped else ("PASS" if r.passed else "FAIL")
                detail = f": {r.message}" if r.message else ""
                print(f"  {status} {r.check}{detail}")
                if not r.passed:
                    print(f"       hint: {r.hint}")
                    failed += 1
    print(f"{'all checks passed' if not failed else f'{failed} check(s) failed'}")
    return 0 if not failed else 1


def _cmd_new(args: argparse.Namespace) -> int:
    from odbench.devkit.templates import write_template

    path = write_template(args.kind, args.name, args.dir)
    flag = "--methods" if args.kind == "method" else "--datasets"
    print(f"wrote {path}")
    print(f"next: odbench check {path}")
    print(f"then: odbench run --plugin-dir {args.dir} {flag} {args.name}")
    return 0


_COMMANDS = {
    "list": _cmd_list, "run": _cmd_run, "report": _cmd_report, "tune": _cmd_tune, "reproduce": _cmd_reproduce,
    "check": _cmd_check, "new": _cmd_new, "prepare": _cmd_prepare, "ui": _cmd_ui, "verify": _cmd_verify,
    "sync-mlflow": _cmd_sync_mlflow,
}  # fmt: skip


class _Stop:
    """SIGINT and SIGTERM as one clean stop: the first raises KeyboardInterrupt, later ones are ignored.

    A second Ctrl-C would otherwise land in the clean-up (the pool's shutdown, the MLflow run's end) or
    in the interpreter's exit, and print a KeyboardInterrupt traceback instead of the one line.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (odbench.cli.main in a thread)
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            return  # already stopping
        self.signal = signum
        raise KeyboardInterrupt

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            # after a stop, Ctrl-C stays ignored until the process has exited (see the class docstring)
            signal.signal(signum, signal.SIG_IGN if self.signal is not None and signum == signal.SIGINT else handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 some jobs failed, 2 usage error, 130 interrupted, 143 SIGTERM)."""
    stop = _Stop()
    stop.install()
    try:
        odbench.shadowing.refuse_shadowing()  # the workers this command may start would import that folder
        given = list(sys.argv[1:] if argv is None else argv)
        if given == ["--version"]:  # before any other import: the answer is one constant
            print(f"odbench {__version__}")
            return 0
        # the first word that is not an option names the sub-command (the top level has only --help and --version)
        args = build_parser(next((word for word in given if not word.startswith("-")), "")).parse_args(given)
        args.argv = given  # tuning workers re-run the same command
        return _COMMANDS[args.command](args)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except Exception as err:
        if not isinstance(err, user_errors()):
            raise
        print(f"odbench: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        stop.signal = stop.signal or signal.SIGINT  # from here on, further signals are ignored
        kept, planned = getattr(err, "kept", None), getattr(err, "planned", None)
        kept = f"{kept} of this run's {planned} jobs are in the store" if planned is not None else "finished jobs are kept"
        why = "terminated" if stop.signal == signal.SIGTERM else "interrupted"
        print(f"odbench: {why}; {kept}; run the same command again to resume", file=sys.stderr)
        return 143 if stop.signal == signal.SIGTERM else 130
    finally:
        stop.restore()


def entry() -> None:
    """The ``odbench`` command: :func:`main`, then the pool's fork server stopped.

    A process that exits has no next run to keep the server warm for, and a
    server still importing (a resume that ran no job) would keep the
    command's output pipes open for seconds after it answered.
    """
    status = main()
    if "odbench.engine.executors" in sys.modules:
        from odbench.engine.executors import stop_fork_server

        stop_fork_server()
    sys.exit(status)


if __name__ == "__main__":
    entry()
