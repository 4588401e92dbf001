"""Networks: :data:`BACKBONES` maps ``model.name`` to a plain ``nn.Module`` builder.

The many-models engine (:mod:`foldwise.engine`) stacks these networks and trains
them; nothing here knows about stacking, so a new architecture only registers here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from foldwise.config.keys import check_model_keys
from foldwise.data import Meta


class MLP(nn.Module):
    def __init__(self, n_features: int, n_outputs: int, hidden: int, depth: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """``depth`` 3x3 conv blocks (channels hidden, 2*hidden, ...) then a dense head."""

    def __init__(
        self, image_shape: list[int], n_outputs: int, hidden: int, depth: int, dropout: float
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        channels, height, width = self.image_shape
        blocks: list[nn.Module] = []
        for i in range(depth):
            out = hidden * 2**i
            blocks += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
            if min(height, width) >= 4:  # pool while the map is big enough to halve
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * height * width, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, *self.image_shape)))


# model.name -> builder(meta, common kwargs). New architectures register here.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda meta, **kw: MLP(meta.n_features, **kw),
    "cnn": lambda meta, **kw: CNN(list(meta.image_shape or []), **kw),
}


def build_backbone(model: DictConfig, meta: Meta) -> nn.Module:
    # Every key it is given must be one it reads (model._target_ would be ignored).
    check_model_keys(model)
    return BACKBONES[str(model.name)](
        meta,
        n_outputs=meta.n_outputs,
        hidden=int(model.hidden),
        depth=int(model.depth),
        dropout=float(model.dropout),
    )
