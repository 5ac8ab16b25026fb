"""The plumbing under the DROCC plugins: their parameters, network, training, and search call.

A plugin (``methods/drocc.py``) states the method: its parameters, defaults,
grid and search space, and its loss for one batch.  This base builds the
network, trains it with the shared loop (``odbench.deep.training``) and gives
the loss its two building blocks: :meth:`DROCCMethod.ce` and
:meth:`DROCCMethod.search`, the adversarial search onto ``N(r)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from odbench.core.contracts import DataInfo, FitContext, FitTask, Method
from odbench.core.params import ParamError, param
from odbench.deep import nets
from odbench.deep.freezing import batchnorm_stats_frozen
from odbench.deep.members import member_mean, size_of
from odbench.deep.method import DeepMethod, DeepParams
from odbench.deep.precision import PRECISIONS, resolve_precision
from odbench.deep.training import Member, Step, TrainConfig, resolve_device, train_members
from odbench.drocc.ascent import adversarial_search, input_sensitivity, logits
from odbench.drocc.objective import MEMBER_VARYING, REFERENCE_LR_MILESTONES, DROCCObjective, drocc_lr_steps
from odbench.drocc.projections import Annulus, ProjectionTally, _row_norms, mahalanobis_norm, mahalanobis_project


@dataclass
class DROCCParams(DeepParams):
    """DROCC's parameters (paper §3, Algorithm 1) besides the shared optimisation settings."""

    radius: float | None = param(None, "r, inner radius of the annulus N(r) of negatives; None: sqrt(d)/2", low=0)
    gamma: float | None = param(None, "the annulus is r <= ||h|| <= gamma r; None: 1 on images, 2 elsewhere", low=1)
    mu: float = param(1.0, "mu, weight of the adversarial loss (the reference's --lamda)", low=0)
    ascent_step_size: float = param(0.001, "eta, step of the normalized gradient ascent", low=0)
    ascent_num_steps: int = param(50, "m, ascent steps per batch (0: project N(0, I) offsets, DROCC-Rand)", low=0)
    only_ce_epochs: int | None = param(None, "epochs of plain cross-entropy first; None: 50 on tables, else 0", low=0)
    project_every: int = param(1, "project onto N(r) every N ascent steps (paper: 1; DROCCTrainer: 10)", low=1)
    lr_milestones: tuple[tuple[float, float], ...] = param(
        REFERENCE_LR_MILESTONES, "(fraction of the adversarial epochs, lr multiplier) pairs of the reference"
    )
    adversarial_bn_update: bool = param(False, "adversarial forwards update BatchNorm's running statistics")
    hidden: int = param(128, "width of the MLP / LSTM (every script's --hd); the LeNets fix theirs", low=1)
    bias: bool | None = param(None, "bias terms in the network; None: the backbone's own choice")
    epochs: int = param(100, "training epochs, CE-only ones included", low=1)
    # a declaration, never instantiated: None here means the data decide (data_defaults), so the type widens
    batch_size: int | None = param(  # type: ignore[assignment]
        None, "examples per batch; None: 128, or n_train/8 (at least 16) where that gives an epoch fewer than 8 steps",
        low=1,
    )  # fmt: skip
    # a declaration, never instantiated: None here means the data decide (data_defaults), so the type widens
    momentum: float | None = param(None, "SGD momentum; None: the script's --mom (0 on CIFAR, else 0.99)", low=0, high=1)  # type: ignore[assignment]
    weight_decay: float = param(0.0, "lambda, L2 penalty on the weights", low=0)
    memory_format: str = param(
        "auto", "conv weights NCHW, NHWC (channels_last), or NHWC on CPU only (auto)",
        choices=("contiguous", "channels_last", "auto"),
    )  # fmt: skip
    # bf16 where it is native: 3x faster on the CIFAR LeNet, and no AUROC lost (README, "DROCC performance")
    precision: str = param(
        "auto", "fp32, bf16, or bf16 for conv nets on a GPU or a CPU with AVX-512 BF16 / AMX and fp32 elsewhere (auto)",
        choices=PRECISIONS,
    )  # fmt: skip


#: what a group's members may set for themselves: the loss's own (``MEMBER_VARYING``) and the optimizer's
GROUP_VARYING = MEMBER_VARYING | {"lr", "optimizer", "momentum", "weight_decay"}


