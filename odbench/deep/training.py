"""The one deep-training loop that every deep method uses, for one network or K at once.

A method supplies a network (``odbench.deep.nets``) and an :class:`Objective`
(its loss for a batch and its anomaly score); this module does the rest:
batching (uint8 images stay uint8 on the device until a batch is formed),
optimizer, step learning-rate schedule, weight decay, mixed precision,
a NaN/inf guard, per-epoch metrics to ``FitContext.report`` and model
selection by the **validation** metric.

Selection: with a labelled validation split holding both classes, the epoch
with the best validation metric is kept (ties: the earliest).  Otherwise the
last epoch is kept.  ``FitContext.selection == "oracle"`` selects on the test
split instead — the authors' reference code does so — and the result says
``selected_by="oracle"`` so every number it produces is labelled.

:func:`train_members` trains K >= 1 members (repetitions, tuning trials) in
one loop; :func:`train` is K = 1.  With K > 1 the members run as one network
(``odbench.deep.members``), and each keeps everything else of its own run.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from odbench.core.contracts import DataInfo, FitContext, FitTask, Split
from odbench.core.errors import TrainingDiverged  # re-exported: callers import it from here too
from odbench.core.metrics import evaluate
from odbench.deep.members import SHARED_CONFIG, LoopMembers, MemberDraws, Members, MemberSteps
from odbench.deep.scoring_modes import EVAL_SCORING, inference_network, per_source_batches, score_in_train_mode
from odbench.deep.stacked import StackedNet

#: a batch loss this many times the largest of the first batches' losses has blown up, not learned: healthy
#: runs measured at most 23x (DROCC's adversarial phase starting after its CE-only epochs), lr=0.1 305x, lr=1e8 1e20x
EXPLOSION_FACTOR = 1e4
#: the batches whose losses are the reference of EXPLOSION_FACTOR
REFERENCE_BATCHES = 10
#: beyond this |logit| cross-entropy's gradient is below 1e-43 (zero in float32): the classifier learns nothing more
#: from the point; healthy DROCC ends with |logit| at most 23 on its training points (measured), lr=1e8 near 1e5-1e17
LOGIT_LIMIT = 100.0
#: the share of training points beyond LOGIT_LIMIT that makes a saturated network
SATURATED_SHARE = 0.99


class Steps(Protocol):
    """Anything that takes an optimizer step (``odbench.deep.members.MemberSteps``)."""

    def step(self) -> Any: ...


class DivergenceGuard:
    """Stops a training run that diverged, by magnitude and by trend, not only on NaN.

    * a batch loss that is NaN or infinite;
    * a batch loss more than ``EXPLOSION_FACTOR`` times the largest of the
      first ``REFERENCE_BATCHES`` batch losses (the trend: a loss that grew
      by orders of magnitude);
    * parameters that became NaN or infinite, or an optimizer step that
      overflows float32 (an absurd learning rate);
    * for objectives whose scores are classifier logits
      (``Objective.scores_are_logits``), a trained network whose logits
      saturate: beyond ``LOGIT_LIMIT`` on ``SATURATED_SHARE`` of its training
      points.  Its scores still rank points, by accident, so the job would
      otherwise report them as a result.
    """

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.reference = 0.0
        self.seen = 0

    def batch(self, loss: float, epoch: int, batch: int) -> None:
        hint = f"at epoch {epoch}, batch {batch} (lr {self.lr:g}); lower the learning rate"
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} {hint}")
        if self.seen >= 1 and abs(loss) > EXPLOSION_FACTOR * self.reference > 0:
            raise TrainingDiverged(
                f"loss exploded to {loss:.3g}, {abs(loss) / self.reference:.2g} times its first batches' {self.reference:.3g}, {hint}"
            )
        if self.seen < REFERENCE_BATCHES:
            self.reference = max(self.reference, abs(loss))
            self.seen += 1

    def step(self, optimizer: torch.optim.Optimizer | Steps, epoch: int) -> None:
        """``optimizer.step()``, with a float32 overflow (lr=1e38) reported as divergence, not as a crash."""
        try:
            optimizer.step()
        except (OverflowError, RuntimeError) as err:
            if "overflow" not in str(err):
                raise
            raise TrainingDiverged(f"the optimizer step overflowed float32 at epoch {epoch} (lr {self.lr:g}); lower the learning rate") from None

    def parameters(self, model: nn.Module, epoch: int) -> None:
        bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise TrainingDiverged(
                f"parameters became NaN or infinite after epoch {epoch} ({', '.join(bad[:3])}); lower the learning rate (lr {self.lr:g})"
            )

    def saturation(self, scores: np.ndarray) -> None:
        """``scores``: the trained network's logits (negated or not) on its training points."""
        if len(scores) == 0:
            return
        magnitude = np.abs(scores)
        share = float(np.mean(~(magnitude < LOGIT_LIMIT)))  # NaN counts as saturated
        if share >= SATURATED_SHARE:
            raise TrainingDiverged(
                f"the network's logits saturated: {share:.1%} of its training points have |logit| >= {LOGIT_LIMIT:g} "
                f"(median {np.nanmedian(magnitude):.3g}), where cross-entropy no longer learns; lower the learning rate "
                f"(lr {self.lr:g})"
            )


