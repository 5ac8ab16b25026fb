"""The training loop's view of a DROCC plugin, and the reference's learning-rate schedule.

BatchNorm and adversarial batches: the authors' code runs the ascent and the
adversarial loss in train mode, so each of the m ascent forwards moves the
running statistics towards those of the adversarial batch; after 50 steps
they describe ``x + h`` rather than the data, and eval-mode scoring uses
them.  odbench scores in eval mode (a point's score may not depend on its
batch), so by default adversarial forwards use their batch's statistics but
leave the running statistics alone (``adversarial_bn_update=False``): those
then describe real training points, the points that scoring normalizes.
``adversarial_bn_update=True`` restores the reference behaviour.  Networks
without BatchNorm (the MLP, the LSTM) are unaffected.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from odbench.deep.freezing import batchnorm_stats_frozen
from odbench.deep.training import Batches, Objective, Step
from odbench.drocc.ascent import input_sensitivity, logits

#: the reference's step schedule, as (fraction of the DROCC epochs, lr multiplier):
#: EdgeML ``main_cifar.py`` / ``main_drocclf_mnist.py``
REFERENCE_LR_MILESTONES = ((0.4, 0.1), (0.8, 0.01))
#: ``main_tabular.py``'s schedule
TABULAR_LR_MILESTONES = ((0.3, 0.1), (0.6, 0.01), (0.9, 0.001))
#: DROCC's loss parameters that a group's members may each set for themselves: the group's loss reads them
#: as (K,) tensors (``odbench.deep.members``), which the ascent, the annulus and the loss's sum take as they are
MEMBER_VARYING = frozenset({"radius", "gamma", "mu", "ascent_step_size"})


class BatchLoss(Protocol):
    """What the objective needs of a DROCC plugin (``odbench.drocc.method.DROCCMethod``)."""

    distance: ClassVar[str]
    params_: dict[str, Any]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, step: Step) -> torch.Tensor: ...


class DROCCObjective(Objective):
    """Hands each batch to the plugin's ``loss``; scores by the negated logit; keeps DROCC-LF's sigma.

    ``sigma_`` is the per-epoch sigma of DROCC-LF (``sigma_update="epoch"``,
    the paper): :func:`input_sensitivity` averaged over the training normals
    at the start of every adversarial epoch.
    """

    scores_are_logits = True  # the score is the negated logit

    def __init__(self, method: BatchLoss) -> None:
        self.method = method
        self.sigma_: torch.Tensor | None = None

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, step: Step) -> torch.Tensor:
        return self.method.loss(model, x, y, step)

    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return -logits(model, x)  # the network says "higher = normal"

    def epoch_start(self, model: nn.Module, epoch: int, data: Batches) -> None:
        p = self.method.params_
        if self.method.distance != "mahalanobis" or p.get("sigma_update") != "epoch" or epoch < p["only_ce_epochs"]:
            return
        total, count = None, 0
        with batchnorm_stats_frozen(model):
            for xb, yb in data.iterate(1024):
                normal = xb if yb is None else xb[yb == 0]
                if len(normal):
                    part = input_sensitivity(model, normal).sum(0)
                    total = part if total is None else total + part
                    count += len(normal)
        self.sigma_ = None if total is None else total / count


def drocc_lr_steps(
    epochs: int, only_ce_epochs: int, milestones: tuple[tuple[float, float], ...] = REFERENCE_LR_MILESTONES
) -> tuple[tuple[float, float], ...]:
    """The reference schedule as ``TrainConfig.lr_steps`` (fractions of all epochs).

    EdgeML's ``adjust_learning_rate`` counts from the end of the CE-only
    epochs: with ``e = epoch - n0`` and ``D = epochs - n0`` it keeps the full
    rate while ``e <= 0.4 D``, a tenth while ``e <= 0.8 D``, a hundredth
    after.  Each change happens at the first integer epoch past the
    milestone; half an epoch below it keeps float rounding out of the way.
    """
    drocc_epochs = epochs - only_ce_epochs
    steps = []
    for fraction, factor in milestones:
        first = only_ce_epochs + math.floor(fraction * drocc_epochs) + 1
        steps.append(((first - 0.5) / epochs, factor))
    return tuple(steps)
