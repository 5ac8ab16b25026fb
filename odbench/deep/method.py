"""What every deep method plugin shares besides the training loop.

A plugin subclasses :class:`DeepMethod`, builds its network and objective in
``fit`` and hands them to :meth:`DeepMethod.train_model`; scoring
(``anomaly_score``) is inherited and runs in eval mode through
``odbench.deep.training.score_array``, so a point's score never depends on its
batch.  Parameters given to ``__init__`` override ``default_params``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from odbench.core.contracts import DataInfo, FitContext, Method, Task
from odbench.deep.training import Objective, TrainConfig, TrainResult, resolve_device, score_array, train

#: Optimisation settings every deep plugin shares (``TrainConfig`` fields).
COMMON_DEFAULTS: dict[str, Any] = {"epochs": 50, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-6}


class DeepMethod(Method):
    """Base of the neural plugins: parameter merging, seeding, scoring."""

    deep = True

    @classmethod
    def default_params(cls, info: DataInfo) -> dict[str, Any]:
        return {**COMMON_DEFAULTS, "backbone": info.backbone}

    def start(self, task: Task, ctx: FitContext) -> dict[str, Any]:
        """Merged parameters for this fit; seeds torch so weights are reproducible."""
        self.info_: DataInfo = task.info
        self.device_ = resolve_device(ctx.device)
        params = {**self.default_params(task.info), **self.params}
        self.config_ = TrainConfig.from_params(params)
        torch.manual_seed(ctx.seed)
        return params

    def train_model(
        self, model: nn.Module, objective: Objective, X: np.ndarray, y: np.ndarray | None, task: Task, ctx: FitContext
    ) -> TrainResult:
        """Train with the shared loop and keep what scoring needs."""
        self.model_, self.objective_ = model, objective
        self.result_ = train(model, objective, X, y, task, ctx, self.config_)
        return self.result_

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        cfg = self.config_
        return score_array(
            self.objective_, self.model_, X, self.info_, self.device_, cfg.eval_batch_size, cfg.precision
        )


def suggest_optimisation(trial: Any, lr: tuple[float, float] = (1e-5, 1e-2)) -> dict[str, Any]:
    """The optimiser part of a search space, shared by the deep plugins.

    Learning rate over three decades around Adam's usual 1e-3 / DeepSVDD's
    1e-4; weight decay from negligible (1e-7) to strong (1e-3); batch sizes
    the references use (DeepSVDD 128/200, DROCC 128/256).
    """
    return {
        "lr": trial.suggest_float("lr", *lr, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
    }
