"""GOAD (Bergman & Hoshen, ICLR 2020): classify random affine transformations, score by distance to their centres.

Each training point x is seen under M fixed random maps T(x, m) = x W_m.  A
shared feature map f and a classifier C learn which map was applied:

    min  CE(C(f(T(x, m))), m)  +  lambda * max(0, ||f(T(x, m)) - c_m||^2 + s - min_{m' != m} ||f(T(x, m)) - c_m'||^2)

(cross-entropy plus the centre triplet loss with margin s, averaged over
points and maps; ``odbench.deep.transformation_centres``).  The centre c_m
is the mean feature of T(x, m) over the training set, taken as the authors'
code takes it: the mean of the last epoch's batch means.  Score (higher = more
anomalous):  -sum_m log softmax_m'(-||f(T(x, m)) - c_m'||^2)[m].

Defaults: the authors' README command for Thyroid and Arrhythmia
(github.com/lironber/GOAD at 3655b86, ``train_ad_tabular.py --n_rots=256
--n_epoch=1 --d_out=32 --ndf=8``) with the script's own defaults (lr 0.001,
batch 64, margin m=1, lmbda 0.1) and no weight decay; the paper's Section
5.2 says the same (256 tasks, r = 32, 8 hidden units, one epoch).  One
difference from that code: its Adam uses betas (0.5, 0.999) where odbench's
training loop uses torch's (0.9, 0.999).  Inputs are z-scored by the
training data, as the authors' data loader does (odbench's protocols already
standardize tabular data; a direct fit on raw data gets the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from odbench.api import DataInfo, FitContext, FitTask, param
from odbench.deep.method import DeepMethod, DeepParams, suggest_optimisation
from odbench.deep.training import Objective
from odbench.deep.transformation_centres import TransformationClassifier, centre_triplet_loss, transformation_nll


class GOADObjective(Objective[TransformationClassifier]):
    """Cross-entropy plus the weighted centre triplet loss; centres from the epoch's batch means."""

    def __init__(self, margin: float, triplet_weight: float) -> None:
        self.margin, self.triplet_weight = margin, triplet_weight
        self.sums, self.batches, self.fresh = torch.zeros(()), 0, False

    def epoch_start(self, model, epoch, data):
        self.sums, self.batches = torch.zeros_like(model.centres), 0

    def loss(self, model, x, y, step):
        z, logits = model(x)
        self.sums += z.detach().float().mean(0)
        self.batches, self.fresh = self.batches + 1, True
        m = model.n_transforms
        which = torch.arange(m, device=x.device).repeat(len(x))  # row (i, m) was made by map m
        ce = F.cross_entropy(logits.reshape(-1, m), which)
        return ce + self.triplet_weight * centre_triplet_loss(z, self.margin)

    def settle_centres(self, model: TransformationClassifier) -> None:
        """c_m: the mean over this epoch's batches of the batch-mean features (set once per epoch)."""
        if self.fresh:
            model.centres.copy_(self.sums / max(self.batches, 1))
            self.fresh = False

    def score(self, model, x):
        self.settle_centres(model)
        return transformation_nll(model(x)[0], model.centres)


class GOAD(DeepMethod):
    name = "goad"
    modalities = ("tabular",)
    test_params = {"epochs": 5, "batch_size": 32, "n_transforms": 16, "transform_dim": 8}

    @dataclass
    class Params(DeepParams):
        epochs: int = param(1, "training epochs (the authors' 1 for Thyroid and Arrhythmia, 25 for KDD)", low=1)
        batch_size: int = param(64, "examples per training batch, each under all M maps", low=1)
        weight_decay: float = param(0.0, "L2 penalty on the weights", low=0)
        n_transforms: int = param(256, "M, the number of random affine maps (tasks)", low=2)
        transform_dim: int = param(32, "r, the output dimension of each random map", low=1)
        hidden: int = param(8, "units of the shared feature map f", low=1)
        layers: int = param(1, "linear layers in f (the authors' 1 on small sets, 5 on KDD)", low=1)
        margin: float = param(1.0, "s, the triplet margin (squared distance)", low=0)
        triplet_weight: float = param(0.1, "lambda, the weight of the centre triplet loss beside cross-entropy", low=0)

    params: Params  # resolved before fit runs (odbench.api.Method)

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        return {
            **suggest_optimisation(trial),
            "transform_dim": trial.suggest_categorical("transform_dim", [8, 16, 32, 64]),
            "triplet_weight": trial.suggest_float("triplet_weight", 0.01, 1.0, log=True),
        }

    def fit(self, task: FitTask, ctx: FitContext) -> GOAD:
        self.start(task, ctx)
        p = self.params
        maps = torch.Generator().manual_seed(ctx.seed)  # the random affine maps are part of the model
        model = TransformationClassifier(
            task.info.n_features, p.n_transforms, p.transform_dim, p.hidden, p.layers, maps
        )
        model.fit_scaling(torch.as_tensor(task.train.normal, dtype=torch.float32))
        objective = GOADObjective(p.margin, p.triplet_weight)
        self.train_model(model, objective, task.train.normal, None, task, ctx)
        objective.settle_centres(model)  # the last epoch's, unless validation kept an earlier epoch with its own
        return self
