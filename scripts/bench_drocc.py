"""How fast DROCC runs here, against a reference-style loop run side by side.

Every timed comparison interleaves odbench's code (A) and a reference-style
version of the same work (B), A B A B ... ``--rounds`` times in this one
process on identical inputs, and prints both medians with n, their ratio
and the median of the per-round ratios: on a shared machine the absolute
times move with the load, the interleaved ratios much less.

The reference-style batch step is written from the paper (Algorithm 1) and
the authors' published loop (EdgeML ``DROCCTrainer.train`` and
``one_class_adv_loss``): plain fp32, NCHW, the LeNet's layers run one after
another (as odbench's LeNets now run too), train-mode
BatchNorm throughout the ascent (running statistics move), the gradient
normalised per example of the batch, projection onto the annulus every 10
steps.

Both sides run under glibc's default allocator, which unmaps every freed
block over its threshold, so that each large activation page-faults its
memory in again; ``--keep-freed-memory`` applies to both sides the setting
odbench's jobs run with (``odbench.engine.devices.keep_freed_memory``).
The reference's fp32 loop gains far more from it than odbench's bf16 one.

Sections (``--sections``, comma-separated; default all but ``profile`` and
``compile``):

* ``levers``: one ascent step (forward + input gradient, 256 CIFAR images)
  under each lever: fp32 NCHW, fp32 channels_last, bf16 autocast
  channels_last, bf16 weights NCHW and channels_last;
* ``train`` (goal 1): one DROCC training batch of the CIFAR LeNet (256
  images, 50 ascent steps, the reference's hyperparameters: lr 1e-3 Adam,
  radius 8, gamma 1, step 0.001, lamda 1): odbench's plugin at its defaults
  against the reference-style step; achieved GFLOP/s (106 forward
  equivalents per image: 50 x (forward + input backward), then 2 forwards
  and their backwards) against the fp32 and bf16 matmul peaks measured in
  this run;
* ``auroc`` (goal 1's tolerance): odbench's DROCC fitted at fp32 and at its
  default precision on the same split and seed, few epochs; CIFAR-10 is not
  on this machine, so the data are real MNIST digits padded to 32 x 32 and
  repeated to 3 channels (CIFAR-shaped, ``lenet_cifar``), class 0 vs rest,
  when ``$ODBENCH_DATA_DIR/mnist`` exists, else synthetic CIFAR-shaped
  images (the output says which);
* ``score`` (goal 4): scoring 10,000 images, odbench's ``score_array`` at
  the defaults against a reference-style pass (eval mode, ``no_grad``,
  fp32, NCHW, batch 256, inputs already float); agreement of the scores
  and their batch independence;
* ``memory`` (goal 5): peak RSS of an ``odbench run`` of DROCC on a
  CIFAR-10-sized task (50,000 + 10,000 uint8 images, one class normal,
  every training image, one epoch; ascent steps 1: an ascent step's memory
  does not grow with their number), in a subprocess;
* ``tabular``: a Thyroid MLP DROCC epoch, ours against the reference style;
* ``projection``: DROCC-LF's Proposition 1 projection against the
  reference's per-example solver;
* ``profile`` (goal 2): cProfile of ``odbench run`` on a CIFAR-sized task
  (``--profile-train`` training images, one epoch): where the fit's time
  goes;
* ``compile``: ``torch.compile`` of the ascent step: compile seconds and
  the step time against eager;
* ``defaults`` (issue 30): each side at its *default* thread setting, as a
  user compares them: odbench's lone job (``odbench run --jobs 1``: every
  core of the process's affinity, ``odbench.engine.devices.threads_per_job``)
  against the reference at torch's start-up count (physical cores, or
  ``$OMP_NUM_THREADS``).  The CIFAR training batch (``--ascent-steps``) and
  scoring 10,000 CIFAR-shaped images, interleaved, each round's ratio and
  load average printed, with the CPU model, its AVX-512 / bf16 flags and
  the fp32 matmul rate at each side's thread count; and odbench's
  saturation check after training (``check_saturation``) against the full
  pass over 5000 training images it replaced.

``--device cuda`` (goal 6) runs instead: a full CIFAR class epoch (5000
images, 50 ascent steps) on the GPU at the defaults, its seconds, the
GPU's utilisation sampled during it and jobs per hour at the paper's
schedule (100 epochs).

Usage: ``OMP_NUM_THREADS=2 python scripts/bench_drocc.py [--rounds 3]
[--sections train,auroc,score] [--keep-freed-memory] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import dataclasses
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from odbench.api import DataInfo, FitContext
from odbench.core.metrics import evaluate
from odbench.deep import nets
from odbench.deep.precision import cpu_has_native_bf16
from odbench.deep.training import (
    Batches,
    DivergenceGuard,
    Step,
    TrainConfig,
    _autocast,
    apply_memory_format,
    check_saturation,
    low_precision_forward,
    score_array,
)
from odbench.drocc.projections import mahalanobis_norm, mahalanobis_project
from odbench.engine.devices import cpu_description, keep_freed_memory, threads_per_job
from odbench.engine.registry import Registry

#: torch's own thread count at start-up (the reference's default: physical cores, or $OMP_NUM_THREADS)
TORCH_DEFAULT_THREADS = torch.get_num_threads()
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ODBENCH_BENCH_DATA", ROOT.parent / "shared" / "data"))
THYROID = SHARED / "adbench" / "38_thyroid.npz"
CIFAR_SHAPE = (3, 32, 32)
CPU = torch.device("cpu")
#: the reference's CIFAR hyperparameters (EdgeML README: main_cifar.py, class 0)
CIFAR_REF = {"lr": 1e-3, "radius": 8.0, "gamma": 1.0, "ascent_step_size": 0.001, "mu": 1.0, "batch_size": 256,
             "ascent_num_steps": 50, "only_ce_epochs": 0}  # fmt: skip
CIFAR_INFO = DataInfo(
    "bench", "image", CIFAR_SHAPE, 5000, "lenet_cifar", channel_mean=(0.45,) * 3, channel_std=(0.25,) * 3
)


# ---------------------------------------------------------------- timing helpers


def interleaved(
    a: Callable[[], object], b: Callable[[], object], rounds: int, warm_up: bool = True
) -> tuple[list[float], list[float]]:
    """Seconds of ``a`` and of ``b``, called A B A B ... ``rounds`` times (after one warm-up call each)."""
    if warm_up:
        a(), b()
    ta, tb = [], []
    for _ in range(rounds):
        for fn, out in ((a, ta), (b, tb)):
            started = time.perf_counter()
            fn()
            out.append(time.perf_counter() - started)
    return ta, tb


def ratio_line(
    name_a: str, ta: list[float], name_b: str, tb: list[float], unit: float = 1.0, unit_name: str = "s"
) -> str:
    """Medians with n, the ratio of the medians and the median of the per-round ratios a / b (a's share of b's time)."""
    ma, mb = statistics.median(ta), statistics.median(tb)
    per_round = statistics.median(x / y for x, y in zip(ta, tb))
    return (
        f"{name_a} {ma * unit:.3g} {unit_name}, {name_b} {mb * unit:.3g} {unit_name} (medians, n={len(ta)}): "
        f"{name_a} takes {ma / mb:.2f}x the {name_b}'s time ({mb / ma:.2f}x faster); "
        f"per-round median of {name_a}/{name_b} {per_round:.2f}x"
    )


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Smallest wall-clock seconds of ``repeats`` calls (after one warm-up call)."""
    fn()
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matmul (best of ``repeats`` after a warm-up)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
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


