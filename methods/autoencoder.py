"""Autoencoder: anomalies are the points the network reconstructs badly.

    min_W  mean_i ||D(E(x_i)) - x_i||^2        score(x) = ||D(E(x)) - x||^2

``E`` is the dataset's backbone as an encoder to ``rep_dim`` features and
``D`` its mirror (``odbench.deep.decoders``): an MLP autoencoder for tabular
data, the convolutional DCAE of Ruff et al. (2018) on the LeNets for images
(the paper's Table 1 baseline), and the LSTM encoder-decoder of Srivastava
et al. (2015) for sequences (the paper's time-series baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odbench.api import DataInfo, FitContext, FitTask, param
from odbench.deep.decoders import Reconstruction, build_autoencoder
from odbench.deep.hypersphere import default_rep_dim
from odbench.deep.method import DeepMethod, DeepParams, suggest_optimisation


class AutoEncoder(DeepMethod):
    name = "autoencoder"
    test_params = {"epochs": 4, "batch_size": 32, "lr": 1e-3, "rep_dim": 8}

    @dataclass
    class Params(DeepParams):
        lr: float = param(None, "learning rate; None: 1e-4 on images, 1e-3 elsewhere", low=0)
        rep_dim: int = param(None, "size of the code; None: the backbone's usual one", low=1)

    params: Params  # resolved before fit runs (odbench.api.Method)

    @classmethod
    def data_defaults(cls, info: DataInfo) -> dict[str, Any]:
        lr = 1e-4 if info.modality == "image" else 1e-3
        return {**super().data_defaults(info), "lr": lr, "rep_dim": default_rep_dim(info.backbone)}

    @classmethod
    def search_space(cls, trial, info: DataInfo) -> dict[str, Any]:
        # a code narrower than the input is what makes reconstruction selective
        sizes = [s for s in (4, 8, 16, 32, 64, 128) if s < info.n_features] or [info.n_features]
        return {**suggest_optimisation(trial), "rep_dim": trial.suggest_categorical("rep_dim", sizes)}

    def fit(self, task: FitTask, ctx: FitContext) -> AutoEncoder:
        self.start(task, ctx)
        model = build_autoencoder(self.params.backbone, task.info.shape, self.params.rep_dim)
        self.train_model(model, Reconstruction(), task.train.normal, None, task, ctx)
        return self
