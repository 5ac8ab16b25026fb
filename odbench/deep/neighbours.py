"""Nearest-neighbour distances in bounded memory, on CPU or GPU.

The full ``(n_query, n_train)`` distance matrix of CIFAR-sized data does not
fit anywhere sensible (10,000 x 50,000 floats = 2 GB), so queries and
training points are taken in chunks: a chunk of ``q`` queries against ``t``
training points materialises one ``q x t`` float32 block (``torch.cdist``
makes about three such blocks internally), and a running minimum keeps only
``q`` numbers per query chunk.  ``t = min(n_train, 8192)`` (less if the budget is tiny) and
``q = max(1, budget_bytes // (4 * t * 4))``: with the default 256 MiB
budget that is 2048 queries against 8192 training points at a time.
The training set itself stays resident (float32, ``n_train x d``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

TRAIN_CHUNK = 8192
BUDGET_BYTES = 256 * 2**20
_BLOCKS = 4  # the result block plus cdist's temporaries, in float32 blocks


def chunk_sizes(n_train: int, budget_bytes: int = BUDGET_BYTES, train_chunk: int = TRAIN_CHUNK) -> tuple[int, int]:
    """(queries per chunk, training points per chunk) for a memory budget."""
    t = max(1, min(n_train, train_chunk, budget_bytes // (4 * _BLOCKS)))
    q = max(1, budget_bytes // (4 * t * _BLOCKS))
    return q, t


@torch.no_grad()
def nearest_distance(
    train: torch.Tensor,
    queries: np.ndarray,
    to_float: Callable[[np.ndarray], np.ndarray],
    budget_bytes: int = BUDGET_BYTES,
    train_chunk: int = TRAIN_CHUNK,
) -> np.ndarray:
    """Euclidean distance from each query to its nearest row of ``train``.

    ``train``: float32 ``(n, d)`` on the compute device.  ``queries``: any
    array of ``m`` examples, converted chunk by chunk with ``to_float`` and
    flattened to ``(m, d)`` (uint8 images are expanded only a chunk at a
    time).  Returns float64 ``(m,)``.
    """
    q, t = chunk_sizes(len(train), budget_bytes, train_chunk)
    out = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), q):
        block = to_float(queries[start : start + q]).reshape(min(q, len(queries) - start), -1)
        xq = torch.as_tensor(block, dtype=torch.float32, device=train.device)
        best = torch.full((len(xq),), float("inf"), device=train.device)
        for t0 in range(0, len(train), t):
            best = torch.minimum(best, torch.cdist(xq, train[t0 : t0 + t]).min(dim=1).values)
        out[start : start + len(xq)] = best.double().cpu().numpy()
    return out