class ModuleOrderLeNet(nets.LeNetCIFAR):
    """The CIFAR LeNet run module after module, as the authors' net runs: conv, BatchNorm, LeakyReLU, then pool.

    odbench's LeNet runs the same order since its pool-first block went (below 1.3x, ``scripts/bench_members.py``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cifar_model(
    memory_format: str = "contiguous", device: torch.device = CPU, module_order: bool = False
) -> torch.nn.Module:
    """The CIFAR LeNet classifier, seed 0, in train mode: odbench's, or with ``module_order`` the reference's."""
    torch.manual_seed(0)
    model = (ModuleOrderLeNet(CIFAR_SHAPE) if module_order else nets.build("lenet_cifar", CIFAR_SHAPE, out_dim=1)).to(device)
    apply_memory_format(model, device, memory_format)
    return model.train()


# ---------------------------------------------------------------- the reference-style batch (EdgeML DROCCTrainer)


def reference_batch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, h0: torch.Tensor, p: dict[str, Any]
) -> float:
    """One batch of the authors' ``DROCCTrainer.train`` (fp32, NCHW, train mode throughout), on normals ``x``.

    ``h0`` plays the authors' ``torch.randn(x_train_data.shape)``; the rest
    follows ``one_class_adv_loss``: the mean BCE, the gradient divided by its
    per-example norm, ``x_adv_sampled.add_``, the annulus projection every
    10 steps, the adversarial loss, ``ce + lamda * adv``.
    """
    target = torch.ones(len(x), device=x.device)
    optimizer.zero_grad()
    ce_loss = F.binary_cross_entropy_with_logits(model(x).squeeze(1), target)
    x_adv = h0.detach().requires_grad_()
    x_adv_sampled = x_adv + x
    new_targets = torch.zeros(len(x), device=x.device)
    for step in range(p["ascent_num_steps"]):
        with torch.enable_grad():
            new_loss = F.binary_cross_entropy_with_logits(torch.squeeze(model(x_adv_sampled), dim=1), new_targets)
            grad = torch.autograd.grad(new_loss, [x_adv_sampled])[0]
            grad_norm = torch.norm(grad, p=2, dim=tuple(range(1, grad.dim())))
            grad_normalized = grad / grad_norm.view(-1, *[1] * (grad.dim() - 1))
        x_adv_sampled.add_(p["ascent_step_size"] * grad_normalized)
        if (step + 1) % 10 == 0:
            h = x_adv_sampled - x
            norm_h = torch.sqrt(torch.sum(h**2, dim=tuple(range(1, h.dim()))))
            alpha = torch.clamp(norm_h, p["radius"], p["gamma"] * p["radius"])
            h = (alpha / norm_h).view(-1, *[1] * (h.dim() - 1)) * h
            x_adv_sampled = x + h
    adv_loss = F.binary_cross_entropy_with_logits(torch.squeeze(model(x_adv_sampled), dim=1), new_targets * 0)
    loss = ce_loss + adv_loss * p["mu"]
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def odbench_batch(
    method: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, step: Step
) -> float:
    """One batch as ``odbench.deep.training.train`` runs it: the plugin's loss under the precision's autocast."""
    with _autocast(step.device, method.runtime.precision):
        loss = method.loss(model, x, None, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def prepared_drocc(info: DataInfo, device: str = "cpu", **params: Any) -> Any:
    """The DROCC plugin at its defaults for ``info`` (plus ``params``), resolved without training."""
    cls = Registry().method("drocc")
    return cls(**{**CIFAR_REF, **params}).prepare(info, device)


# ---------------------------------------------------------------- levers: one ascent step


def bench_levers(rounds: int) -> None:
    """One ascent step (forward + input gradient) per lever, each against fp32 NCHW, interleaved."""
    g = torch.Generator().manual_seed(0)
    x, h0 = torch.randn(256, *CIFAR_SHAPE, generator=g), torch.randn(256, *CIFAR_SHAPE, generator=g)
    reference = cifar_model("contiguous", module_order=True)
    nchw, nhwc = cifar_model("contiguous"), cifar_model("channels_last")

    def step(model: torch.nn.Module, autocast: bool, weights: str) -> Callable[[], None]:
        def run() -> None:
            h = h0.clone().requires_grad_(True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                forward = low_precision_forward(model, weights)
                loss = F.binary_cross_entropy_with_logits(
                    forward(x + h).reshape(256).float(), torch.zeros(256), reduction="sum"
                )
                torch.autograd.grad(loss, [h])

        return run

    base = step(reference, False, "fp32")
    levers = {
        "odbench's LeNet, fp32 NCHW": step(nchw, False, "fp32"),
        "fp32 channels_last": step(nhwc, False, "fp32"),
        "bf16 autocast, NCHW": step(nchw, True, "fp32"),
        "bf16 autocast, channels_last": step(nhwc, True, "fp32"),
        "bf16 weights, NCHW": step(nchw, False, "bf16"),
        "bf16 weights, channels_last": step(nhwc, False, "bf16"),
    }
    print(
        "Levers: one ascent step (forward + input gradient, 256 CIFAR-shaped images) against the reference's fp32 NCHW net "
        "(pooling last), interleaved; every lever but the first pools first too:"
    )
    for name, fn in levers.items():
        ta, tb = interleaved(fn, base, rounds)
        print(f"  {name:30s} " + ratio_line("lever", ta, "reference", tb, 1e3, "ms"))


def bench_compile(rounds: int) -> None:
    """torch.compile of the ascent step's forward (bf16 weights, channels_last): compile seconds, step time."""
    g = torch.Generator().manual_seed(0)
    x, h0 = torch.randn(256, *CIFAR_SHAPE, generator=g), torch.randn(256, *CIFAR_SHAPE, generator=g)
    model = cifar_model("channels_last")
    for w in model.parameters():
        w.requires_grad_(False)
    forward = low_precision_forward(model, "bf16")
    compiled = torch.compile(forward)

    def step(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            h = h0.clone().requires_grad_(True)
            loss = F.binary_cross_entropy_with_logits(fn(x + h).reshape(256).float(), torch.zeros(256), reduction="sum")
            torch.autograd.grad(loss, [h])

        return run

    started = time.perf_counter()
    step(compiled)()
    print(
        f"torch.compile (inductor, CPU) of the bf16 channels_last ascent forward: first call {time.perf_counter() - started:.0f} s"
    )
    ta, tb = interleaved(step(compiled), step(forward), rounds)
    print("  " + ratio_line("compiled", ta, "eager", tb, 1e3, "ms"))


# ---------------------------------------------------------------- goal 1: the training batch


def bench_train(rounds: int, steps: int = 50, device: torch.device = CPU) -> tuple[float, float]:
    """odbench's DROCC batch (defaults) against the reference-style batch; returns both medians."""
    method = prepared_drocc(CIFAR_INFO, str(device))  # the defaults: precision "auto" is bf16 where it is native
    p = method.resolved_params()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, *CIFAR_SHAPE, generator=g).to(device)
    ours = cifar_model(p["memory_format"], device)
    ref = cifar_model("contiguous", device, module_order=True)
    opt_ours, opt_ref = torch.optim.Adam(ours.parameters(), lr=p["lr"]), torch.optim.Adam(ref.parameters(), lr=p["lr"])
    start_ours, start_ref = copy.deepcopy(ours.state_dict()), copy.deepcopy(ref.state_dict())

    def run(which: str, steps: int) -> None:
        seed = 1234  # the same h0 for both: odbench's loss draws it first from its step's generator
        if which == "ours":
            ours.load_state_dict(start_ours)
            method.params.ascent_num_steps = steps
            odbench_batch(method, ours, opt_ours, x, Step(0, torch.Generator().manual_seed(seed), device))
        else:
            ref.load_state_dict(start_ref)
            h0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(device)
            reference_batch(ref, opt_ref, x, h0, {**p, "ascent_num_steps": steps})
        if device.type == "cuda":
            torch.cuda.synchronize()

    run("ours", 2), run("ref", 2)  # warm-up: oneDNN primitives, allocator
    ta, tb = interleaved(lambda: run("ours", steps), lambda: run("ref", steps), rounds, warm_up=False)
    flops = forward_flops(nets.build("lenet_cifar", CIFAR_SHAPE), CIFAR_SHAPE) * 256 * (2 * steps + 6)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    ma, mb = statistics.median(ta), statistics.median(tb)
    print(
        f"Goal 1, CIFAR LeNet DROCC training batch (256 images, {steps} ascent steps, lr 1e-3 Adam, r 8, gamma 1, eta 0.001), "
        f"odbench at precision={p['precision']}, memory_format={p['memory_format']} vs reference-style fp32 NCHW:"
    )
    print("  " + ratio_line("odbench", ta, "reference", tb) + " [goal: at most 0.33x]")
    print(
        f"  achieved: odbench {flops / ma / 1e9:.0f} GFLOP/s, reference {flops / mb / 1e9:.0f} GFLOP/s; "
        f"matmul peak measured now (2048^2): fp32 {peak32:.0f}, bf16 {peak16:.0f} GFLOP/s "
        f"(odbench at {100 * flops / ma / 1e9 / (peak16 if p['precision'] == 'bf16' else peak32):.0f}% of its precision's peak, "
        f"reference at {100 * flops / mb / 1e9 / peak32:.0f}% of fp32's)"
    )
    # the roofline: no implementation of these FLOPs beats the matmul peak of its precision
    bounds = {"fp32": flops / (peak32 * 1e9) / mb}
    if device.type == "cuda" or cpu_has_native_bf16():
        bounds["bf16"] = flops / (peak16 * 1e9) / mb
    reach = "within" if min(bounds.values()) <= 1 / 3 else "beyond"
    print(
        "  bound: at the matmul peak this batch would take "
        + ", ".join(f"{b:.2f}x the reference's time in {name}" for name, b in bounds.items())
        + ("" if "bf16" in bounds else " (no native bf16 on this CPU: fp32 is its fastest precision)")
        + f"; the goal of 0.33x is {reach} this hardware's reach"
    )
    return ma, mb


