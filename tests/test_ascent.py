"""DROCC's adversarial search (``odbench.drocc.ascent``): where its points land, on every path the search takes."""

from __future__ import annotations

import pytest
import torch

from odbench.deep import nets
from odbench.deep.stacked import StackedNet
from odbench.drocc.ascent import adversarial_search
from odbench.drocc.projections import Annulus

RADIUS, GAMMA = 0.5, 3.0  # gamma r = 1.5: an upper bound of gamma (3) or r (0.5) alone lands elsewhere


def _members(k: int) -> list[torch.nn.Module]:
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(nets.build("mlp", (4,), out_dim=1, hidden=8))
    return models


def _lengths(found: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (found - x).flatten(1).norm(dim=1)


@pytest.mark.parametrize("path", ["rows", "stacked columns", "stacked columns, a radius per member"])
def test_the_search_ends_on_the_annulus_between_r_and_gamma_r(path: str) -> None:
    """Large steps carry the offsets far out: the last projection must bring them back to gamma r, never beyond.

    (An offset where the network is flat, a dead ReLU region, does not move
    and may stay inside the annulus.)  Offsets projected without a step
    that start short are pushed out to r.
    """
    k, b = 2, 64
    x = torch.randn(k * b, 4, generator=torch.Generator().manual_seed(0))
    h = torch.randn(k * b, 4, generator=torch.Generator().manual_seed(1))
    radius: float | torch.Tensor = RADIUS
    if path == "rows":
        model: torch.nn.Module = _members(1)[0]
    else:
        stacked = StackedNet.of(_members(k))
        assert stacked is not None and stacked.relu_mlp  # the closed-form search in feature-major columns
        model = stacked
        if path.endswith("per member"):
            radius = torch.tensor([RADIUS, 4 * RADIUS])  # never 1: there gamma r is gamma
    found = adversarial_search(model, x, h, Annulus(radius, GAMMA), 10.0, 5, project_every=5)
    lengths = _lengths(found, x).view(k, b)
    radii = radius if isinstance(radius, torch.Tensor) else torch.full((k,), RADIUS)
    for member in range(k):
        upper = GAMMA * float(radii[member])
        # offsets moved by 50 (five steps of 10) were pulled in onto the outer sphere; none is left outside it
        assert float(lengths[member].max()) <= upper * (1 + 1e-5)
        assert float(lengths[member].min()) >= float(radii[member]) * (1 - 1e-5)
        assert int(torch.isclose(lengths[member], torch.tensor(upper), rtol=1e-5).sum()) >= 0.9 * b
    # and the inner bound: offsets projected without a step (DROCC-Rand) that start short are pushed out to r
    short = 0.01 * h
    rand = adversarial_search(model, x, short, Annulus(radius, GAMMA), 10.0, 0)
    lengths = _lengths(rand, x).view(k, b)
    for member in range(k):
        torch.testing.assert_close(lengths[member], torch.full((b,), float(radii[member])), rtol=1e-5, atol=1e-5)
