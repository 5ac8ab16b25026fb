"""Which precision a network's forwards run in: ``"auto"`` settled for the network and the hardware.

bfloat16 pays where the hardware computes it: on a GPU, or a CPU with
AVX-512 BF16 or AMX, a DROCC ascent step on the CIFAR LeNet ran in about
a third of the fp32 reference's time; on a CPU without them oneDNN emulates
bf16 and the same step ran 10-13x *slower* than fp32
(``scripts/bench_drocc.py --sections levers``).  ``"auto"`` therefore means
bf16 for convolutional networks on such hardware and fp32 everywhere else:
the tabular MLPs gain little from bf16.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "auto")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX); Linux's flags, else ``False``."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def resolve_precision(precision: str, model: nn.Module, device: torch.device) -> str:
    """``precision`` itself, or for ``"auto"``: ``"bf16"`` on a conv net with native bf16 hardware, else ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use {', '.join(map(repr, PRECISIONS))}")
    if precision != "auto":
        return precision
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    return "bf16" if has_conv and native else "fp32"
