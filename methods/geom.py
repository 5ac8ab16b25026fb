"""GEOM (Golan & El-Yaniv, NeurIPS 2018): classify 72 geometric transformations of the normal images.

Every training image enters under each of the 72 transformations T_t (flip x
translations x quarter turns, ``odbench.deep.geometric_transforms``) and a
wide residual network learns which one was applied:

    min  mean_{x, t}  CE(softmax(WRN(T_t(x))), t)

Normality (Section 4, the Dirichlet score): for each t, the softmax vectors
on T_t of the training images are fitted by a Dirichlet(alpha_t)
(``odbench.deep.dirichlet``), and  n(x) = 1/72 sum_t sum_j (alpha_tj - 1)
log softmax(WRN(T_t(x)))_j.  ``score="simplified"`` uses the paper's
simplified score, the mean probability of the right transformation,
1/72 sum_t softmax(WRN(T_t(x)))_t.  The anomaly score is -n(x).

Defaults: the authors' ``experiments.py`` (izikgo/AnomalyDetectionTransformations
at 6327041) for CIFAR-10 and Fashion-MNIST: WRN-10-4, translations of 8
pixels, Adam (Keras defaults, lr 1e-3), ceil(200 / 72) = 3 epochs over all
(image, transformation) pairs, L2 2.5e-4 on the weights (weight decay 5e-4
on the gradient), the Dirichlet score.  A step here takes ``batch_size``
images under all 72 transformations (2 images: 144 pairs, where the
authors' shuffled batches hold 128 pairs).  Images are standardized per
channel (the authors scale to [-1, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from odbench.api import DataInfo, FitContext, FitTask, param
from odbench.deep.dirichlet import dirichlet_normality, fit_dirichlet
from odbench.deep.geometric_transforms import all_views, transformations
from odbench.deep.method import DeepMethod, DeepParams
from odbench.deep.training import Batches
from odbench.deep.training_statistics import TrainingStatistics
from odbench.deep.wide_resnet import WideResNet

#: images whose 72 views go through the network at once when scoring (bounds memory, not the result)
_SCORING_CHUNK = 8


class GeometricClassifier(nn.Module):
    """The WRN over all views of an image, and the fitted Dirichlet parameters ``alpha`` ``(72, 72)``."""

    alpha: torch.Tensor

    def __init__(self, in_channels: int, shift: int, depth: int, width: int, base: int) -> None:
        super().__init__()
        self.shift, self.n = shift, len(transformations(shift))
        self.net = WideResNet(in_channels, self.n, depth, width, base)
        self.register_buffer("alpha", torch.ones(self.n, self.n, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transformation logits of every view: ``(N, 72, 72)``, row t for T_t(x)."""
        chunks = [x] if self.training else x.split(_SCORING_CHUNK)
        out = [self.net(all_views(c, self.shift).flatten(0, 1)).view(len(c), self.n, self.n) for c in chunks]
        return torch.cat(out)


class GEOMObjective(TrainingStatistics[GeometricClassifier]):
    def __init__(self, score: str) -> None:
        super().__init__()
        self.dirichlet = score == "dirichlet"

    def loss(self, model, x, y, step):
        self.weights_changed()
        logits = model(x)
        which = torch.arange(model.n, device=x.device).repeat(len(x))  # view (i, t) was made by T_t
        return F.cross_entropy(logits.flatten(0, 1), which)

    def refit(self, model, data):
        if self.dirichlet:
            log_p = torch.cat([F.log_softmax(model(xb).double(), -1) for xb, _ in data.iterate(64)])
            model.alpha.copy_(fit_dirichlet(log_p))

    def score(self, model, x):
        log_p = F.log_softmax(model(x).double(), -1)
        if not self.dirichlet:
            return -torch.diagonal(log_p, dim1=1, dim2=2).exp().mean(-1)
        self.ready(model)
        return -dirichlet_normality(model.alpha, log_p)


class GEOM(DeepMethod):
    name = "geom"
    modalities = ("image",)
    test_params = {"epochs": 1, "batch_size": 8, "width": 1, "base_width": 4, "shift": 4}

    @dataclass
    class Params(DeepParams):
        epochs: int = param(3, "passes over all (image, transformation) pairs (the authors' ceil(200 / 72))", low=1)
        batch_size: int = param(2, "images per step, each under all 72 transformations", low=1)
        weight_decay: float = param(
            5e-4, "L2 penalty on the weights (the authors' Keras l2(2.5e-4) on the loss)", low=0
        )
        depth: int = param(10, "WRN depth, 6n + 4 (the authors' 10; 16 on cats-vs-dogs)", low=10)
        width: int = param(4, "WRN widening factor (the authors' 4; 8 on cats-vs-dogs)", low=1)
        base_width: int = param(
            16,
            "channels of the WRN's first convolution; its groups have k, 2k, 4k times as many (16 in the paper)",
            low=1,
        )
        shift: int = param(8, "translation in pixels (the authors' 8 on 32x32 images)", low=1)
        score: str = param(
            "dirichlet",
            "normality score: Dirichlet (Section 4) or the simplified one",
            choices=("dirichlet", "simplified"),
        )

    params: Params  # resolved before fit runs (odbench.api.Method)

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [2, 4, 8]),  # images, x 72 views each
            "score": trial.suggest_categorical("score", ["dirichlet", "simplified"]),
        }

    def fit(self, task: FitTask, ctx: FitContext) -> GEOM:
        self.start(task, ctx)
        p = self.params
        if p.shift >= min(task.info.shape[-2:]):
            raise ValueError(f"shift {p.shift} must be smaller than the images ({task.info.shape[-2:]})")
        model = GeometricClassifier(task.info.shape[0], p.shift, p.depth, p.width, p.base_width)
        objective = GEOMObjective(p.score)
        self.train_model(model, objective, task.train.normal, None, task, ctx)
        objective.finish(model, Batches(task.train.normal, None, task.info, self.device_))
        return self
