"""GEOM's Dirichlet normality score (Golan & El-Yaniv, NeurIPS 2018, Section 4).

For each transformation t, the softmax vectors the classifier outputs on the
transformed training images are modelled as draws from a Dirichlet(alpha_t),
fitted by maximum likelihood.  The authors' ``experiments.py``
(izikgo/AnomalyDetectionTransformations at 6327041) starts from Minka's
approximate precision and runs Minka's fixed-point iteration
``alpha <- psi^-1(psi(sum alpha) + mean log p)`` for at most 1000 steps,
which converges slowly when the fitted Dirichlet is concentrated.  The
log-likelihood is strictly concave in alpha, so its maximum is unique: here
Newton's method (Minka, "Estimating a Dirichlet distribution", 2000, whose
Hessian is a diagonal plus a constant and inverts in O(K)) reaches it from
the same start in tens of steps; a row whose Newton step would leave alpha
non-positive takes the fixed-point step instead.
A test image's normality is ``1/T sum_t sum_j (alpha_tj - 1) log p_tj``, its
mean log-density up to constants.  The paper's simplified score,
``1/T sum_t p_tt`` (the mean probability of the right transformation), is
the alternative (``methods/geom.py``).  All in float64.
"""

from __future__ import annotations

import math

import torch

#: -psi(1), the Euler-Mascheroni constant
_EULER = 0.5772156649015329


def inverse_digamma(y: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """``x`` with ``digamma(x) = y``, by Newton's method from Minka's starting point."""
    x = torch.where(y >= -2.22, torch.exp(y) + 0.5, -1.0 / (y + _EULER))
    for _ in range(iterations):
        x = x - (torch.digamma(x) - y) / torch.polygamma(1, x)
    return x


def fit_dirichlet(log_p: torch.Tensor, max_iter: int = 1000, tol: float = 1e-10) -> torch.Tensor:
    """Maximum-likelihood alpha ``(..., K)`` of Dirichlet draws given as log-probabilities ``(N, ..., K)``.

    ``tol``: the largest relative change of an alpha at which the iteration stops.
    """
    log_p = log_p.double()
    mean_log = log_p.mean(0)
    f = log_p.exp().mean(0)
    k = log_p.shape[-1]
    # Minka's estimate of the precision sum(alpha) from the mean and the mean log
    precision = (k - 1) * _EULER / (f * (f.log() - mean_log)).sum(-1, keepdim=True)
    alpha = f * precision
    for _ in range(max_iter):
        total = alpha.sum(-1, keepdim=True)
        gradient = torch.digamma(total) - torch.digamma(alpha) + mean_log
        q = -torch.polygamma(1, alpha)  # the Hessian's diagonal part; z its constant part
        z = torch.polygamma(1, total)
        b = (gradient / q).sum(-1, keepdim=True) / (1.0 / z + (1.0 / q).sum(-1, keepdim=True))
        newton = alpha - (gradient - b) / q
        fixed_point = inverse_digamma(torch.digamma(total) + mean_log)
        updated = torch.where((newton > 0).all(-1, keepdim=True), newton, fixed_point)
        change = float(((updated - alpha).abs() / alpha).max())
        alpha = updated
        if change < tol or not math.isfinite(change):
            break
    return alpha


def dirichlet_normality(alpha: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``mean_t sum_j (alpha_tj - 1) log p_tj`` for ``log_p`` ``(N, T, K)`` and ``alpha`` ``(T, K)``: ``(N,)``."""
    return ((alpha - 1.0) * log_p).sum(-1).mean(-1)
