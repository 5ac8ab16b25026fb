"""GEOM's 72 geometric transformations of an image (Golan & El-Yaniv, NeurIPS 2018, Section 5.1).

Every combination of a horizontal flip (no / yes), a translation along each
axis (0, -s, +s pixels) and a rotation by k * 90 degrees (k = 0..3), applied
in that order, in the authors' enumeration order (``transformations.py`` of
github.com/izikgo/AnomalyDetectionTransformations at 6327041:
``itertools.product((False, True), (0, -s, s), (0, -s, s), range(4))``).
Translations fill the uncovered border by reflection about the edge
(``d c b a | a b c d``, Keras' ``fill_mode='reflect'``, i.e. scipy.ndimage's
``'reflect'``).  Images are ``(N, C, H, W)`` and square (rotations keep the shape).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch


class Geometric(NamedTuple):
    flip: bool
    shift_rows: int  # the authors' tx: output row r shows input row r + tx
    shift_cols: int  # the authors' ty
    quarter_turns: int  # counter-clockwise, as np.rot90 / torch.rot90


def transformations(shift: int) -> list[Geometric]:
    """The 72 transformations for translations of ``shift`` pixels, in the authors' order."""
    return [Geometric(*t) for t in itertools.product((False, True), (0, -shift, shift), (0, -shift, shift), range(4))]


def _reflect(index: torch.Tensor, n: int) -> torch.Tensor:
    """Half-sample symmetric reflection of out-of-range indices into ``0..n-1``."""
    index = index % (2 * n)
    return torch.where(index >= n, 2 * n - 1 - index, index)


def apply(x: torch.Tensor, t: Geometric) -> torch.Tensor:
    """``t`` applied to every image of ``x`` ``(N, C, H, W)``."""
    if x.shape[-1] != x.shape[-2] and t.quarter_turns % 2:
        raise ValueError(f"rotating by 90 degrees needs square images; got {tuple(x.shape[-2:])}")
    if t.flip:
        x = torch.flip(x, dims=(-1,))
    if t.shift_rows or t.shift_cols:
        h, w = x.shape[-2:]
        rows = _reflect(torch.arange(h, device=x.device) + t.shift_rows, h)
        cols = _reflect(torch.arange(w, device=x.device) + t.shift_cols, w)
        x = x[..., rows, :][..., cols]
    if t.quarter_turns:
        x = torch.rot90(x, t.quarter_turns, dims=(-2, -1))
    return x


def all_views(x: torch.Tensor, shift: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, T, C, H, W)``: every image under every transformation (T = 72)."""
    return torch.stack([apply(x, t) for t in transformations(shift)], dim=1)
