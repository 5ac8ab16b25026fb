"""Tiny synthetic tasks for contract checks (tests and ``odbench check``).

Normal points are a tight cluster; anomalies are far from it in every
modality, so any sane detector ranks them above the normals.  Small enough
that every method's ``test_params`` finishes in seconds.
"""

from __future__ import annotations

import numpy as np

from odbench.core.contracts import DataInfo, Split, Task

SHAPES = {"tabular": (6,), "image": (1, 16, 16), "sequence": (12, 3)}


def obvious_outlier_task(modality: str = "tabular", seed: int = 0, n_train: int = 96, n_test: int = 48) -> Task:
    """A task whose test anomalies are trivially separable from its normals.

    Train holds normals plus a few labelled negatives (so methods that use
    negatives can run); validation and test hold both, half and half.
    """
    rng = np.random.default_rng(seed)
    shape = SHAPES[modality]

    def normals(n: int) -> np.ndarray:
        return (0.3 * rng.standard_normal((n, *shape))).astype(np.float32)

    def outliers(n: int) -> np.ndarray:
        signs = rng.choice([-1.0, 1.0], size=(n, *shape))
        return (signs * (4.0 + rng.random((n, *shape)))).astype(np.float32)

    def split(n_norm: int, n_anom: int) -> Split:
        X = np.concatenate([normals(n_norm), outliers(n_anom)])
        y = np.r_[np.zeros(n_norm, int), np.ones(n_anom, int)]
        return Split(X=X, y=y, index=np.arange(len(X)))

    train = split(n_train, max(4, n_train // 8))
    info = DataInfo(
        dataset=f"obvious_{modality}",
        modality=modality,
        shape=shape,
        n_train=len(train),
        backbone={"tabular": "mlp", "image": "lenet_mnist", "sequence": "lstm"}[modality],
        has_negatives=True,
    )
    return Task(
        dataset=info.dataset,
        protocol="synthetic",
        normal_class=None,
        train=train,
        val=split(n_test // 2, n_test // 2),
        test=split(n_test // 2, n_test // 2),
        info=info,
        metrics=("auroc",),
    )
