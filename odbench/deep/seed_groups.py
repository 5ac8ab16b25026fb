"""The training loop of ``odbench.deep.training`` for K seeds of one job at once.

K jobs that differ only in their repetition (so in their split and seed)
train one :class:`~odbench.deep.stacked.StackedNet`: one optimizer step
updates every member, each by the gradient of its own loss (the group's
loss is the sum of the members', and no member's loss depends on another's
weights).  Each member keeps the random streams of its solo run, drawn in
the solo order: its initial weights (built by the caller under its seed),
its batch order and the loss's draws from its own ``Step.generator``.  It
is scored on its own validation split with the solo loop's code, keeps its
own best epoch, and ends as a plain network of its own (``models[k]``), so
what it scores is what :func:`odbench.deep.training.train` would have left,
within float rounding (batched matmuls sum in another order).

The members' training sets must have one size (one batch schedule); the
caller groups by it.  fp32 only.
"""

from __future__ import annotations

import copy
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
    Objective,
    Step,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    _optimizer,
    resolve_device,
    score_array,
    selection_split,
)


class GroupLoss(Protocol):
    """The members' losses for one batch of each: ``x`` (K * B, *shape), member after member; returns (K,)."""

    def __call__(self, net: StackedNet, x: torch.Tensor, steps: Sequence[Step]) -> torch.Tensor: ...


@dataclass
class Member:
    """One job of a group: its freshly built network (seeded as its solo run), objective, training data, task, context."""

    model: nn.Module
    objective: Objective
    X: np.ndarray
    task: FitTask
    ctx: FitContext


def stack(members: Sequence[Member]) -> StackedNet | None:
    """The members' networks as one, or ``None`` when they cannot train together (architecture, sizes)."""
    if len({len(m.X) for m in members}) != 1:
        return None
    return StackedNet.of([m.model for m in members])


def train_group(net: StackedNet, members: Sequence[Member], loss: GroupLoss, config: TrainConfig) -> list[TrainResult]:
    """Train every member in ``net`` and leave ``members[k].model`` at member k's selected epoch.

    ``net`` is :func:`stack` of ``members``.  Selection per member as in
    :func:`odbench.deep.training.train`.  Raises :class:`TrainingDiverged`
    when any member's loss is not finite (its solo run would have stopped
    there; the caller may run the members one by one).
    """
    if config.precision != "fp32":
        raise ValueError("seed groups train in fp32 only")
    device = resolve_device(members[0].ctx.device)
    net.to(device)
    generators = [torch.Generator().manual_seed(m.ctx.seed) for m in members]
    data = [Batches(m.X, None, m.task.info, device) for m in members]
    optimizer = _optimizer(net, config)
    selections = [selection_split(m.task, m.ctx) for m in members]
    metric = members[0].task.headline_metric
    best_value = [-np.inf] * len(members)
    best_epoch = [config.epochs - 1] * len(members)
    best_state: list[dict[str, torch.Tensor] | None] = [None] * len(members)
    histories: list[list[dict[str, float]]] = [[] for _ in members]
    for m in members:
        m.model.to(device)
        m.ctx.plan(config.epochs)

    for epoch in range(config.epochs):
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(epoch)
        net.train()
        steps = [Step(epoch=epoch, generator=g, device=device) for g in generators]
        totals, batches = torch.zeros(len(members), dtype=torch.float64), 0
        # each member's batches from its own generator, in its solo order (same size: same batch count)
        for parts in zip(
            *(d.iterate(config.batch_size, g) for d, g in zip(data, generators, strict=True)), strict=True
        ):
            xb = torch.cat([x for x, _ in parts])
            losses = loss(net, xb, steps)
            if not bool(torch.isfinite(losses).all()):
                bad = int((~torch.isfinite(losses)).nonzero()[0])
                raise TrainingDiverged(
                    f"member {bad}'s loss became {losses[bad].item()} at epoch {epoch}, batch {batches}"
                )
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            totals += losses.detach().double().cpu()
            batches += 1
        seconds = time.perf_counter() - started
        for k, m in enumerate(members):
            record = {"epoch": float(epoch), "loss": float(totals[k]) / max(batches, 1), "lr": config.lr_at(epoch)}
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
            m.ctx.report(epoch, record)

    results = []
    for k, m in enumerate(members):
        select_on, selected_by = selections[k]
        state = best_state[k]
        if state is not None:
            m.model.load_state_dict(state)
        else:
            net.copy_into(k, m.model)  # the last epoch
            if select_on is not None:
                selected_by = "last"  # the metric was never finite: nothing to select on
        m.model.eval()
        results.append(TrainResult(best_epoch=best_epoch[k], selected_by=selected_by, history=histories[k]))
    return results
