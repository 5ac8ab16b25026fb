"""K networks run as one, so that :func:`odbench.deep.training.train` trains K members in one loop.

A group's network takes the members' batches one after another,
``(K * B, *shape)`` (rows ``k*B .. (k+1)*B`` are member k's), and returns
their outputs in the same order.  To the objective's loss it looks like one
network on one batch of independent points, so a loss written for one
network serves a group when it reduces per member (:func:`member_mean`) and
draws its randomness from ``Step.generator`` (:class:`MemberDraws` turns a
draw for the group into each member's draw from its own generator, in its
solo order).  A group's loss is then ``(K,)``: one backward pass gives each
member the gradient of its own loss, since no member's loss depends on
another's weights.

Two networks do this:

* :class:`LoopMembers`, for any backbone: each member's own module runs on
  its own rows (its BatchNorm sees its own batch), so a member computes
  exactly what its solo run computes.
* :class:`~odbench.deep.stacked.StackedNet`, the tabular MLP's fast path:
  batched matmuls on stacked weights (``scripts/bench_members.py``).

A group's optimizer steps (:class:`MemberSteps`) are torch's own optimizer
where the members share their optimisation settings, and each member's own
settings otherwise (tuning trials).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

#: the config fields the members of a group must share: they fix the group's schedule of epochs and batches
SHARED_CONFIG = ("epochs", "batch_size", "eval_every", "eval_batch_size", "precision", "memory_format")


class Members(nn.Module):
    """K members' networks run as one; see the module docstring.  ``size``: K."""

    size: int

    def copy_into(self, k: int, member: nn.Module) -> None:
        """Leave member ``k``'s current weights (and buffers) in ``member``, its plain network."""
        raise NotImplementedError

    def finite_members(self) -> list[bool]:
        """For each member, whether all its weights are finite."""
        raise NotImplementedError


class LoopMembers(Members):
    """The members' own networks, each run on its own rows: any backbone, exactly as alone."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.size = len(models)
        self.members = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.view(self.size, len(x) // self.size, *x.shape[1:])
        return torch.cat([member(rows[k]) for k, member in enumerate(self.members)])

    def copy_into(self, k: int, member: nn.Module) -> None:
        if member is not self.members[k]:
            member.load_state_dict(self.members[k].state_dict())

    @torch.no_grad()
    def finite_members(self) -> list[bool]:
        return [all(bool(torch.isfinite(p).all()) for p in member.parameters()) for member in self.members]


def size_of(model: nn.Module) -> int:
    """How many members ``model`` runs: K for a group's network, 1 for a plain one."""
    return model.size if isinstance(model, Members) else 1


