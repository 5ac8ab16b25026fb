"""Nearest Neighbour: distance to the closest training normal (the paper's baseline).

    score(x) = min_i ||x - x_i||_2

on the raw inputs as the task presents them (standardized floats; uint8
images scaled and normalized per channel by ``odbench.data.inputs.as_float``).
Distances are computed in chunks with ``torch.cdist`` within a memory
budget (``odbench.deep.neighbours``), on the GPU when the context names one.
It has no hyperparameters (``knn`` is the k > 1 family).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np
import torch

from odbench.api import FitContext, FitTask, Method, param
from odbench.data.inputs import as_float
from odbench.deep.neighbours import BUDGET_BYTES, nearest_distance
from odbench.deep.training import resolve_device


@dataclass
class NeighbourRuntime:
    # chunks change only which distances are computed together (values agree to float rounding): out of the job key
    budget_bytes: int = param(BUDGET_BYTES, "memory for one chunk of distances (speed only, not the scores)", low=1,
                              keyed=False)  # fmt: skip


class NearestNeighbour(Method):
    name = "nearest_neighbour"
    test_params = {"budget_bytes": 4096}  # tiny chunks: the chunked path runs in the test

    @dataclass
    class Params:
        Runtime: ClassVar[type] = NeighbourRuntime  # no parameters: only how much memory a chunk of distances may take

    def fit(self, task: FitTask, ctx: FitContext) -> NearestNeighbour:
        info = task.info
        self.to_float_ = partial(as_float, mean=info.channel_mean, std=info.channel_std, modality=info.modality)
        self.budget_ = self.runtime.budget_bytes
        normal = task.train.normal
        flat = self.to_float_(normal).reshape(len(normal), -1)
        self.train_ = torch.as_tensor(flat, dtype=torch.float32, device=resolve_device(ctx.device))
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        return nearest_distance(self.train_, X, self.to_float_, self.budget_)
