"""Conv blocks that max-pool before they normalise and activate: the same outputs, a quarter of the work.

A LeNet conv block is conv -> affine-free BatchNorm -> LeakyReLU -> 2x2
max-pool.  Per channel, affine-free BatchNorm is ``(z - mean) * invstd``
with ``invstd > 0`` and LeakyReLU (slope >= 0) never decreases, and a
non-decreasing map commutes with a max: ``max(f(z)) = f(max(z))``.  So the
block can pool the conv's output first and normalise and activate a
quarter of the values.  On the CPU those elementwise passes over the
full-size activations (forward and backward) cost about as much as the
first convolution: skipping them matters for DROCC, whose ascent runs the
net 50 times per batch.

In eval mode the swap is all there is (BatchNorm's running statistics are
constants).  In training mode BatchNorm's batch statistics must still come
from the whole, unpooled ``z``, and their gradient reaches every element of
``z``; ``_PooledBatchNorm`` computes that backward in closed form.  With
``y = (z - mean) * invstd``, ``u = maxpool(y)`` and the incoming gradient
``g`` of ``u``, over the ``M`` values of a channel:

    dL/dz = invstd * (scatter(g) - sum(g) / M - y * sum(g * u) / M)

where ``scatter`` puts each ``g`` on its window's maximum, zero elsewhere:
BatchNorm's backward applied to the pooled gradient, with both sums taken
over the pooled values only (``g`` is zero off the maxima).

The running statistics move exactly as ``nn.BatchNorm2d`` moves them, and
``num_batches_tracked`` counts.  Any other layer, or a block that does not
match exactly (affine BatchNorm, other pooling, cumulative momentum), runs
as its modules do.  Forward hooks on the fused modules are not called.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def pool_first_forward(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)``, with every BatchNorm2d -> LeakyReLU -> MaxPool2d(2) run pooling first."""
    modules = list(layers)
    i = 0
    while i < len(modules):
        window = modules[i : i + 3]
        if len(window) == 3 and _fusable(*window):
            bn, act, _pool = window
            x = act(_pooled_batch_norm(bn, x))  # type: ignore[arg-type]
            i += 3
        else:
            x = modules[i](x)
            i += 1
    return x


def _fusable(bn: nn.Module, act: nn.Module, pool: nn.Module) -> bool:
    return (
        type(bn) is nn.BatchNorm2d
        and not bn.affine
        and (bn.momentum is not None or not bn.training)  # cumulative averaging: left to the module
        and (isinstance(act, nn.ReLU) or (isinstance(act, nn.LeakyReLU) and act.negative_slope >= 0))
        and type(pool) is nn.MaxPool2d
        and pool.kernel_size in (2, (2, 2))
        and pool.stride in (2, (2, 2))
        and pool.padding in (0, (0, 0))
        and pool.dilation in (1, (1, 1))
        and not pool.ceil_mode
        and not pool.return_indices
    )


def _pooled_batch_norm(bn: nn.BatchNorm2d, z: torch.Tensor) -> torch.Tensor:
    """``maxpool2x2(bn(z))`` computed as the pooled values normalised."""
    if not bn.training and bn.track_running_stats:  # running statistics: an increasing map, applied after the pool
        return F.batch_norm(F.max_pool2d(z, 2, 2), bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps)
    tracked = bn.training and bn.track_running_stats
    if tracked:
        assert bn.num_batches_tracked is not None
        bn.num_batches_tracked.add_(1)
    out: torch.Tensor = _PooledBatchNorm.apply(
        z,
        bn.running_mean if tracked else None,
        bn.running_var if tracked else None,
        float(bn.momentum or 0.0),  # never None here: _fusable leaves cumulative averaging to the module
        bn.eps,
    )
    return out


class _PooledBatchNorm(torch.autograd.Function):
    """Training-mode ``maxpool2x2(batch_norm(z))`` with batch statistics of the whole ``z``."""

    @staticmethod
    def forward(
        ctx: Any,
        z: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        momentum: float,
        eps: float,
    ) -> torch.Tensor:
        # float32 statistics (also for bf16 z); the running ones updated as BatchNorm2d does (unbiased var)
        mean, var = torch.batch_norm_update_stats(z, running_mean, running_var, momentum)
        invstd = torch.rsqrt(var + eps)
        pooled, where = F.max_pool2d(z, 2, 2, return_indices=True)
        # one pass in float32 inside, rounded once to z's dtype, as BatchNorm2d's own kernel does
        u = F.batch_norm(pooled, mean, var, None, None, False, 0.0, eps)
        ctx.save_for_backward(z, where, u, mean, invstd)
        return u

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, where, u, mean, invstd = ctx.saved_tensors
        m = z.numel() / z.shape[1]
        sum_g = g.sum((0, 2, 3), dtype=torch.float32)
        sum_gu = (g * u).sum((0, 2, 3), dtype=torch.float32)
        # the full-size part, invstd * (-sum_g / M - y * sum_gu / M) with y = (z - mean) * invstd,
        # as one eval-mode batch_norm pass: weight * (z - mean) + bias
        weight = -invstd * invstd * sum_gu / m
        bias = -invstd * sum_g / m
        dz = F.batch_norm(z, mean, torch.ones_like(mean), weight, bias, False, 0.0, 0.0)
        scattered = torch.ops.aten.max_pool2d_with_indices_backward(
            (g * invstd.view(1, -1, 1, 1)).to(z.dtype), z, [2, 2], [2, 2], [0, 0], [1, 1], False, where
        )
        return dz.add_(scattered), None, None, None, None
