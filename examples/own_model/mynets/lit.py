"""The same CNN as a LightningModule that trains itself: its own loss (label smoothing),
optimizer (SGD with momentum) and schedule (StepLR), and its own ``self.log``. foldwise
trains it with a Trainer per fold and scores ``forward`` like any network."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from mynets.nets import SmallCNN


class LitCNN(pl.LightningModule):
    def __init__(
        self, in_shape: tuple[int, int, int], out_features: int, width: int = 8,
        lr: float = 0.05, momentum: float = 0.9, label_smoothing: float = 0.05,
    ):  # fmt: skip
        super().__init__()
        self.net = SmallCNN(in_shape, out_features, width=width)
        self.lr, self.momentum, self.label_smoothing = lr, momentum, label_smoothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # logits: what foldwise scores

    def training_step(self, batch, batch_idx):
        x, y = batch  # foldwise's batch contract: (x, y) tuples
        loss = F.cross_entropy(self(x), y, label_smoothing=self.label_smoothing)
        self.log("train_ce", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)]
