"""The plumbing under the DROCC plugins: their parameters, network, training, and search call.

A plugin (``methods/drocc.py``) states the method: its parameters, defaults,
grid and search space, and its loss for one batch.  This base builds the
network, trains it with the shared loop (``odbench.deep.training``) and gives
the loss its two building blocks: :meth:`DROCCMethod.ce` and
:meth:`DROCCMethod.search`, the adversarial search onto ``N(r)``.
"""

from __future__ import annotations

import copy
import dataclasses
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
from odbench.deep.method import DeepMethod, DeepParams, DeepRuntime
from odbench.deep.precision import PRECISIONS, resolve_precision
from odbench.deep.training import Batches, Member, Step, TrainConfig, resolve_device, train_members
from odbench.drocc.ascent import adversarial_search, logits
from odbench.drocc.objective import MEMBER_VARYING, REFERENCE_LR_MILESTONES, DROCCObjective, drocc_lr_steps
from odbench.drocc.projections import Annulus, ProjectionTally, _row_norms, mahalanobis_norm, mahalanobis_project


@dataclass
class DROCCRuntime(DeepRuntime):
    """DROCC's engineering settings: :class:`DeepRuntime`'s, with NHWC and bf16 where they are native."""

    memory_format: str = param(
        "auto", "conv weights NCHW, NHWC (channels_last), or NHWC on CPU only (auto)",
        choices=("contiguous", "channels_last", "auto"),
    )  # fmt: skip
    # bf16 where it is native: 3x faster on the CIFAR LeNet, and no AUROC lost (docs/performance.md, "DROCC performance")
    precision: str = param(
        "auto", "fp32, bf16, or bf16 for conv nets on a GPU or a CPU with AVX-512 BF16 / AMX and fp32 elsewhere (auto)",
        choices=PRECISIONS,
    )  # fmt: skip


@dataclass
class DROCCParams(DeepParams):
    """DROCC's parameters (paper §3, Algorithm 1) besides the shared optimisation settings."""

    Runtime: ClassVar[type] = DROCCRuntime

    radius: float = param(None, "r, inner radius of the annulus N(r) of negatives; None: sqrt(d)/2", low=0)
    gamma: float = param(None, "the annulus is r <= ||h|| <= gamma r; None: 1 on images, 2 elsewhere", low=1)
    mu: float = param(1.0, "mu, weight of the adversarial loss (on the generated negatives) beside the cross-entropy (authors' --lamda)", low=0)
    ascent_step_size: float = param(0.001, "eta, step of the normalized gradient ascent", low=0)
    ascent_num_steps: int = param(50, "m, ascent steps per batch (0: project N(0, I) offsets, DROCC-Rand)", low=0)
    only_ce_epochs: int = param(None, "epochs of plain cross-entropy first; None: 50 on tables, else 0", low=0)
    project_every: int = param(1, "project the negatives back onto the annulus every N ascent steps (paper: 1; the authors' code: 10)", low=1)
    lr_milestones: tuple[tuple[float, float], ...] = param(
        REFERENCE_LR_MILESTONES, "learning-rate drops after the CE-only epochs, as (share of the remaining epochs, lr multiplier) pairs; the default is the authors'"
    )
    adversarial_bn_update: bool = param(False, "adversarial forwards update BatchNorm's running statistics")
    hidden: int = param(128, "hidden units of the MLP or LSTM backbone; the LeNet backbones have fixed widths (authors' --hd)", low=1)
    bias: bool | None = param(None, "bias terms in the network; None: the backbone's own choice")
    epochs: int = param(100, "training epochs, CE-only ones included", low=1)
    batch_size: int = param(
        None, "examples per batch; None: 128, or n_train/8 (at least 16) where that gives an epoch fewer than 8 steps",
        low=1,
    )  # fmt: skip
    momentum: float = param(None, "SGD momentum; None: 0 on CIFAR-10, 0.99 elsewhere, as the authors ran it (authors' --mom)", low=0, high=1)
    weight_decay: float = param(0.0, "lambda, L2 penalty on the weights", low=0)


#: what a group's members may set for themselves: the loss's own (``MEMBER_VARYING``) and the optimizer's
GROUP_VARYING = MEMBER_VARYING | {"lr", "optimizer", "momentum", "weight_decay"}


def _fixed(params: dict[str, Any]) -> dict[str, Any]:
    """The resolved parameters a group's members must share."""
    return {k: v for k, v in params.items() if k not in GROUP_VARYING}


def _per_member(methods: Sequence[DROCCMethod], device: torch.device) -> dict[str, torch.Tensor]:
    """The :data:`MEMBER_VARYING` parameters in which the members differ, each as a (K,) tensor."""
    found = {}
    for name in MEMBER_VARYING:
        values = [float(getattr(m.params, name)) for m in methods]
        if any(v != values[0] for v in values):
            found[name] = torch.tensor(values, device=device)
    return found


