"""What every deep method plugin shares besides the training loop.

A plugin subclasses :class:`DeepMethod`, builds its network and objective in
``fit`` and hands them to :meth:`DeepMethod.train_model`; scoring
(``anomaly_score``) is inherited and runs in eval mode through
``odbench.deep.training.score_array``, so a point's score never depends on its
batch.  ``Method`` resolves the parameters before ``fit`` runs: a plugin
reads ``self.params`` (its ``Params``) and ``self.runtime``
(:class:`DeepRuntime`: precision, memory layout, validation cadence,
scoring batch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from odbench.core.contracts import DataInfo, FitContext, FitTask, Method, Split
from odbench.core.params import param
from odbench.deep.precision import PRECISIONS, resolve_precision
from odbench.deep.training import Objective, TrainConfig, TrainResult, resolve_device, score_array, score_split, train


@dataclass
class DeepRuntime:
    """How a deep method computes, not what: engineering settings, set with ``--param`` and stated in the record.

    Precision, memory layout and the validation cadence change numbers (bf16
    rounds, NHWC convolutions sum in another order, the kept epoch is picked
    among fewer), so they stay in the job key; the scoring batch size cannot
    (a point's score never depends on its batch) and stays out of it.
    """

    precision: str = param(
        "fp32", "forward passes in fp32, under bfloat16 autocast (bf16), or bf16 for conv nets on native-bf16 hardware (auto)",
        choices=PRECISIONS,
    )  # fmt: skip
    memory_format: str = param(
        "contiguous", "conv weights NCHW, NHWC (channels_last), or NHWC on CPU only (auto)",
        choices=("contiguous", "channels_last", "auto"),
    )  # fmt: skip
    eval_every: int = param(1, "validation pass every N epochs", low=1)
    eval_batch_size: int = param(1024, "examples per scoring batch (scores do not depend on it)", low=1, keyed=False)


@dataclass
class DeepParams:
    """The optimisation settings every deep plugin shares (the ``TrainConfig`` fields) and its network."""

    Runtime: ClassVar[type] = DeepRuntime

    epochs: int = param(50, "training epochs", low=1)
    batch_size: int = param(128, "examples per training batch", low=1)
    lr: float = param(1e-3, "learning rate", low=0)
    optimizer: str = param("adam", "optimizer", choices=("adam", "sgd"))
    momentum: float = param(0.9, "SGD momentum (Adam ignores it)", low=0, high=1)
    weight_decay: float = param(1e-6, "L2 penalty on the weights", low=0)
    lr_steps: tuple[tuple[float, float], ...] = param((), "step schedule: (fraction of the epochs, lr multiplier) pairs")
    backbone: str = param(None, "network from odbench.deep.nets; None: the dataset's default")


class DeepMethod(Method):
    """Base of the neural plugins: parameters, seeding, scoring."""

    deep = True
    Params: ClassVar[type] = DeepParams

    @classmethod
    def data_defaults(cls, info: DataInfo) -> dict[str, Any]:
        return {"backbone": info.backbone}

    runtime: DeepRuntime

    def start(self, task: FitTask, ctx: FitContext) -> None:
        """Ready a fit of the resolved ``params``: device, training config; seeds torch so weights are reproducible."""
        self.info_: DataInfo = task.info
        self.device_ = resolve_device(ctx.device)
        self.config_ = TrainConfig.from_params(self.resolved_params())
        torch.manual_seed(ctx.seed)

    def settle_precision(self, model: nn.Module) -> str:
        """Resolve ``precision="auto"`` for ``model`` on this device, in ``runtime`` and ``config_`` (what ran)."""
        precision = resolve_precision(self.runtime.precision, model, self.device_)
        self.runtime.precision = self.config_.precision = precision
        return precision

    def train_model(
        self, model: nn.Module, objective: Objective, X: np.ndarray, y: np.ndarray | None, task: FitTask, ctx: FitContext
    ) -> TrainResult:
        """Train with the shared loop and keep what scoring needs."""
        self.settle_precision(model)
        self.model_, self.objective_ = model, objective
        self.result_ = train(model, objective, X, y, task, ctx, self.config_)
        return self.result_

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        cfg = self.config_
        return score_array(
            self.objective_, self.model_, X, self.info_, self.device_, cfg.eval_batch_size, cfg.precision
        )

    def score_as(self, split: Split, scoring: str, seed: int) -> np.ndarray:
        """Scores of ``split`` read as ``scoring`` says (``odbench.deep.scoring_modes``); ``"eval"`` = :meth:`anomaly_score`."""
        return score_split(self.objective_, self.model_, split, self.info_, self.device_, self.config_, scoring, seed)


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
