"""Deep SAD (Ruff et al., ICLR 2020): Deep SVDD that pushes labelled anomalies out.

    min_W  1/(n+m) [ sum_{normal i} ||phi(x_i) - c||^2
                     + eta sum_{anomalous j} (||phi(x_j) - c||^2 + eps)^-1 ]  (+ weight decay)

The inverse distance rewards labelled anomalies (the limited negatives of an
OCLN task) for lying far from ``c``.  The training normals play the role of
the paper's unlabelled mass (weight 1; the reference gives *labelled*
normals ``eta * (dist + eps)``, the same for eta = 1).  The centre is the
guarded mean embedding of the normals only.  Score: ||phi(x) - c||^2.

Before that the encoder is pretrained as the front half of an autoencoder
on the whole training split, labelled anomalies included (as the
reference's ``AETrainer`` does); the DROCC paper (Appendix E.5) calls it
an important aspect of training DeepSAD and tuned it for its baseline.  The
schedule is DeepSVDD's (``odbench.deep.decoders.pretrain_defaults``: the
``main.py`` defaults of Deep-SAD-PyTorch, which equal Deep-SVDD-PyTorch's);
``pretrain_epochs=0`` skips it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from odbench.api import DataInfo, FitContext, FitTask, param
from odbench.deep import nets
from odbench.deep.decoders import PretrainParams, pretrain, pretrain_defaults
from odbench.deep.hypersphere import Hypersphere, default_rep_dim, init_centre
from odbench.deep.method import DeepMethod, DeepParams, suggest_optimisation
from odbench.deep.training import Batches, Objective

EPS = 1e-6  # the reference's eps in (dist + eps)^-1


class SADObjective(Objective[Hypersphere]):
    def __init__(self, eta: float) -> None:
        self.eta = eta

    def epoch_start(self, model: Hypersphere, epoch: int, data: Batches) -> None:
        if epoch == 0:
            init_centre(model, data)  # normals only

    def loss(self, model, x, y, step):
        dist = model.dist(x)
        if y is None:  # an unlabelled training split: Deep SVDD
            return dist.mean()
        return torch.where(y == 1, self.eta / (dist + EPS), dist).mean()

    def score(self, model, x):
        return model.dist(x)


class DeepSAD(DeepMethod):
    name = "deepsad"
    uses_negatives = True
    test_params = {"epochs": 5, "batch_size": 32, "lr": 1e-2, "rep_dim": 8, "pretrain_epochs": 1}

    @dataclass
    class Params(PretrainParams, DeepParams):
        lr: float = param(None, "learning rate; None: 1e-4 on images (Ruff et al.'s), 1e-3 elsewhere", low=0)
        eta: float = param(1.0, "eta, weight of the labelled negatives' inverse-distance term", low=0)
        rep_dim: int = param(None, "size of the embedding; None: the backbone's usual one", low=1)

    params: Params  # resolved before fit runs (odbench.api.Method)

    @classmethod
    def data_defaults(cls, info: DataInfo) -> dict[str, Any]:
        lr = 1e-4 if info.modality == "image" else 1e-3
        return {**super().data_defaults(info), "lr": lr, "rep_dim": default_rep_dim(info.backbone), **pretrain_defaults(info)}

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        return {
            **suggest_optimisation(trial),
            "rep_dim": trial.suggest_categorical("rep_dim", [16, 32, 64, 128]),
            # the paper's sensitivity study spans eta in [0.01, 100] (default 1); two decades around 1
            "eta": trial.suggest_float("eta", 0.1, 10.0, log=True),
        }

    def fit(self, task: FitTask, ctx: FitContext) -> DeepSAD:
        self.start(task, ctx)
        p = self.params
        encoder = nets.build(p.backbone, task.info.shape, out_dim=p.rep_dim, bias=False)
        pretrain(encoder, self.resolved_params(), task.train.X, task, ctx)
        model = Hypersphere(encoder, p.rep_dim)
        self.train_model(model, SADObjective(p.eta), task.train.X, task.train.y, task, ctx)
        return self