class DROCCMethod(DeepMethod):
    """Fit and score for a plugin that defines ``loss(model, x, y, step)`` for one batch.

    The set of negatives is the Euclidean annulus ``N(r)`` (DROCC,
    DROCC-OE); a plugin measures it otherwise by overriding :meth:`annulus`
    (DROCC-LF's sigma-weighted one), and may keep state across a fit in
    :meth:`epoch_start`.  ``distance`` names the annulus in the record.
    ``uses_negatives`` trains on the labelled negatives too (OCLN).
    """

    distance: ClassVar[str] = "euclidean"
    Params: ClassVar[type] = DROCCParams
    params: DROCCParams
    runtime: DROCCRuntime
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
        self.resolve(info)
        with torch.random.fork_rng(devices=[]):  # a throwaway network, only to settle precision="auto"
            network = nets.build(self.params.backbone, info.shape, out_dim=1)
        self.runtime.precision = resolve_precision(self.runtime.precision, network, self.device_)
        self.objective_ = DROCCObjective(self)
        return self

    def fit(self, task: FitTask, ctx: FitContext) -> DROCCMethod:
        model = self._build(task, ctx)
        X, y = (task.train.X, task.train.y) if self.uses_negatives else (task.train.normal, None)
        self.train_model(model, self.objective_, X, y, task, ctx)
        return self

    def _build(self, task: FitTask, ctx: FitContext) -> nn.Module:
        """Seed torch by the job and build the untrained network for the resolved parameters."""
        self.start(task, ctx)
        p = self.params
        self.objective_ = DROCCObjective(self)
        self.config_: TrainConfig = self.config_
        self.config_.lr_steps = drocc_lr_steps(p.epochs, p.only_ce_epochs, p.lr_milestones)
        options = {"hidden": p.hidden} if p.backbone in ("mlp", "lstm") else {}
        model = nets.build(p.backbone, task.info.shape, out_dim=1, bias=p.bias, **options)
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
        if cls.uses_negatives:  # the group's loss is DROCC's, without negatives (DROCC-LF's class does not opt in)
            return None
        methods = [cls(**p) for p in params]
        for method, task in zip(methods, tasks, strict=True):
            method.resolve(task.info)  # what fit does before its body: _build is not fit
        resolved = [m.resolved_params() for m in methods]
        if any(_fixed(r) != _fixed(resolved[0]) for r in resolved):
            return None
        if len({len(t.train.normal) for t in tasks}) != 1 or len(tasks[0].train.normal) < 2:
            return None  # one batch schedule; and a member's batch of one never searches (as alone)
        models = [m._build(t, c) for m, t, c in zip(methods, tasks, ctxs, strict=True)]
        if any(m.config_.precision != "fp32" for m in methods):
            return None  # members' (K,) loss parameters and the stacked MLP are fp32 only
        lead = copy.copy(methods[0])
        per_member: dict[str, Any] = _per_member(methods, resolve_device(ctxs[0].device))  # (K,) tensors for floats
        lead.params = dataclasses.replace(methods[0].params, **per_member)
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
        statistics; projects with :meth:`annulus`.
        """
        p = self.params
        project = self.annulus(model, normal)
        with batchnorm_stats_frozen(model, frozen=not p.adversarial_bn_update):
            return adversarial_search(
                model, normal, h, project, p.ascent_step_size, p.ascent_num_steps, p.project_every, self.runtime.precision
            )

    def annulus(self, model: nn.Module, normal: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The projection of this batch's offsets onto ``N(r)``: the Euclidean annulus ``r <= ||h|| <= gamma r``."""
        p, tally = self.params, self.projection_tally_
        annulus = Annulus(p.radius, p.gamma)

        def euclidean_project(offsets: torch.Tensor) -> torch.Tensor:
            tally.observe(_row_norms(offsets), p.radius, p.gamma)
            return annulus(offsets)

        if size_of(model) > 1:  # a group's members go untallied: the stacked MLP's search needs the Annulus itself
            return annulus
        return euclidean_project

    def sigma_annulus(self, sigma: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The projection onto the annulus measured in ``||v||_sigma`` (Proposition 1), for an :meth:`annulus` override."""
        p, tally = self.params, self.projection_tally_
        self.sigma_seen_ = sigma.detach()

        def sigma_project(offsets: torch.Tensor) -> torch.Tensor:
            flat = offsets.flatten(1)
            tally.observe(mahalanobis_norm(flat, sigma), p.radius, p.gamma)
            return mahalanobis_project(flat, sigma, p.radius, p.gamma).view_as(offsets)

        return sigma_project

    def epoch_start(self, model: nn.Module, epoch: int, data: Batches) -> None:
        """Called by the training loop before each epoch (DROCC-LF averages its sigma here); nothing by default."""
