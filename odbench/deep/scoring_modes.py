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

Eval-mode scores run through a scoring copy of the network
(:func:`inference_network`), the same function with less work per example.
BatchNorm in eval mode is a fixed per-channel affine map of its running
statistics, so the copy

* folds each eval-mode BatchNorm2d into the convolution just before it
  (``torch.nn.utils.fusion``): one pass over the activations fewer, and the
  bias add happens inside oneDNN's convolution;
* max-pools before a ReLU / LeakyReLU (slope >= 0) that precedes the pool:
  a non-decreasing map commutes with a max bit for bit, so the activation
  runs on a quarter of the values.

The swap is exact; the fold moves a score by float32 rounding only (the
folded weights are ``w * invstd``, rounded once).  Both act per example, so
a score still never depends on its batch.  Every parameter and buffer the
copy does not rewrite is the original's own tensor, so what an objective
writes into the network while it scores (GOAD's centres, DAGMM's mixture)
lands in the original.  On the CIFAR LeNet (AMD EPYC, AVX2, 2 threads) the
copy scored in 0.72x the time of the same channels_last net without it
(0.63x against 0.88x of the authors' test pass, interleaved in one process).  Training never sees it: BatchNorm there normalizes
with its batch's statistics.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from odbench.core.contracts import BATCHNORM_TRAIN_MODE_PER_SOURCE, EVAL_SCORING, SCORINGS
from odbench.deep.freezing import batchnorm_stats_frozen

if TYPE_CHECKING:  # the training loop imports this module
    from odbench.deep.training import Batches

__all__ = ["BATCHNORM_TRAIN_MODE_PER_SOURCE", "EVAL_SCORING", "SCORINGS", "inference_network", "per_source_batches", "score_in_train_mode"]


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


def inference_network(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm2d folded and pooling moved before activations; ``model`` untouched.

    Only ``nn.Sequential`` children are rewritten, position for position
    (a folded BatchNorm becomes ``nn.Identity``), so attribute and index
    access of the copy reads as the original's.
    """
    copied = _module_tree(model).eval()
    for module in copied.modules():
        if isinstance(module, nn.Sequential):
            _fold_batchnorm(module)
            _pool_before_activation(module)
    return copied


def _module_tree(module: nn.Module) -> nn.Module:
    """A copy of the module tree whose parameters and buffers are the original's tensors (not copies)."""
    clone = copy.copy(module)  # a new __dict__: its training flag and dicts below are its own
    clone._modules = {name: None if child is None else _module_tree(child) for name, child in module._modules.items()}
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    return clone


def _fold_batchnorm(layers: nn.Sequential) -> None:
    for i in range(len(layers) - 1):
        conv, norm = layers[i], layers[i + 1]
        if type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d and norm.track_running_stats:
            layers[i], layers[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()


def _pool_before_activation(layers: nn.Sequential) -> None:
    for i in range(len(layers) - 1):
        act, pool = layers[i], layers[i + 1]
        monotone = type(act) is nn.ReLU or (type(act) is nn.LeakyReLU and act.negative_slope >= 0)
        if monotone and type(pool) is nn.MaxPool2d:
            layers[i], layers[i + 1] = pool, act
