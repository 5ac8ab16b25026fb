"""How a trained network's scores are read: eval mode (always, by default), or as an authors' test loop did.

odbench scores in eval mode: BatchNorm normalizes with its running
statistics, so a point's score never depends on which points share its
batch (``odbench.deep.training.score_array``).

The DROCC authors' OCLN script (EdgeML ``drocclf_trainer.py``, ``test()``)
never switches its network to eval mode.  BatchNorm then normalizes each
test batch by that batch's own statistics, and the script feeds the test
set in batches of one *source* each: the positives and far negatives in
their file order, then the close negatives alone, shuffled.  A batch made
only of close negatives is normalized against itself, which is what lets
that script separate them (``../shared/reference/edgeml-ocln-reference-run.md``:
recall at 3% FPR 98.4 that way, 0.0 in eval mode for the same network).

:data:`BATCHNORM_TRAIN_MODE_PER_SOURCE` reproduces that, and only an
experiment variant that states it may ask for it (``odbench reproduce
ocln-mnist --variant edgeml``); every record says which scoring ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from odbench.core.contracts import BATCHNORM_TRAIN_MODE_PER_SOURCE, EVAL_SCORING, SCORINGS
from odbench.deep.freezing import batchnorm_stats_frozen

if TYPE_CHECKING:  # the training loop imports this module
    from odbench.deep.training import Batches

__all__ = ["BATCHNORM_TRAIN_MODE_PER_SOURCE", "EVAL_SCORING", "SCORINGS", "per_source_batches", "score_in_train_mode"]


def per_source_batches(close: np.ndarray | None, batch_size: int, seed: int) -> list[np.ndarray]:
    """Row numbers of each batch as the authors' OCLN test loop forms them.

    The ordinary rows (positives and far negatives) in their order, cut into
    batches of ``batch_size`` (their unshuffled test loader); then the rows
    marked ``close`` in an order shuffled by ``seed``, in batches of their
    own (their shuffled close-negative loader).  ``close`` None: one source.
    """
    close = np.zeros(0, bool) if close is None else np.asarray(close, bool)
    ordinary = np.flatnonzero(~close)
    generated = np.random.default_rng(seed).permutation(np.flatnonzero(close))
    batches: list[np.ndarray] = []
    for rows in (ordinary, generated):
        cut = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
        if len(cut) > 1 and len(cut[-1]) == 1:  # BatchNorm cannot normalize a batch of one: fold it into the one before
            cut[-2:] = [np.concatenate(cut[-2:])]
        batches += cut
    return batches


def score_in_train_mode(
    score: Callable[[nn.Module, torch.Tensor], torch.Tensor], model: nn.Module, data: Batches, batches: list[np.ndarray]
) -> np.ndarray:
    """Scores of ``data``'s rows with BatchNorm on each batch's statistics; float64 in row order.

    The running statistics are left as they were (momentum 0 while this
    runs), so eval-mode scoring and later training are untouched; the
    network's mode is restored afterwards.
    """
    was_training = model.training
    out = np.empty(len(data), dtype=np.float64)
    model.train()
    try:
        with torch.inference_mode(), batchnorm_stats_frozen(model):
            for rows in batches:
                index = torch.as_tensor(rows, dtype=torch.long, device=data.device)
                values = score(model, data.as_input(data.X[index])).float().reshape(-1).cpu().numpy()
                out[rows] = values
    finally:
        model.train(was_training)
    return out
