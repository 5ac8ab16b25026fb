"""Objectives whose score needs statistics of the training data under the current weights.

GOAD's transformation centres, DAGMM's mixture parameters and GEOM's
Dirichlet parameters are each defined by their paper over the whole training
set with the trained network.  An objective of this kind keeps a reference to
the training batches (handed to ``epoch_start``), marks its statistics stale
whenever a training step may have changed the weights, and refits them from
the training data before it scores, so a validation pass during training sees
the current network's statistics and a score never depends on the test batch.
"""

from __future__ import annotations

import torch

from odbench.deep.training import Batches, ModelT, Objective


class TrainingStatistics(Objective[ModelT]):
    """Base of the objectives above; subclasses implement :meth:`refit` and call :meth:`ready` in ``score``."""

    def __init__(self) -> None:
        self._train: Batches | None = None
        self._stale = True

    def epoch_start(self, model: ModelT, epoch: int, data: Batches) -> None:
        self._train = data
        self._stale = True

    def weights_changed(self) -> None:
        """Called from ``loss``: the optimizer step that follows changes the weights."""
        self._stale = True

    def refit(self, model: ModelT, data: Batches) -> None:
        """Set the statistics (buffers of ``model``) from every training point; eval mode, no gradients."""
        raise NotImplementedError

    def ready(self, model: ModelT) -> None:
        """Refit if the weights changed since the last fit."""
        if not self._stale:
            return
        if self._train is None:
            raise RuntimeError("the objective has no training data to fit its statistics on; train the model first")
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.refit(model, self._train)
        model.train(was_training)
        self._stale = False

    def finish(self, model: ModelT, data: Batches) -> None:
        """After training: fit the statistics of the network that was kept, then let go of the training data."""
        self._train, self._stale = data, True
        self.ready(model)
        self._train = None
