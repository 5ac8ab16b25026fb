"""Nearest Neighbour: distance to the closest training normal (the paper's baseline).

    score(x) = min_i ||x - x_i||_2

on the raw inputs as the task presents them (standardized floats; uint8
images scaled and normalized per channel by ``odbench.protocols.scaling.as_float``).
Distances are computed in chunks with ``torch.cdist`` within a memory
budget (``odbench.deep.neighbours``), on the GPU when the context names one.
It has no hyperparameters (``knn`` is the k > 1 family).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from odbench.api import FitContext, FitTask, Method, param
from odbench.deep.neighbours import BUDGET_BYTES, nearest_distance
from odbench.deep.training import resolve_device
from odbench.protocols.scaling import as_float


class NearestNeighbour(Method):
    name = "nearest_neighbour"
    test_params = {"budget_bytes": 4096}  # tiny chunks: the chunked path runs in the test

    @dataclass
    class Params:
        budget_bytes: int = param(BUDGET_BYTES, "memory for one chunk of distances (speed only, not the scores)", low=1)

    def fit(self, task: FitTask, ctx: FitContext) -> NearestNeighbour:
        info = task.info
        self.params_ = self.resolve_params(info, self.params)
        self.to_float_ = partial(as_float, mean=info.channel_mean, std=info.channel_std, modality=info.modality)
        self.budget_ = self.params_["budget_bytes"]
        normal = task.train.normal
        flat = self.to_float_(normal).reshape(len(normal), -1)
        self.train_ = torch.as_tensor(flat, dtype=torch.float32, device=resolve_device(ctx.device))
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        return nearest_distance(self.train_, X, self.to_float_, self.budget_)