@dataclass
class TrainConfig:
    """Optimisation settings shared by every deep method (method params).

    ``momentum``: SGD's momentum, a method parameter like the others
    (``optimizer="sgd"`` only; Adam ignores it).  0.9 is a generic default;
    DROCC sets each EdgeML script's ``--mom`` default instead.
    ``lr_steps``: the step schedule as ``(fraction of epochs, multiplier)``
    pairs, e.g. ``((0.4, 0.1), (0.8, 0.01))`` = the DROCC reference (full
    rate for 40% of the epochs, a tenth until 80%, a hundredth after).
    ``precision="bf16"`` runs forward passes under bfloat16 autocast (CPU
    with AVX-512 BF16, or GPU).  ``memory_format``: ``"channels_last"``
    stores conv weights (and so activations) NHWC, which oneDNN convolves
    faster on CPU; ``"auto"`` does so only on CPU for networks with a
    ``Conv2d``; ``"contiguous"`` (default) leaves the model as built.
    """

    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # "adam" or "sgd" (with momentum)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    lr_steps: tuple[tuple[float, float], ...] = ()
    precision: str = "fp32"
    memory_format: str = "contiguous"  # or "channels_last", "auto"
    eval_every: int = 1
    eval_batch_size: int = 1024

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainConfig:
        """The config fields found in a method's parameter dict."""
        names = {f.name for f in fields(cls)}
        picked = {k: v for k, v in params.items() if k in names}
        if "lr_steps" in picked:
            picked["lr_steps"] = tuple(tuple(step) for step in picked["lr_steps"])
        return cls(**picked)

    def lr_at(self, epoch: int) -> float:
        multiplier = 1.0
        for fraction, factor in self.lr_steps:
            if epoch >= fraction * self.epochs:
                multiplier = factor
        return self.lr * multiplier


@dataclass
class Step:
    """What a loss may need besides the batch: epoch, randomness, device."""

    epoch: int
    generator: torch.Generator
    device: torch.device


#: the network an objective works on (``Objective[Hypersphere]``: DeepSVDD's centre and radius)
ModelT = TypeVar("ModelT", bound=nn.Module)


