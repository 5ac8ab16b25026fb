"""Decoders that mirror the backbone encoders, and the autoencoders they make.

An autoencoder here is always ``Autoencoder(encoder, decoder)`` with the
encoder built by ``odbench.deep.nets.build(name, shape, out_dim=rep_dim)``: the
very network a hypersphere method trains, so DeepSVDD can pretrain its
encoder as an autoencoder (Ruff et al., 2018) and keep the weights.

* ``mlp``: rep -> hidden -> d, the encoder's layers in reverse.
* ``lenet_cifar`` / ``lenet_mnist``: the DCAE decoders of Ruff et al.'s code
  (``CIFAR10_LeNet_Autoencoder``, ``MNIST_LeNet_Autoencoder``): per encoder
  block in reverse, a 5x5 transposed convolution, affine-free BatchNorm,
  LeakyReLU and x2 upsampling, then a last transposed convolution to the
  input channels.  The code is reshaped to the encoder's last feature map
  (``rep_dim / (h*w)`` channels) as in the CIFAR reference when it divides,
  else projected by a bias-free linear layer (28x28 MNIST: a 7x7 map, where
  the reference instead reshapes to 4x4 and crops with odd padding).  Two
  departures, both because inputs here are standardized, not scaled to
  [0, 1]: no final sigmoid, and no BatchNorm1d on the code (it also fails
  on a last training batch of one example).
* ``lstm``: Srivastava et al. (2015)'s LSTM encoder-decoder: the code sets
  the decoder LSTM's initial state and is its input at every step; the
  decoder emits the sequence in reverse order (their choice: the first
  steps to reconstruct are the ones the encoder saw last).

:func:`pretrain` is the autoencoder pretraining that DeepSVDD and DeepSAD
share, with Ruff et al.'s schedule (:func:`pretrain_defaults`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from odbench.core.contracts import DataInfo, FitContext, FitTask, Split
from odbench.core.params import param
from odbench.deep import nets
from odbench.deep.training import Objective, Step, TrainConfig, TrainResult, train


class Autoencoder(nn.Module):
    """``decoder(encoder(x))``; output has the input's shape."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class MLPDecoder(nn.Module):
    def __init__(self, shape: tuple[int, ...], rep_dim: int, hidden: int, bias: bool) -> None:
        super().__init__()
        d = int(np.prod(shape))
        self.net = nn.Sequential(
            nn.Linear(rep_dim, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, d, bias=bias), nn.Unflatten(1, shape)
        )

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(code)