def _fixed(params: dict[str, Any]) -> dict[str, Any]:
    """The resolved parameters a group's members must share."""
    return {k: v for k, v in params.items() if k not in GROUP_VARYING}


def _per_member(methods: Sequence[DROCCMethod], device: torch.device) -> dict[str, torch.Tensor]:
    """The :data:`MEMBER_VARYING` parameters in which the members differ, each as a (K,) tensor."""
    found = {}
    for name in MEMBER_VARYING:
        values = [float(m.params_[name]) for m in methods]
        if any(v != values[0] for v in values):
            found[name] = torch.tensor(values, device=device)
    return found


class DROCCMethod(DeepMethod):
    """Fit and score for a plugin that defines ``loss(model, x, y, step)`` for one batch.

    ``distance`` chooses the set of negatives: ``"euclidean"`` (DROCC,
    DROCC-OE) or ``"mahalanobis"`` (DROCC-LF's sigma-weighted annulus).
    ``uses_negatives`` trains on the labelled negatives too (OCLN).
    """

    distance: ClassVar[str] = "euclidean"
    Params: ClassVar[type] = DROCCParams
    objective_: DROCCObjective  # set by prepare and fit

    @classmethod
    def validate(cls, params: dict[str, Any]) -> None:
        if params["lr_steps"]:
            raise ParamError(f"{cls.name} schedules its rate with {cls.name}.lr_milestones, not lr_steps")
        if params["only_ce_epochs"] is not None and params["only_ce_epochs"] >= params["epochs"] and params["mu"] > 0:
            # the reference scripts allow it (40 epochs with 50 CE-only ones) and then train a plain classifier
            raise ParamError(
                f"{cls.name}.only_ce_epochs ({params['only_ce_epochs']}) must be below {cls.name}.epochs "
                f"({params['epochs']}), or {cls.name} never sees an adversarial point"
            )

    def prepare(self, info: DataInfo, device: str = "cpu") -> DROCCMethod:
        """Resolve the parameters for ``info`` without training (the loss can then run on its own)."""
        self.info_ = info
        self.device_ = resolve_device(device)
        self.params_ = self.resolve_params(info, self.params)
        with torch.random.fork_rng(devices=[]):  # a throwaway network, only to settle precision="auto"
            network = nets.build(self.params_["backbone"], info.shape, out_dim=1)
        self.params_["precision"] = resolve_precision(self.params_["precision"], network, self.device_)
        self.objective_ = DROCCObjective(self)
        return self

    def fit(self, task: FitTask, ctx: FitContext) -> DROCCMethod:
        model = self._build(task, ctx)
        X, y = (task.train.X, task.train.y) if self.uses_negatives else (task.train.normal, None)
        self.train_model(model, self.objective_, X, y, task, ctx)
        return self

    def _build(self, task: FitTask, ctx: FitContext) -> nn.Module:
        """Resolve the parameters, seed torch by the job and build the untrained network."""
        p = self.start(task, ctx)  # resolved parameters; torch seeded by the job
        self.objective_ = DROCCObjective(self)
        self.config_: TrainConfig = self.config_
        self.config_.lr_steps = drocc_lr_steps(p["epochs"], p["only_ce_epochs"], p["lr_milestones"])
        options = {"hidden": p["hidden"]} if p["backbone"] in ("mlp", "lstm") else {}
        model = nets.build(p["backbone"], task.info.shape, out_dim=1, bias=p["bias"], **options)
        self.settle_precision(model)  # before a seed group asks for fp32
        return model

    @classmethod
    def fit_group(
        cls, params: Sequence[dict[str, Any]], tasks: Sequence[FitTask], ctxs: Sequence[FitContext]
    ) -> list[Method | Exception] | None:
        """K jobs in one training loop (``odbench.deep.training.train_members``); ``None`` where that does not apply.

        It applies to the Euclidean annulus without negatives (DROCC), with
        training sets of one size, to members whose resolved parameters
        differ at most in :data:`GROUP_VARYING`.  The plugin's own ``loss``
        trains them all, on a lead whose :data:`MEMBER_VARYING` parameters
        are each member's, as (K,) tensors.
        """
        if cls.uses_negatives or cls.distance != "euclidean":
            return None
        methods = [cls(**p) for p in params]
        models = [m._build(t, c) for m, t, c in zip(methods, tasks, ctxs, strict=True)]
        if any(_fixed(m.params_) != _fixed(methods[0].params_) for m in methods):
            return None
        if len({len(t.train.normal) for t in tasks}) != 1 or len(tasks[0].train.normal) < 2:
            return None  # one batch schedule; and a member's batch of one never searches (as alone)
        lead = copy.copy(methods[0])
        lead.params_ = {**methods[0].params_, **_per_member(methods, resolve_device(ctxs[0].device))}
        lead.objective_ = DROCCObjective(lead)
        members = [
            Member(model, m.objective_, t.train.normal, None, t, c, m.config_)
            for m, model, t, c in zip(methods, models, tasks, ctxs, strict=True)
        ]
        results = train_members(members, lead.objective_)
        fitted: list[Method | Exception] = []
        for method, model, result in zip(methods, models, results, strict=True):
            if isinstance(result, Exception):
                fitted.append(result)
            else:
                method.model_, method.result_ = model, result
                fitted.append(method)
        return fitted

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, step: Step) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------ what the fit reports about itself

    @property
    def projection_tally_(self) -> ProjectionTally:
        """The projections of this fit's searches (made on first use: solo fits; a seed group does not count)."""
        if "_tally" not in self.__dict__:
            self._tally = ProjectionTally()
        return self._tally

    @property
    def diagnostics_(self) -> dict[str, Any]:
        """For the record: how often the projection moved an offset, and DROCC-LF's sigma spread.

        When the projection never binds (every offset already inside the
        annulus), DROCC-LF's sigma changes nothing and it trains exactly as
        DROCC-OE: the record says so instead of leaving two equal columns unexplained.
        """
        found: dict[str, Any] = {}
        if "_tally" in self.__dict__:
            found["projection"] = {"distance": self.distance, **self._tally.as_record()}
        sigma = self.__dict__.get("sigma_seen_")
        if sigma is not None:
            values = sigma.float().reshape(-1, sigma.shape[-1]).mean(0).cpu().numpy()  # per coordinate
            q = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
            found["sigma"] = {
                "min": float(q[0]), "p10": float(q[1]), "median": float(q[2]), "p90": float(q[3]), "max": float(q[4]),
                "cv": float(values.std() / max(values.mean(), 1e-12)),
            }  # fmt: skip
        return found

    # ------------------------------------------------------------ building blocks of a plugin's loss

    @staticmethod
    def ce(model: nn.Module, x: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the labels ``normal`` (True = normal, the logit's direction); per member in a group."""
        return member_mean(model, F.binary_cross_entropy_with_logits, logits(model, x), normal.float())

    def search(self, model: nn.Module, normal: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Algorithm 1's adversarial search from ``normal + h``: points of ``N(r)`` the model calls normal.

        Runs with frozen parameters and (by default) frozen BatchNorm running
        statistics; projects onto the Euclidean annulus, or with DROCC-LF onto
        the sigma-weighted one (sigma per epoch, or per example of this batch).
        """
        p = self.params_
        sigma = None
        if self.distance == "mahalanobis":
            sigma = self.objective_.sigma_ if p.get("sigma_update") == "epoch" else None
            if sigma is None:
                with batchnorm_stats_frozen(model):
                    sigma = input_sensitivity(model, normal)

        tally = self.projection_tally_
        if sigma is not None:
            self.sigma_seen_ = sigma.detach()

        def sigma_project(offsets: torch.Tensor) -> torch.Tensor:
            assert sigma is not None
            flat = offsets.flatten(1)
            tally.observe(mahalanobis_norm(flat, sigma), p["radius"], p["gamma"])
            return mahalanobis_project(flat, sigma, p["radius"], p["gamma"]).view_as(offsets)

        annulus = Annulus(p["radius"], p["gamma"])

        def euclidean_project(offsets: torch.Tensor) -> torch.Tensor:
            tally.observe(_row_norms(offsets), p["radius"], p["gamma"])
            return annulus(offsets)

        project: Callable[[torch.Tensor], torch.Tensor] = euclidean_project if sigma is None else sigma_project
        if size_of(model) > 1:  # a group's members go untallied: the stacked MLP's search needs the Annulus itself
            project = annulus

        with batchnorm_stats_frozen(model, frozen=not p["adversarial_bn_update"]):
            return adversarial_search(
                model, normal, h, project, p["ascent_step_size"], p["ascent_num_steps"], p["project_every"], p["precision"]
            )
