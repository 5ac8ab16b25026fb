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
from typing import Protocol

import torch
from torch import nn

from odbench.deep.training import Batches, Objective, Step
from odbench.drocc.ascent import logits

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

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, step: Step) -> torch.Tensor: ...

    def epoch_start(self, model: nn.Module, epoch: int, data: Batches) -> None: ...


class DROCCObjective(Objective):
    """Hands each batch to the plugin's ``loss`` and each epoch's start to its ``epoch_start``; scores by the negated logit."""

    scores_are_logits = True  # the score is the negated logit

    def __init__(self, method: BatchLoss) -> None:
        self.method = method

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, step: Step) -> torch.Tensor:
        return self.method.loss(model, x, y, step)

    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return -logits(model, x)  # the network says "higher = normal"

    def epoch_start(self, model: nn.Module, epoch: int, data: Batches) -> None:
        self.method.epoch_start(model, epoch, data)

    def stages(self, epochs: int) -> tuple[tuple[str, int], ...]:
        """The CE-only epochs, then the adversarial ones (each batch's gradient ascent makes them many times slower)."""
        first = getattr(getattr(self.method, "params", None), "only_ce_epochs", None)
        if not isinstance(first, int) or not 0 < first < epochs:
            return ()
        return (("ce-only", first), ("adversarial", epochs - first))


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
