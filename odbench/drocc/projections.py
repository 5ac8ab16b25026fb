"""Projections of DROCC's offsets onto the set ``N(r)`` of allowed negatives.

* DROCC / DROCC-OE: the Euclidean annulus ``r <= ||h||_2 <= gamma r``
  (:func:`annulus_project`, closed form);
* DROCC-LF: the Mahalanobis-type annulus ``r <= ||h||_Sigma <= gamma r``
  with ``||h||_Sigma^2 = sum_j sigma_j h_j^2`` (:func:`mahalanobis_project`,
  the paper's Proposition 1: a one-dimensional root per example, found by a
  safeguarded Newton iteration run on the whole batch at once).

Everything works on whole batches; nothing loops over examples in Python."""

from __future__ import annotations

from dataclasses import dataclass

import torch

_TINY = 1e-12


def _row_norms(h: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each example, shaped to broadcast against ``h``."""
    # linalg's norm: Tensor.norm's Python wrapper costs more than the kernel on a table's rows
    norms = torch.linalg.vector_norm(h.flatten(1), dim=1)
    return norms.view(-1, *([1] * (h.dim() - 1)))


def annulus_project(h: torch.Tensor, radius: float, gamma: float) -> torch.Tensor:
    """Nearest point of ``{r <= ||h|| <= gamma r}`` for each example of ``h``.

    ``h``: (B, *shape) offsets from the normal points.  Each row is rescaled
    to norm ``clamp(||h||, r, gamma r)`` (paper §3, step 3 of Algorithm 1);
    rows already inside the annulus are returned unchanged.  A row that is
    exactly zero has no direction and stays zero.
    """
    norms = _row_norms(h)
    target = norms.clamp(radius, gamma * radius)
    return h * (target / norms.clamp_min(_TINY))


class ProjectionTally:
    """How often the projection onto ``N(r)`` moved an offset, summed over every projection of a fit.

    ``below``: offsets shorter than r (pushed out to r); ``inside``: already
    in the annulus (left alone); ``above``: longer than gamma r (pulled in).
    With DROCC-LF the lengths are ``||h||_Sigma``.  Counts stay on the
    device until read, so counting never waits for a GPU.
    """

    def __init__(self) -> None:
        self._counts: torch.Tensor | None = None

    def observe(self, norms: torch.Tensor, radius: float, gamma: float) -> None:
        """Count the offsets whose lengths ``norms`` are about to be projected."""
        norms = norms.detach().reshape(-1)
        below = (norms < radius).sum()
        above = (norms > gamma * radius).sum()
        counts = torch.stack([below, norms.numel() - below - above, above])
        self._counts = counts if self._counts is None else self._counts + counts

    def as_record(self) -> dict[str, int | float]:
        below, inside, above = (0, 0, 0) if self._counts is None else (int(v) for v in self._counts.tolist())
        total = below + inside + above
        return {
            "below_r": below, "inside": inside, "above_gamma_r": above, "total": total,
            "moved_share": (below + above) / total if total else 0.0,
        }  # fmt: skip


@dataclass(frozen=True)
class Annulus:
    """``N(r)`` of DROCC and DROCC-OE as a value: calling it is :func:`annulus_project`.

    A value rather than a closure, so that a search keeping its offsets in
    another layout (the stacked MLP's feature-major columns,
    ``odbench.drocc.ascent``) can recognise it and project there.  The
    radius and gamma may also be one per member of a group, as (K,) tensors
    (tuning trials of other radii training together): rows are then the
    members' offsets one after another, ``(K * B, *shape)``.
    """

    radius: float | torch.Tensor
    gamma: float | torch.Tensor

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if isinstance(self.radius, torch.Tensor) or isinstance(self.gamma, torch.Tensor):
            members = next(len(v) for v in (self.radius, self.gamma) if isinstance(v, torch.Tensor))
            per_member = h.reshape(members, len(h) // members, -1).transpose(1, 2)  # (K, d, B), as columns
            return self.project_columns_(per_member.clone()).transpose(1, 2).reshape(h.shape)
        return annulus_project(h, self.radius, self.gamma)

    def project_columns_(self, h: torch.Tensor) -> torch.Tensor:
        """:func:`annulus_project` in place on feature-major offsets (K, d, B), where ``h[k, :, b]`` is one example."""
        norms = column_norms(h)
        radius, gamma = self.radius, self.gamma
        if isinstance(radius, torch.Tensor) or isinstance(gamma, torch.Tensor):  # clamp takes two tensors or two floats
            low = torch.as_tensor(radius, dtype=h.dtype, device=h.device).reshape(-1, 1, 1).expand(h.shape[0], 1, 1)
            high = low * (gamma.to(h.dtype).reshape(-1, 1, 1) if isinstance(gamma, torch.Tensor) else gamma)
            return h.mul_(norms.clamp(low, high).div_(norms.clamp_min(_TINY)))
        return h.mul_(norms.clamp(radius, gamma * radius).div_(norms.clamp_min(_TINY)))


def column_norms(h: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each column of ``h`` (K, d, B), shaped (K, 1, B)."""
    # vecdot: linalg's vector_norm over a middle axis of a few features costs ~40x more on the CPU
    return torch.linalg.vecdot(h, h, dim=1).sqrt_().unsqueeze(1)


def mahalanobis_norm(h: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``||h||_Sigma = sqrt(sum_j sigma_j h_j^2)`` per row; h (B, d), sigma (d,) or (B, d)."""
    return (sigma * h * h).sum(-1).clamp_min(0).sqrt()


def mahalanobis_project(
    delta: torch.Tensor,
    sigma: torch.Tensor,
    radius: float,
    gamma: float,
    tol: float | None = None,
    max_iter: int = 50,
) -> torch.Tensor:
    """Proposition 1: nearest ``u`` to ``delta`` with ``r <= ||u||_Sigma <= gamma r``.

    ``delta``: (B, d) offsets ``z - x``; ``sigma``: (d,) (shared by all rows,
    DROCC-LF's per-epoch sigma) or (B, d), >= 0.  Returns (B, d) offsets in
    the input's dtype; rows already feasible are returned unchanged.
    Otherwise ``u = (I + tau Sigma)^{-1} delta`` (``tau = 1/nu`` in the
    paper's outside case), with ``tau`` the root of ``g(tau) = target``,

        g(tau) = ||u(tau)||_Sigma^2 = sum_j a_j / (1 + tau sigma_j)^2,   a_j = sigma_j delta_j^2,

    ``target = r^2`` inside (``||delta||_Sigma < r``; root in
    ``(-1/max sigma, 0)``) and ``(gamma r)^2`` outside (root ``> 0``: the
    paper's ``nu`` range).  ``g`` decreases on ``(-1/max sigma, inf)`` and
    the distance to ``delta`` grows with ``|tau|``, so the root is the
    optimum (the paper's argument).  It is found per row by a safeguarded
    Newton iteration (:func:`_secular_root`) run on all rows at once, in
    float64 for float64 input and float32 otherwise, to a relative accuracy
    ``tol`` on every coordinate of ``u`` (default 16 ulps); a handful of
    (B, d) passes replace the reference's per-example loop over random
    samples.  Finally a row that rounding (or the degenerate case where
    ``delta`` has no component on the coordinates of largest sigma and no
    ``tau`` reaches ``r``) left across its boundary is scaled
    onto the annulus, 4 ulps inside.  It works in ~100 small elementwise
    passes, so it gains little from threads: the thread count is the
    worker's, set once by the executor, never changed here.
    """
    work = torch.float64 if delta.dtype == torch.float64 else torch.float32
    eps = torch.finfo(work).eps
    tol = 16 * eps if tol is None else tol
    d = delta.to(work)
    s = sigma.to(work)
    shared = s.dim() == 1
    a = torch.mul(d, d).mul_(s)  # (B, d); big tensors are made in place: each fresh one costs page faults
    norm2 = a.sum(1)
    r2, g2 = radius**2, (gamma * radius) ** 2
    inside, outside = norm2 < r2, norm2 > g2
    active = inside | outside
    n_active = int(active.sum())
    if n_active == 0:
        return delta.clone()
    rows = None
    if n_active < len(d):  # work on the rows off the annulus only
        rows = torch.nonzero(active).squeeze(1)
        d, a, norm2, inside = (t.index_select(0, rows) for t in (d, a, norm2, inside))
        s = s if shared else s.index_select(0, rows)
    smax, top = s.max(-1, keepdim=True)  # (1,) or (n, 1)
    smax = smax.clamp_min(_TINY)
    # x = tau + 1 / max sigma, the distance to the pole, keeps its relative precision where inside
    # roots crowd against the pole: 1 + tau sigma_j = c_j + x sigma_j with c_j = 1 - sigma_j / max sigma
    c = torch.sub(smax, s).div_(smax)
    x, g = _secular_root(a, s, c, smax.expand(len(d), 1).squeeze(1), top, norm2, inside, r2, g2, tol, max_iter)
    # scale a row that rounding left just across its boundary 4 ulps inside
    slack = 4 * eps
    g = g.clamp_min(_TINY)  # a zero row stays zero
    scale = torch.where(inside, (r2 * (1 + slack) / g).clamp_min(1.0), (g2 * (1 - slack) / g).clamp_max(1.0)).sqrt()
    # u = delta / (1 + tau sigma) * scale, in a's memory
    u = torch.addcmul(c, x[:, None], s, out=a).reciprocal_().mul_(scale[:, None]).mul_(d).to(delta.dtype)
    if rows is None:
        return u
    out = delta.clone()
    out[rows] = u
    return out


def _secular_root(
    a: torch.Tensor,
    s: torch.Tensor,
    c: torch.Tensor,
    smax: torch.Tensor,
    top: torch.Tensor,
    norm2: torch.Tensor,
    inside: torch.Tensor,
    r2: float,
    g2: float,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the root ``x = tau + 1/max s`` of ``g = target``, and ``g`` evaluated there.

    ``g(x) = sum_j a_j / (c_j + x s_j)^2`` (see :func:`mahalanobis_project`);
    ``a``: (n, d) >= 0; ``s``, ``c = 1 - s / max s``: (d,) or (n, d);
    ``smax``: (n,); ``top``: (1,) or (n, 1), where ``s`` is largest; ``norm2 = a.sum(1)`` (``g`` at ``tau = 0``); ``inside``:
    (n,) True where the target is ``r2`` (``x < 1/max s``), else ``g2``.
    Returns (n,) ``x`` and ``g(x)`` in ``a``'s dtype.

    Newton on ``psi = g^(-1/2)`` (Moré and Sorensen's trick for the
    trust-region secular equation, which ``g`` is, with eigenvalues
    ``1/s_j``): ``psi`` is concave and increasing in ``x > 0`` and nearly
    linear near the pole ``x = 0``, where ``psi = 0`` unless ``a`` vanishes
    at the largest ``s``.  From a "left" point (``g >= target``) a Newton
    step lands on another left point, nearer the root, so left iterates
    climb monotonically; from a "right" point it may overshoot past the
    known left points, and then the chord from the pole through
    ``(x, psi(x))`` is taken instead: it lies below ``psi``, so it crosses
    the goal right of the root, and nearer.  The start is the best left
    point known: the Newton step from ``tau = 0`` (also the root of Jensen's
    bound ``g >= norm2 / (1 + tau sbar)^2``, ``sbar`` the ``a``-weighted mean
    of ``s``), the root of ``g >= a_top / (1 + tau max s)^2`` (inside) or of
    ``g >= norm2 / (1 + tau max s)^2`` (outside).  (A start from a table of
    ``g`` and ``g'`` on a geometric grid of ``x``, one (n, d) @ (d, 32)
    matmul for a shared ``s``, was tried: it saved about one iteration and
    cost about as much on a 256 x 784 batch, so it is not used.)
    A row stops when its next step would move every ``u_j`` by less than
    ``tol`` relative (``|dx| / x``), or when rounding stalls it; rows that
    stop are gathered out once a quarter of those left have.
    """
    work = a.dtype
    shared = s.dim() == 1
    goal = torch.where(inside, torch.tensor(r2**-0.5, dtype=work), torch.tensor(g2**-0.5, dtype=work))  # psi at the root
    a_top = (a[:, top] if shared else a.gather(1, top)).squeeze(1)  # a at the largest s
    q0 = a @ s if shared else torch.linalg.vecdot(a, s)  # -g'/2 at tau = 0
    norm_goal = norm2.sqrt() * goal
    # known right points (g <= target): inside, the chord from the pole through tau = 0; outside, none
    hi = torch.where(inside, norm_goal / smax, torch.inf)
    lo = torch.where(inside, a_top.sqrt() * goal, norm_goal) / smax
    lo = torch.maximum(lo, norm2 * (norm_goal - 1.0) / q0.clamp_min(_TINY) + 1.0 / smax)
    x = torch.where(lo > 0, lo, hi)  # inside, with no left point but the pole: start right
    x_out, g_out = torch.empty_like(x), torch.empty_like(x)
    idx = torch.arange(len(a), device=a.device)
    w_buf, p_buf = torch.empty_like(a), torch.empty_like(a)
    for it in range(max_iter):
        n = len(x)
        w = torch.addcmul(c, x[:, None], s, out=w_buf[:n]).reciprocal_()  # 1 / (1 + tau s)
        p = torch.mul(w, w, out=p_buf[:n]).mul_(a)
        g = p.sum(1)
        p.mul_(w)
        q = p @ s if shared else torch.linalg.vecdot(p, s)  # -g'/2
        root_g = g.sqrt()
        step = g * (goal * root_g - 1.0) / q.clamp_min(_TINY)  # (goal - psi) / psi'
        left = step >= 0
        lo = torch.where(left, x, lo)  # left points only move right
        hi = torch.where(left, hi, torch.minimum(hi, x))
        newton = x + step
        # done: the step moves every u_j = delta_j / (c_j + x s_j) by < tol relative (|dx| / x),
        # or rounding has closed the bracket or sent a left point's step to the right
        done = (step.abs() <= tol * x) | (hi - lo <= tol * x) | (left & (newton >= hi))
        n_done = int(done.sum()) if it < max_iter - 1 else len(x)
        if n_done == len(x):
            x_out[idx], g_out[idx] = x, g
            return x_out, g_out
        # a right point's step past the left points: the chord from the pole instead
        x = torch.where(done, x, torch.where(newton > lo, newton, x * (goal * root_g)))
        if n_done * 4 >= len(x):  # gather the rows still running
            fin = torch.nonzero(done).squeeze(1)
            x_out[idx[fin]], g_out[idx[fin]] = x[fin], g[fin]
            keep = torch.nonzero(~done).squeeze(1)
            idx, x, lo, hi, goal, a = (t.index_select(0, keep) for t in (idx, x, lo, hi, goal, a))
            if not shared:
                s, c, smax = s.index_select(0, keep), c.index_select(0, keep), smax.index_select(0, keep)
    raise AssertionError("unreachable: the last iteration finishes every row")


