"""Deterministic image augmentation for datasets that ship augmented copies.

The paper's Table 4 compares GEOM and DROCC on CIFAR-10 "flipped and
rotated by a small angle of +-30 degrees", to mimic normal data captured
from several orientations.  :func:`flip_rotate` makes one such copy of
every image, reproducibly from a seed.
"""

from __future__ import annotations

import numpy as np


def flip_rotate(
    images: np.ndarray, rng: np.random.Generator, max_degrees: float = 30.0, flip_probability: float = 0.5,
    batch: int = 4096,
) -> np.ndarray:
    """Each image mirrored left-right with ``flip_probability``, then rotated.

    ``images``: uint8 ``(N, C, H, W)``.  The angle is uniform in
    ``[-max_degrees, max_degrees]`` about the image centre; bilinear
    resampling, and corners that rotate in from outside reflect the image
    rather than turn black (black corners would be a trivial cue shared
    by every augmented image).  Returns uint8 of the same shape; the draws
    depend only on ``rng``.
    """
    import torch
    import torch.nn.functional as F

    n = len(images)
    flips = rng.random(n) < flip_probability
    angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=n))
    out = np.empty_like(images)
    for start in range(0, n, batch):
        sl = slice(start, start + batch)
        x = torch.from_numpy(images[sl].astype(np.float32))
        x = torch.where(torch.from_numpy(flips[sl])[:, None, None, None], x.flip(-1), x)
        cos, sin = np.cos(angles[sl]), np.sin(angles[sl])
        theta = torch.tensor(np.stack([np.stack([cos, -sin, 0 * cos], 1), np.stack([sin, cos, 0 * cos], 1)], 1),
                             dtype=torch.float32)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        y = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out[sl] = y.round().clamp(0, 255).to(torch.uint8).numpy()
    return out
