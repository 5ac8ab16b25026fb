"""K copies of a small feed-forward network run as one, by batched matmuls on stacked weights.

Training K seeds of a tabular MLP one after the other spends its time in
per-operation overhead, not arithmetic: a (256, 6) x (6, 128) matmul is
microseconds of work.  :class:`StackedNet` holds the K members' weights as
``(K, out, in)`` parameters and runs every layer for all members with one
``baddbmm``.  Measured on this project's 2-core CPU (``scripts/bench_seeds.py``),
a DROCC ascent step of 10 Thyroid members costs about 3x one member's, not 10x:
the per-operation overhead is paid once, and what remains is the real memory
traffic of the (10, 256, 128) hidden activations.

The input is the members' batches one after another, ``(K * B, *shape)``
(rows ``k*B .. (k+1)*B`` belong to member ``k``), and so is the output,
``(K * B, out)``: to the code that calls it (DROCC's ascent and loss) it
looks like one network on one batch of ``K * B`` independent points.  Since
no point's output depends on another's, a gradient of the summed outputs
with respect to the input is every member's per-example input gradient.

Supported: networks whose leaf modules, applied in order, are the network
(``nets.MLP``: Flatten, Linear, ReLU, Linear), built from ``Linear``,
``Flatten`` and elementwise activations, without buffers (no BatchNorm).
:meth:`StackedNet.of` checks that on a probe input and returns ``None``
otherwise, so the caller trains such members one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity)


class StackedNet(nn.Module):
    """The members' layers with weights stacked on a leading member axis; see the module docstring."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.size = len(members)
        self.layers: list[nn.Module | tuple[nn.Parameter, nn.Parameter | None]] = []
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        leaves = [_leaves(m) for m in members]
        for position, layer in enumerate(leaves[0]):
            if isinstance(layer, nn.Linear):
                linears = [_linear(m[position]) for m in leaves]
                weight = nn.Parameter(torch.stack([lin.weight.detach() for lin in linears]))  # (K, out, in)
                bias = None
                if layer.bias is not None:
                    bias = nn.Parameter(torch.stack([lin.bias.detach() for lin in linears]).unsqueeze(1))  # (K, 1, out)
                    self.biases.append(bias)
                self.weights.append(weight)
                self.layers.append((weight, bias))
            else:
                self.layers.append(layer)
        kinds = [type(layer) for layer in leaves[0] if not isinstance(layer, nn.Flatten)]
        linears = [layer for layer in self.layers if isinstance(layer, tuple)]
        # the tabular MLP: its input gradient has a faster form (_FrozenReLUMLP), used while the weights are frozen
        self.relu_mlp = (
            kinds == [nn.Linear, nn.ReLU, nn.Linear]
            and all(bias is not None for _, bias in linears)
            and linears[-1][0].shape[1] == 1
        )

    @classmethod
    def of(cls, members: Sequence[nn.Module]) -> StackedNet | None:
        """The members stacked, or ``None`` when their architecture is not supported (see the module docstring)."""
        try:
            leaves = [_leaves(m) for m in members]
        except TypeError:
            return None
        if any(len(m) != len(leaves[0]) for m in leaves):
            return None
        for position, layer in enumerate(leaves[0]):
            kind = type(layer)
            if not isinstance(layer, (nn.Linear, nn.Flatten, *_ELEMENTWISE)) or any(
                type(m[position]) is not kind for m in leaves
            ):
                return None
            if isinstance(layer, nn.Linear) and any(
                _linear(m[position]).weight.shape != layer.weight.shape for m in leaves
            ):
                return None
        stacked = cls(members)
        # the leaves in order must be the network (a custom forward may do more): check on a probe input
        first = next(m for m in members[0].modules() if isinstance(m, nn.Linear))
        probe = torch.randn(3, first.in_features, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = stacked(probe.repeat(len(members), 1)).view(len(members), 3, -1)
            for k, member in enumerate(members):
                if not torch.allclose(ours[k], member(probe).view(3, -1), rtol=1e-4, atol=1e-5):
                    return None
        return stacked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (K * B, *shape), member after member; returns (K * B, out)."""
        z = x.reshape(self.size, len(x) // self.size, *x.shape[1:])
        if self.relu_mlp and not any(p.requires_grad for p in self.parameters()):  # DROCC's ascent
            (w1, b1), (w2, b2) = (layer for layer in self.layers if isinstance(layer, tuple))
            return _FrozenReLUMLP.apply(z.flatten(2), w1, b1, w2, b2).reshape(len(x), 1)
        for layer in self.layers:
            if isinstance(layer, tuple):
                weight, bias = layer
                wt = weight.transpose(1, 2)  # as nn.Linear: x @ W^T + b
                z = torch.bmm(z, wt) if bias is None else torch.baddbmm(bias, z, wt)
            elif isinstance(layer, nn.Flatten):
                z = z.flatten(2)  # the member axis stays
            else:
                z = layer(z)
        return z.reshape(len(x), -1)

    @torch.no_grad()
    def copy_into(self, k: int, member: nn.Module) -> None:
        """Write member ``k``'s current weights into ``member`` (a network of the shape it was stacked from)."""
        linears = [m for m in _leaves(member) if isinstance(m, nn.Linear)]
        for linear, layer in zip(linears, (lay for lay in self.layers if isinstance(lay, tuple)), strict=True):
            weight, bias = layer
            linear.weight.copy_(weight[k])
            if bias is not None and linear.bias is not None:
                linear.bias.copy_(bias[k, 0])


class _FrozenReLUMLP(torch.autograd.Function):
    """``relu(x W1^T + b1) w2^T + b2`` for K members, with the input gradient only (weights frozen).

    Autograd's backward of the stacked forward spends most of an ascent
    step in ``bmm(grad_hidden, W1)``, whose (K, B, 128) x (K, 128, 6) shape
    MKL runs about 4x slower than the transposed product
    ``(W1^T bmm grad_hidden^T)^T``; and it materializes ``relu'`` and the
    hidden gradient as fresh tensors.  Here the backward is
    ``d out / dx = (1[z > 0] * w2) W1`` with ``w2`` folded into ``W1``
    (a (K, 128, 6) product) and the ReLU mask made in place from the
    saved activations: one (K, B, 128) pass and the fast product.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
    ) -> torch.Tensor:
        hidden = torch.baddbmm(b1, x, w1.transpose(1, 2)).relu_()  # (K, B, H)
        ctx.save_for_backward(hidden, w1, w2)
        return torch.baddbmm(b2, hidden, w2.transpose(1, 2))  # (K, B, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, w1, w2 = ctx.saved_tensors
        mask = hidden.sign_()  # relu' (the activations are not needed again)
        folded = (w1 * w2.transpose(1, 2)).transpose(1, 2).contiguous()  # (K, in, H): w2_j W1_j.
        grad_x = torch.bmm(folded, mask.transpose(1, 2)).transpose(1, 2) * grad_out
        return grad_x, None, None, None, None


def _leaves(model: nn.Module) -> list[nn.Module]:
    if any(True for _ in model.buffers()):
        raise TypeError("buffers (BatchNorm statistics) are per batch and member: not stacked")
    return [m for m in model.modules() if not any(True for _ in m.children())]


def _linear(layer: nn.Module) -> nn.Linear:
    assert isinstance(layer, nn.Linear)
    return layer
