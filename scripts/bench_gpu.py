"""Jobs per hour and GPU utilisation for a slice of the paper's Table 1 (DROCC on CIFAR-10), on Ray.

The slice: DROCC with the Table 1 settings (the EdgeML command) on the
``quick`` budget's classes, or ``--classes``; ``--budget full`` runs the
paper's 100 epochs.  Every job is a Ray task holding ``--gpu-per-job`` of a
GPU, so several DROCC jobs share one; a sampler thread reads the GPUs'
utilisation (NVML through ``torch.cuda.utilization``, else ``nvidia-smi``)
every second while the suite runs.  Prints the jobs per hour, the mean and
peak utilisation, and each record's device (GPU name, CUDA and cuDNN).

Runs unchanged on a GPU machine with CIFAR-10 available (downloaded once,
or ``--data-dir``).  Without a GPU it says so and exits 0; ``--smoke`` then
runs a 2-epoch DROCC on ``digits`` on the CPU instead, to check the script.

    PYTHONPATH=. python scripts/bench_gpu.py [--budget quick|full] [--gpu-per-job 0.5] [--smoke]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from odbench.engine.experiments import load_experiment, plan_jobs
from odbench.engine.loading import prepare
from odbench.engine.plan import Plan, expand
from odbench.engine.ray_executor import RayExecutor
from odbench.engine.registry import Registry
from odbench.engine.store import OK, Store
from odbench.engine.suite import run_suite


def gpu_utilisation() -> list[float]:
    """Utilisation (%) of each visible GPU now; empty when none can be read."""
    import torch

    if torch.cuda.is_available():
        try:
            return [float(torch.cuda.utilization(i)) for i in range(torch.cuda.device_count())]
        except Exception:  # no pynvml: ask nvidia-smi
            pass
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"], capture_output=True, text=True
        )
        return [float(v) for v in out.stdout.split() if v.strip().replace(".", "").isdigit()]
    return []


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            values = gpu_utilisation()
            if values:
                self.samples.append(statistics.mean(values))


def table1_slice(registry: Registry, budget: str, classes: list[str] | None) -> Plan:
    experiment = load_experiment("table1")
    prepare(registry.dataset("cifar10"))
    plan = plan_jobs(experiment, budget, registry, ["cifar10"], columns=["drocc"]).plan
    if classes:
        plan = Plan([j for j in plan.jobs if j.normal_class in classes], plan.notes, plan.cache)
    return plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=["quick", "full"], default="quick")
    parser.add_argument("--classes", help="normal classes, e.g. airplane,ship (default: the budget's)")
    parser.add_argument("--gpu-per-job", type=float, default=None, help="GPU fraction per job (default: 0.5 for CIFAR)")
    parser.add_argument("--ray-address", default=None, help="a Ray cluster (default: a local Ray)")
    parser.add_argument("--smoke", action="store_true", help="without a GPU: a tiny CPU run that checks the script")
    args = parser.parse_args()

    import torch

    has_gpu = torch.cuda.is_available()
    registry = Registry()
    if has_gpu:
        device = "cuda"
        plan = table1_slice(registry, args.budget, args.classes.split(",") if args.classes else None)
    elif args.smoke:
        device = "cpu"
        plan = expand(registry, ["drocc"], ["digits"], classes=["0", "1"], params={"drocc": {"epochs": 2, "only_ce_epochs": 1, "ascent_num_steps": 2}})
    else:
        print("no GPU: torch sees no CUDA device, so there is nothing to measure (--smoke runs a tiny CPU check)")
        return 0
    executor = RayExecutor(args.ray_address, gpu_per_job=args.gpu_per_job, cache=plan.cache)
    device = executor.resolve_device(device)
    sampler = Sampler()
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = run_suite(plan, registry, Store(tmp), executor=executor, device=device)
        seconds = time.perf_counter() - started
        sampler.stop.set()
        records = Store(tmp).records(OK)
    print(f"{len(plan.jobs)} jobs on {device}: {summary.line()}")
    print(f"jobs per hour: {3600 * summary.ok / seconds:.1f} ({seconds:.0f} s wall)")
    if sampler.samples:
        print(f"GPU utilisation: mean {statistics.mean(sampler.samples):.0f}%, peak {max(sampler.samples):.0f}% ({len(sampler.samples)} samples)")
    else:
        print("GPU utilisation: not available (no GPU, or neither NVML nor nvidia-smi)")
    for info in {str(r.get("device_info")) for r in records}:
        print(f"ran on: {info}")
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
