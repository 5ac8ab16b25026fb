"""A wide residual network (Zagoruyko & Komodakis, 2016), GEOM's classifier of transformations.

As in the GEOM authors' Keras ``create_wide_residual_network``
(izikgo/AnomalyDetectionTransformations at 6327041): a 3x3 convolution to 16
channels, then three groups of ``(depth - 4) / 6`` pre-activation basic
blocks (BatchNorm-ReLU-conv3x3, BatchNorm-ReLU-conv3x3; a 1x1 convolution on
the shortcut where the width or stride changes) with 16k, 32k and 64k
channels and strides 1, 2, 2; then BatchNorm-ReLU, global average pooling
and a linear layer.  Convolutions have no bias and He-normal weights.  GEOM
uses WRN-10-4 on 32x32 images (WRN-16-8 on cats-vs-dogs).
"""

from __future__ import annotations

import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
        self.shortcut = None if c_in == c_out and stride == 1 else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-``depth``-``width`` mapping ``(N, C, H, W)`` images to ``n_classes`` logits.

    ``base`` scales every width (16 in the paper: 16, 16k, 32k, 64k channels);
    a smaller one makes a network that trains at CPU scale.
    """

    def __init__(self, in_channels: int, n_classes: int, depth: int = 10, width: int = 4, base: int = 16) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a wide residual network's depth is 6n + 4 (10, 16, 22, 28, ...); got {depth}")
        n = (depth - 4) // 6
        widths = [base, base * width, 2 * base * width, 4 * base * width]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)]
        for group, stride in zip(range(1, 4), (1, 2, 2)):
            for i in range(n):
                layers.append(
                    _Block(widths[group - 1] if i == 0 else widths[group], widths[group], stride if i == 0 else 1)
                )
        layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[3], n_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
