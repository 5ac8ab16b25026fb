"""DROCC's loss (``methods/drocc.py``, Algorithm 1) for K seeds at once, on a :class:`StackedNet`.

The same steps as ``DROCC.loss``, each member on its own batch: the
cross-entropy of the normals labelled normal; after the CE-only epochs,
``h ~ N(0, I)`` drawn from each member's own generator (its solo draw), the
adversarial search (:meth:`DROCCMethod.search`, which treats the K batches
as one batch of independent points: per-point gradients, normalisation and
projection), and ``mu`` times the cross-entropy of the adversarial points
labelled anomalous.  Means are per member.  The equivalence with the solo
loss is tested (``tests/test_seed_groups.py``): a change to one without the
other fails there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from odbench.deep.stacked import StackedNet
from odbench.deep.training import Step
from odbench.drocc.ascent import logits


class Searcher(Protocol):
    """What the group loss needs of a DROCC plugin (``odbench.drocc.method.DROCCMethod``)."""

    params_: dict[str, Any]

    def search(self, model: nn.Module, normal: torch.Tensor, h: torch.Tensor) -> torch.Tensor: ...


class GroupDROCCLoss:
    """Algorithm 1's loss for every member of a group; ``method`` holds the shared resolved parameters."""

    def __init__(self, method: Searcher) -> None:
        self.method = method

    def __call__(self, net: StackedNet, x: torch.Tensor, steps: Sequence[Step]) -> torch.Tensor:
        p = self.method.params_
        k = net.size
        per_member = len(x) // k

        def ce(points: torch.Tensor, normal: bool) -> torch.Tensor:  # (K,) mean cross-entropy per member
            z = logits(net, points).view(k, per_member)
            return F.binary_cross_entropy_with_logits(z, torch.full_like(z, float(normal)), reduction="none").mean(1)

        loss = ce(x, True)
        if steps[0].epoch < p["only_ce_epochs"] or per_member < 2:  # as the solo loss: no search on a batch of one
            return loss
        shape = (per_member, *x.shape[1:])
        h = torch.cat([torch.randn(shape, generator=step.generator) for step in steps]).to(
            x.device
        )  # each its own N(0, I)
        x_adv = self.method.search(net, x, h)
        return loss + p["mu"] * ce(x_adv, False)