class Objective(Generic[ModelT]):
    """A deep method's contribution to the loop.

    ``loss`` gets a float batch ``x`` (already scaled) and its labels ``y``
    (0 normal, 1 anomalous; ``None`` when unlabelled) and returns a scalar.
    ``score`` returns anomaly scores of shape ``(n,)``, higher = more
    anomalous; it is called in eval mode under ``torch.no_grad``, so it must
    not depend on the rest of the batch.  ``epoch_start`` runs before each
    epoch in train mode (e.g. DeepSVDD's centre, DROCC-LF's sigma).
    """

    #: True when ``score`` is a classifier's logit (negated or not): the loop then refuses a saturated network
    scores_are_logits: bool = False

    def loss(self, model: ModelT, x: torch.Tensor, y: torch.Tensor | None, step: Step) -> torch.Tensor:
        raise NotImplementedError

    def score(self, model: ModelT, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def epoch_start(self, model: ModelT, epoch: int, data: Batches) -> None:
        pass

    def stages(self, epochs: int) -> tuple[tuple[str, int], ...]:
        """The parts of ``epochs`` epochs that run at different rates, ``(name, epochs)`` in order; () for one.

        Progress estimates each part's time left from its own epochs (``odbench.observers.progress.Eta``).
        """
        return ()


class Batches:
    """Examples held on the device in their stored dtype; float batches out.

    uint8 images are scaled to [0, 1] and normalized per channel with the
    task's statistics only when a batch is formed, so a dataset costs one
    byte per pixel in memory.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray | None, info: DataInfo, device: torch.device) -> None:
        self.X = torch.as_tensor(np.ascontiguousarray(X)).to(device)
        self.y = None if y is None else torch.as_tensor(np.asarray(y), dtype=torch.long).to(device)
        self.device = device
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None
        if self.X.dtype == torch.uint8 and info.channel_mean is not None:
            view = (1, -1) + (1,) * (self.X.ndim - 2)
            self._mean = torch.tensor(info.channel_mean, device=device).view(view)
            self._std = torch.tensor(info.channel_std, device=device).view(view)

    def __len__(self) -> int:
        return len(self.X)

    def as_input(self, xb: torch.Tensor) -> torch.Tensor:
        if xb.dtype != torch.uint8:
            return xb.float()
        xb = xb.float() / 255.0
        return xb if self._mean is None or self._std is None else (xb - self._mean) / self._std

    def iterate(self, batch_size: int, generator: torch.Generator | None = None):
        """(x, y) float batches; shuffled when a generator is given."""
        n = len(self.X)
        order = torch.randperm(n, generator=generator).to(self.device) if generator is not None else None
        starts = list(range(0, n, batch_size))
        if order is not None and len(starts) > 1 and n - starts[-1] == 1:
            # a training batch of one breaks BatchNorm: fold it into the one before
            starts.pop()
        for i, start in enumerate(starts):
            stop = starts[i + 1] if i + 1 < len(starts) else n
            idx = order[start:stop] if order is not None else slice(start, stop)
            yield self.as_input(self.X[idx]), (None if self.y is None else self.y[idx])


@dataclass
class TrainResult:
    """What the loop leaves behind besides the trained model."""

    best_epoch: int
    selected_by: str  # "val", "oracle" or "last"
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def selection_split(task: FitTask, ctx: FitContext) -> tuple[Split | None, str]:
    """The split that picks the epoch, and how the choice is labelled."""
    if ctx.selection == "oracle" and task.oracle_test is not None:
        return task.oracle_test, "oracle"
    split = task.val
    if split is not None and split.y is not None and len(np.unique(split.y)) == 2:
        return split, "val"
    return None, "last"


def apply_memory_format(model: nn.Module, device: torch.device, memory_format: str) -> bool:
    """Convert ``model`` to channels_last in place when ``memory_format`` asks; True if it did."""
    if memory_format not in ("contiguous", "channels_last", "auto"):
        raise ValueError(f"unknown memory_format {memory_format!r}; use 'contiguous', 'channels_last' or 'auto'")
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if memory_format == "channels_last" or (memory_format == "auto" and device.type == "cpu" and has_conv):
        # Module.to takes memory_format at run time (torch._C._nn._parse_to); its typed overloads omit it
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return True
    return False


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def low_precision_forward(model: nn.Module, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model``'s forward on a bfloat16 copy of its weights (``precision="bf16"``), else ``model`` itself.

    For loops that run many forwards with frozen weights (an input-gradient
    ascent): the weights are cast once, here, instead of on every call as
    autocast does, and every layer (BatchNorm and pooling too) runs in
    bfloat16.  Inputs are cast to bfloat16 on the way in (their gradient
    comes back in their own dtype); buffers stay the model's own float32
    ones.  The copy goes stale once the weights change: make a new one.
    """
    if precision != "bf16":
        return model
    weights = {name: w.detach().to(torch.bfloat16) for name, w in model.named_parameters()}

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, weights, (x.to(torch.bfloat16),))

    return forward


