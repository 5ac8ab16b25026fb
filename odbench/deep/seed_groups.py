"""The training loop of ``odbench.deep.training`` for K jobs of one method at once.

K jobs of one dataset and protocol (repetitions, or tuning trials with other
learning rates, optimizers, radii) train one
:class:`~odbench.deep.stacked.StackedNet`: one backward pass gives every
member the gradient of its own loss (the group's loss is the sum of the
members', and no member's loss depends on another's weights).  Members with
one optimisation setting share one optimizer on the stacked weights; where
their settings differ (``TrainConfig``'s optimizer, rate, momentum, weight
decay, schedule), each member has its own optimizer over its own slices of
them, so it takes the steps its solo run takes.  Each member keeps the
random streams of its solo run, drawn in the solo order: its initial weights
(built by the caller under its seed), its batch order and the loss's draws
from its own ``Step.generator``.  It is scored on its own validation split
with the solo loop's code, keeps its own best epoch, and ends as a plain
network of its own (``models[k]``), so what it scores is what
:func:`odbench.deep.training.train` would have left, within float rounding
(batched matmuls sum in another order).

A member stops where its solo run would: its own :class:`DivergenceGuard`
raises (:class:`TrainingDiverged`), or its context's ``on_epoch`` raises (a
pruned trial).  Its result is then that exception; its weights go on
moving in the stack, unread, and the others train on undisturbed (their
gradients do not depend on its loss, even a NaN one).

The members' training sets must have one size (one batch schedule), and
their configs one schedule of epochs and batches; the caller groups by them.
fp32 only.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from odbench.core.contracts import FitContext, FitTask
from odbench.core.metrics import evaluate
from odbench.deep.stacked import StackedNet
from odbench.deep.training import (
    Batches,
    DivergenceGuard,
    Objective,
    Step,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    _optimizer,
    check_saturation,
    resolve_device,
    score_array,
    selection_split,
)

#: the config fields the members of a group must share: they fix the group's schedule of epochs and batches
SHARED_CONFIG = ("epochs", "batch_size", "eval_every", "eval_batch_size", "precision", "memory_format")


class GroupLoss(Protocol):
    """The members' losses for one batch of each: ``x`` (K * B, *shape), member after member; returns (K,)."""

    def __call__(self, net: StackedNet, x: torch.Tensor, steps: Sequence[Step]) -> torch.Tensor: ...


@dataclass
class Member:
    """One job of a group: its freshly built network (seeded as its solo run), objective, data, task, context, config."""

    model: nn.Module
    objective: Objective
    X: np.ndarray
    task: FitTask
    ctx: FitContext
    config: TrainConfig


def stack(members: Sequence[Member]) -> StackedNet | None:
    """The members' networks as one, or ``None`` when they cannot train together (architecture, sizes)."""
    if len({len(m.X) for m in members}) != 1:
        return None
    return StackedNet.of([m.model for m in members])