def member_mean(model: nn.Module, loss: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """``loss(*args)``, a torch loss of per-example terms, averaged: a scalar for a plain network, (K,) for a group.

    A plain network gets torch's own mean reduction (its fused backward: a
    solo run computes what it always computed); a group's members each the
    mean of their own rows.
    """
    if not isinstance(model, Members):
        return loss(*args)
    return loss(*args, reduction="none").view(model.size, -1).mean(1)


def per_row(value: float | torch.Tensor, rows: torch.Tensor) -> float | torch.Tensor:
    """A setting that may be one per member, (K,), as a column against ``rows`` (K * B, *shape); a float stays."""
    if not isinstance(value, torch.Tensor):
        return value
    k = len(value)
    column = value.to(rows.dtype).repeat_interleave(len(rows) // k)
    return column.view(-1, *([1] * (rows.dim() - 1)))


class MemberDraws(TorchFunctionMode):
    """Inside a group's loss: ``torch.randn`` / ``torch.rand`` from the group's generator are the members' own draws.

    A draw of shape ``(K * B, *rest)`` with ``generator=group`` becomes each
    member's ``(B, *rest)`` draw from its own generator, concatenated: what
    the member's solo run draws at this point of its stream.  Any other use
    of the group's generator is refused (it has no stream of its own).
    """

    SPLIT = (torch.randn, torch.rand)

    def __init__(self, group: torch.Generator, generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.group, self.generators = group, list(generators)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if kwargs.get("generator") is not self.group:
            return func(*args, **kwargs)
        if func not in self.SPLIT:
            raise TypeError(f"{getattr(func, '__name__', func)} with a group's generator: train these members alone")
        shape = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else tuple(args)
        k = len(self.generators)
        if not shape or shape[0] % k:
            raise ValueError(f"a group's draw of shape {shape} does not split into its {k} members' draws")
        own = (shape[0] // k, *shape[1:])
        return torch.cat([func(own, **{**kwargs, "generator": g}) for g in self.generators])


class MemberSteps:
    """A group's optimizer: torch's own where the members share their settings, each member's own otherwise.

    Members with one optimisation setting take the same steps from one
    ``torch.optim`` optimizer over all their weights (it updates
    elementwise, so a member's weights move as in its solo run).  Where the
    settings differ, the members of a :class:`LoopMembers` network have
    each their own optimizer; the stacked MLP's members share tensors, so
    :class:`StackedSteps` steps them together with each member's settings.
    """

    def __init__(self, net: nn.Module, configs: Sequence[Any], build: Any) -> None:
        """``configs``: each member's ``TrainConfig``; ``build(module, config)``: the solo loop's optimizer."""
        self.configs = list(configs)
        self.optimizers: list[tuple[torch.optim.Optimizer, Any]] = []
        self.stacked: StackedSteps | None = None
        if all(_optimisation(c) == _optimisation(configs[0]) for c in configs):
            self.optimizers = [(build(net, configs[0]), configs[0])]
        elif isinstance(net, LoopMembers):
            self.optimizers = [(build(m, c), c) for m, c in zip(net.members, configs, strict=True)]
        else:
            self.stacked = StackedSteps([p for p in net.parameters() if p.requires_grad], configs)

    def schedule(self, epoch: int) -> None:
        for optimizer, config in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(epoch)
        if self.stacked is not None:
            self.stacked.schedule(epoch)

    def zero_grad(self, net: nn.Module) -> None:
        for optimizer, _ in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self.stacked is not None:
            net.zero_grad(set_to_none=True)

    def step(self) -> None:
        for optimizer, _ in self.optimizers:
            optimizer.step()
        if self.stacked is not None:
            self.stacked.step()


class StackedSteps:
    """Adam and SGD steps of stacked parameters, (K, ...), with each member's own settings.

    The arithmetic of ``torch.optim.Adam`` (L2 weight decay added to the
    gradient, bias-corrected moments, default betas and eps) and of
    ``torch.optim.SGD`` (momentum without dampening, the buffer starting at
    the first gradient), as ``training._optimizer`` builds them, with the rate,
    momentum and weight decay as (K, 1, ...) tensors: a member's update is
    its solo optimizer's within float rounding (``tests/test_members.py``
    compares whole trainings).  Each member takes the update of its own kind,
    Adam or SGD; both are computed for all, since a step is a few operations
    on tensors of a few thousand numbers.  One ``torch.optim`` optimizer per
    member over its slices took a fifth of a ten-trial group's time in
    per-tensor overhead.
    """

    BETAS, EPS = (0.9, 0.999), 1e-8

    def __init__(self, params: list[torch.Tensor], configs: Sequence[Any]) -> None:
        known = {"adam", "sgd"}
        if any(c.optimizer not in known for c in configs):
            raise ValueError(f"unknown optimizer; use one of {sorted(known)}")
        self.params, self.configs, self.steps = params, list(configs), 0
        device = params[0].device

        def per_member(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=params[0].dtype, device=device)

        self.adam = torch.tensor([c.optimizer == "adam" for c in configs], device=device)
        self.momentum = per_member([c.momentum if c.optimizer == "sgd" else 0.0 for c in configs])
        self.weight_decay = per_member([c.weight_decay for c in configs])
        self.lr = per_member([c.lr for c in configs])
        self.first = [torch.zeros_like(p) for p in params]  # Adam's first moment, SGD's momentum buffer
        self.second = [torch.zeros_like(p) for p in params]  # Adam's second moment

    def schedule(self, epoch: int) -> None:
        self.lr = torch.tensor([c.lr_at(epoch) for c in self.configs], dtype=self.lr.dtype, device=self.lr.device)

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.BETAS
        correction1, correction2 = 1 - beta1**self.steps, math.sqrt(1 - beta2**self.steps)
        for param, first, second in zip(self.params, self.first, self.second, strict=True):
            if param.grad is None:
                continue
            shape = (-1,) + (1,) * (param.dim() - 1)
            grad = param.grad.addcmul(param, self.weight_decay.view(shape))
            adam = self.adam.view(shape)
            # Adam: first and second moments; SGD: first = momentum * first + grad (the first step: grad)
            first.copy_(torch.where(adam, first.lerp(grad, 1 - beta1), first.mul(self.momentum.view(shape)).add_(grad)))
            second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            adam_update = first / second.sqrt().div_(correction2).add_(self.EPS) / correction1
            param.sub_(torch.where(adam, adam_update, first).mul_(self.lr.view(shape)))


def _optimisation(config: Any) -> tuple[object, ...]:
    return (config.optimizer, config.lr, config.momentum, config.weight_decay, config.lr_steps)
