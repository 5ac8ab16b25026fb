"""Deep SVDD (Ruff et al., ICML 2018): map the normals into a small hypersphere.

One-class objective:      min_W  mean_i ||phi(x_i; W) - c||^2
Soft-boundary objective:  min_{R,W}  R^2 + 1/(nu n) sum_i max(0, ||phi(x_i; W) - c||^2 - R^2)
(+ weight decay in both).  ``phi`` is the dataset's backbone without bias
terms; ``c`` the guarded mean embedding before training
(``odbench.deep.hypersphere``).  As in the reference code, R is not a gradient
variable: after ``warm_up_epochs`` it is set before every epoch to the
(1 - nu)-quantile of the training distances (the reference updates it per
mini-batch on the batch's distances), and once more on the selected
network, so exactly a fraction nu of the training points lies outside.
Score: ||phi(x) - c||^2, minus R^2 for soft-boundary.

Defaults: Adam, lr 1e-4 on images (the reference's) and 1e-3 elsewhere,
weight decay 1e-6, 50 epochs (the reference runs 150 on CIFAR-10 with the
rate cut tenfold at epoch 50: ``epochs=150, lr_steps=((1/3, 0.1),)``).
``pretrain_epochs > 0`` first trains the encoder as the front half of an
autoencoder (the reference's CIFAR-10 numbers use 250 epochs of it);
the default 0 skips it to keep runs short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from odbench.api import DataInfo, FitContext, FitTask, param
from odbench.deep import nets
from odbench.deep.decoders import PretrainParams, pretrain, pretrain_defaults
from odbench.deep.hypersphere import Hypersphere, default_rep_dim, fit_radius, init_centre
from odbench.deep.method import DeepMethod, DeepParams, suggest_optimisation
from odbench.deep.training import Batches, Objective


class SVDDObjective(Objective[Hypersphere]):
    def __init__(self, objective: str, nu: float, warm_up_epochs: int) -> None:
        if objective not in ("one-class", "soft-boundary"):
            raise ValueError(f"unknown objective {objective!r}; use 'one-class' or 'soft-boundary'")
        self.soft, self.nu, self.warm_up = objective == "soft-boundary", nu, warm_up_epochs

    def epoch_start(self, model: Hypersphere, epoch: int, data: Batches) -> None:
        if epoch == 0:
            init_centre(model, data)
        if self.soft and epoch >= self.warm_up:
            fit_radius(model, data, self.nu)

    def loss(self, model, x, y, step):
        dist = model.dist(x)
        if not self.soft:
            return dist.mean()
        return model.R**2 + torch.relu(dist - model.R**2).mean() / self.nu

    def score(self, model, x):
        return model.dist(x) - model.R**2 if self.soft else model.dist(x)


class DeepSVDD(DeepMethod):
    name = "deepsvdd"
    test_params = {"epochs": 5, "batch_size": 32, "lr": 1e-2, "rep_dim": 8, "warm_up_epochs": 1, "pretrain_epochs": 1}

    @dataclass
    class Params(PretrainParams, DeepParams):
        lr: float = param(None, "learning rate; None: 1e-4 on images (Ruff et al.'s), 1e-3 elsewhere", low=0)
        objective: str = param("one-class", "the hypersphere objective", choices=("one-class", "soft-boundary"))
        nu: float = param(0.1, "soft-boundary: fraction of training points allowed outside the sphere", low=0, high=1)
        warm_up_epochs: int = param(10, "soft-boundary: epochs before the radius is first fitted", low=0)
        rep_dim: int = param(None, "size of the embedding; None: the backbone's usual one", low=1)

    params: Params  # resolved before fit runs (odbench.api.Method)

    @classmethod
    def data_defaults(cls, info: DataInfo) -> dict[str, Any]:
        lr = 1e-4 if info.modality == "image" else 1e-3
        return {**super().data_defaults(info), "lr": lr, "rep_dim": default_rep_dim(info.backbone), **pretrain_defaults(info)}

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        space = {
            **suggest_optimisation(trial),
            "rep_dim": trial.suggest_categorical("rep_dim", [16, 32, 64, 128]),
            "objective": trial.suggest_categorical("objective", ["one-class", "soft-boundary"]),
        }
        if space["objective"] == "soft-boundary":
            # nu bounds the fraction of training points outside the sphere
            space["nu"] = trial.suggest_float("nu", 0.01, 0.3, log=True)
        return space

    def fit(self, task: FitTask, ctx: FitContext) -> DeepSVDD:
        self.start(task, ctx)
        p, X = self.params, task.train.normal
        encoder = nets.build(p.backbone, task.info.shape, out_dim=p.rep_dim, bias=False)
        pretrain(encoder, self.resolved_params(), X, task, ctx)
        model = Hypersphere(encoder, p.rep_dim)
        objective = SVDDObjective(p.objective, p.nu, p.warm_up_epochs)
        self.train_model(model, objective, X, None, task, ctx)
        if objective.soft:
            fit_radius(model, Batches(X, None, task.info, self.device_), p.nu)
        return self