# ---------------------------------------------------------------- issue 30: each side at its default threads


def interleaved_at_threads(
    sides: list[tuple[Callable[[], object], int]], rounds: int
) -> tuple[list[list[float]], list[float]]:
    """Seconds of each side, called in turn ``rounds`` times, each on its own torch threads (after one warm-up
    call each); and each round's 1-minute load average."""

    def on(threads: int, fn: Callable[[], object]) -> Callable[[], object]:
        return lambda: (torch.set_num_threads(threads), fn())

    timed = [on(threads, fn) for fn, threads in sides]
    for fn in timed:  # warm-up at each side's own threads (oneDNN primitives, allocator)
        fn()
    seconds: list[list[float]] = [[] for _ in sides]
    loads = []
    for _ in range(rounds):
        for fn, out in zip(timed, seconds):
            started = time.perf_counter()
            fn()
            out.append(time.perf_counter() - started)
        loads.append(os.getloadavg()[0])
    return seconds, loads


def convolution_floor(
    model: torch.nn.Module, x: torch.Tensor, threads: int, rounds: int, backward: bool = True
) -> list[float]:
    """Median seconds of each Conv2d of ``model``, forward and gradient with respect to its input only (an ascent
    step's share; ``backward=False``: the forward alone, a scoring pass's share), on the activations ``x`` gives
    it, at ``threads``."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    inputs: list[torch.Tensor] = []
    hooks = [c.register_forward_hook(lambda _m, args, _out: inputs.append(args[0].detach())) for c in convs]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    torch.set_num_threads(threads)
    seconds = []
    for conv, given in zip(convs, inputs, strict=True):
        weight = conv.weight.detach()

        def step(conv: torch.nn.Conv2d = conv, given: torch.Tensor = given, weight: torch.Tensor = weight) -> None:
            if not backward:
                with torch.inference_mode():
                    F.conv2d(given, weight, None, conv.stride, conv.padding)
                return
            image = given.requires_grad_()
            out = F.conv2d(image, weight, None, conv.stride, conv.padding)
            torch.autograd.grad(out, [image], grad_outputs=torch.ones_like(out))

        step()  # warm-up: oneDNN's primitive for this shape
        times = []
        for _ in range(max(rounds, 3)):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        seconds.append(statistics.median(times))
    return seconds


def per_round_lines(ta: list[float], tb: list[float]) -> str:
    return ", ".join(f"{x / y:.2f}" for x, y in zip(ta, tb))


def bench_defaults(rounds: int, steps: int, with_pinned: bool = True) -> None:
    """The CIFAR batch and a 10,000-image scoring pass, odbench at a lone job's threads vs the reference at torch's."""
    ours_threads, ref_threads = threads_per_job(1), TORCH_DEFAULT_THREADS
    flags = cpu_description()
    print(
        f"Issue 30, each side at its default threads: odbench {ours_threads} (a lone job: every core of the affinity), "
        f"reference {ref_threads} (torch's start-up default); CPU {flags}; AVX-512: {'avx512f' in flags.split()}, "
        f"native bf16: {cpu_has_native_bf16()}"
    )
    rates = {}
    for threads in sorted({ours_threads, ref_threads}):
        torch.set_num_threads(threads)
        rates[threads] = matmul_peak(torch.float32)
    print("  fp32 matmul rate (2048^2) now: " + ", ".join(f"{r:.0f} GFLOP/s at {t} thread(s)" for t, r in rates.items()))

    # the training batch
    method = prepared_drocc(CIFAR_INFO)
    p = method.resolved_params()
    x = torch.randn(256, *CIFAR_SHAPE, generator=torch.Generator().manual_seed(0))
    ours, ref = cifar_model(p["memory_format"]), cifar_model("contiguous", module_order=True)
    opt_ours, opt_ref = torch.optim.Adam(ours.parameters(), lr=p["lr"]), torch.optim.Adam(ref.parameters(), lr=p["lr"])
    start_ours, start_ref = copy.deepcopy(ours.state_dict()), copy.deepcopy(ref.state_dict())
    method.params.ascent_num_steps = steps

    def ours_batch() -> None:
        ours.load_state_dict(start_ours)
        odbench_batch(method, ours, opt_ours, x, Step(0, torch.Generator().manual_seed(1234), CPU))

    def ref_batch() -> None:
        ref.load_state_dict(start_ref)
        h0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(1234))
        reference_batch(ref, opt_ref, x, h0, {**p, "ascent_num_steps": steps})

    sides = [(ours_batch, ours_threads), (ref_batch, ref_threads)]
    pinned = ours_threads != 1 and with_pinned
    if pinned:  # what every job ran on before issue 30, for the same run's comparison
        sides.append((ours_batch, 1))
    (ta, tb, *t1), loads = interleaved_at_threads(sides, rounds)
    flops = forward_flops(nets.build("lenet_cifar", CIFAR_SHAPE), CIFAR_SHAPE) * 256 * (2 * steps + 6)
    ma, mb = statistics.median(ta), statistics.median(tb)
    print(f"  CIFAR LeNet DROCC batch (256 images, {steps} ascent steps), odbench precision={p['precision']}, "
          f"memory_format={p['memory_format']} vs reference fp32 NCHW:")  # fmt: skip
    print("    " + ratio_line("odbench", ta, "reference", tb) + " [goal: at most 0.5x]")
    print(f"    per-round ratios odbench/reference: {per_round_lines(ta, tb)}; load average per round: "
          + ", ".join(f"{v:.1f}" for v in loads))  # fmt: skip
    if pinned:
        print("    odbench pinned to 1 thread (every job before issue 30): " + ratio_line("odbench@1", t1[0], "reference", tb))
    print(
        f"    achieved: odbench {flops / ma / 1e9:.0f} GFLOP/s ({100 * flops / ma / 1e9 / rates[ours_threads]:.0f}% of fp32 matmul "
        f"at {ours_threads} threads) [goal: at least 70%], reference {flops / mb / 1e9:.0f} GFLOP/s "
        f"({100 * flops / mb / 1e9 / rates[ref_threads]:.0f}% at {ref_threads})"
    )

    conv_seconds = convolution_floor(ref, x, ref_threads, rounds)
    floor = steps * sum(conv_seconds) / mb
    print(
        f"    floor: the LeNet's 3 convolutions alone, forward and input gradient (what each of the {steps} ascent steps "
        f"must run, on both sides), take {', '.join(f'{1000 * t:.0f}' for t in conv_seconds)} ms at {ref_threads} "
        f"threads: {floor:.2f}x the reference's whole batch"
        + (" -- above the goal: no cut of the other work can reach it with these kernels" if floor > 0.5 else "")
    )

    # the scoring pass: same weights, random CIFAR-shaped images
    X = np.random.default_rng(0).integers(0, 256, (10000, *CIFAR_SHAPE), dtype=np.uint8)
    method.model_ = ours.eval()
    method.config_ = TrainConfig.from_params(p)
    ref_model = cifar_model("contiguous", module_order=True).eval()
    ref_model.load_state_dict({name: value.float() for name, value in ours.state_dict().items()})
    X_float = Batches(X, None, CIFAR_INFO, CPU).as_input(torch.as_tensor(X)).contiguous()
    precision, batch = method.config_.precision, method.config_.eval_batch_size

    def ours_score() -> object:
        return score_array(method.objective_, ours, X, CIFAR_INFO, CPU, batch, precision)

    def ref_score() -> object:
        return reference_scores(ref_model, X_float)

    (ta, tb), loads = interleaved_at_threads([(ours_score, ours_threads), (ref_score, ref_threads)], rounds)
    print(f"  scoring 10,000 CIFAR-shaped images, odbench score_array (precision={precision}, batch {batch}, "
          "the scoring copy of odbench.deep.scoring_modes.inference_network) vs reference fp32 NCHW batch 256 no_grad:")  # fmt: skip
    print("    " + ratio_line("odbench", ta, "reference", tb) + " [goal: at most 0.5x]")
    print(f"    per-round ratios odbench/reference: {per_round_lines(ta, tb)}; load average per round: "
          + ", ".join(f"{v:.1f}" for v in loads))  # fmt: skip
    s_ours, s_ref = ours_score(), ref_score()
    forward_seconds = convolution_floor(ref_model, X_float[:256], ref_threads, rounds, backward=False)
    floor = len(X_float) / 256 * sum(forward_seconds) / statistics.median(tb)
    print(
        f"    floor: the 3 convolutions' forward alone on batches of 256 take {', '.join(f'{1000 * t:.0f}' for t in forward_seconds)} "
        f"ms at {ref_threads} threads: {floor:.2f}x the reference's whole pass"
        + (" -- above the goal: no cut of the other work can reach it with these kernels" if floor > 0.5 else "")
    )
    print(f"    same results: max |odbench - reference| = {np.abs(s_ours - s_ref).max():.2g} "
          f"(score scale {np.abs(s_ref).max():.2g}: float32 rounding of the folded weights)")  # fmt: skip

    # the saturation check after training, on a CIFAR class's 5000 training images: the full pass it was, and now
    guard, X_train = DivergenceGuard(lr=p["lr"]), X[:5000]
    torch.set_num_threads(ours_threads)

    def full_pass() -> None:
        guard.saturation(score_array(method.objective_, ours, X_train, CIFAR_INFO, CPU, batch, precision))

    def settled() -> None:
        check_saturation(guard, method.objective_, ours, X_train, CIFAR_INFO, CPU, batch, precision)

    ta, tb = interleaved(settled, full_pass, rounds)
    print(f"  saturation check on 5000 training images at {ours_threads} threads: "
          + ratio_line("check_saturation", ta, "full pass", tb))  # fmt: skip
    torch.set_num_threads(TORCH_DEFAULT_THREADS)


# ---------------------------------------------------------------- goal 1's tolerance: AUROC fp32 vs default


def cifar_shaped_task(max_train: int, seed: int = 0) -> tuple[Any, str]:
    """A standardized one-vs-all task of 3 x 32 x 32 uint8 images, class 0 normal; and where it came from."""
    from odbench.protocols import get_protocol
    from odbench.protocols.scaling import standardize

    registry = Registry()
    mnist_dir = SHARED / "mnist"
    if mnist_dir.is_dir():
        os.environ.setdefault("ODBENCH_DATA_DIR", str(SHARED))
        ds = registry.dataset("mnist")
        with tempfile.TemporaryDirectory() as cache:
            data = ds.load(Path(cache))
        pad = lambda X: np.repeat(np.pad(X, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)  # noqa: E731
        data = dataclasses.replace(
            data, X=pad(data.X[:12000]), y=data.y[:12000], X_test=pad(data.X_test), y_test=data.y_test
        )
        source = "real MNIST digits padded to 32x32 and repeated to 3 channels (CIFAR-shaped; CIFAR-10 is not on this machine), digit 0 vs rest"
    else:
        ds = registry.dataset("sine2d")  # only for the class names of a synthetic two-class set
        rng = np.random.default_rng(0)
        y, y_test = rng.integers(0, 10, 12000), np.repeat(np.arange(10), 1000)
        blob = lambda y: (rng.integers(0, 180, (len(y), *CIFAR_SHAPE)) + 7 * y[:, None, None, None]).astype(np.uint8)  # noqa: E731
        data = dataclasses.replace(
            ds.load(None), X=blob(y), y=y, X_test=blob(y_test), y_test=y_test, class_names=[str(c) for c in range(10)]
        )
        source = "SYNTHETIC CIFAR-shaped images (uint8 noise, class-dependent brightness; no real image data found), class 0 vs rest"
    task = standardize(get_protocol("one_vs_all").make_task(data, ds, "0", seed, max_train=max_train))
    task = dataclasses.replace(task, info=dataclasses.replace(task.info, backbone="lenet_cifar"))
    return task, source


def bench_auroc(args: argparse.Namespace) -> dict[str, Any]:
    """AUROC at fp32 and at the default precision on the same split and seed; returns the fitted methods."""
    task, source = cifar_shaped_task(args.auroc_train)
    cls = Registry().method("drocc")
    default = cls.default_params(task.info)
    settings = {
        **CIFAR_REF,
        "epochs": args.auroc_epochs,
        "ascent_num_steps": args.auroc_steps,
        "backbone": "lenet_cifar",
    }
    print(
        f"Goal 1 tolerance, AUROC on {source}; {len(task.train)} training images, {args.auroc_epochs} epochs, "
        f"{args.auroc_steps} ascent steps, the reference's other hyperparameters; same split, same seeds:"
    )
    fitted, aurocs = {}, {}
    # (precision, memory_format); fp32 NCHW is the control: the same precision, only the summation order changes
    runs = [("fp32", "auto"), ("bf16", "auto"), ("fp32", "contiguous")] if cpu_has_native_bf16() else [("fp32", "auto")]
    if len(runs) == 1:
        print("  no native bf16 on this CPU: bf16 would only be slower here, so there is no bf16 AUROC to check")
    for precision, memory_format in runs:
        label = precision if memory_format == "auto" else f"{precision} {memory_format}"
        aurocs[label] = []
        for seed in range(args.auroc_seeds):
            started = time.perf_counter()
            chosen = {"precision": precision, "memory_format": memory_format}
            method = cls(**{**default, **settings, **chosen}).fit(task.for_fit(), FitContext(seed=seed))
            fit_seconds = time.perf_counter() - started
            auroc = evaluate(("auroc",), task.test.y, method.anomaly_score(task.test.X))["auroc"]
            aurocs[label].append(auroc)
            fitted.setdefault(label, method)
            print(
                f"  precision={precision} memory_format={method.runtime.memory_format} seed {seed}: AUROC {100 * auroc:.2f} ({fit_seconds:.0f} s fit)"
            )

    def gap(a: str, b: str) -> str:
        diffs = [100 * abs(x - y) for x, y in zip(aurocs[a], aurocs[b])]
        mean_gap = 100 * abs(statistics.mean(aurocs[a]) - statistics.mean(aurocs[b]))
        return (f"per seed {', '.join(f'{d:.2f}' for d in diffs)} points (max {max(diffs):.2f}); "
                f"of the means over {len(diffs)} seeds {mean_gap:.2f}")  # fmt: skip

    if len(aurocs) > 1:
        print(f"  |AUROC(bf16) - AUROC(fp32)|: {gap('bf16', 'fp32')} [goal: within 0.5]")
        print(f"  control, |AUROC(fp32 NCHW) - AUROC(fp32 channels_last)| (summation order alone): {gap('fp32 contiguous', 'fp32')}")
    return {"task": task, "fitted": fitted}


# ---------------------------------------------------------------- goal 4: scoring


def reference_scores(model: torch.nn.Module, X: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The authors' test loop: eval mode, no_grad, fp32, NCHW, batches of 256 float inputs; anomaly = -logit."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            out.append(-torch.squeeze(model(X[start : start + batch_size]), dim=1))
    return torch.cat(out).numpy().astype(np.float64)


def bench_score(rounds: int, trained: dict[str, Any] | None) -> None:
    """10,000 images scored by odbench (defaults) and by the reference-style pass, same weights."""
    if trained is not None:
        task = trained["task"]
        method = trained["fitted"].get("bf16") or trained["fitted"]["fp32"]
        X, info, y, what = (
            task.test.X[:10000],
            task.info,
            task.test.y[:10000],
            "the AUROC check's trained model and test images",
        )
    else:
        info = CIFAR_INFO
        X = np.random.default_rng(0).integers(0, 256, (10000, *CIFAR_SHAPE), dtype=np.uint8)
        method, y, what = (
            prepared_drocc(info),
            None,
            "an untrained LeNet, random CIFAR-shaped uint8 images",
        )
        method.model_ = cifar_model(method.runtime.memory_format).eval()
        method.config_ = TrainConfig.from_params(method.resolved_params())
    ours_model = method.model_
    ref_model = cifar_model("contiguous", module_order=True).eval()  # the authors' net: pooling last
    ref_model.load_state_dict({name: value.float() for name, value in ours_model.state_dict().items()})
    X_float = (
        Batches(X, None, info, torch.device("cpu")).as_input(torch.as_tensor(X)).contiguous()
    )  # the reference's loader yields floats
    precision, batch = method.config_.precision, method.config_.eval_batch_size
    ours = lambda: score_array(method.objective_, ours_model, X, info, torch.device("cpu"), batch, precision)  # noqa: E731
    ref = lambda: reference_scores(ref_model, X_float)  # noqa: E731
    ta, tb = interleaved(ours, ref, rounds)
    print(f"Goal 4, scoring {len(X)} images ({what}); odbench score_array at precision={precision}, batch {batch}, "
          f"inference_mode, channels_last vs reference-style fp32 NCHW batch 256 no_grad:")  # fmt: skip
    print("  " + ratio_line("odbench", ta, "reference", tb) + " [goal: at most 0.5x]")
    s_ours, s_ref = ours(), ref()
    line = (
        f"  scores: max |ours - reference| = {np.abs(s_ours - s_ref).max():.3g} (score scale {np.abs(s_ref).max():.3g})"
    )
    if y is not None:
        a_ours, a_ref = evaluate(("auroc",), y, s_ours)["auroc"], evaluate(("auroc",), y, s_ref)["auroc"]
        line += f"; AUROC ours {100 * a_ours:.2f}, reference pass {100 * a_ref:.2f} ({100 * abs(a_ours - a_ref):.2f} points apart)"
    print(line)
    other = score_array(method.objective_, ours_model, X[::-1].copy(), info, torch.device("cpu"), 77, precision)[::-1]
    print(
        f"  batch independence: reversed order in batches of 77 vs batches of {batch}: max |diff| = {np.abs(other - s_ours).max():.3g}"
    )


# ---------------------------------------------------------------- goal 5: memory of a full CIFAR-10-sized job


def bench_memory() -> None:
    """Peak RSS of ``odbench run`` on a CIFAR-10-sized npz (50k + 10k uint8 images), in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        y, y_test = np.repeat(np.arange(10), 5000), np.repeat(np.arange(10), 1000)
        path = Path(tmp) / "cifar10_sized.npz"
        np.savez(path, X_train=rng.integers(0, 256, (50000, *CIFAR_SHAPE), dtype=np.uint8), y_train=y,
                 X_test=rng.integers(0, 256, (10000, *CIFAR_SHAPE), dtype=np.uint8), y_test=y_test)  # fmt: skip
        command = [
            sys.executable, "-m", "odbench.cli", "run", "--methods", "drocc", "--datasets", f"npz:{path}", "--protocol", "one_vs_all",
            "--classes", "0", "--param", "drocc.epochs=1", "--param", "drocc.ascent_num_steps=1", "--results", str(Path(tmp) / "results"),
            "--no-mlflow", "--device", "cpu",
        ]  # fmt: skip
        env = {**os.environ, "ODBENCH_TRUST_LOCAL_FILES": "1", "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    status = (
        "ok"
        if done.returncode == 0
        else f"FAILED ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode})"
    )
    print(
        f"Goal 5, peak RSS of `odbench run` DROCC on a CIFAR-10-sized task (50,000 + 10,000 uint8 3x32x32 images, class 0: "
        f"4000 training normals, 1 epoch, 1 ascent step; {status}, {time.perf_counter() - started:.0f} s): "
        f"{peak_mb:.0f} MB [goal: at most 2048 MB]"
    )