def score_array(
    objective: Objective,
    model: nn.Module,
    X: np.ndarray,
    info: DataInfo,
    device: torch.device,
    batch_size: int = 1024,
    precision: str = "fp32",
) -> np.ndarray:
    """Anomaly scores of ``X`` in eval mode, batch by batch; float64 ``(n,)``.

    Eval mode makes a score independent of its batch (BatchNorm uses running
    statistics), so the batch can be as large as memory allows; inference
    mode skips autograd's bookkeeping.  The batches run through a scoring
    copy of ``model`` (``odbench.deep.scoring_modes.inference_network``: BatchNorm folded
    into the layer before it, pooling before monotone activations), which
    leaves ``model`` itself in eval mode and otherwise untouched.
    ``precision="bf16"`` scores under bfloat16 autocast (what the model
    trained with).
    """
    model.eval()
    return _scores(objective, inference_network(model), X, info, device, batch_size, precision)


def _scores(
    objective: Objective, net: nn.Module, X: np.ndarray, info: DataInfo, device: torch.device, batch_size: int,
    precision: str,
) -> np.ndarray:
    """:func:`score_array`'s batch loop on a network already made for scoring."""
    data = Batches(X, None, info, device)
    out = []
    with torch.inference_mode(), _autocast(device, precision):
        for xb, _ in data.iterate(batch_size):
            out.append(objective.score(net, xb).float().reshape(-1).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def check_saturation(
    guard: DivergenceGuard,
    objective: Objective,
    model: nn.Module,
    X: np.ndarray,
    info: DataInfo,
    device: torch.device,
    batch_size: int = 1024,
    precision: str = "fp32",
) -> None:
    """``guard.saturation`` on the trained network's training points, scoring only the batches the decision needs.

    It stops once more than ``1 - SATURATED_SHARE`` of all the points lie within ``LOGIT_LIMIT``: then the
    network cannot be saturated, whatever the rest score.  A healthy network is settled by its first batch
    (a CIFAR class: 1 batch of 1024 instead of 5 passes' worth); a saturated one is scored in full, so the
    decision and the message are the full pass's.
    """
    n, within, parts = len(X), 0, []
    model.eval()
    net = inference_network(model)  # made once, for every batch the decision needs
    for start in range(0, n, batch_size):
        scores = _scores(objective, net, X[start : start + batch_size], info, device, batch_size, precision)
        parts.append(scores)
        within += int(np.count_nonzero(np.abs(scores) < LOGIT_LIMIT))  # NaN is not within
        if (n - within) / n < SATURATED_SHARE:
            return
    guard.saturation(np.concatenate(parts) if parts else np.zeros(0))


def score_split(
    objective: Objective,
    model: nn.Module,
    split: Split,
    info: DataInfo,
    device: torch.device,
    config: TrainConfig,
    scoring: str = EVAL_SCORING,
    seed: int = 0,
) -> np.ndarray:
    """Anomaly scores of ``split`` read the way ``scoring`` says (``odbench.deep.scoring_modes``).

    ``"eval"``: :func:`score_array`.  ``"batchnorm_train_mode_per_source"``:
    BatchNorm on each batch's statistics, batches of the training batch size
    formed per source (the split's close negatives apart, shuffled by ``seed``).
    """
    if scoring == EVAL_SCORING:
        return score_array(objective, model, split.X, info, device, config.eval_batch_size, config.precision)
    data = Batches(split.X, None, info, device)
    with _autocast(device, config.precision):
        return score_in_train_mode(objective.score, model, data, per_source_batches(split.close, config.batch_size, seed))


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; use 'adam' or 'sgd'")


@dataclass
class Member:
    """One network to train: freshly built (seeded as its run), its objective, data (X, y), task, context, config."""

    model: nn.Module
    objective: Objective
    X: np.ndarray
    y: np.ndarray | None
    task: FitTask
    ctx: FitContext
    config: TrainConfig


def train(
    model: nn.Module,
    objective: Objective,
    X: np.ndarray,
    y: np.ndarray | None,
    task: FitTask,
    ctx: FitContext,
    config: TrainConfig,
) -> TrainResult:
    """Train ``model`` in place on (X, y) and leave it at the selected epoch: :func:`train_members` with K = 1.

    Raises what stopped it: :class:`TrainingDiverged` when training diverges
    (:class:`DivergenceGuard`), or what its context raised (a pruned trial).
    """
    (result,) = train_members([Member(model, objective, X, y, task, ctx, config)])
    if isinstance(result, Exception):
        raise result
    return result


def train_members(members: Sequence[Member], loss: Objective | None = None) -> list[TrainResult | Exception]:
    """Train K >= 1 members in one loop and leave each ``members[k].model`` at its selected epoch.

    Each member has what a run has alone: its own batches and random draws
    (its context's seed), optimizer settings, hooks (``epoch_start`` on its
    own network), divergence guard, selection on its own selection split
    (:func:`selection_split`; the task's headline metric) with its best
    epoch's weights kept, and history and reports.  Member k's entry is its
    :class:`TrainResult`, or the exception that stopped it: its guard's
    :class:`TrainingDiverged`, or what its context's ``report`` raised (a
    pruned trial).  A stopped member stops alone; the others train on (their
    gradients do not depend on its loss, even a NaN one).

    With K > 1 the members run as one network (``odbench.deep.members``):
    ``loss`` (default: member 0's objective) computes every member's loss
    from their batches one after another, as a (K,) tensor.  The members'
    training sets must have one size, and their configs agree in
    ``SHARED_CONFIG``.  Raises :class:`TrainingDiverged` when an optimizer
    step overflows float32 (a group's caller may then run its members alone).
    """
    k_members = len(members)
    config = members[0].config
    for m in members:
        if any(getattr(m.config, name) != getattr(config, name) for name in SHARED_CONFIG):
            raise ValueError(f"a group's members share {', '.join(SHARED_CONFIG)}")
    if len({len(m.X) for m in members}) != 1:
        raise ValueError("a group's members train on sets of one size (one batch schedule)")
    device = resolve_device(members[0].ctx.device)
    for m in members:
        m.model.to(device)
        apply_memory_format(m.model, device, config.memory_format)
    group = None if k_members == 1 else member_network([m.model for m in members])
    net = group if group is not None else members[0].model
    objective = loss or members[0].objective
    generators = [torch.Generator().manual_seed(m.ctx.seed) for m in members]
    data = [Batches(m.X, m.y, m.task.info, device) for m in members]
    optimizer = MemberSteps(net, [m.config for m in members], _optimizer)
    guards = [DivergenceGuard(m.config.lr) for m in members]
    selections = [selection_split(m.task, m.ctx) for m in members]
    best_value = [-np.inf] * k_members
    best_epoch = [config.epochs - 1] * k_members
    best_state: list[dict[str, torch.Tensor] | None] = [None] * k_members
    histories: list[list[dict[str, float]]] = [[] for _ in members]
    stopped: list[Exception | None] = [None] * k_members
    for m in members:
        m.ctx.plan(config.epochs, stages=m.objective.stages(config.epochs))
    # a group's loss draws from a generator of its own: MemberDraws gives each member its draw from its own
    group_generator = generators[0] if k_members == 1 else torch.Generator()
    draws = contextlib.nullcontext() if k_members == 1 else MemberDraws(group_generator, generators)

    for epoch in range(config.epochs):
        started = time.perf_counter()
        optimizer.schedule(epoch)
        net.train()
        for k, m in enumerate(members):  # every hook, on every member's own network
            if stopped[k] is None:
                _sync(net, k, m.model)
                m.model.train()  # as alone (a stacked group's member network was last used for scoring)
                m.objective.epoch_start(m.model, epoch, data[k])
        step = Step(epoch=epoch, generator=group_generator, device=device)
        totals, batches = [0.0] * k_members, 0
        # each member's batches from its own generator, in its solo order (one size: one batch count)
        for parts in zip(*(d.iterate(config.batch_size, g) for d, g in zip(data, generators, strict=True)), strict=True):
            xb = parts[0][0] if k_members == 1 else torch.cat([x for x, _ in parts])
            yb = parts[0][1] if k_members == 1 or parts[0][1] is None else torch.cat([y for _, y in parts])
            with _autocast(device, config.precision), draws:
                losses = objective.loss(net, xb, yb, step)
            values = [losses.item()] if k_members == 1 else losses.detach().tolist()  # one read-back per batch
            if len(values) != k_members:
                raise ValueError(f"the loss gave {len(values)} values for {k_members} members: it must reduce per member")
            for k, value in enumerate(values):
                if stopped[k] is None:
                    try:
                        guards[k].batch(value, epoch, batches)
                    except TrainingDiverged as err:
                        stopped[k] = err
                    totals[k] += value
            if all(s is not None for s in stopped):
                break
            optimizer.zero_grad(net)
            (losses if k_members == 1 else losses.sum()).backward()
            guards[0].step(optimizer, epoch)  # an overflow stops the whole group: its members may then run alone
            batches += 1
        finite = [True] if group is None else group.finite_members()
        for k, m in enumerate(members):
            if stopped[k] is not None:
                continue
            try:
                if k_members == 1:
                    guards[k].parameters(m.model, epoch)
                elif not finite[k]:
                    raise TrainingDiverged(f"member {k}'s parameters became NaN or infinite after epoch {epoch}")
                histories[k].append(_epoch_end(k, m, net, selections[k], epoch, totals[k], batches, started))
                record = histories[k][-1]
                value = record.get(f"{selections[k][1]}_{m.task.headline_metric}", np.nan)
                if np.isfinite(value) and value > best_value[k]:
                    best_value[k], best_epoch[k] = value, epoch
                    best_state[k] = copy.deepcopy(m.model.state_dict())
                m.ctx.report(epoch, record)
            except Exception as err:  # alone it would stop here, raising this
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
            _sync(net, k, m.model)  # the last epoch
            if select_on is not None:
                selected_by = "last"  # the metric was never finite: nothing to select on
        try:
            if m.objective.scores_are_logits:
                check_saturation(
                    guards[k], m.objective, m.model, m.X, m.task.info, device, config.eval_batch_size, config.precision
                )
        except TrainingDiverged as err:
            results.append(err)
            continue
        m.model.eval()
        results.append(TrainResult(best_epoch=best_epoch[k], selected_by=selected_by, history=histories[k]))
    return results


def member_network(models: Sequence[nn.Module]) -> Members:
    """The members' networks as one: the stacked MLP where it applies (the fast path), else :class:`LoopMembers`."""
    stacked = StackedNet.of(models)
    return stacked if stacked is not None else LoopMembers(models)


def _sync(net: nn.Module, k: int, model: nn.Module) -> None:
    """Leave member ``k``'s current weights in its own network (a group's network may hold them elsewhere)."""
    if isinstance(net, Members):
        net.copy_into(k, model)


def _epoch_end(
    k: int, m: Member, net: nn.Module, selection: tuple[Split | None, str], epoch: int, total: float, batches: int,
    started: float,
) -> dict[str, float]:
    """Member ``k``'s record of ``epoch``: its mean loss, rate and, on evaluation epochs, its selection metric."""
    config, metric = m.config, m.task.headline_metric
    record = {"epoch": float(epoch), "loss": total / max(batches, 1), "lr": config.lr_at(epoch)}
    select_on, selected_by = selection
    if select_on is not None and (epoch % config.eval_every == 0 or epoch == config.epochs - 1):
        _sync(net, k, m.model)  # the solo scoring code, on member k's own network
        device = resolve_device(m.ctx.device)
        scores = score_split(m.objective, m.model, select_on, m.task.info, device, config, m.ctx.scoring, m.ctx.seed)
        record[f"{selected_by}_{metric}"] = (
            evaluate((metric,), select_on.y, scores)[metric] if np.all(np.isfinite(scores)) else np.nan
        )
    record["epoch_seconds"] = time.perf_counter() - started  # a group's epoch: every member's
    return record
