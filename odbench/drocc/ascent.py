"""DROCC's adversarial search: normalized gradient ascent on the input, then projection.

The off-manifold points are found per batch by normalized gradient ascent on
the loss of labelling ``x + h`` anomalous, each step followed by a
projection of ``h`` onto ``N(r)`` (``odbench.drocc.projections``).  The
ascent differentiates with respect to the input only (parameters are frozen
while it runs), so it costs a forward and an input-backward per step.

Precision: with ``precision="bf16"`` the ascent's forwards run on a
bfloat16 copy of the weights (made once per search: they are frozen) and a
bfloat16 copy of each ``x + h``, which is 2-3x faster on CPUs with native
bf16 than fp32; ``h`` itself and its update stay float32, because a step of
0.001 on inputs of size ~1 is below bfloat16's resolution (2^-8 relative).
Nothing in the loop reads a value back to the host, so on a GPU the 50
steps queue without synchronising.

A group's stacked ReLU MLP (``odbench.deep.stacked``) gives its logits
and input gradients in closed form.  With the Euclidean annulus (an
:class:`Annulus`) the whole search then runs in the closed form's
feature-major layout, (K, d, B), bound by two batched products per step
instead of autograd's overhead: 3.2x autograd's search on the stacked
network, and 1.7x the same closed form fed points in rows (ten Thyroid
members, ``scripts/bench_members.py mlp``).  Any other network or
projection takes autograd (same values up to float summation order)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from odbench.deep.freezing import parameters_frozen
from odbench.deep.members import per_row
from odbench.deep.stacked import FrozenReLUMLPGradient, StackedNet, from_columns, to_columns
from odbench.deep.training import low_precision_forward
from odbench.drocc.projections import _TINY, Annulus, _row_norms


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's single "higher = normal" output, shape (B,), float32."""
    return model(x).reshape(len(x)).float()


def adversarial_search(
    model: nn.Module,
    x: torch.Tensor,
    h: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor],
    step_size: float | torch.Tensor,
    num_steps: int,
    project_every: int = 1,
    precision: str = "fp32",
) -> torch.Tensor:
    """Algorithm 1's adversarial search; returns detached points ``x + h``.

    ``x``: (B, *shape) normal points; ``h``: their initial offsets (the paper
    draws ``N(0, I)``).  Each of ``num_steps`` steps moves ``h`` by
    ``step_size`` along the per-example normalized gradient of the loss of
    labelling ``x + h`` anomalous; ``project(h)`` maps the offsets back onto
    ``N(r)`` after every ``project_every``-th step and after the last one
    (the paper: every step; the reference code: every 10th).  Gradients are
    taken with respect to ``h`` only.  With no steps the start itself is
    projected: the paper's DROCC-Rand ablation (random points of ``N(r)``).
    ``precision``: ``"bf16"`` runs the forwards on bfloat16 copies of the
    weights and inputs (see the module docstring); ``h`` stays float32.
    A group's members (``odbench.deep.members``) may each have their own
    step size: a (K,) tensor, ``x`` and ``h`` their rows one after another.
    """
    x = x.detach()
    h = h.detach()
    if num_steps == 0:
        with torch.no_grad():
            return (x + project(h)).detach()
    with parameters_frozen(model):
        closed_form = model.frozen_gradient() if isinstance(model, StackedNet) and precision == "fp32" else None
        if closed_form is not None and isinstance(project, Annulus):
            return _search_in_columns(closed_form, x, h, project, step_size, num_steps, project_every)
        gradient = _loss_gradient(model, precision)
        rate = per_row(step_size, h)
        for i in range(num_steps):
            grad = gradient(x + h)
            with torch.no_grad():
                norms = _row_norms(grad).clamp_min_(_TINY)
                h = torch.addcdiv(h, grad, norms, value=rate) if not isinstance(rate, torch.Tensor) else h + rate * grad / norms
                if (i + 1) % project_every == 0 or i == num_steps - 1:
                    h = project(h)
    return (x + h).detach()


def _search_in_columns(
    closed_form: FrozenReLUMLPGradient,
    x: torch.Tensor,
    h: torch.Tensor,
    project: Annulus,
    step_size: float | torch.Tensor,
    num_steps: int,
    project_every: int,
) -> torch.Tensor:
    """:func:`adversarial_search`'s loop on a stacked ReLU MLP, with points and offsets kept as (K, d, B) columns."""
    x_columns, h_columns = to_columns(x, closed_form.size), to_columns(h, closed_form.size)
    gradient = closed_form.gradient_near(x_columns, torch.sigmoid_)
    squares = x_columns.new_empty(x_columns.shape[0], x_columns.shape[2])  # (K, B)
    norms = squares.unsqueeze(1)  # the same memory as (K, 1, B)
    with torch.no_grad():
        for i in range(num_steps):
            grad = gradient(h_columns)
            torch.linalg.vecdot(grad, grad, dim=1, out=squares).sqrt_().clamp_min_(_TINY)
            if isinstance(step_size, torch.Tensor):  # each member's own step over its (d, B) columns
                h_columns.addcmul_(grad, torch.div(step_size.view(-1, 1, 1), norms, out=norms))
            else:
                h_columns.addcdiv_(grad, norms, value=step_size)
            if (i + 1) % project_every == 0 or i == num_steps - 1:
                project.project_columns_(h_columns)
        return from_columns(x_columns + h_columns).view_as(x)


def _loss_gradient(model: nn.Module, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``points -> d/d points`` of the summed loss of labelling each point anomalous, float32; for frozen weights.

    The loss is ``BCE(f(p), 0)``, whose derivative is ``sigmoid(f(p)) df/dp``.
    """
    forward = low_precision_forward(model, precision)

    def from_autograd(points: torch.Tensor) -> torch.Tensor:
        points = points.detach().requires_grad_(True)
        out = forward(points).reshape(len(points)).float()
        anomalous = torch.zeros_like(out)  # the label "anomalous" is 0 on the normal logit
        loss = F.binary_cross_entropy_with_logits(out, anomalous, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [points])
        return grad.float()

    return from_autograd


def input_sensitivity(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """DROCC-LF's sigma for each example: ``|df(x)/dx_j|``, normalized to mean 1.

    Returns (B, d) with d the flattened input size.  Normalizing each row
    (as the reference's ``normalizer`` does) makes ``||.||_Sigma`` equal
    ``||.||_2`` when every coordinate matters equally, so the radius keeps
    its Euclidean meaning (√d/2).  A row with zero gradient becomes all ones.
    """
    x = x.detach().requires_grad_(True)
    with parameters_frozen(model):
        (grad,) = torch.autograd.grad(logits(model, x).sum(), [x])
    g = grad.float().abs().flatten(1)
    total = g.sum(dim=1, keepdim=True)
    return torch.where(total > 0, g * g.shape[1] / total.clamp_min(_TINY), torch.ones_like(g))