# ---------------------------------------------------------------- goal 2: where an odbench run's fit time goes


def _entries(stats: pstats.Stats, path_end: str, name: str) -> list[tuple[Any, ...]]:
    return [k for k in stats.stats if k[0].replace(os.sep, "/").endswith(path_end) and k[2] == name]  # type: ignore[attr-defined]


def _label(key: tuple[Any, ...]) -> str:
    path, line, name = key
    return f"{name} ({Path(path).name}:{line})" if path != "~" else name


def bench_profile(max_train: int) -> None:
    """cProfile of one ``odbench run`` (DROCC, CIFAR-sized npz, ``max_train`` images, 1 epoch): the fit's breakdown."""
    from odbench import cli

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        y, y_test = np.repeat(np.arange(10), 5000), np.repeat(np.arange(10), 1000)
        path = Path(tmp) / "cifar10_sized.npz"
        np.savez(path, X_train=rng.integers(0, 256, (50000, *CIFAR_SHAPE), dtype=np.uint8), y_train=y,
                 X_test=rng.integers(0, 256, (10000, *CIFAR_SHAPE), dtype=np.uint8), y_test=y_test)  # fmt: skip
        os.environ["ODBENCH_TRUST_LOCAL_FILES"] = "1"
        argv = ["run", "--methods", "drocc", "--datasets", f"npz:{path}", "--protocol", "one_vs_all", "--classes", "0",
                "--protocol-option", f"max_train={max_train}", "--param", "drocc.epochs=1", "--results", str(Path(tmp) / "r"),
                "--no-mlflow", "--device", "cpu"]  # fmt: skip
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.runcall(cli.main, argv)
        wall = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    raw = stats.stats  # type: ignore[attr-defined]
    fit_keys, train_keys = (
        _entries(stats, "odbench/drocc/method.py", "fit"),
        _entries(stats, "odbench/deep/training.py", "train"),
    )
    if not fit_keys or not train_keys:
        print("Goal 2: the profile found no DROCC fit (did the run fail?)")
        return
    fit, train = raw[fit_keys[0]][3], raw[train_keys[0]][3]
    callees = sorted(((v[4][train_keys[0]][3], k) for k, v in raw.items() if train_keys[0] in v[4]), reverse=True)
    batch_step_names = {"loss", "backward", "wrapper", "zero_grad", "item", "isfinite", "_use_grad", "step"}
    batch = sum(t for t, k in callees if k[2] in batch_step_names)
    print(f"Goal 2, cProfile of `odbench run` DROCC on a CIFAR-sized npz (50k+10k uint8 images), max_train={max_train}, 1 epoch, "
          f"50 ascent steps: run {wall:.0f} s (profiled), fit {fit:.1f} s, of which train() {train:.1f} s")  # fmt: skip
    print(
        f"  the DROCC batch step (loss, backward, optimizer): {batch:.1f} s = {100 * batch / fit:.1f}% of the fit [goal: at least 85%]"
    )
    for t, k in callees:
        if t >= 0.001 * fit and k[2] not in batch_step_names:
            print(f"  {100 * t / fit:5.2f}%  {_label(k)}")
    print(f"  {100 * (fit - train) / fit:5.2f}%  fit outside train() (network build, parameters)")
    outside = wall - fit
    print(f"  outside the fit: {outside:.1f} s (data load, split, standardize, test scoring, store), top parts:")
    for name_end, name in (("odbench/engine/execute.py", "job_task"), ("odbench/deep/method.py", "anomaly_score"),
                           ("odbench/engine/store.py", "write"), ("odbench/engine/plan.py", "plan_jobs")):  # fmt: skip
        for k in _entries(stats, name_end, name):
            print(f"    {raw[k][3]:6.1f} s  {_label(k)}")


