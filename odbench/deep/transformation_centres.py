"""GOAD's open-set transformation classifier for tabular data (Bergman & Hoshen, ICLR 2020).

``M`` fixed random affine maps ``T(x, m) = x W_m`` (``W_m`` a ``d x r`` matrix
of N(0, 1) entries, bias 0 as in the paper's Section 5.2) turn one example into
``M`` views; one feature map ``f`` shared by all views embeds each, and a
linear head classifies which map was applied.  Training pulls each view's
features towards the centre of its own map and pushes them from the nearest
other centre (the centre triplet loss); the anomaly score is the negative
log-likelihood that every view is recognised, with ``P(m' | T(x, m))`` the
softmax over negative squared distances to the centres ``c_m`` (the mean
feature of ``T(x, m)`` in training; ``methods/goad.py`` says how it is taken).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TransformationClassifier(nn.Module):
    """The random maps, the shared feature map ``f`` and the transformation classifier.

    ``f``: ``layers`` bias-free linear layers of ``hidden`` units with
    LeakyReLU(0.2) between them and after the last (the authors' ``netC1`` is
    one layer, their KDD ``netC5`` five); the head: a linear layer to ``M``
    logits.  The last activation belongs to ``f`` because the authors' head
    starts with an *in-place* LeakyReLU, which overwrites the trunk output
    their triplet loss, centres and score then read.  (Without it, a linear
    ``f`` on standardized data has mean feature zero for every map.)
    Layers keep PyTorch's default initialisation, as the authors' do: their
    ``weights_init`` is called on the network object, not applied to its
    layers, so it initialises nothing.  ``centres`` is a buffer.
    """

    maps: torch.Tensor  # (M, d, r), fixed
    centres: torch.Tensor  # (M, hidden)
    mean: torch.Tensor  # (d,), the training data's: inputs are z-scored before the maps
    std: torch.Tensor

    def __init__(
        self, d: int, n_transforms: int, transform_dim: int, hidden: int, layers: int, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.register_buffer("maps", torch.randn(n_transforms, d, transform_dim, generator=generator))
        widths = [transform_dim] + [hidden] * layers
        trunk: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            trunk += [nn.Linear(a, b, bias=False), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*trunk)
        self.head = nn.Linear(hidden, n_transforms)
        self.register_buffer("centres", torch.zeros(n_transforms, hidden))
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))

    def fit_scaling(self, X: torch.Tensor) -> None:
        """z-score inputs by ``X``'s mean and std from now on (a constant feature keeps std 1), as the
        authors' ``norm_data`` does; the identity on data odbench's protocols already standardized."""
        X = X.flatten(1)
        std = X.std(0, unbiased=False)
        self.mean.copy_(X.mean(0))
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    @property
    def n_transforms(self) -> int:
        return int(self.maps.shape[0])

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, d)`` -> ``(n, M, r)``: every example under every map."""
        x = (x.flatten(1) - self.mean) / self.std
        return torch.einsum("nd,mdr->nmr", x, self.maps.to(x.dtype))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(n, M, hidden)`` and transformation logits ``(n, M, M)``."""
        z = self.features(self.views(x))
        return z, self.head(z)


def squared_distances(z: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``||z[i, m] - centres[m']||^2`` for ``z`` ``(n, M, h)`` and ``centres`` ``(M, h)``: ``(n, M, M)``."""
    cross = torch.einsum("nmh,kh->nmk", z, centres)
    return ((z * z).sum(-1, keepdim=True) - 2 * cross + (centres * centres).sum(-1)).clamp_min(0)


def centre_triplet_loss(z: torch.Tensor, margin: float) -> torch.Tensor:
    """``mean max(0, ||z_m - c_m||^2 + margin - min_{m' != m} ||z_m - c_m'||^2)`` with the batch's centres.

    As in the authors' ``tc_loss``, the centres are the batch means (with
    their gradient).
    """
    dist = squared_distances(z, z.mean(0))
    own = torch.diagonal(dist, dim1=1, dim2=2)
    others = dist.masked_fill(torch.eye(z.shape[1], dtype=torch.bool, device=z.device), float("inf"))
    return F.relu(own + margin - others.min(-1).values).mean()


def transformation_nll(z: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """GOAD's score ``-sum_m log P(m | T(x, m))``, ``P`` the softmax of ``-||f(T(x, m)) - c_m'||^2`` over ``m'``: ``(n,)``."""
    log_p = F.log_softmax(-squared_distances(z, centres), dim=-1)
    return -torch.diagonal(log_p, dim1=1, dim2=2).sum(-1)
