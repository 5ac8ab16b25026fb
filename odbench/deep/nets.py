"""The backbone zoo shared by every deep method.

Comparisons in the paper use one architecture per dataset for every deep
method; so does odbench.  A dataset names its default backbone
(``Dataset.backbone``); a method may override it with a ``backbone``
parameter.  Every backbone maps a batch of examples of ``shape`` to
``out_dim`` numbers:

* ``build(name, shape, out_dim=1)`` — a classifier ending in one logit
  (DROCC, BCE);
* ``build(name, shape, out_dim=k, bias=False)`` — an encoder to k features
  without bias terms (DeepSVDD, DeepSAD: biases let the hypersphere
  collapse).

The conv nets take the size of their linear layers from the input shape, so
the same LeNet runs on 28x28 MNIST, 32x32 CIFAR or 16x16 test images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_BN_EPS = 1e-4  # as in the DeepSVDD / DROCC reference LeNets


def _flat_size(features: nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        was_training = features.training
        features.eval()
        size = features(torch.zeros(1, *shape)).numel()
        features.train(was_training)
    return size


class MLP(nn.Module):
    """One hidden layer (the paper's tabular network; 128 units there)."""

    def __init__(self, shape: tuple[int, ...], out_dim: int = 1, bias: bool = True, hidden: int = 128) -> None:
        super().__init__()
        d = int(torch.tensor(shape).prod())
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(d, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, out_dim, bias=bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    # BatchNorm without affine parameters: no bias sneaks in through BN
    return [
        nn.Conv2d(c_in, c_out, 5, padding=2, bias=False),
        nn.BatchNorm2d(c_out, eps=_BN_EPS, affine=False),
        nn.LeakyReLU(),
        nn.MaxPool2d(2, 2),
    ]


class LeNetCIFAR(nn.Module):
    """DeepSVDD's / DROCC's CIFAR-10 LeNet: 3 conv blocks (32/64/128 channels).

    Encoder: conv blocks, then a linear layer to ``rep_dim`` (128), as in
    Ruff et al.'s ``CIFAR10_LeNet``.  As a classifier (``out_dim=1``) it
    continues 128 -> 64 -> 1 with LeakyReLU after the first two linear
    layers, as EdgeML's ``CIFAR10_LeNet`` (``examples/pytorch/DROCC/main_cifar.py``);
    ``batchnorm_head=True`` (backbone ``lenet_cifar_bn``) adds an affine-free
    BatchNorm1d after the first, which the reference does not have.  As an
    encoder (``out_dim=k``) the last linear layer maps to k.  No linear
    layer has a bias unless ``bias=True``.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        out_dim: int = 1,
        bias: bool = False,
        rep_dim: int = 128,
        batchnorm_head: bool = False,
    ) -> None:
        super().__init__()
        c = shape[0]
        self.features = nn.Sequential(*_conv_block(c, 32), *_conv_block(32, 64), *_conv_block(64, 128), nn.Flatten())
        flat = _flat_size(self.features, shape)
        if out_dim == 1:
            norm = [nn.BatchNorm1d(rep_dim, eps=_BN_EPS, affine=False)] if batchnorm_head else []
            self.head: nn.Module = nn.Sequential(
                nn.Linear(flat, rep_dim, bias=bias),
                *norm,
                nn.LeakyReLU(),
                nn.Linear(rep_dim, rep_dim // 2, bias=bias),
                nn.LeakyReLU(),
                nn.Linear(rep_dim // 2, 1, bias=bias),
            )
        else:
            self.head = nn.Linear(flat, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _lenet_cifar_bn(shape: tuple[int, ...], out_dim: int = 1, bias: bool = False, rep_dim: int = 128) -> nn.Module:
    return LeNetCIFAR(shape, out_dim=out_dim, bias=bias, rep_dim=rep_dim, batchnorm_head=True)


class LeNetMNIST(nn.Module):
    """The MNIST LeNet: 2 conv blocks (8 and 4 channels), then linear layers.

    As a classifier (``out_dim=1``): EdgeML's ``MNIST_LeNet``
    (``examples/pytorch/DROCC/main_drocclf_mnist.py``), flat -> 64 -> 1 with
    no activation between the two linear layers (so the head is linear in
    the features, as there).  As an encoder (``out_dim=k``): Ruff et al.'s
    ``MNIST_LeNet``, flat -> k.
    """

    def __init__(self, shape: tuple[int, ...], out_dim: int = 1, bias: bool = False, rep_dim: int = 64) -> None:
        super().__init__()
        c = shape[0]
        self.features = nn.Sequential(*_conv_block(c, 8), *_conv_block(8, 4), nn.Flatten())
        flat = _flat_size(self.features, shape)
        if out_dim == 1:
            self.head: nn.Module = nn.Sequential(nn.Linear(flat, rep_dim, bias=bias), nn.Linear(rep_dim, 1, bias=bias))
        else:
            self.head = nn.Linear(flat, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LSTMNet(nn.Module):
    """One-layer LSTM over (T, F) sequences; a linear head on the last hidden state.

    128 hidden units: the ``--hd`` default of EdgeML's ``main_timeseries.py``
    and of its Epileptic Seizure README command.
    """

    def __init__(self, shape: tuple[int, ...], out_dim: int = 1, bias: bool = True, hidden: int = 128) -> None:
        super().__init__()
        n_features = shape[-1]
        self.lstm = nn.LSTM(n_features, hidden, num_layers=1, batch_first=True, bias=bias)
        self.head = nn.Linear(hidden, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_last, _) = self.lstm(x)
        return self.head(h_last[-1])


def _mobilenet_v2(shape: tuple[int, ...], out_dim: int = 1, bias: bool = True, **_: int) -> nn.Module:
    try:
        from torchvision.models import mobilenet_v2
    except ImportError as err:  # optional dependency
        raise ImportError("the mobilenet_v2 backbone needs torchvision: pip install 'odbench[vision]'") from err
    net = mobilenet_v2(weights=None, num_classes=out_dim)
    if not bias:
        last = net.classifier[-1]
        net.classifier[-1] = nn.Linear(last.in_features, out_dim, bias=False)
    return net


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "lenet_cifar": LeNetCIFAR,
    "lenet_cifar_bn": _lenet_cifar_bn,  # odbench's earlier CIFAR classifier, BatchNorm1d after fc1
    "lenet_mnist": LeNetMNIST,
    "lstm": LSTMNet,
    "mobilenet_v2": _mobilenet_v2,
}


def build(name: str, shape: tuple[int, ...], out_dim: int = 1, bias: bool | None = None, **options: int) -> nn.Module:
    """A freshly initialised backbone ``name`` for examples of ``shape``.

    ``bias=None`` keeps the backbone's own choice (the LeNets have none, as
    in the references); pass ``False`` for hypersphere methods.  ``options``
    go to the backbone (``hidden`` for mlp/lstm, ``rep_dim`` for the
    LeNets).  Seed torch before calling for reproducible weights.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    if bias is not None:
        options = {**options, "bias": bias}
    return BACKBONES[name](tuple(shape), out_dim=out_dim, **options)
