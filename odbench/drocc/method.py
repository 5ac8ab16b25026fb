"""The plumbing shared by the DROCC plugins: parameters to objective, network, training."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from odbench.core.contracts import DataInfo, FitContext, Task
from odbench.deep import nets
from odbench.deep.method import DeepMethod
from odbench.drocc.objective import REFERENCE_LR_MILESTONES, DROCCObjective, drocc_lr_steps


class DROCCMethod(DeepMethod):
    """The plumbing shared by drocc, drocc_oe and drocc_lf (fit and score).

    Subclasses set ``distance`` and ``uses_negatives``.  Parameters: the
    :class:`DROCCObjective` fields, :class:`~odbench.deep.training.TrainConfig`
    fields, ``backbone`` (default: the dataset's), ``bias`` (``None``: the
    backbone's own choice; the reference LeNets have none), ``hidden``
    (MLP/LSTM width) and ``lr_milestones`` (the reference schedule by default).
    """

    distance: ClassVar[str] = "euclidean"

    @classmethod
    def default_params(cls, info: DataInfo) -> dict[str, Any]:
        return {
            "radius": math.sqrt(info.n_features) / 2,  # paper §5.1, on standardized inputs
            "gamma": 1.0 if info.modality == "image" else 2.0,
            "mu": 1.0,
            "ascent_step_size": 0.001,
            "ascent_num_steps": 50,
            "only_ce_epochs": 50,
            "project_every": 1,
            "epochs": 100,
            "batch_size": 128,
            "lr": 1e-3,
            "optimizer": "adam",
            "weight_decay": 0.0,
            "lr_milestones": REFERENCE_LR_MILESTONES,
            "adversarial_bn_update": False,
            # Speed settings, measured by scripts/bench_drocc.py on the 2-core AVX-512-BF16 CPU:
            # NHWC conv nets on CPU ("auto" -> channels_last): 1.25-1.5x per ascent step / DROCC epoch of the
            # CIFAR LeNet, MNIST AUROC within 1e-4 of fp32 (3 seeds): on by default.  bf16 autocast
            # (precision="bf16") on top: 1.9-2.1x more (2.4-2.8x over fp32 NCHW), MNIST AUROC within 7e-4,
            # but opt-in: the paper's image step (eta = 0.001 on ~3000 coordinates) is far below bf16's input
            # resolution (2^-9 relative), so each step is invisible to the forward pass and its effect on
            # CIFAR training is not established; scores come out rounded to 8 bits; the MLP gets slower.
            "memory_format": "auto",
            "backbone": info.backbone,
        }

    @classmethod
    def search_space(cls, trial: Any, info: DataInfo) -> dict[str, Any]:
        base = math.sqrt(info.n_features) / 2
        return {
            "radius": trial.suggest_float("radius", base / 4, base * 4, log=True),
            "mu": trial.suggest_categorical("mu", [0.5, 1.0]),
            "ascent_step_size": trial.suggest_categorical("ascent_step_size", [0.1, 0.01]),
            "lr": trial.suggest_categorical("lr", [1e-2, 1e-4]),
            "optimizer": trial.suggest_categorical("optimizer", ["adam", "sgd"]),
        }

    @classmethod
    def param_grid(cls, info: DataInfo) -> dict[str, list[Any]]:
        """The paper's grid (§5.1), for ``odbench tune --grid``: 2 x 2 x 2 x 2 x 3 = 48 settings.

        mu in {0.5, 1}, ascent step size in {0.1, 0.01}, learning rate in
        {1e-2, 1e-4}, optimizer in {Adam, SGD}; the radius "around √d/2" is
        read as √d/2 times {1/2, 1, 2}.
        """
        base = math.sqrt(info.n_features) / 2
        return {
            "mu": [0.5, 1.0],
            "ascent_step_size": [0.1, 0.01],
            "lr": [1e-2, 1e-4],
            "optimizer": ["adam", "sgd"],
            "radius": [base / 2, base, base * 2],
        }

    def objective(self, params: dict[str, Any]) -> DROCCObjective:
        names = DROCCObjective.__dataclass_fields__
        picked = {k: v for k, v in params.items() if k in names}
        return DROCCObjective(**picked, use_negatives=self.uses_negatives, distance=self.distance)

    def fit(self, task: Task, ctx: FitContext) -> DROCCMethod:
        params = self.start(task, ctx)  # merged parameters; torch seeded by the job
        if params["only_ce_epochs"] >= self.config_.epochs and params["mu"] > 0:
            # the reference scripts allow it (e.g. 40 epochs with 50 CE-only ones) and then train a plain classifier
            raise ValueError(
                f"only_ce_epochs ({params['only_ce_epochs']}) must be below epochs ({self.config_.epochs}), "
                f"or {self.name} never sees an adversarial point; lower {self.name}.only_ce_epochs"
            )
        self.config_.lr_steps = drocc_lr_steps(self.config_.epochs, params["only_ce_epochs"], tuple(params["lr_milestones"]))
        # width of the MLP / LSTM (the LeNets fix theirs)
        options = {"hidden": params["hidden"]} if "hidden" in params and params["backbone"] in ("mlp", "lstm") else {}
        model = nets.build(params["backbone"], task.info.shape, out_dim=1, bias=params.get("bias"), **options)
        if self.uses_negatives:
            X, y = task.train.X, task.train.y
        else:
            X, y = task.train.normal, None
        self.train_model(model, self.objective(params), X, y, task, ctx)
        self.params_used_ = params  # what ran, projection period included
        return self
