"""Each fast path of the training loop against the plain path it replaces, in interleaved rounds in one process.

A fast path stays only where it is at least 1.3x faster on the hardware it
targets.  Each figure is the median over rounds of (plain seconds / fast
seconds), both sides timed in the same round, so the drift of a shared
machine's load cancels.  Torch runs one thread (as odbench's jobs do).

* ``mlp``: K DROCC members on the Thyroid MLP (``DROCC.fit_group``, the
  paper's Thyroid preset shortened to ``--epochs``), trained by

  - ``solo``: K solo fits one after another (no group);
  - ``loop``: one group, each member's own network on its rows (``LoopMembers``);
  - ``stacked-autograd``: the stacked MLP with autograd's ascent
    (``StackedNet`` with ``relu_mlp`` off);
  - ``stacked``: the full fast path (the closed-form ascent in feature-major columns).

  Two fast paths measured here were deleted (issue 28, AMD EPYC, 10 Thyroid
  members, 10 epochs, 5 rounds): a hand-written backward of the stacked
  MLP's training step (1.11x autograd's), and the closed-form ascent fed
  points in rows, which the columns beat 1.68x.

* ``lenet``: K DROCC members on random MNIST-shaped images (LeNet), ``solo``
  against ``loop``, and one DROCC step (CE, ``--ascent`` ascent steps,
  adversarial CE, backward) of the K members by ``torch.func.vmap`` over
  stacked weights against K solo steps.
* ``pool-first``: one DROCC step of a solo LeNet (MNIST and CIFAR shapes)
  with the pool-first block (``pool_first_forward``, when the module still
  exists) against the modules in order.

Usage: ``python scripts/bench_members.py [mlp|lenet|pool-first ...] [--rounds 3] [--members 10] [--epochs 10] [--modes ...]``.
Thyroid from ``$ODBENCH_DATA_DIR`` (default ../shared/data); without it, random data of its shape.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from odbench.core.contracts import DataInfo, FitContext, Split, Task
from odbench.deep import nets, stacked
from odbench.engine.execute import job_task
from odbench.engine.plan import expand
from odbench.engine.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
#: the shared data folder beside the checkout (or beside its worktree folder)
SHARED = next((p for p in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if p.is_dir()), ROOT)


def rounds(
    sides: dict[str, Callable[[], Any]], n: int, baseline: str, pairs: tuple[tuple[str, str], ...] = ()
) -> None:
    """Time every side once per round, interleaved; print medians and each side's median speed-up over ``baseline``.

    ``pairs``: (plain, fast) sides whose own per-round ratio is printed too (a fast path against what it replaces).
    """
    for run in sides.values():  # warm-up: imports, allocator, first-call caches
        run()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(n):
        for name, run in sides.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    for name, values in seconds.items():
        ratios = [b / v for b, v in zip(seconds[baseline], values, strict=True)]
        print(
            f"  {name:18s} median {statistics.median(values):8.3f} s   {baseline}/{name} {statistics.median(ratios):5.2f}x"
        )
    for plain, fast in pairs:
        ratios = [p / f for p, f in zip(seconds[plain], seconds[fast], strict=True)]
        print(f"  {plain}/{fast}: {statistics.median(ratios):.2f}x (median of {n} rounds' own ratios)")


@contextlib.contextmanager
def stacked_mode(mode: str) -> Iterator[None]:
    """The stacked MLP run as ``mode``: ``loop`` (no stacking), ``stacked-autograd`` or ``stacked``."""
    saved = (stacked.StackedNet.of, stacked.StackedNet.__init__)
    if mode == "loop":
        stacked.StackedNet.of = classmethod(lambda cls, members: None)  # type: ignore[method-assign,assignment]
    elif mode == "stacked-autograd":

        def generic(self: Any, members: Any) -> None:
            saved[1](self, members)
            self.relu_mlp = False

        stacked.StackedNet.__init__ = generic  # type: ignore[method-assign]
    try:
        yield
    finally:
        stacked.StackedNet.of, stacked.StackedNet.__init__ = saved  # type: ignore[method-assign]



def thyroid_tasks(registry: Registry, k: int) -> tuple[list[Task], list[int]]:
    if "ODBENCH_DATA_DIR" not in os.environ and SHARED != ROOT:
        os.environ["ODBENCH_DATA_DIR"] = str(SHARED)
    try:
        plan = expand(registry, ["drocc"], ["thyroid"], repetitions=k)
        built = [job_task(registry, job, plan.cache) for job in plan.jobs]
        print("  data: ODDS Thyroid")
        return [t for t, _ in built], [s for _, s in built]
    except Exception as err:  # no data folder: Thyroid's shape
        print(f"  data: random, Thyroid's shape ({type(err).__name__})")
        return [random_task((6,), 3679, 93, seed=s) for s in range(k)], list(range(k))


def random_task(shape: tuple[int, ...], n: int, anomalies: int, seed: int, images: bool = False) -> Task:
    rng = np.random.default_rng(seed)

    def split(count: int, bad: int) -> Split:
        X = rng.standard_normal((count, *shape)).astype(np.float32)
        X[count - bad :] += 2.0
        y = np.r_[np.zeros(count - bad, int), np.ones(bad, int)]
        return Split(X=X, y=y, index=np.arange(count))

    train = split(n, 0)
    info = DataInfo(
        dataset="random", modality="image" if images else "tabular", shape=shape, n_train=n,
        backbone="lenet_mnist" if images else "mlp",
    )  # fmt: skip
    return Task(
        dataset="random", protocol="synthetic", normal_class=None, train=train, val=split(n // 4, n // 8),
        test=split(n // 4, n // 8), info=info, metrics=("auroc",),
    )  # fmt: skip


def fit_members(cls: Any, params: dict[str, Any], tasks: list[Task], seeds: list[int], grouped: bool) -> None:
    fit_tasks = [t.for_fit() for t in tasks]
    if grouped:
        fitted = cls.fit_group([params] * len(tasks), fit_tasks, [FitContext(seed=s) for s in seeds])
        assert fitted is not None and not any(isinstance(f, Exception) for f in fitted), fitted
    else:
        for task, seed in zip(fit_tasks, seeds, strict=True):
            cls(**params).fit(task, FitContext(seed=seed))


def bench_mlp(args: argparse.Namespace, registry: Registry) -> None:
    print(f"mlp: {args.members} DROCC members on Thyroid, {args.epochs} epochs (half CE-only)")
    cls = registry.method("drocc")
    tasks, seeds = thyroid_tasks(registry, args.members)
    params = cls.resolve_params(tasks[0].info, {"epochs": args.epochs, "only_ce_epochs": args.epochs // 2})

    def side(mode: str) -> Callable[[], None]:
        def run() -> None:
            with stacked_mode(mode):
                fit_members(cls, params, tasks, seeds, grouped=mode != "solo")

        return run

    modes = args.modes or ["solo", "loop", "stacked-autograd", "stacked"]
    pairs = (("solo", "loop"), ("loop", "stacked-autograd"), ("stacked-autograd", "stacked"))
    rounds({m: side(m) for m in modes}, args.rounds, modes[0], tuple(p for p in pairs if set(p) <= set(modes)))


def drocc_step(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, params: list[nn.Parameter], steps: int
) -> None:
    """One DROCC step as the loss takes it: CE, ``steps`` normalized ascent steps, adversarial CE, backward."""
    loss = F.binary_cross_entropy_with_logits(
        forward(x).reshape(-1), torch.ones(x.shape[0] * (x.shape[1] if x.dim() == 5 else 1))
    )
    h = torch.randn_like(x)
    for p in params:
        p.requires_grad_(False)
    for _ in range(steps):
        points = (x + h).requires_grad_(True)
        out = forward(points).reshape(-1)
        (grad,) = torch.autograd.grad(
            F.binary_cross_entropy_with_logits(out, torch.zeros_like(out), reduction="sum"), [points]
        )
        h = h + 0.01 * grad / grad.flatten(-3).norm(dim=-1).clamp_min(1e-12)[..., None, None, None]
    for p in params:
        p.requires_grad_(True)
    out = forward((x + h).detach()).reshape(-1)
    (loss + F.binary_cross_entropy_with_logits(out, torch.zeros_like(out))).backward()


class ModuleOrder(nn.Module):
    """A LeNet run as its modules in order (no pool-first block)."""

    def __init__(self, lenet: nn.Module) -> None:
        super().__init__()
        self.lenet = lenet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lenet.head(self.lenet.features(x))


def bench_lenet(args: argparse.Namespace, registry: Registry) -> None:
    k, shape = 4, (1, 28, 28)
    print(
        f"lenet: {k} DROCC members, random MNIST-shaped images (LeNet), 2 epochs (1 CE-only), {args.ascent} ascent steps"
    )
    cls = registry.method("drocc")
    tasks = [random_task(shape, 512, 0, seed=s, images=True) for s in range(k)]
    seeds = list(range(k))
    params = cls.resolve_params(
        tasks[0].info, {"epochs": 2, "only_ce_epochs": 1, "ascent_num_steps": args.ascent, "batch_size": 128}
    )
    rounds(
        {
            "solo": lambda: fit_members(cls, params, tasks, seeds, grouped=False),
            "loop": lambda: fit_members(cls, params, tasks, seeds, grouped=True),
        },
        args.rounds,
        "solo",
    )
    print(
        f"lenet: one DROCC step of {k} members, batch 64: {k} solo steps against torch.func.vmap over stacked weights"
    )
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(ModuleOrder(nets.build("lenet_mnist", shape)))
    template = copy.deepcopy(models[0]).to("meta")
    weights, buffers = torch.func.stack_module_state(models)  # type: ignore[arg-type]
    stacked_weights = [nn.Parameter(w) for w in weights.values()]
    named = dict(zip(weights, stacked_weights, strict=True))
    vmapped = torch.func.vmap(lambda w, b, x: torch.func.functional_call(template, (w, b), (x,)))
    x = torch.randn(k, 64, *shape)
    rounds(
        {
            "solo": lambda: [drocc_step(m, x[i], list(m.parameters()), args.ascent) for i, m in enumerate(models)],
            "vmap": lambda: drocc_step(lambda z: vmapped(named, buffers, z), x, stacked_weights, args.ascent),
        },
        args.rounds,
        "solo",
    )


def bench_pool_first(args: argparse.Namespace) -> None:
    try:
        from odbench.deep.pool_first import pool_first_forward  # type: ignore[import-not-found]
    except ImportError:
        print("pool-first: odbench.deep.pool_first is gone (deleted: below 1.3x)")
        return
    for name, shape, batch in (("lenet_mnist", (1, 28, 28), 128), ("lenet_cifar", (3, 32, 32), 128)):
        print(f"pool-first: one solo DROCC step of {name}, batch {batch}, {args.ascent} ascent steps")
        torch.manual_seed(0)
        lenet = nets.build(name, shape)
        x = torch.randn(batch, *shape)

        def pooled(z: torch.Tensor, lenet: nn.Module = lenet) -> torch.Tensor:
            return lenet.head(pool_first_forward(lenet.features, z))

        plain, weights = ModuleOrder(lenet), list(lenet.parameters())
        rounds(
            {
                "module-order": lambda plain=plain, x=x, weights=weights: drocc_step(plain, x, weights, args.ascent),
                "pool-first": lambda pooled=pooled, x=x, weights=weights: drocc_step(pooled, x, weights, args.ascent),
            },
            args.rounds,
            "module-order",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", nargs="*", default=["mlp", "lenet", "pool-first"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ascent", type=int, default=10)
    parser.add_argument("--modes", nargs="*", help="mlp: the sides to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"  # fmt: skip
    print(f"{cpu}, torch {torch.__version__}, 1 thread")
    registry = Registry()
    for bench in args.benches:
        if bench == "mlp":
            bench_mlp(args, registry)
        elif bench == "lenet":
            bench_lenet(args, registry)
        elif bench == "pool-first":
            bench_pool_first(args)
        else:
            raise SystemExit(f"unknown bench {bench!r}; use mlp, lenet or pool-first")


if __name__ == "__main__":
    main()
