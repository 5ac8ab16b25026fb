"""The hypersphere that DeepSVDD and DeepSAD map normal data into.

:class:`Hypersphere` wraps a bias-free encoder and keeps the centre ``c`` and
the radius ``R`` as buffers, so the state the training loop restores at the
selected epoch carries them with the weights.  The centre is the mean
embedding of the training normals from a forward pass before training, with
Ruff et al.'s guard: coordinates closer to zero than ``eps`` are pushed to
``±eps``, because a zero centre is trivially reached by a network that
outputs zeros (with bias terms, by any network: hence ``bias=False``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from odbench.deep.training import Batches

CENTRE_EPS = 0.1  # the reference code's eps

#: representation sizes of the references (CIFAR LeNet 128, MNIST LeNet 32)
_REP_DIM = {"lenet_cifar": 128, "lenet_cifar_bn": 128, "lenet_mnist": 32}


def default_rep_dim(backbone: str) -> int:
    """The reference's embedding size for ``backbone`` (32 where it has none)."""
    return _REP_DIM.get(backbone, 32)


class Hypersphere(nn.Module):
    """``encoder`` (examples -> ``rep_dim`` features) plus buffers ``c`` and ``R``."""

    c: torch.Tensor  # buffers, registered in __init__
    R: torch.Tensor

    def __init__(self, encoder: nn.Module, rep_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("c", torch.zeros(rep_dim))
        self.register_buffer("R", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def dist(self, x: torch.Tensor) -> torch.Tensor:
        """Squared distance ``||phi(x) - c||^2`` of each example, shape ``(n,)``."""
        return torch.sum((self.encoder(x) - self.c) ** 2, dim=1)


def _normal_batches(data: Batches, batch_size: int):
    for xb, yb in data.iterate(batch_size):
        yield xb if yb is None else xb[yb == 0]


def guard_centre(c: torch.Tensor, eps: float = CENTRE_EPS) -> torch.Tensor:
    """``c`` with every coordinate of magnitude below ``eps`` set to ``±eps``.

    Exact zeros go to ``+eps`` (the reference leaves them at 0, which would
    let a centre coordinate stay trivially reachable).
    """
    small = c.abs() < eps
    return torch.where(small, torch.where(c < 0, -eps, eps).to(c.dtype), c)


@torch.no_grad()
def init_centre(model: Hypersphere, data: Batches, eps: float = CENTRE_EPS, batch_size: int = 1024) -> torch.Tensor:
    """Set ``model.c`` to the guarded mean embedding of the normals in ``data``.

    Eval mode, as in the reference (``net.eval()`` in ``init_center_c``);
    rows labelled 1 (DeepSAD's labelled anomalies) are left out.
    """
    was_training = model.training
    model.eval()
    total, count = torch.zeros_like(model.c), 0
    for xb in _normal_batches(data, batch_size):
        total += model.encoder(xb).sum(dim=0).to(total.dtype)
        count += len(xb)
    if count == 0:
        raise ValueError("no normal training points to place the hypersphere centre")
    model.c.copy_(guard_centre(total / count, eps))
    model.train(was_training)
    return model.c


@torch.no_grad()
def normal_distances(model: Hypersphere, data: Batches, batch_size: int = 1024) -> torch.Tensor:
    """Eval-mode distances ``||phi(x) - c||`` (not squared) of the normals in ``data``."""
    was_training = model.training
    model.eval()
    out = torch.cat([model.dist(xb) for xb in _normal_batches(data, batch_size)])
    model.train(was_training)
    return out.clamp_min(0).sqrt()


def fit_radius(model: Hypersphere, data: Batches, nu: float) -> float:
    """Set ``model.R`` to the ``(1 - nu)``-quantile of the normals' distances.

    The soft-boundary update of the reference (``get_radius``): a fraction
    ``nu`` of the training points lies outside the sphere.
    """
    distances = normal_distances(model, data).double().cpu().numpy()
    radius = float(np.quantile(distances, 1.0 - nu))
    model.R.fill_(radius)
    return radius
