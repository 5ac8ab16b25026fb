"""Ten seeds of the Thyroid DROCC MLP trained together, against the reference-style loop for one seed.

Issue 15, goal 3: training 10 seeds at once must take no longer than the
authors' loop takes for one.  In turns (A B A B ..., ``--rounds`` each):

A. the reference-style loop, one seed: EdgeML's ``DROCCTrainer.train`` as
   ``main_tabular.py`` runs it, written from the authors' code: plain fp32,
   the MLP (6 -> 128 -> 1), Adam, per batch a CE step, and after the CE-only
   epochs ``h ~ N(0, I)``, 50 normalized-gradient ascent steps with the
   projection onto the annulus every 10, then the adversarial CE; the
   ``adjust_learning_rate`` schedule; and every epoch a pass over the test
   set with a copy of the best model (the authors select on test).  Batches
   are cut by tensor indexing, not by a ``DataLoader`` (whose per-item
   collation would only slow the reference down).
B. odbench: ``DROCC.fit_group`` on the tasks of repetitions 0..K-1
   (``--seeds``, default 10) of ``thyroid`` under its default protocol (the
   same code ``odbench run --methods drocc --datasets thyroid --seeds 10``
   runs), the tasks built beforehand.
   With ``--trials``: K tuning trials instead, on repetition 0's task and
   seed: the first K points of DROCC's grid (``param_grid``: mu, ascent
   step, learning rate, Adam or SGD, radius) in a fixed shuffled order, as
   ``odbench tune --grid`` fits them together.
C. with ``--solo``: odbench's solo ``DROCC.fit`` of member 0 (repetition 0,
   or trial 0's parameters), and the largest difference between its test
   scores and the group's member 0.

Hyperparameters: the paper's Thyroid preset, read from
``results/paper/experiments/table2.toml`` (the EdgeML README command).
Data: ODDS Thyroid from ``$ODBENCH_DATA_DIR`` (default ../shared/data when it
exists); without it, random data of Thyroid's shape (3772 x 6, 93 anomalies),
and the output says so.  Prints each side's median seconds, n, the ratio
B / A of the medians (goal: at most 1) and the median of each round's own
B / A (steadier on a shared machine, whose load drifts between rounds).

``--keep-freed-memory`` applies to the whole process (so to both sides) the
allocator setting odbench's deep jobs run with
(``odbench.engine.devices.keep_freed_memory``).

``--process`` (issue 30, goal 4) times whole processes instead, each at its
default threads, in turns: ``odbench run --methods drocc --datasets thyroid
--seeds 10`` with the preset as ``--param`` values (``--no-mlflow
--no-report``), against this script as the authors' script runs one seed
(read the file, split, standardize, train, evaluate every epoch), importing
only torch, numpy and scikit-learn's metrics; goal: at most 0.8.

Usage: ``python scripts/bench_seeds.py [--rounds 3] [--seeds 10] [--trials] [--threads 1] [--epochs 100] [--solo] [--keep-freed-memory] [--process]``
(``--epochs`` shortens both sides alike, keeping half of them CE-only).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import random
import statistics
import tempfile
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

if TYPE_CHECKING:
    from odbench.core.contracts import Task
# odbench is imported inside the functions that use it: the reference's own process (--process) imports only
# what the authors' script does (torch, numpy, scikit-learn's metrics)

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "results" / "paper" / "experiments" / "table2.toml"
SHARED = ROOT.parent / "shared" / "data"


def thyroid_params(epochs: int | None) -> dict[str, Any]:
    """The paper's Thyroid preset for DROCC, optionally shortened to ``epochs`` (half CE-only)."""
    params = dict(tomllib.loads(PRESET.read_text())["columns"]["drocc"]["dataset_params"]["thyroid"])
    params["lr_milestones"] = tuple(tuple(m) for m in params["lr_milestones"])
    if epochs is not None:
        params["epochs"], params["only_ce_epochs"] = epochs, epochs // 2
    return params


def dataset_id() -> tuple[str, str]:
    """``thyroid`` when its file can be found, else a random stand-in of its shape (``npz:``); and a description."""
    if "ODBENCH_DATA_DIR" not in os.environ and SHARED.is_dir():
        os.environ["ODBENCH_DATA_DIR"] = str(SHARED)
    folders = [Path(p) for p in os.environ.get("ODBENCH_DATA_DIR", "").split(os.pathsep) if p]
    if any((f / "adbench" / "38_thyroid.npz").is_file() or (f / "38_thyroid.npz").is_file() for f in folders):
        return "thyroid", "ODDS Thyroid (3772 x 6, 93 anomalies)"
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3772, 6)).astype(np.float32)
    y = np.r_[np.zeros(3772 - 93, int), np.ones(93, int)]
    X[y == 1] += 3.0
    path = Path(tempfile.mkdtemp()) / "thyroid_shaped.npz"
    np.savez(path, X=X, y=y)
    return f"npz:{path}", "RANDOM data of Thyroid's shape (the Thyroid file was not found)"