class LeNetDecoder(nn.Module):
    """Mirror of a LeNet encoder with conv blocks of ``channels`` (first to last)."""

    def __init__(self, shape: tuple[int, ...], rep_dim: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        c_in, height, width = shape
        h, w = height, width
        for _ in channels:  # each encoder block halves (floor) the map
            h, w = h // 2, w // 2
        self.map_shape = (rep_dim // (h * w), h, w) if rep_dim % (h * w) == 0 else (channels[-1], h, w)
        self.project = (
            None if self.map_shape[0] * h * w == rep_dim else nn.Linear(rep_dim, channels[-1] * h * w, bias=False)
        )
        blocks: list[nn.Module] = []
        previous = self.map_shape[0]
        for c in reversed(channels):
            blocks += [
                nn.ConvTranspose2d(previous, c, 5, padding=2, bias=False),
                nn.BatchNorm2d(c, eps=1e-4, affine=False),
                nn.LeakyReLU(),
                nn.Upsample(scale_factor=2),
            ]
            previous = c
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.ConvTranspose2d(previous, c_in, 5, padding=2, bias=False)
        self.size = (height, width)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = code if self.project is None else self.project(code)
        x = self.out(self.blocks(F.leaky_relu(x.view(len(x), *self.map_shape))))
        # odd sizes lose a row per pooling; upsampling cannot know it
        return x if tuple(x.shape[-2:]) == self.size else F.interpolate(x, size=self.size)


class LSTMDecoder(nn.Module):
    def __init__(self, shape: tuple[int, ...], rep_dim: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.steps, n_features = shape
        self.init_state = nn.Linear(rep_dim, 2 * hidden, bias=bias)
        self.lstm = nn.LSTM(rep_dim, hidden, batch_first=True, bias=bias)
        self.out = nn.Linear(hidden, n_features, bias=bias)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        h0, c0 = torch.tanh(self.init_state(code)).unsqueeze(0).chunk(2, dim=-1)
        inputs = code.unsqueeze(1).expand(-1, self.steps, -1)
        reversed_out, _ = self.lstm(inputs, (h0.contiguous(), c0.contiguous()))
        return self.out(reversed_out).flip(1)  # emitted last step first


def _conv_channels(encoder: nn.Module) -> tuple[int, ...]:
    return tuple(m.out_channels for m in encoder.modules() if isinstance(m, nn.Conv2d))


def build_decoder(name: str, encoder: nn.Module, shape: tuple[int, ...], rep_dim: int) -> nn.Module:
    """The decoder mirroring ``encoder`` (a backbone ``name`` with ``out_dim=rep_dim``)."""
    if name == "mlp":
        first = next(m for m in encoder.modules() if isinstance(m, nn.Linear))
        return MLPDecoder(shape, rep_dim, first.out_features, bias=first.bias is not None)
    if name in ("lenet_cifar", "lenet_cifar_bn", "lenet_mnist"):  # the _bn variant differs in its classifier head only
        return LeNetDecoder(shape, rep_dim, _conv_channels(encoder))
    if name == "lstm":
        lstm = next(m for m in encoder.modules() if isinstance(m, nn.LSTM))
        return LSTMDecoder(shape, rep_dim, lstm.hidden_size, bias=lstm.bias)
    raise ValueError(f"no decoder for backbone {name!r}; autoencoders exist for mlp, lenet_cifar, lenet_mnist, lstm")


def build_autoencoder(name: str, shape: tuple[int, ...], rep_dim: int, bias: bool | None = None) -> Autoencoder:
    """A fresh autoencoder whose encoder is ``nets.build(name, shape, rep_dim, bias)``."""
    encoder = nets.build(name, shape, out_dim=rep_dim, bias=bias)
    return Autoencoder(encoder, build_decoder(name, encoder, shape, rep_dim))


def _squared_error(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.sum((model(x) - x) ** 2, dim=tuple(range(1, x.ndim)))


class Reconstruction(Objective):
    """Loss: mean squared reconstruction error; score: each example's error."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, step: Step) -> torch.Tensor:
        return _squared_error(model, x).mean()

    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return _squared_error(model, x)


@dataclass
class PretrainParams:
    """Ruff et al.'s autoencoder pretraining, as parameters of DeepSVDD and DeepSAD.

    Defaults: the ``main.py`` defaults of lukasruff/Deep-SVDD-PyTorch and
    Deep-SAD-PyTorch (``--pretrain True``, Adam, ``--ae_n_epochs 100``,
    ``--ae_lr 0.001``, no ``--ae_lr_milestone``, ``--ae_batch_size 128``,
    ``--ae_weight_decay 1e-6``); on images the rate is 1e-4, that of every
    README command of both repositories.
    """

    pretrain_epochs: int = param(100, "epochs of autoencoder pretraining of the encoder (0: none)", low=0)
    pretrain_lr: float = param(None, "pretraining rate; None: 1e-4 on images, 1e-3 elsewhere", low=0)
    pretrain_lr_milestones: tuple[int, ...] = param((), "epochs from which the pretraining rate drops tenfold")
    pretrain_batch_size: int = param(128, "pretraining batch size", low=1)
    pretrain_weight_decay: float = param(1e-6, "pretraining L2 penalty", low=0)


def pretrain_defaults(info: DataInfo) -> dict[str, Any]:
    """The pretraining defaults that depend on the data (the rate, by modality)."""
    return {"pretrain_lr": 1e-4 if info.modality == "image" else 1e-3}


def pretrain_config(params: dict[str, Any]) -> TrainConfig:
    """The autoencoder's :class:`TrainConfig` from a method's ``pretrain_*`` parameters.

    Each milestone ``m`` in ``pretrain_lr_milestones`` divides the rate by
    ten from epoch ``m`` on (0-based; Ruff's "250+100 epochs" for CIFAR-10 is
    ``pretrain_epochs=350, pretrain_lr_milestones=[250]``).  Precision and
    memory layout follow the main training; the optimizer is Adam, as in
    the references.
    """
    epochs = int(params["pretrain_epochs"])
    milestones = sorted(int(m) for m in params["pretrain_lr_milestones"])
    # half an epoch below the milestone keeps float rounding out of lr_at's comparison
    steps = tuple(((m - 0.5) / epochs, 0.1 ** (k + 1)) for k, m in enumerate(milestones))
    return TrainConfig.from_params(
        {
            **params,
            "epochs": epochs,
            "lr": params["pretrain_lr"],
            "batch_size": params["pretrain_batch_size"],
            "weight_decay": params["pretrain_weight_decay"],
            "optimizer": "adam",
            "lr_steps": steps,
        }
    )


def pretrain_encoder(
    encoder: nn.Module,
    name: str,
    shape: tuple[int, ...],
    rep_dim: int,
    X: np.ndarray,
    task: FitTask,
    ctx: FitContext,
    config: TrainConfig,
) -> TrainResult:
    """Train ``encoder`` in place as the front half of an autoencoder on ``X``.

    The last epoch is kept, as in the references: no selection split is
    consulted (an anomaly metric of the reconstruction error is not what
    pretraining optimizes).  Per-epoch numbers reach ``ctx`` under
    ``pretrain_*`` keys, so they never mix with the main training's curve.
    """

    def relay(epoch: int, metrics: dict[str, float]) -> None:
        ctx.report(epoch, {f"pretrain_{k}": v for k, v in metrics.items()})

    def relay_plan(phase: str, epochs: int, stages: tuple[tuple[str, int], ...] = ()) -> None:
        ctx.plan(epochs, phase="pretrain", stages=stages)

    autoencoder = Autoencoder(encoder, build_decoder(name, encoder, shape, rep_dim))
    no_labels = Split(task.val.X[:0], None, task.val.index[:0])  # an unlabelled split selects nothing: last epoch
    unselected = dataclasses.replace(task, val=no_labels, oracle_test=None)
    return train(autoencoder, Reconstruction(), X, None, unselected, dataclasses.replace(ctx, on_epoch=relay, on_plan=relay_plan), config)


def pretrain(
    encoder: nn.Module, params: dict[str, Any], X: np.ndarray, task: FitTask, ctx: FitContext
) -> TrainResult | None:
    """Ruff et al.'s pretraining of a hypersphere encoder (``params``: the method's merged parameters).

    ``encoder`` is ``nets.build(params["backbone"], shape, out_dim=params["rep_dim"])``;
    it is trained in place on ``X``.  Returns None when ``pretrain_epochs`` is 0.
    """
    if params["pretrain_epochs"] <= 0:
        return None
    return pretrain_encoder(
        encoder, params["backbone"], task.info.shape, params["rep_dim"], X, task, ctx, pretrain_config(params)
    )