# ---------------------------------------------------------------- tabular and DROCC-LF projection


def bench_tabular(rounds: int) -> None:
    """One Thyroid MLP DROCC epoch (batch 256, 50 ascent steps): odbench against the reference style."""
    if THYROID.is_file():
        loaded = np.load(THYROID)
        X = loaded["X"][loaded["y"] == 0].astype(np.float32)
        source = f"{THYROID.name}, {len(X)} normals"
    else:
        X = np.random.default_rng(0).standard_normal((3679, 6)).astype(np.float32)
        source = "random 3679x6 (thyroid file absent)"
    X = torch.as_tensor((X - X.mean(0)) / (X.std(0) + 1e-8))
    info = DataInfo("thyroid", "tabular", (6,), len(X), "mlp")
    method = (
        Registry()
        .method("drocc")(radius=2.5, gamma=2.0, lr=1e-3, ascent_step_size=0.001, only_ce_epochs=0)
        .prepare(info)
    )
    torch.manual_seed(0)
    ours, ref = nets.build("mlp", (6,), out_dim=1).train(), nets.build("mlp", (6,), out_dim=1).train()
    opt_ours, opt_ref = torch.optim.Adam(ours.parameters(), lr=1e-3), torch.optim.Adam(ref.parameters(), lr=1e-3)
    batches = [X[i : i + 256] for i in range(0, len(X), 256)]

    def epoch(which: str) -> None:
        for i, xb in enumerate(batches):
            if which == "ours":
                odbench_batch(
                    method, ours, opt_ours, xb, Step(0, torch.Generator().manual_seed(i), torch.device("cpu"))
                )
            else:
                reference_batch(
                    ref, opt_ref, xb, torch.randn(xb.shape, generator=torch.Generator().manual_seed(i)), method.resolved_params()
                )

    ta, tb = interleaved(lambda: epoch("ours"), lambda: epoch("ref"), rounds)
    print(f"Thyroid MLP DROCC epoch ({source}, batch 256, 50 ascent steps, precision={method.runtime.precision}):")
    print("  " + ratio_line("odbench", ta, "reference", tb))


