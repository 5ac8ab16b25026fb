"""K copies of a small feed-forward network run as one, by batched matmuls on stacked weights.

Training K seeds of a tabular MLP one after the other spends its time in
per-operation overhead, not arithmetic: a (256, 6) x (6, 128) matmul is
microseconds of work.  :class:`StackedNet` holds the K members' weights as
``(K, out, in)`` parameters and runs every layer for all members with one
``baddbmm``, so the per-operation overhead is paid once for all of them
(1.9x the members' own networks run one after another, ``LoopMembers``;
``scripts/bench_members.py mlp``).
For DROCC's ascent, where the weights are frozen for 50 input-gradient
steps, the ReLU MLP also has a closed-form gradient
(:class:`FrozenReLUMLPGradient`) that touches the (K, B, 128) hidden layer
twice per step instead of four times, with no autograd graph.

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
otherwise; such members then run as ``odbench.deep.members.LoopMembers``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from odbench.deep.members import Members

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity)


class StackedNet(Members):
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
        # the tabular MLP: its input gradient has a closed form (FrozenReLUMLPGradient)
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

    def frozen_gradient(self) -> FrozenReLUMLPGradient | None:
        """The logits and input gradients of the current weights in closed form, for the ReLU MLP; else ``None``.

        A snapshot: it goes stale when the weights change (DROCC's ascent makes one per search).
        """
        return FrozenReLUMLPGradient(self) if self.relu_mlp else None

    @torch.no_grad()
    def finite_members(self) -> list[bool]:
        """For each member, whether all its weights are finite."""
        return torch.stack([torch.isfinite(p).flatten(1).all(1) for p in self.parameters()]).all(0).tolist()

    @torch.no_grad()
    def copy_into(self, k: int, member: nn.Module) -> None:
        """Write member ``k``'s current weights into ``member`` (a network of the shape it was stacked from)."""
        linears = [m for m in _leaves(member) if isinstance(m, nn.Linear)]
        for linear, layer in zip(linears, (lay for lay in self.layers if isinstance(lay, tuple)), strict=True):
            weight, bias = layer
            linear.weight.copy_(weight[k])
            if bias is not None and linear.bias is not None:
                linear.bias.copy_(bias[k, 0])


class FrozenReLUMLPGradient:
    """The stacked ReLU MLP's logits and their input gradients in closed form, for frozen weights.

    DROCC's ascent asks for ``f(p)`` and ``df/dp`` 50 times per batch while
    the weights do not move.  For ``f(p) = w2 relu(W1 p + b1) + b2`` both
    follow from the hidden units' activation pattern, without autograd::

        z = [W1 | b1] [p; 1]            (K, H, B): the hidden pre-activations
        m = 1[z > 0]                    (in z's memory)
        G = ([W1 | b1]^T diag(w2)) m    (K, d + 1, B)
        df/dp = G[:d],   f(p) = sum_i G_i [p; 1]_i + b2

    (the last because ``relu(z_j) = m_j z_j``).  That is two batched
    products and one pass over the (K, H, B) hidden layer, where a forward
    and an autograd backward make four passes and build a graph.  The
    points are laid out feature-major, (K, d + 1, B): both products then
    have the hidden layer as their large side, and the per-point sums run
    along contiguous memory (a reduction over a trailing axis of 7 costs
    PyTorch about 3x more).  Values equal autograd's up to float summation
    order (``tests/test_members.py``).
    """

    def __init__(self, net: StackedNet) -> None:
        (w1, b1), (w2, b2) = (layer for layer in net.layers if isinstance(layer, tuple))
        assert b1 is not None and b2 is not None
        self.size, self.d = net.size, w1.shape[2]
        self.w1_b1 = torch.cat([w1.detach(), b1.detach().transpose(1, 2)], dim=2)  # (K, H, d + 1)
        # w2_j [W1_j | b1_j] as columns: (K, d + 1, H)
        self.folded = (self.w1_b1 * w2.detach().transpose(1, 2)).transpose(1, 2).contiguous()
        self.b2 = b2.detach().reshape(net.size, 1)  # (K, 1)

    def gradient_near(
        self, points: torch.Tensor, dloss_dlogit: Callable[[torch.Tensor], torch.Tensor]
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``offsets -> d loss(f(p)) / dp`` at ``p = points + offsets``, in the feature-major layout.

        ``points`` and ``offsets``: (K, d, B) (:func:`to_columns`); the
        gradient, (K, d, B) too, lives in a buffer that the next call
        overwrites.  DROCC's ascent calls it 50 times per batch with its
        moving ``h``: every tensor of a step is made once here, so a step is
        the two products and ten small in-place operations, with nothing to
        allocate or look up.  (A fresh (K, H, B) hidden layer is over glibc's
        mmap threshold: page-faulting it in on every step cost about as much
        as the product.)
        """
        k, d, b = points.shape
        inputs = points.new_ones(k, d + 1, b)  # [p; 1]: the last row stays ones
        at, hidden, g = inputs[:, :d], points.new_empty(k, self.w1_b1.shape[1], b), points.new_empty(k, d + 1, b)
        gradient, logits = g[:, :d], points.new_empty(k, b)
        w1_b1, folded, b2 = self.w1_b1, self.folded, self.b2

        def at_offsets(offsets: torch.Tensor) -> torch.Tensor:
            torch.add(points, offsets, out=at)
            torch.bmm(w1_b1, inputs, out=hidden).gt_(0)  # the pre-activations, then relu' in their memory
            torch.bmm(folded, hidden, out=g)
            torch.linalg.vecdot(g, inputs, dim=1, out=logits).add_(b2)
            return gradient.mul_(dloss_dlogit(logits).unsqueeze(1))  # the chain rule

        return at_offsets


def to_columns(points: torch.Tensor, size: int) -> torch.Tensor:
    """(K * B, *shape), member after member, as a new feature-major (K, d, B) tensor, d the flattened shape.

    ``out[k, :, b]`` is point b of member k.
    """
    flat = points.reshape(len(points), -1)
    columns = flat.new_empty(size, flat.shape[1], len(flat) // size)
    return columns.copy_(flat.view(size, -1, flat.shape[1]).transpose(1, 2))


def from_columns(columns: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_columns`: (K, d, B) to a new (K * B, d) (``view_as`` restores a shape)."""
    k, d, b = columns.shape
    return columns.transpose(1, 2).reshape(k * b, d)


def _leaves(model: nn.Module) -> list[nn.Module]:
    if any(True for _ in model.buffers()):
        raise TypeError("buffers (BatchNorm statistics) are per batch and member: not stacked")
    return [m for m in model.modules() if not any(True for _ in m.children())]


def _linear(layer: nn.Module) -> nn.Linear:
    assert isinstance(layer, nn.Linear)
    return layer