def train_group(net: StackedNet, members: Sequence[Member], loss: GroupLoss) -> list[TrainResult | Exception]:
    """Train every member in ``net`` and leave ``members[k].model`` at member k's selected epoch.

    ``net`` is :func:`stack` of ``members``.  Selection per member as in
    :func:`odbench.deep.training.train`.  Member k's entry is its
    :class:`TrainResult`, or the exception that stopped it (see the module
    docstring).  Raises :class:`TrainingDiverged` when the optimizer step of
    the stacked weights overflows (the caller may run the members one by one).
    """
    config = members[0].config
    if config.precision != "fp32":
        raise ValueError("seed groups train in fp32 only")
    for m in members:
        if any(getattr(m.config, name) != getattr(config, name) for name in SHARED_CONFIG):
            raise ValueError(f"a group's members share {', '.join(SHARED_CONFIG)}")
    device = resolve_device(members[0].ctx.device)
    net.to(device)
    generators = [torch.Generator().manual_seed(m.ctx.seed) for m in members]
    data = [Batches(m.X, None, m.task.info, device) for m in members]
    optimizers = _Optimizers(net, [m.config for m in members])
    guards = [DivergenceGuard(m.config.lr) for m in members]
    selections = [selection_split(m.task, m.ctx) for m in members]
    metric = members[0].task.headline_metric
    best_value = [-np.inf] * len(members)
    best_epoch = [config.epochs - 1] * len(members)
    best_state: list[dict[str, torch.Tensor] | None] = [None] * len(members)
    histories: list[list[dict[str, float]]] = [[] for _ in members]
    stopped: list[Exception | None] = [None] * len(members)
    for m in members:
        m.model.to(device)
        m.ctx.plan(config.epochs)

    for epoch in range(config.epochs):
        started = time.perf_counter()
        optimizers.schedule(epoch)
        net.train()
        steps = [Step(epoch=epoch, generator=g, device=device) for g in generators]
        totals, batches = [0.0] * len(members), 0
        # each member's batches from its own generator, in its solo order (same size: same batch count)
        for parts in zip(
            *(d.iterate(config.batch_size, g) for d, g in zip(data, generators, strict=True)), strict=True
        ):
            xb = torch.cat([x for x, _ in parts])
            losses = loss(net, xb, steps)
            values = losses.detach().tolist()  # one read-back for all members, as the solo loop reads its one
            for k, value in enumerate(values):
                if stopped[k] is None:
                    try:
                        guards[k].batch(value, epoch, batches)
                    except TrainingDiverged as err:
                        stopped[k] = err
                    totals[k] += value
            # a stopped member trains on (no member's gradient depends on another's loss), unread
            net.zero_grad(set_to_none=True)
            losses.sum().backward()
            guards[0].step(optimizers, epoch)  # an overflow stops the group: its members then run alone
            batches += 1
        seconds = time.perf_counter() - started
        finite = net.finite_members()
        for k, m in enumerate(members):
            if stopped[k] is not None:
                continue
            if not finite[k]:
                stopped[k] = TrainingDiverged(f"member {k}'s parameters became NaN or infinite after epoch {epoch}")
                continue
            record = {"epoch": float(epoch), "loss": totals[k] / max(batches, 1), "lr": m.config.lr_at(epoch)}
            select_on, selected_by = selections[k]
            if select_on is not None and (epoch % config.eval_every == 0 or epoch == config.epochs - 1):
                net.copy_into(k, m.model)  # the solo loop's scoring code, on member k's weights
                scores = score_array(m.objective, m.model, select_on.X, m.task.info, device, config.eval_batch_size)
                value = evaluate((metric,), select_on.y, scores)[metric] if np.all(np.isfinite(scores)) else np.nan
                record[f"{selected_by}_{metric}"] = value
                if np.isfinite(value) and value > best_value[k]:
                    best_value[k], best_epoch[k] = value, epoch
                    best_state[k] = copy.deepcopy(m.model.state_dict())
            record["epoch_seconds"] = seconds  # the group's epoch: every member's
            histories[k].append(record)
            try:
                m.ctx.report(epoch, record)
            except Exception as err:  # its solo fit would stop here, raising this
                stopped[k] = err
        if all(s is not None for s in stopped):
            break

    results: list[TrainResult | Exception] = []
    for k, m in enumerate(members):
        if (stop := stopped[k]) is not None:
            results.append(stop)
            continue
        select_on, selected_by = selections[k]
        state = best_state[k]
        if state is not None:
            m.model.load_state_dict(state)
        else:
            net.copy_into(k, m.model)  # the last epoch
            if select_on is not None:
                selected_by = "last"  # the metric was never finite: nothing to select on
        try:
            if m.objective.scores_are_logits:
                check_saturation(guards[k], m.objective, m.model, m.X, m.task.info, device, config.eval_batch_size)
        except TrainingDiverged as err:
            results.append(err)
            continue
        m.model.eval()
        results.append(TrainResult(best_epoch=best_epoch[k], selected_by=selected_by, history=histories[k]))
    return results


class _Optimizers:
    """The group's optimizer steps: torch's optimizer on the stacked weights, or :class:`_MemberSteps`.

    Members with one optimisation setting take the same steps from one
    ``torch.optim`` optimizer (it updates elementwise, so member k's slice
    moves as its solo run's weights would).  Where the settings differ, no
    ``torch.optim`` optimizer can hold a rate per slice of one tensor: one
    optimizer per member over its slices took a fifth of a ten-trial group's
    time in per-tensor overhead, so the members step together instead.
    """

    def __init__(self, net: StackedNet, configs: Sequence[TrainConfig]) -> None:
        self.configs = list(configs)
        self.shared: torch.optim.Optimizer | None = None
        self.members: _MemberSteps | None = None
        if all(_optimisation(c) == _optimisation(configs[0]) for c in configs):
            self.shared = _optimizer(net, configs[0])
        else:
            self.members = _MemberSteps([p for p in net.parameters() if p.requires_grad], configs)

    def schedule(self, epoch: int) -> None:
        if self.shared is not None:
            for group in self.shared.param_groups:
                group["lr"] = self.configs[0].lr_at(epoch)
        elif self.members is not None:
            self.members.schedule(epoch)

    def step(self) -> None:
        if self.shared is not None:
            self.shared.step()
        elif self.members is not None:
            self.members.step()


class _MemberSteps:
    """Adam and SGD steps of stacked parameters, (K, ...), with each member's own settings.

    The arithmetic of ``torch.optim.Adam`` (L2 weight decay added to the
    gradient, bias-corrected moments, default betas and eps) and of
    ``torch.optim.SGD`` (momentum without dampening, the buffer starting at
    the first gradient), as ``training._optimizer`` builds them, with the rate,
    momentum and weight decay as (K, 1, ...) tensors: a member's update is
    its solo optimizer's within float rounding (``tests/test_seed_groups.py``
    compares whole trainings).  Each member takes the update of its own kind,
    Adam or SGD; both are computed for all, since a step is a few operations
    on tensors of a few thousand numbers.
    """

    BETAS, EPS = (0.9, 0.999), 1e-8

    def __init__(self, params: list[torch.Tensor], configs: Sequence[TrainConfig]) -> None:
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


def _optimisation(config: TrainConfig) -> tuple[object, ...]:
    return (config.optimizer, config.lr, config.momentum, config.weight_decay, config.lr_steps)
