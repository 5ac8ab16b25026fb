"""Binary classifier: positives against the limited negatives (the paper's OCLN baseline).

    min_W  sum_i w_{y_i} BCE(f(x_i; W), [y_i = normal])      score(x) = -f(x)

``f`` is the dataset's backbone with one "normal" logit, as DROCC's.  With
``balance`` (default) each class carries half the total weight, so a few
negatives among many positives are not ignored.  It cannot train without
negatives and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from odbench.api import DataInfo, FitContext, FitTask, param
from odbench.deep import nets
from odbench.deep.method import DeepMethod, DeepParams, suggest_optimisation
from odbench.deep.training import Objective


class BCEObjective(Objective):
    def __init__(self, negative_weight: float) -> None:
        self.negative_weight = negative_weight  # relative to a positive's weight 1

    def loss(self, model, x, y, step):
        weight = torch.where(y == 1, self.negative_weight, 1.0)
        return F.binary_cross_entropy_with_logits(model(x).squeeze(1), (y == 0).float(), weight=weight)

    def score(self, model, x):
        return -model(x).squeeze(1)  # the logit says "normal"


class BCE(DeepMethod):
    name = "bce"
    uses_negatives = True
    test_params = {"epochs": 8, "batch_size": 32, "lr": 1e-2}  # 4 epochs at 1e-3: sequence AUROC 0.85-0.92

    @dataclass
    class Params(DeepParams):
        balance: bool = param(True, "weight the negatives so both classes weigh the same in the loss")

    params: Params  # resolved before fit runs (odbench.api.Method)

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        return {**suggest_optimisation(trial), "balance": trial.suggest_categorical("balance", [True, False])}

    def fit(self, task: FitTask, ctx: FitContext) -> BCE:
        self.start(task, ctx)
        y = task.train.y
        n_neg = 0 if y is None else int(np.sum(y == 1))
        if y is None or n_neg == 0:
            raise ValueError("bce needs labelled negatives in the training split (an OCLN task); this one has none")
        model = nets.build(self.params.backbone, task.info.shape, out_dim=1)
        weight = (len(y) - n_neg) / n_neg if self.params.balance else 1.0
        self.train_model(model, BCEObjective(weight), task.train.X, y, task, ctx)
        return self
