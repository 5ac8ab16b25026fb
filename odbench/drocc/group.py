"""DROCC's loss (``methods/drocc.py``, Algorithm 1) for K members at once, on a :class:`StackedNet`.

The same steps as ``DROCC.loss``, each member on its own batch: the
cross-entropy of the normals labelled normal; after the CE-only epochs,
``h ~ N(0, I)`` drawn from each member's own generator (its solo draw), the
adversarial search (``odbench.drocc.ascent``, which treats the K batches as
one batch of independent points: per-point gradients, normalisation and
projection), and ``mu`` times the cross-entropy of the adversarial points
labelled anomalous.  Means are per member.  The members may differ in
:data:`MEMBER_VARYING` (tuning trials): each then searches its own annulus
with its own step and weighs its own adversarial term.  The equivalence
with the solo loss is tested (``tests/test_seed_groups.py``): a change to
one without the other fails there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from odbench.deep.stacked import StackedNet
from odbench.deep.training import Step
from odbench.drocc.ascent import adversarial_search, logits
from odbench.drocc.projections import Annulus

#: DROCC's parameters that a group's members may each set for themselves in the loss
MEMBER_VARYING = frozenset({"radius", "gamma", "mu", "ascent_step_size"})


class GroupDROCCLoss:
    """Algorithm 1's loss for every member of a group; ``params``: each member's resolved parameters."""

    def __init__(self, params: Sequence[dict[str, Any]]) -> None:
        self.shared = params[0]  # the members agree on everything but MEMBER_VARYING
        self.members = params
        self._per_member: dict[str, float | torch.Tensor] = {}

    def _value(self, name: str, device: torch.device) -> float | torch.Tensor:
        """The members' common ``name`` as a float, or theirs as a (K, 1, 1) tensor where they differ."""
        if name not in self._per_member:
            values = [float(p[name]) for p in self.members]
            differ = any(v != values[0] for v in values)
            self._per_member[name] = torch.tensor(values, device=device).view(-1, 1, 1) if differ else values[0]
        return self._per_member[name]

    def __call__(self, net: StackedNet, x: torch.Tensor, steps: Sequence[Step]) -> torch.Tensor:
        p = self.shared
        k = net.size
        per_member = len(x) // k

        def ce(points: torch.Tensor, normal: bool) -> torch.Tensor:  # (K,) mean cross-entropy per member
            z = logits(net, points).view(k, per_member)
            return F.binary_cross_entropy_with_logits(z, torch.full_like(z, float(normal)), reduction="none").mean(1)

        loss = ce(x, True)
        if steps[0].epoch < p["only_ce_epochs"] or per_member < 2:  # as the solo loss: no search on a batch of one
            return loss
        shape = (per_member, *x.shape[1:])
        h = torch.cat([torch.randn(shape, generator=step.generator) for step in steps]).to(x.device)  # each its own
        annulus = Annulus(self._value("radius", x.device), self._value("gamma", x.device))
        # DROCCMethod.search's call, for networks without BatchNorm (the stacked MLP has none to freeze)
        x_adv = adversarial_search(
            net, x, h, annulus, self._value("ascent_step_size", x.device), p["ascent_num_steps"], p["project_every"],
            p["precision"],
        )  # fmt: skip
        mu = self._value("mu", x.device)
        return loss + (mu.view(k) if isinstance(mu, torch.Tensor) else mu) * ce(x_adv, False)