# ---------------------------------------------------------------- A: the reference-style loop


def reference_lr(epoch: int, total_epochs: int, only_ce_epochs: int, learning_rate: float) -> float:
    """``main_tabular.py``'s ``adjust_learning_rate``."""
    epoch = epoch - only_ce_epochs
    drocc_epochs = total_epochs - only_ce_epochs
    lr = learning_rate
    if epoch <= drocc_epochs:
        lr = learning_rate * 0.001
    if epoch <= 0.90 * drocc_epochs:
        lr = learning_rate * 0.01
    if epoch <= 0.60 * drocc_epochs:
        lr = learning_rate * 0.1
    if epoch <= 0.30 * drocc_epochs:
        lr = learning_rate
    return lr


def reference_adv_loss(model: torch.nn.Module, x: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    """``DROCCTrainer.one_class_adv_loss``: ascent from ``x + N(0, I)``, projection every 10 steps."""
    x_adv = torch.randn(x.shape).detach().requires_grad_()
    x_adv_sampled = x_adv + x
    new_targets = torch.zeros(len(x))
    for step in range(p["ascent_num_steps"]):
        with torch.enable_grad():
            logits = torch.squeeze(model(x_adv_sampled), dim=1)
            new_loss = F.binary_cross_entropy_with_logits(logits, new_targets)
            grad = torch.autograd.grad(new_loss, [x_adv_sampled])[0]
            grad_norm = torch.norm(grad, p=2, dim=tuple(range(1, grad.dim()))).view(-1, *[1] * (grad.dim() - 1))
            grad_normalized = grad / grad_norm
        with torch.no_grad():
            x_adv_sampled.add_(p["ascent_step_size"] * grad_normalized)
        if (step + 1) % 10 == 0:
            h = x_adv_sampled - x
            norm_h = torch.sqrt(torch.sum(h**2, dim=tuple(range(1, h.dim()))))
            alpha = torch.clamp(norm_h, p["radius"], p["gamma"] * p["radius"])
            proj = (alpha / norm_h).view(-1, *[1] * (h.dim() - 1))
            x_adv_sampled = x + proj * h
    adv_pred = torch.squeeze(model(x_adv_sampled), dim=1)
    return F.binary_cross_entropy_with_logits(adv_pred, new_targets * 0)


def reference_train(task: Task, p: dict[str, Any], seed: int) -> float:
    """``DROCCTrainer.train`` for one seed on odbench's split; returns the best test AUROC (as the authors select)."""
    return reference_fit(task.train.normal, task.test.X, task.test.y, p, seed)


def reference_mlp(features: int, hidden: int) -> torch.nn.Module:
    """``main_tabular.py``'s network: one hidden ReLU layer (as ``odbench.deep.nets.MLP``, parameter for parameter)."""
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
    )


