"""Two networks a user might bring. Neither knows about foldwise: the data passes
``in_shape`` / ``in_features`` and ``out_features``; every other argument is a
``model.*`` key of the config, swept like any setting."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv → BatchNorm → ReLU → pool blocks, then dropout and a linear head (images)."""

    def __init__(
        self, in_shape: tuple[int, int, int], out_features: int, width: int = 8,
        blocks: int = 1, dropout: float = 0.1,
    ):  # fmt: skip
        super().__init__()
        self.in_shape = tuple(in_shape)
        channels, height, wide = self.in_shape
        layers: list[nn.Module] = []
        for i in range(blocks):
            out = width * 2**i
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            if min(height, wide) >= 4:
                layers.append(nn.MaxPool2d(2))
                height, wide = height // 2, wide // 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels * height * wide, out_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # foldwise gives rows as the data holds them: images flattened to [B, C*H*W]
        return self.head(self.features(x.view(-1, *self.in_shape)))


class Gate(nn.Module):
    """A custom layer: a learned per-unit gate, sigmoid(g) * x."""

    def __init__(self, units: int):
        super().__init__()
        self.g = nn.Parameter(torch.zeros(units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.g) * x


class GatedMLP(nn.Module):
    """Tables: Linear → BatchNorm1d → gate → ReLU → dropout, twice, with two dropout rates."""

    def __init__(
        self, in_features: int, out_features: int, width: int = 32, dropout: float = 0.1,
        last_dropout: float = 0.3,
    ):  # fmt: skip
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_features, width), nn.BatchNorm1d(width), Gate(width), nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, width), nn.BatchNorm1d(width), Gate(width), nn.ReLU(),
            nn.Dropout(last_dropout),
        )  # fmt: skip
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))
