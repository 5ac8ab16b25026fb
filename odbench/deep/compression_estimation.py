"""DAGMM's two networks (Zong et al., ICLR 2018, Sections 3 and 4.3).

The compression network is a tanh autoencoder; a point's low-dimensional
representation is its code ``z_c`` joined with two reconstruction features,
the relative Euclidean distance ``||x - x'|| / ||x||`` and the cosine
similarity ``x . x' / (||x|| ||x'||)``.  The estimation network maps that
representation to soft memberships of the mixture's K components
(tanh hidden layer, dropout, softmax).  The mixture fitted to the training
set is kept in buffers (``phi``, ``mu``, ``sigma``) for scoring.

Inputs may first be mapped to [0, 1] per feature by the training set's range
(buffers ``low``, ``span``; identity until :meth:`CompressionEstimation.fit_range`
sets them): on standardized data many points sit near the origin, where
``||x - x'|| / ||x||`` explodes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: guards the reconstruction features against a zero vector (a standardized point can sit at the origin)
_NORM_EPS = 1e-8


def _tanh_stack(sizes: list[int]) -> nn.Sequential:
    """Linear layers through ``sizes``, tanh after every one but the last (the paper's FC(a, b, tanh) ... FC(., ., none))."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def reconstruction_features(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Relative Euclidean distance and cosine similarity of each row and its reconstruction: ``(n, 2)``."""
    x, x_hat = x.flatten(1), x_hat.flatten(1)
    relative = (x - x_hat).norm(dim=1) / x.norm(dim=1).clamp_min(_NORM_EPS)
    cosine = F.cosine_similarity(x, x_hat, dim=1, eps=_NORM_EPS)
    return torch.stack([relative, cosine], dim=1)


class CompressionEstimation(nn.Module):
    """``forward(x)`` -> representation ``z`` ``(n, latent + 2)``, reconstruction ``x'``, memberships ``gamma`` ``(n, K)``."""

    low: torch.Tensor
    span: torch.Tensor
    phi: torch.Tensor  # (K,) float64, the training set's mixture
    mu: torch.Tensor  # (K, latent + 2)
    sigma: torch.Tensor  # (K, latent + 2, latent + 2)

    def __init__(
        self, d: int, hidden: tuple[int, ...], latent: int, estimation_hidden: int, n_components: int, dropout: float
    ) -> None:
        super().__init__()
        self.encoder = _tanh_stack([d, *hidden, latent])
        self.decoder = _tanh_stack([latent, *reversed(hidden), d])
        z_dim = latent + 2
        self.estimation = nn.Sequential(
            nn.Linear(z_dim, estimation_hidden),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(estimation_hidden, n_components),
        )
        self.register_buffer("low", torch.zeros(d))
        self.register_buffer("span", torch.ones(d))
        self.register_buffer("phi", torch.full((n_components,), 1.0 / n_components, dtype=torch.float64))
        self.register_buffer("mu", torch.zeros(n_components, z_dim, dtype=torch.float64))
        self.register_buffer("sigma", torch.eye(z_dim, dtype=torch.float64).repeat(n_components, 1, 1))

    def fit_range(self, X: torch.Tensor) -> None:
        """Map each feature's training range to [0, 1] from now on (a constant feature maps to 0)."""
        X = X.flatten(1)
        low, high = X.min(0).values, X.max(0).values
        self.low.copy_(low)
        self.span.copy_(torch.where(high > low, high - low, torch.ones_like(high)))

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """The input the autoencoder sees (and reconstructs)."""
        return (x.flatten(1) - self.low) / self.span

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.scaled(x)
        code = self.encoder(x)
        x_hat = self.decoder(code)
        z = torch.cat([code, reconstruction_features(x, x_hat)], dim=1)
        return z, x_hat, F.softmax(self.estimation(z), dim=1)