def reference_fit(train_normal: np.ndarray, test_X: np.ndarray, test_y: np.ndarray, p: dict[str, Any], seed: int) -> float:
    """The authors' loop for one seed on given arrays (``test_y``: 1 for an anomaly); the best test AUROC."""
    torch.manual_seed(seed)
    model = reference_mlp(train_normal.shape[1], p["hidden"])
    optimizer = torch.optim.Adam(model.parameters(), lr=p["lr"])
    X = torch.as_tensor(train_normal, dtype=torch.float32)
    target = torch.ones(len(X))  # main_tabular.py trains on normals, labelled 1
    X_test = torch.as_tensor(test_X, dtype=torch.float32)
    y_test = 1 - test_y  # the reference's positive class is normal
    best_score, best_model = -np.inf, None
    for epoch in range(p["epochs"]):
        model.train()
        lr = reference_lr(epoch, p["epochs"], p["only_ce_epochs"], p["lr"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(len(X))
        for start in range(0, len(X), p["batch_size"]):
            idx = order[start : start + p["batch_size"]]
            data, tgt = X[idx], target[idx]
            optimizer.zero_grad()
            logits = torch.squeeze(model(data), dim=1)
            ce_loss = F.binary_cross_entropy_with_logits(logits, tgt)
            if epoch >= p["only_ce_epochs"]:
                loss = ce_loss + p["mu"] * reference_adv_loss(model, data[tgt == 1], p)
            else:
                loss = ce_loss
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            score = roc_auc_score(y_test, torch.sigmoid(model(X_test)).squeeze(1).numpy())
        if score > best_score:
            best_score, best_model = score, copy.deepcopy(model)
    assert best_model is not None
    return float(best_score)


def reference_process(epochs: int | None) -> None:
    """One seed of the authors' Thyroid run as its own process does it: read the file, split, standardize, train.

    The split is the authors' (every anomaly and as many normals in the test set, the other normals to train,
    in a seeded random order), standardized by the training normals' mean and deviation.
    """
    folders = [Path(f) for f in os.environ.get("ODBENCH_DATA_DIR", str(SHARED)).split(os.pathsep) if f]
    path = next(p for f in folders for p in (f / "adbench" / "38_thyroid.npz", f / "38_thyroid.npz") if p.is_file())
    with np.load(path) as data:
        X, y = data["X"].astype(np.float32), data["y"].astype(int)
    rng = np.random.default_rng(0)
    normals, anomalies = X[y == 0][rng.permutation(int((y == 0).sum()))], X[y == 1]
    test_X = np.concatenate([normals[: len(anomalies)], anomalies])
    test_y = np.r_[np.zeros(len(anomalies), int), np.ones(len(anomalies), int)]
    train = normals[len(anomalies) :]
    mean, std = train.mean(0), train.std(0) + 1e-8
    params = thyroid_params(epochs)
    auroc = reference_fit((train - mean) / std, (test_X - mean) / std, test_y, params, seed=0)
    print(f"reference: 1 seed, {params['epochs']} epochs, train {len(train)}, test {len(test_X)}, best test AUROC {auroc:.3f}")


def bench_process(rounds: int, seeds: int, epochs: int | None, reference_threads: int | None) -> None:
    """Issue 30, goal 4: whole processes, each at its defaults, in turns: ``odbench run`` of ``seeds`` Thyroid
    seeds against the authors'-style script for one seed, wall time from start to exit.  ``reference_threads``:
    the reference's torch threads instead of torch's default (its tiny matmuls may run faster on one)."""
    import json
    import subprocess
    import sys

    from odbench.engine.devices import cpu_description

    dataset, source = dataset_id()
    if dataset != "thyroid":
        raise SystemExit(f"--process needs the Thyroid file (ODBENCH_DATA_DIR): {source}")
    params = thyroid_params(epochs)
    given = [arg for k, v in params.items() for arg in ("--param", f"drocc.{k}={json.dumps(v)}")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    reference = [sys.executable, str(Path(__file__).resolve()), "--reference-process", *(["--epochs", str(epochs)] if epochs else [])]
    reference_env = {**env, "OMP_NUM_THREADS": str(reference_threads)} if reference_threads else env
    threads = f"the reference at {reference_threads} thread(s), odbench at its default" if reference_threads else "each process at its default threads"
    print(f"CPU: {cpu_description()}; load average {os.getloadavg()[0]:.1f}; {threads}; "
          f"odbench with --no-mlflow --no-report (the reference logs nothing); {params['epochs']} epochs")  # fmt: skip
    times: dict[str, list[float]] = {"reference": [], "odbench": []}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(rounds):
            ours = [sys.executable, "-m", "odbench.cli", "run", "--methods", "drocc", "--datasets", "thyroid",
                    "--seeds", str(seeds), "--no-mlflow", "--no-report", "--results", str(Path(folder) / f"r{r}"), *given]  # fmt: skip
            for name, command, its_env in (("reference", reference, reference_env), ("odbench", ours, env)):
                started = time.perf_counter()
                done = subprocess.run(command, env=its_env, capture_output=True, text=True)
                times[name].append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
            print(f"round {r + 1}: reference 1 seed {times['reference'][-1]:.1f} s, odbench {seeds} seeds "
                  f"{times['odbench'][-1]:.1f} s (ratio {times['odbench'][-1] / times['reference'][-1]:.2f}), "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    ref, ours_s = statistics.median(times["reference"]), statistics.median(times["odbench"])
    rounds_ratio = statistics.median(o / r for o, r in zip(times["odbench"], times["reference"], strict=True))
    print(f"median over n={rounds}: reference {ref:.1f} s, odbench {ours_s:.1f} s; ratio {ours_s / ref:.2f} "
          f"(goal <= 0.8); median of the rounds' own ratios {rounds_ratio:.2f}")  # fmt: skip


# ---------------------------------------------------------------- the bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timings of each side, taken in turns (default 3)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds trained together (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default 1: tiny matmuls)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="fewer epochs for both sides (default: the preset's 100)"
    )
    parser.add_argument("--trials", action="store_true", help="K tuning trials (points of DROCC's grid), not K seeds")
    parser.add_argument("--solo", action="store_true", help="also time odbench's solo fit and compare its scores")
    parser.add_argument(
        "--keep-freed-memory", action="store_true",
        help="both sides reuse freed memory as odbench's jobs do (odbench.engine.devices.keep_freed_memory)",
    )
    parser.add_argument("--process", action="store_true", help="whole processes at their defaults (issue 30, goal 4)")
    parser.add_argument("--reference-threads", type=int, help="--process: the reference's threads (default torch's)")
    parser.add_argument("--reference-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_process:
        reference_process(args.epochs)
        return
    if args.process:
        bench_process(args.rounds, args.seeds, args.epochs, args.reference_threads)
        return
    from odbench.core.contracts import FitContext
    from odbench.engine.devices import keep_freed_memory
    from odbench.engine.execute import job_task
    from odbench.engine.plan import expand
    from odbench.engine.registry import Registry

    torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    dataset, source = dataset_id()
    registry = Registry()
    params = thyroid_params(args.epochs)
    plan = expand(registry, ["drocc"], [dataset], repetitions=args.seeds, params={"drocc": params})
    built = [job_task(registry, job, plan.cache) for job in plan.jobs]
    cls = registry.method("drocc")
    resolved = cls.resolve_params(built[0][0].info, params)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), "
        f"malloc: {'freed blocks kept (as odbench jobs run)' if kept else 'glibc default'}, load average {os.getloadavg()[0]:.1f}; data: {source}, "
        f"train {len(built[0][0].train)} normals, test {len(built[0][0].test)}\n"
        f"preset: {', '.join(f'{k}={v}' for k, v in params.items())}"
    )

    if args.trials:  # K points of the grid, on repetition 0's task and seed
        grid = cls.param_grid(built[0][0].info)
        points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
        random.Random(0).shuffle(points)
        members_params = [cls.resolve_params(built[0][0].info, {**params, **point}) for point in points[: args.seeds]]
        members_built = [built[0]] * args.seeds
        print("trials: " + "; ".join(", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in pt.items())
                                     for pt in points[: args.seeds]))  # fmt: skip
    else:
        members_params, members_built = [resolved] * args.seeds, built
    what = "trials" if args.trials else "seeds"

    def group() -> list[Any]:
        methods = cls.fit_group(
            members_params, [t.for_fit() for t, _ in members_built], [FitContext(seed=s) for _, s in members_built]
        )
        assert methods is not None, f"DROCC declined to train these {what} together"
        assert all(not isinstance(m, Exception) for m in methods), f"a member stopped: {methods}"
        return methods

    times: dict[str, list[float]] = {"reference": [], "group": [], "solo": []}
    for r in range(args.rounds):
        started = time.perf_counter()
        auroc = reference_train(built[0][0], resolved, seed=r)
        times["reference"].append(time.perf_counter() - started)
        started = time.perf_counter()
        members = group()
        times["group"].append(time.perf_counter() - started)
        task0 = built[0][0]
        member0 = roc_auc_score(task0.test.y, members[0].anomaly_score(task0.test.X))
        line = f"round {r + 1}: reference 1 seed {times['reference'][-1]:.1f} s (best test AUROC {auroc:.3f}), "
        line += f"odbench {args.seeds} {what} together {times['group'][-1]:.1f} s (member 0's test AUROC {member0:.3f})"
        if args.solo:
            task, seed = built[0]
            started = time.perf_counter()
            alone = cls(**members_params[0]).fit(task.for_fit(), FitContext(seed=seed))
            times["solo"].append(time.perf_counter() - started)
            scores = alone.anomaly_score(task.test.X)
            gap = np.abs(scores - members[0].anomaly_score(task.test.X)).max()
            line += f", odbench solo 1 seed {times['solo'][-1]:.1f} s (max |score - member 0's| {gap:.1e}"
            line += f" on scores up to {np.abs(scores).max():.1f})"
        print(line, flush=True)
    ref, grp = statistics.median(times["reference"]), statistics.median(times["group"])
    print(
        f"median over n={args.rounds}: reference 1 seed {ref:.1f} s, odbench {args.seeds} {what} together {grp:.1f} s; "
        f"ratio {grp / ref:.2f} (goal <= 1), {grp / args.seeds:.2f} s per {what[:-1]}; median of the rounds' own "
        f"ratios {statistics.median(g / r for g, r in zip(times['group'], times['reference'], strict=True)):.2f}"
    )
    if times["solo"]:
        solo = statistics.median(times["solo"])
        print(
            f"odbench solo 1 seed median {solo:.1f} s ({solo / ref:.2f}x the reference); group / {args.seeds} solos: {grp / (solo * args.seeds):.2f}"
        )


if __name__ == "__main__":
    main()