# ---------------------------------------------------------------- DROCC-LF projection


def reference_projection(
    grad: torch.Tensor, diff: torch.Tensor, radius: float, gamma: float, rng: np.random.Generator
) -> torch.Tensor:
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
    print(
        "DROCC-LF projection, batch 256 x 784, r = 14, gamma = 2 (ours: best of 20 after a warm-up; reference loop: best of 3 after a warm-up):"
    )
    for name, (delta, sigma) in projection_problems().items():
        sigma_rows = sigma.expand_as(delta).contiguous()  # the reference indexes a per-row sigma
        ours = mahalanobis_project(delta, sigma, radius, gamma)
        ref = reference_projection(sigma_rows, delta, radius, gamma, np.random.default_rng(0))
        t_ours = best_time(lambda d=delta, s=sigma: mahalanobis_project(d, s, radius, gamma), 20)
        t_ref = best_time(
            lambda d=delta, s=sigma_rows: reference_projection(s, d, radius, gamma, np.random.default_rng(0)), 3
        )
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


# ---------------------------------------------------------------- goal 6: GPU


class UtilisationSampler:
    """GPU utilisation (%) sampled every 0.2 s while the block runs (pynvml through torch, else nvidia-smi)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float | None:
        try:
            return float(torch.cuda.utilization())
        except Exception:  # noqa: BLE001  pynvml absent: ask nvidia-smi
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=5).stdout  # fmt: skip
                return float(out.split()[0])
            except Exception:  # noqa: BLE001
                return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.samples.append(value)
            self._stop.wait(0.2)

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cuda_epoch(precision: str | None, reference: bool = False) -> tuple[float, list[float]]:
    """Seconds of one CIFAR class epoch (5000 uint8 images, 20 batches of 256, 50 ascent steps) on the GPU; utilisation."""
    device = torch.device("cuda")
    method = prepared_drocc(CIFAR_INFO, "cuda", **({"precision": precision} if precision else {}))
    model = cifar_model(method.runtime.memory_format if not reference else "contiguous", device, module_order=reference)
    optimizer = torch.optim.Adam(model.parameters(), lr=method.params.lr)
    X = np.random.default_rng(0).integers(0, 256, (5000, *CIFAR_SHAPE), dtype=np.uint8)
    data = Batches(X, None, CIFAR_INFO, device)
    generator = torch.Generator().manual_seed(0)

    def one(xb: torch.Tensor, steps: int) -> None:
        step = Step(0, generator, device)
        if reference:
            reference_batch(
                model,
                optimizer,
                xb,
                torch.randn(xb.shape, generator=generator).to(device),
                {**method.resolved_params(), "ascent_num_steps": steps},
            )
        else:
            method.params.ascent_num_steps = steps
            odbench_batch(method, model, optimizer, xb, step)

    one(next(data.iterate(256, generator))[0], 2)  # warm-up: cuDNN autotuning, allocator
    torch.cuda.synchronize()
    with UtilisationSampler() as sampler:
        started = time.perf_counter()
        for xb, _ in data.iterate(256, generator):
            one(xb, 50)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return seconds, sampler.samples


def bench_cuda(args: argparse.Namespace) -> None:
    """Goal 6: epoch seconds, utilisation and jobs per hour on one GPU; with ``--pack K``, K such jobs at once."""
    if not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device here; run this on a GPU machine", file=sys.stderr)
        raise SystemExit(2)
    if args.pack_worker:
        seconds, samples = cuda_epoch(args.precision)
        print(f"WORKER {seconds:.6f} {np.mean(samples) if samples else float('nan'):.1f}")
        return
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}; a job = the paper's schedule, "
          f"{args.paper_epochs} epochs of one CIFAR class (5000 normals; val/test scoring is <1% of it and left out)")  # fmt: skip
    for reference in (False, True):
        seconds, samples = cuda_epoch(None if reference else args.precision, reference)
        util = (
            f"{np.mean(samples):.0f}% mean, {np.max(samples):.0f}% max (n={len(samples)})" if samples else "unavailable"
        )
        name = "reference-style fp32" if reference else f"odbench defaults (precision {args.precision or 'default'})"
        print(
            f"  {name}: {seconds:.2f} s per epoch, GPU utilisation {util}, {3600 / (args.paper_epochs * seconds):.1f} jobs per hour"
        )
    if args.pack > 1:
        command = [sys.executable, __file__, "--device", "cuda", "--pack-worker"] + (
            ["--precision", args.precision] if args.precision else []
        )
        started = time.perf_counter()
        workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(args.pack)]
        outs = [w.communicate()[0] for w in workers]
        wall = time.perf_counter() - started
        results = [line.split()[1:] for out in outs for line in out.splitlines() if line.startswith("WORKER")]
        per_epoch = [float(r[0]) for r in results]
        rate = sum(3600 / (args.paper_epochs * s) for s in per_epoch)
        print(f"  {args.pack} jobs packed on one GPU (processes at once; {len(results)} reported, {wall:.0f} s wall with start-up): "
              f"epoch {statistics.median(per_epoch):.2f} s each (median), {rate:.1f} jobs per hour together; "
              f"Table 1's DROCC column (50 jobs) in {50 / rate:.2f} h")  # fmt: skip


# ---------------------------------------------------------------- main

SECTIONS = ("levers", "train", "auroc", "score", "memory", "tabular", "projection", "profile", "compile", "defaults")
DEFAULT_SECTIONS = "levers,train,auroc,score,memory,tabular,projection"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="A B pairs per timed comparison (default 3)")
    parser.add_argument("--sections", default=DEFAULT_SECTIONS, help=f"comma-separated, from: {', '.join(SECTIONS)}")
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="cuda: the GPU figures of goal 6 instead"
    )
    parser.add_argument(
        "--ascent-steps", type=int, default=50, help="ascent steps of the timed training batch (goal: 50)"
    )
    parser.add_argument(
        "--keep-freed-memory", action="store_true",
        help="both sides reuse freed memory as odbench's jobs do (odbench.engine.devices.keep_freed_memory)",
    )  # fmt: skip
    parser.add_argument("--auroc-train", type=int, default=1024, help="training images of the AUROC check")
    parser.add_argument("--auroc-epochs", type=int, default=3, help="epochs of the AUROC check")
    parser.add_argument(
        "--auroc-steps", type=int, default=10, help="ascent steps in the AUROC check (50 in the reference)"
    )
    parser.add_argument("--auroc-seeds", type=int, default=2, help="seeds of the AUROC check")
    parser.add_argument("--profile-train", type=int, default=512, help="training images of the profiled run")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"), help="GPU: precision (default bf16)")
    parser.add_argument("--paper-epochs", type=int, default=100, help="GPU: epochs of a job (the paper: 100)")
    parser.add_argument(
        "--pack", type=int, default=1, help="GPU: also run this many epochs at once, in as many processes"
    )
    parser.add_argument(
        "--no-pinned", action="store_true", help="defaults: leave out odbench pinned to 1 thread (the old default)"
    )
    parser.add_argument("--pack-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda":
        bench_cuda(args)
        return
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    # both sides of every comparison share the process, so both share the allocator's setting
    kept = keep_freed_memory() if args.keep_freed_memory else False
    allocator = "freed blocks kept (--keep-freed-memory, as odbench's jobs run)" if kept else "glibc's default (freed blocks unmapped)"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16 (avx512_bf16 or amx_bf16): "
          f"{cpu_has_native_bf16()}, malloc: {allocator}, load average {os.getloadavg()[0]:.1f} (1 min)")  # fmt: skip
    if "levers" in sections:
        bench_levers(args.rounds)
    if "compile" in sections:
        bench_compile(args.rounds)
    if "train" in sections:
        bench_train(args.rounds, args.ascent_steps)
    trained = bench_auroc(args) if "auroc" in sections else None
    if "score" in sections:
        bench_score(args.rounds, trained)
    if "memory" in sections:
        bench_memory()
    if "profile" in sections:
        bench_profile(args.profile_train)
    if "tabular" in sections:
        bench_tabular(args.rounds)
    if "projection" in sections:
        bench_projection()
    if "defaults" in sections:
        bench_defaults(args.rounds, args.ascent_steps, not args.no_pinned)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (1 min)")


if __name__ == "__main__":
    main()
