"""A Gaussian mixture estimated from soft memberships, and its sample energy (DAGMM, Zong et al., ICLR 2018).

Given points ``z`` ``(N, D)`` and memberships ``gamma`` ``(N, K)`` (rows sum
to 1), the mixture's parameters are the membership-weighted moments

    phi_k = mean_i gamma_ik,   mu_k = sum_i gamma_ik z_i / sum_i gamma_ik,
    Sigma_k = sum_i gamma_ik (z_i - mu_k)(z_i - mu_k)^T / sum_i gamma_ik,

and a point's energy is its negative log-likelihood under the mixture,
``E(z) = -log sum_k phi_k N(z; mu_k, Sigma_k)``.  The math runs in float64
with Cholesky factors (the energy of a single point needs no inverse);
``eps`` is added to each covariance's diagonal, as reimplementations do for
stability (1e-3 in tnakae/DAGMM, after TensorFlow's GMM).
"""

from __future__ import annotations

import math

import torch


def mixture_parameters(z: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``phi`` ``(K,)``, ``mu`` ``(K, D)``, ``Sigma`` ``(K, D, D)`` from points and memberships (differentiable)."""
    z, gamma = z.double(), gamma.double()
    mass = gamma.sum(0)  # (K,)
    phi = mass / len(z)
    mu = gamma.T @ z / mass[:, None]
    centred = z[None] - mu[:, None]  # (K, N, D)
    sigma = torch.einsum("nk,kni,knj->kij", gamma, centred, centred) / mass[:, None, None]
    return phi, mu, sigma


def sample_energy(
    z: torch.Tensor, phi: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, eps: float
) -> torch.Tensor:
    """``-log sum_k phi_k N(z; mu_k, Sigma_k + eps I)`` for each row of ``z``: ``(N,)`` float64."""
    z = z.double()
    d = z.shape[1]
    chol = torch.linalg.cholesky(sigma.double() + eps * torch.eye(d, dtype=torch.float64, device=z.device))
    centred = (z[:, None] - mu.double()[None]).unsqueeze(-1)  # (N, K, D, 1)
    whitened = torch.linalg.solve_triangular(chol[None], centred, upper=False).squeeze(-1)
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    log_density = -0.5 * (whitened**2).sum(-1) - 0.5 * log_det - 0.5 * d * math.log(2 * math.pi)
    return -torch.logsumexp(torch.log(phi.double().clamp_min(1e-300)) + log_density, dim=1)


def diagonal_penalty(sigma: torch.Tensor, eps: float) -> torch.Tensor:
    """``sum_k sum_j 1 / Sigma_k,jj``: keeps a covariance from collapsing (DAGMM's P(Sigma))."""
    return (1.0 / (torch.diagonal(sigma, dim1=-2, dim2=-1) + eps)).sum()
