"""DROCC's loss for one batch (Algorithm 1), its variants, and the reference LR schedule.

BatchNorm and adversarial batches: the authors' code runs the ascent and the
adversarial loss in train mode, so each of the m ascent forwards moves the
running statistics towards those of the adversarial batch; after 50 steps
they describe ``x + h`` rather than the data, and eval-mode scoring uses
them.  odbench scores in eval mode (a point's score may not depend on its
batch), so by default adversarial forwards use their batch's statistics but
leave the running statistics alone (``adversarial_bn_update=False``): those
then describe real training points, the points that scoring normalizes.
``adversarial_bn_update=True`` restores the reference behaviour.  Networks
without BatchNorm (the MLP, the LSTM) are unaffected."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from odbench.deep.freezing import batchnorm_stats_frozen
from odbench.deep.training import Batches, Objective, Step
from odbench.drocc.ascent import adversarial_search, input_sensitivity, logits
from odbench.drocc.projections import annulus_project, mahalanobis_project

#: the reference's step schedule, as (fraction of the DROCC epochs, lr multiplier)
#: (EdgeML ``main_cifar.py`` / ``main_drocclf_mnist.py``; ``main_tabular.py``
#: uses ((0.3, 0.1), (0.6, 0.01), (0.9, 0.001)))
REFERENCE_LR_MILESTONES = ((0.4, 0.1), (0.8, 0.01))


@dataclass
class DROCCObjective(Objective):
    """The DROCC loss for one batch (Algorithm 1), and its variants.

    ``loss = CE(f(x), label) + mu * CE(f(x + h*), anomalous)`` where the first
    term covers the normal points (and, with ``use_negatives``, the labelled
    negatives: DROCC-OE), and ``h*`` comes from :func:`adversarial_search`
    around the batch's normal points.  For the first ``only_ce_epochs``
    epochs only the first term is used.  ``distance="mahalanobis"`` (DROCC-LF)
    projects with Proposition 1 using sigma from :func:`input_sensitivity`:
    averaged over the training normals once per epoch (``sigma_update="epoch"``,
    the paper) or per example of each batch (``"batch"``, the reference code).
    """

    radius: float
    gamma: float = 2.0
    mu: float = 1.0
    ascent_step_size: float = 0.001
    ascent_num_steps: int = 50
    only_ce_epochs: int = 0
    project_every: int = 1
    use_negatives: bool = False
    distance: str = "euclidean"  # or "mahalanobis" (DROCC-LF)
    sigma_update: str = "epoch"  # or "batch"
    adversarial_bn_update: bool = False

    def __post_init__(self) -> None:
        self.sigma_: torch.Tensor | None = None

    def ce(self, model: nn.Module, x: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with target 1 = normal (the logit's direction)."""
        return F.binary_cross_entropy_with_logits(logits(model, x), normal.float())

    def project(self, h: torch.Tensor, sigma: torch.Tensor | None) -> torch.Tensor:
        if self.distance == "euclidean":
            return annulus_project(h, self.radius, self.gamma)
        flat = mahalanobis_project(h.flatten(1), sigma, self.radius, self.gamma)
        return flat.view_as(h)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, step: Step) -> torch.Tensor:
        is_normal = torch.ones(len(x), dtype=torch.bool, device=x.device) if y is None else y == 0
        if not self.use_negatives:
            x, is_normal = x[is_normal], is_normal[is_normal]
        loss = self.ce(model, x, is_normal)
        normal = x[is_normal]
        if step.epoch < self.only_ce_epochs or len(normal) == 0:
            return loss
        sigma = None
        if self.distance == "mahalanobis":
            sigma = self.sigma_ if self.sigma_update == "epoch" and self.sigma_ is not None else None
            if sigma is None:
                with batchnorm_stats_frozen(model):
                    sigma = input_sensitivity(model, normal)
        h = torch.randn(normal.shape, generator=step.generator).to(normal.device)
        with batchnorm_stats_frozen(model, frozen=not self.adversarial_bn_update):
            x_adv = adversarial_search(
                model, normal, h, lambda h: self.project(h, sigma), self.ascent_step_size, self.ascent_num_steps, self.project_every
            )
            adv = self.ce(model, x_adv, torch.zeros(len(x_adv), dtype=torch.bool, device=x.device))
        return loss + self.mu * adv

    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return -logits(model, x)  # the network says "higher = normal"

    def epoch_start(self, model: nn.Module, epoch: int, data: Batches) -> None:
        if self.distance != "mahalanobis" or self.sigma_update != "epoch" or epoch < self.only_ce_epochs:
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


# ---------------------------------------------------------------- the method


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


