"""How fast DROCC's engine runs on this machine.

Prints, with the load average (the CPU may be shared: timings are best-of-N
wall clock and move with other work; compare ratios taken in one run):

1. float32 and bfloat16 matmul peaks (2048 x 2048, best of 10);
2. one ascent step of the CIFAR LeNet (forward + input gradient, batch 256)
   under each speed setting (fp32 / bf16 autocast, contiguous /
   channels_last) at 1 and 2 threads, as ratios to fp32 contiguous;
3. seconds per DROCC epoch, CIFAR LeNet: one normal class of 5000 random
   uint8 3x32x32 images, batch 256, 50 ascent steps per batch, for each
   setting.  ``--batches`` batches are timed after one short warm-up batch
   and the epoch (20 batches) is extrapolated from them.  Achieved GFLOP/s
   counts 106 forward-equivalents per image and batch (50 ascent steps of
   forward + input-backward, then 2 forwards and 2 backwards with weight
   gradients for the loss) against the measured matmul peak;
4. the same, whole epochs, for the tabular MLP on Thyroid (ODDS, 3679
   normals x 6; random data of that shape when the file is absent);
5. DROCC-LF's projection (Proposition 1) on batches of 256 784-d points,
   ours against the reference's per-example loop with 40 random samples
   (reimplemented below): time ratio, constraint violations and distance
   moved; for a shared sigma (DROCC-LF's per-epoch sigma) and a per-row
   one, on a hard batch (offsets from 0.1x to 2x the annulus) and on a
   mid-ascent batch (projected points moved by one ascent step);
6. with ``--accuracy``: AUROC of DROCC on MNIST digit 0 vs rest (reduced:
   the first 6000 training and 2000 test images; ODBENCH_DATA_DIR must
   hold ``mnist/``), fp32 vs bf16 and contiguous vs channels_last, over
   three seeds.

Usage: ``OMP_NUM_THREADS=2 python scripts/bench_drocc.py [--batches 1]
[--settings fp32,fp32-cl,bf16,bf16-cl] [--skip-epochs] [--accuracy]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from odbench.api import DataInfo
from odbench.deep import nets
from odbench.deep.freezing import batchnorm_stats_frozen, parameters_frozen
from odbench.deep.training import Batches, Step, _autocast, apply_memory_format
from odbench.drocc.ascent import logits
from odbench.drocc.projections import mahalanobis_norm, mahalanobis_project
from odbench.engine.registry import Registry

THYROID = Path(os.environ.get("ODBENCH_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "adbench" / "38_thyroid.npz"

#: setting name -> (autocast precision, memory format)
SETTINGS = {"fp32": ("fp32", "contiguous"), "fp32-cl": ("fp32", "channels_last"), "bf16": ("bf16", "contiguous"), "bf16-cl": ("bf16", "channels_last")}
CPU = torch.device("cpu")


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Smallest wall-clock seconds of ``repeats`` calls (after one warm-up call)."""
    fn()
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n x n matmul (best of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / best_time(lambda: a @ b, repeats) / 1e9


def forward_flops(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs of one example's forward pass (convolutions and linear layers)."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2 * k * output[0].numel()
        elif isinstance(module, torch.nn.Linear):
            total += 2 * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


def cifar_model(memory_format: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = nets.build("lenet_cifar", (3, 32, 32), out_dim=1)
    apply_memory_format(model, CPU, memory_format)
    return model.train()


def ascent_step_seconds(settings: list[str], threads: tuple[int, ...] = (1, 2), rounds: int = 3) -> dict[tuple[str, int], float]:
    """One ascent step (forward + input gradient) of the CIFAR LeNet on 256 images, per (setting, threads).

    The combinations take turns, ``rounds`` times, and each keeps its best
    time, so a change in the machine's load hits them all alike.
    """
    x = torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    h = torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    models = {s: cifar_model(SETTINGS[s][1]) for s in settings}

    def step(setting: str) -> None:
        model, hh = models[setting], h.clone().requires_grad_(True)
        with _autocast(CPU, SETTINGS[setting][0]), parameters_frozen(model), batchnorm_stats_frozen(model):
            loss = F.binary_cross_entropy_with_logits(logits(model, x + hh), torch.zeros(256), reduction="sum")
            torch.autograd.grad(loss, [hh])

    before = torch.get_num_threads()
    best = {(s, t): np.inf for s in settings for t in threads}
    try:
        for setting in settings:
            step(setting)  # warm-up: oneDNN primitives, allocator
        for _ in range(rounds):
            for setting, n in best:
                torch.set_num_threads(n)
                started = time.perf_counter()
                step(setting)
                best[setting, n] = min(best[setting, n], time.perf_counter() - started)
    finally:
        torch.set_num_threads(before)
    return best


def drocc_epoch_seconds(
    model: torch.nn.Module, X: np.ndarray, info: DataInfo, batches: int | None, precision: str, radius: float, gamma: float
) -> tuple[float, int, int]:
    """Seconds per DROCC epoch (batch 256, 50 ascent steps), extrapolated from ``batches`` timed batches.

    A first batch with 2 ascent steps warms up oneDNN and the allocator.
    Returns (seconds per epoch, batches timed, batches per epoch).
    """
    drocc = Registry().method("drocc")
    settings = dict(radius=radius, gamma=gamma, ascent_step_size=0.001, only_ce_epochs=0)
    warm_up, timed_loss = (drocc(**settings, ascent_num_steps=m).prepare(info) for m in (2, 50))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = Batches(X, None, info, CPU)
    step = Step(epoch=0, generator=torch.Generator().manual_seed(0), device=CPU)
    n_batches = int(np.ceil(len(X) / 256))
    timed = min(batches or n_batches, n_batches - 1)

    def one_batch(method: Any, xb: torch.Tensor, yb: torch.Tensor | None) -> None:
        with _autocast(CPU, precision):
            loss = method.loss(model, xb, yb, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    batches_iter = data.iterate(256, step.generator)
    one_batch(warm_up, *next(batches_iter))
    started = time.perf_counter()
    for _ in range(timed):
        one_batch(timed_loss, *next(batches_iter))
    return (time.perf_counter() - started) / timed * n_batches, timed, n_batches


# ---------------------------------------------------------------- DROCC-LF projection


def reference_projection(grad: torch.Tensor, diff: torch.Tensor, radius: float, gamma: float, rng: np.random.Generator) -> torch.Tensor:
    """The authors' per-example projection (EdgeML ``optim_solver``), reimplemented.

    For each example outside the annulus, 40 values of tau (inside) or nu
    (outside) drawn uniformly from the paper's range; the feasible one with
    the smallest objective wins; when none is feasible the example is left
    as it was (the reference's behaviour).  ``grad``: (B, d) sigma.
    """
    out = diff.clone()
    dist = torch.sqrt(torch.sum(grad * diff**2, dim=1))
    lam_lo = (-1 / grad.max(dim=1).values + grad.min(dim=1).values * 1e-4).numpy()
    alpha = gamma * radius / dist
    nu_hi = (alpha / (1 - alpha) * grad.max(dim=1).values).numpy()
    for i in range(len(diff)):
        g, d = grad[i], diff[i]
        if dist[i] < radius:
            best, best_val = 0.0, np.inf
            for _ in range(40):
                lam = rng.uniform(lam_lo[i], 0)
                den = (1 + lam * g) ** 2 + 1e-10
                if torch.sum(d**2 * g / den) > radius**2:
                    val = torch.sum(d**2 * lam**2 * g**2 / den)
                    if val < best_val:
                        best, best_val = lam, val
            out[i] = d / (1 + best * g)
        elif dist[i] > gamma * radius:
            best, best_val = np.inf, np.inf
            for _ in range(40):
                nu = rng.uniform(0, nu_hi[i])
                den = (nu + g) ** 2 + 1e-10
                if torch.sum(d**2 * g * nu**2 / den) < (gamma * radius) ** 2:
                    val = torch.sum(d**2 * g**2 / den)
                    if val < best_val:
                        best, best_val = nu, val
            out[i] = d / (1 + (1.0 / best) * g)
    return out


def violation(delta: torch.Tensor, sigma: torch.Tensor, radius: float, gamma: float) -> tuple[float, int]:
    """Largest relative distance outside [r, gamma r], and how many rows are outside (1e-6 slack)."""
    n = mahalanobis_norm(delta.double(), sigma.double())
    below = (radius - n).clamp_min(0) / radius
    above = (n - gamma * radius).clamp_min(0) / (gamma * radius)
    worst = torch.maximum(below, above)
    return float(worst.max()), int((worst > 1e-6).sum())


def projection_problems() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(delta, sigma) batches of 256 x 784: shared / per-row sigma, hard / mid-ascent offsets."""
    g = torch.Generator().manual_seed(0)
    d, radius, gamma = 784, 14.0, 2.0
    raw = torch.rand(256, d, generator=g) ** 4  # skewed sensitivities, as |df/dx| are
    per_row = raw / raw.sum(1, keepdim=True) * d  # the reference's normalizer
    # offsets from N(0, I) draws of varied length: inside, feasible and outside rows
    hard = torch.randn(256, d, generator=g) * torch.linspace(0.1, 2.0, 256).view(-1, 1)
    problems = {}
    for name, sigma in (("shared sigma", per_row.mean(0)), ("per-row sigma", per_row)):
        problems[f"{name}, hard batch"] = (hard, sigma)
        # mid-ascent: points on the annulus moved by one normalized ascent step (eta = 0.001)
        step = torch.randn(256, d, generator=g)
        moved = mahalanobis_project(hard, sigma, radius, gamma) + 1e-3 * step / step.norm(dim=1, keepdim=True)
        problems[f"{name}, mid-ascent batch"] = (moved, sigma)
    return problems


def bench_projection() -> None:
    radius, gamma = 14.0, 2.0
    print("DROCC-LF projection, batch 256 x 784, r = 14, gamma = 2 (ours: best of 20 after a warm-up; reference loop: best of 3 after a warm-up):")
    for name, (delta, sigma) in projection_problems().items():
        sigma_rows = sigma.expand_as(delta).contiguous()  # the reference indexes a per-row sigma
        ours = mahalanobis_project(delta, sigma, radius, gamma)
        ref = reference_projection(sigma_rows, delta, radius, gamma, np.random.default_rng(0))
        t_ours = best_time(lambda d=delta, s=sigma: mahalanobis_project(d, s, radius, gamma), 20)
        t_ref = best_time(lambda d=delta, s=sigma_rows: reference_projection(s, d, radius, gamma, np.random.default_rng(0)), 3)
        v_ours, v_ref = violation(ours, sigma_rows, radius, gamma), violation(ref, sigma_rows, radius, gamma)
        n = mahalanobis_norm(delta, sigma_rows)
        active = int(((n < radius) | (n > gamma * radius)).sum())
        # distance moved, on the rows the reference leaves feasible
        n_ref = mahalanobis_norm(ref.double(), sigma_rows.double())
        fine = (n_ref >= radius * (1 - 1e-6)) & (n_ref <= gamma * radius * (1 + 1e-6))
        d_ours, d_ref = (ours - delta).norm(dim=1)[fine].mean(), (ref - delta).norm(dim=1)[fine].mean()
        print(
            f"  {name} ({active} rows off the annulus): ours {t_ours * 1e3:.2f} ms, reference {t_ref * 1e3:.0f} ms: "
            f"{t_ref / t_ours:.0f}x faster; rows left outside (1e-6): ours {v_ours[1]}, reference {v_ref[1]} "
            f"(worst {v_ours[0]:.1e} vs {v_ref[0]:.1e}); mean ||u - delta|| where both feasible: "
            f"ours/reference = {d_ours / d_ref:.4f}"
        )


# ---------------------------------------------------------------- accuracy of the faster settings


def mnist_auroc(precision: str, memory_format: str, seed: int) -> tuple[float, float]:
    """AUROC of DROCC on reduced MNIST 0-vs-rest, and the fit's seconds."""
    from odbench.api import FitContext
    from odbench.core.metrics import evaluate
    from odbench.engine.registry import Registry
    from odbench.protocols import get_protocol
    from odbench.protocols.scaling import standardize

    registry = Registry()
    ds = registry.dataset("mnist")
    with tempfile.TemporaryDirectory() as cache:
        data = ds.load(Path(cache))
    data = dataclasses.replace(data, X=data.X[:6000], y=data.y[:6000], X_test=data.X_test[:2000], y_test=data.y_test[:2000])
    task = standardize(get_protocol("one_vs_all").make_task(data, ds, "0", 0))
    cls = registry.method("drocc")
    params = {
        **cls.default_params(task.info), "epochs": 10, "only_ce_epochs": 2, "ascent_num_steps": 20,
        "ascent_step_size": 0.01, "batch_size": 128, "precision": precision, "memory_format": memory_format,
    }  # fmt: skip
    started = time.perf_counter()
    method = cls(**params).fit(task.for_fit(), FitContext(seed=seed))
    seconds = time.perf_counter() - started
    return evaluate(("auroc",), task.test.y, method.anomaly_score(task.test.X))["auroc"], seconds


def bench_accuracy() -> None:
    print("DROCC on MNIST 0-vs-rest (6000 train / 2000 test images, lenet_mnist, 10 epochs, 20 ascent steps), AUROC:")
    base = {}
    for setting in ("fp32", "fp32-cl", "bf16", "bf16-cl"):
        precision, memory_format = SETTINGS[setting]
        aurocs, seconds = [], 0.0
        for seed in range(3):
            auroc, fit_seconds = mnist_auroc(precision, memory_format, seed)
            aurocs.append(auroc)
            seconds += fit_seconds
        base.setdefault("fp32", aurocs)
        diff = max(abs(a - b) for a, b in zip(aurocs, base["fp32"]))
        print(
            f"  {setting:8s} seeds 0-2: {', '.join(f'{a:.4f}' for a in aurocs)}; mean {np.mean(aurocs):.4f}; "
            f"max |diff| to fp32 per seed {diff:.4f}; {seconds / 3:.1f} s per fit"
        )


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=1, help="CIFAR batches timed per setting (the epoch is extrapolated)")
    parser.add_argument("--settings", default="fp32,fp32-cl,bf16,bf16-cl", help="comma-separated, from: " + ", ".join(SETTINGS))
    parser.add_argument("--skip-epochs", action="store_true", help="skip the CIFAR and Thyroid epoch timings")
    parser.add_argument("--accuracy", action="store_true", help="also compare MNIST AUROC across the settings")
    args = parser.parse_args()
    settings = args.settings.split(",")
    threads = torch.get_num_threads()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    print(
        f"torch {torch.__version__}, {threads} threads, avx512_bf16: {'avx512_bf16' in flags}, "
        f"load average {os.getloadavg()[0]:.1f} (1 min)"
    )

    peak = matmul_peak()
    peak_bf16 = matmul_peak(dtype=torch.bfloat16)
    print(f"matmul peak (2048^2): float32 {peak:.0f} GFLOP/s, bfloat16 {peak_bf16:.0f} GFLOP/s ({peak_bf16 / peak:.1f}x)")

    print("CIFAR LeNet ascent step (forward + input gradient, batch 256), best of 3 taken in turns:")
    steps = ascent_step_seconds(settings)
    base = steps[settings[0], 1]
    for setting in settings:
        t1, t2 = steps[setting, 1], steps[setting, 2]
        print(
            f"  {setting:8s} 1 thread {t1 * 1e3:5.0f} ms ({base / t1:.2f}x {settings[0]} at 1 thread), "
            f"2 threads {t2 * 1e3:5.0f} ms ({t1 / t2:.2f}x the 1-thread speed)"
        )

    if not args.skip_epochs:
        rng = np.random.default_rng(0)
        cifar = rng.integers(0, 256, (5000, 3, 32, 32), dtype=np.uint8)
        info = DataInfo("bench", "image", (3, 32, 32), 5000, "lenet_cifar", channel_mean=(0.5,) * 3, channel_std=(0.25,) * 3)
        flops = forward_flops(nets.build("lenet_cifar", info.shape), info.shape)
        work = 5000 * flops * (50 * 2 + 2 + 4)  # forward-equivalents per image, see the module docstring
        first = None
        for setting in settings:
            precision, memory_format = SETTINGS[setting]
            model = cifar_model(memory_format)
            seconds, timed, total = drocc_epoch_seconds(model, cifar, info, args.batches, precision, float(np.sqrt(3 * 32 * 32) / 2), 1.0)
            first = first or seconds
            print(
                f"CIFAR LeNet DROCC epoch [{setting}] (5000 imgs, batch 256, 50 ascent steps; {timed} of {total} batches timed, "
                f"extrapolated): {seconds:.0f} s/epoch ({first / seconds:.2f}x the first setting), ~{work / seconds / 1e9:.0f} GFLOP/s "
                f"= {100 * work / seconds / 1e9 / (peak_bf16 if precision == 'bf16' else peak):.0f}% of the "
                f"{'bf16' if precision == 'bf16' else 'fp32'} matmul peak"
            )

        if THYROID.is_file():
            loaded = np.load(THYROID)
            X = loaded["X"][loaded["y"] == 0].astype(np.float32)
            source = f"{THYROID.name}, {len(X)} normals"
        else:
            X = rng.standard_normal((3679, 6)).astype(np.float32)
            source = "random 3679x6 (thyroid file absent)"
        X = (X - X.mean(0)) / (X.std(0) + 1e-8)
        tinfo = DataInfo("thyroid", "tabular", (6,), len(X), "mlp")
        for precision in sorted({SETTINGS[s][0] for s in settings}):
            torch.manual_seed(0)
            model = nets.build("mlp", (6,), out_dim=1).train()
            seconds, timed, total = drocc_epoch_seconds(model, X, tinfo, None, precision, float(np.sqrt(6) / 2), 2.0)
            print(f"Thyroid MLP DROCC epoch [{precision}] ({source}, batch 256, 50 ascent steps, {timed} of {total} batches timed): {seconds:.2f} s/epoch")

    bench_projection()
    if args.accuracy:
        bench_accuracy()


if __name__ == "__main__":
    main()
