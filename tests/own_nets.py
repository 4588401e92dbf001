"""Networks for tests/test_own_model.py: ones a user might write that foldwise must
handle (a network vmap cannot stack), and ones that are broken in the ways users break
them."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn


class NoisyMLP(nn.Module):
    """Gaussian noise on the inputs in training: a random op vmap refuses to batch."""

    def __init__(self, in_features: int, out_features: int, width: int = 8, noise: float = 0.1):
        super().__init__()
        self.noise = noise
        self.net = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(),
                                 nn.Linear(width, out_features))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = x + self.noise * torch.randn_like(x)
        return self.net(x)


class Raises(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.lin = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.view(-1, 3, 3))  # a shape the data never has


class WrongShape(nn.Module):
    def __init__(self, in_features: int):
        super().__init__()
        self.lin = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)  # one output whatever the classes


def not_a_module(width: int = 3) -> str:
    return "a network"


class NoOptimizers(pl.LightningModule):
    """A LightningModule that forgot configure_optimizers."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.lin = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)


class OtherNames(nn.Module):
    """Takes the data's shapes under argument names of its own: mapped in the config with
    ``${foldwise:n_features}`` and ``${foldwise:out_features}``."""

    def __init__(self, n_inputs: int, n_labels: int, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_inputs, width), nn.ReLU(), nn.Linear(width, n_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
