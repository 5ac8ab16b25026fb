"""How fast DROCC's engine runs on this machine.

Prints:

1. seconds per DROCC epoch, CIFAR LeNet: one normal class of 5000 random
   uint8 32x32x3 images, batch 256, 50 ascent steps (a few batches are
   timed and the epoch extrapolated: ``--batches``);
2. the same for the tabular MLP on Thyroid (ODDS, 3772x6; random data of
   that shape when the file is absent), whole epochs;
3. achieved GFLOP/s of the CIFAR epoch against this machine's float32
   matmul peak (a 2048x2048 matmul measured here);
4. DROCC-LF's projection (Proposition 1) on a batch of 256 784-d points:
   ours (vectorized grid search) against the reference's per-example loop
   with 40 random samples, reimplemented below; time ratio and how well
   each satisfies ``r <= ||delta||_Sigma <= gamma r``;
5. with ``--bf16``: the same epochs under bfloat16 autocast, and the sine2d
   AUROC of fp32 vs bf16 training.

Usage: ``python scripts/bench_drocc.py [--batches 3] [--bf16]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from odbench import nets
from odbench.adversarial import DROCCObjective, mahalanobis_norm, mahalanobis_project
from odbench.api import DataInfo
from odbench.training import Batches, Step, _autocast

THYROID = Path(os.environ.get("ODBENCH_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "adbench" / "38_thyroid.npz"


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n x n matmul (best of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


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


def drocc_epoch_seconds(
    backbone: str, X: np.ndarray, info: DataInfo, batches: int | None, precision: str, radius: float, gamma: float
) -> tuple[float, int]:
    """Seconds per DROCC epoch (batch 256, 50 ascent steps); timed batches."""
    torch.manual_seed(0)
    model = nets.build(backbone, info.shape, out_dim=1)
    objective = DROCCObjective(radius=radius, gamma=gamma, ascent_step_size=0.001, ascent_num_steps=50)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = Batches(X, None, info, torch.device("cpu"))
    step = Step(epoch=0, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    model.train()
    n_batches = int(np.ceil(len(X) / 256))
    timed, done, started = batches or n_batches, 0, None
    for i, (xb, yb) in enumerate(data.iterate(256, step.generator)):
        if i == 1:
            started = time.perf_counter()  # the first batch warms up the allocator
        with _autocast(torch.device("cpu"), precision):
            loss = objective.loss(model, xb, yb, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 1:
            done += 1
        if done >= timed:
            break
    per_batch = (time.perf_counter() - started) / max(done, 1)
    return per_batch * n_batches, done


# ---------------------------------------------------------------- DROCC-LF projection


def reference_projection(grad: torch.Tensor, diff: torch.Tensor, radius: float, gamma: float, rng: np.random.Generator) -> torch.Tensor:
    """The authors' per-example projection (EdgeML ``optim_solver``), reimplemented.

    For each example outside the annulus, 40 values of tau (inside) or nu
    (outside) drawn uniformly from the paper's range; the feasible one with
    the smallest objective wins; when none is feasible the example is left
    as it was (the reference's behaviour).
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


def bench_projection() -> None:
    g = torch.Generator().manual_seed(0)
    d, radius, gamma = 784, 14.0, 2.0
    raw = torch.rand(256, d, generator=g) ** 4  # skewed sensitivities, as |df/dx| are
    sigma = raw / raw.sum(1, keepdim=True) * d  # the reference's normalizer
    # offsets from a DROCC ascent: N(0, I) draws of varied length (inside, feasible, outside)
    delta = torch.randn(256, d, generator=g) * torch.linspace(0.1, 2.0, 256).view(-1, 1)
    mahalanobis_project(delta, sigma, radius, gamma)  # warm-up
    t = time.perf_counter()
    reps = 5
    for _ in range(reps):
        ours = mahalanobis_project(delta, sigma, radius, gamma)
    t_ours = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    ref = reference_projection(sigma, delta, radius, gamma, np.random.default_rng(0))
    t_ref = time.perf_counter() - t
    v_ours, v_ref = violation(ours, sigma, radius, gamma), violation(ref, sigma, radius, gamma)
    print("DROCC-LF projection, batch 256 x 784:")
    print(f"  ours (grid 32 x 5 rounds, vectorized): {t_ours * 1e3:8.2f} ms/batch; worst relative violation {v_ours[0]:.2e}, rows outside {v_ours[1]}")
    print(f"  reference loop (40 samples/example):  {t_ref * 1e3:8.2f} ms/batch; worst relative violation {v_ref[0]:.2e}, rows outside {v_ref[1]}")
    print(f"  speed-up: {t_ref / t_ours:.0f}x")
    # optimality: distance moved, on the rows the reference left feasible
    n_ref = mahalanobis_norm(ref.double(), sigma.double())
    fine = (n_ref >= radius * (1 - 1e-6)) & (n_ref <= gamma * radius * (1 + 1e-6))
    d_ours, d_ref = (ours - delta).norm(dim=1)[fine], (ref - delta).norm(dim=1)[fine]
    print(f"  ||u - delta|| on the {int(fine.sum())} rows both leave feasible: ours {d_ours.mean():.4f}, reference {d_ref.mean():.4f} (smaller = closer to optimal)")


def sine2d_auroc(precision: str) -> float:
    from odbench.api import FitContext
    from odbench.metrics import evaluate
    from odbench.preprocess import standardize
    from odbench.protocols import get_protocol
    from odbench.registry import Registry

    registry = Registry()
    ds = registry.dataset("sine2d")
    task = standardize(get_protocol("contamination").make_task(ds.load(None), ds, None, 0))
    cls = registry.method("drocc")
    params = {
        **cls.default_params(task.info), "epochs": 60, "only_ce_epochs": 5, "radius": 0.2, "ascent_step_size": 0.05,
        "ascent_num_steps": 10, "lr": 1e-2, "hidden": 128, "batch_size": 32, "precision": precision,
    }  # fmt: skip
    method = cls(**params).fit(task.for_fit(), FitContext(seed=0))
    return evaluate(("auroc",), task.test.y, method.anomaly_score(task.test.X))["auroc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=3, help="CIFAR batches to time (the epoch is extrapolated)")
    parser.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast and compare AUROC")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    peak = matmul_peak()
    print(f"float32 matmul peak (2048^2): {peak:.0f} GFLOP/s")
    if args.bf16:
        print(f"bfloat16 matmul peak (2048^2): {matmul_peak(dtype=torch.bfloat16):.0f} GFLOP/s")

    rng = np.random.default_rng(0)
    cifar = rng.integers(0, 256, (5000, 3, 32, 32), dtype=np.uint8)
    info = DataInfo("bench", "image", (3, 32, 32), 5000, "lenet_cifar", channel_mean=(0.5,) * 3, channel_std=(0.25,) * 3)
    radius = float(np.sqrt(3 * 32 * 32) / 2)
    precisions = ["fp32", "bf16"] if args.bf16 else ["fp32"]
    flops = forward_flops(nets.build("lenet_cifar", info.shape), info.shape)
    for precision in precisions:
        seconds, timed = drocc_epoch_seconds("lenet_cifar", cifar, info, args.batches, precision, radius, 1.0)
        # per example per batch: 50 ascent (forward + input-backward ~ 2 forwards) + 2 forwards + 2 backwards (~4 forwards)
        work = 5000 * flops * (50 * 3 + 2 + 4)
        print(
            f"CIFAR LeNet DROCC epoch [{precision}] (5000 imgs, batch 256, 50 ascent steps; {timed} batches timed, extrapolated to 20): "
            f"{seconds:.1f} s/epoch, ~{work / seconds / 1e9:.0f} GFLOP/s = {100 * work / seconds / 1e9 / peak:.0f}% of fp32 peak"
        )

    if THYROID.is_file():
        X = np.load(THYROID)["X"]
        y = np.load(THYROID)["y"]
        X = X[y == 0].astype(np.float32)
        source = f"{THYROID.name}, {len(X)} normals"
    else:
        X = rng.standard_normal((3772, 6)).astype(np.float32)
        source = "random 3772x6 (thyroid file absent)"
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    tinfo = DataInfo("thyroid", "tabular", (6,), len(X), "mlp")
    for precision in precisions:
        seconds, timed = drocc_epoch_seconds("mlp", X, tinfo, None, precision, float(np.sqrt(6) / 2), 2.0)
        print(f"Thyroid MLP DROCC epoch [{precision}] ({source}, batch 256, 50 ascent steps, whole epoch): {seconds:.2f} s/epoch")

    bench_projection()

    if args.bf16:
        for precision in precisions:
            t = time.perf_counter()
            auroc = sine2d_auroc(precision)
            print(f"sine2d DROCC AUROC [{precision}]: {auroc:.4f} ({time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
