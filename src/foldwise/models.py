"""Networks and the Lightning module that trains them.

:data:`BACKBONES` maps ``model.name`` to a plain ``nn.Module`` builder; the
:class:`Classifier` Lightning module adds the loss, the optimiser and per-epoch
metrics (torchmetrics), and remembers the epoch with the best *inner* validation
loss so the fit can roll back to it.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from foldwise.data import Meta


class MLP(nn.Module):
    def __init__(self, n_features: int, n_classes: int, hidden: int, depth: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """``depth`` 3x3 conv blocks (channels hidden, 2*hidden, ...) then a dense head."""

    def __init__(
        self, image_shape: list[int], n_classes: int, hidden: int, depth: int, dropout: float
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
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, *self.image_shape)))


# model.name -> builder(meta, common kwargs). New architectures register here.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda meta, **kw: MLP(meta.n_features, **kw),
    "cnn": lambda meta, **kw: CNN(list(meta.image_shape or []), **kw),
}


def build_backbone(model: DictConfig, meta: Meta) -> nn.Module:
    return BACKBONES[str(model.name)](
        meta,
        n_classes=meta.n_classes,
        hidden=int(model.hidden),
        depth=int(model.depth),
        dropout=float(model.dropout),
    )


def _metrics(n_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "loss": MeanMetric(),
            "acc": MulticlassAccuracy(n_classes, average="micro"),
            "f1": MulticlassF1Score(n_classes, average="macro"),
        }
    )


class Classifier(pl.LightningModule):
    """Cross-entropy classifier with per-epoch ``train_*``, ``val_*`` and ``inner_*`` metrics.

    Validation dataloaders are named by ``val_names`` (e.g. ``["inner", "val"]``):
    ``inner`` is the early-stopping split carved from the training rows, ``val`` the
    fold's validation rows, reported per epoch but never used for any decision.
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_classes: int,
        lr: float,
        weight_decay: float,
        val_names: tuple[str, ...] = (),
    ):
        super().__init__()
        self.backbone = backbone
        self.lr, self.weight_decay = lr, weight_decay
        self.val_names = val_names
        self.train_metrics = _metrics(n_classes)
        self.val_metrics = nn.ModuleDict({n: _metrics(n_classes) for n in val_names})
        self.history: dict[str, list[float]] = defaultdict(list)
        self.best_inner_loss = math.inf
        self.best_epoch = 0
        self._best_state: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def _update(self, metrics: MetricCollection, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        metrics["loss"].update(loss.detach(), weight=len(y))
        preds = logits.detach().argmax(1)
        metrics["acc"].update(preds, y)
        metrics["f1"].update(preds, y)
        return loss

    def training_step(self, batch, batch_idx):
        return self._update(self.train_metrics, batch)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._update(self.val_metrics[self.val_names[dataloader_idx]], batch)

    def _record(self, prefix: str, metrics: MetricCollection) -> dict[str, float]:
        values = {f"{prefix}_{k}": float(v) for k, v in metrics.compute().items()}
        metrics.reset()
        for k, v in values.items():
            self.history[k].append(v)
        return values

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        for name in self.val_names:
            values = self._record(name, self.val_metrics[name])
            if name == "inner":
                loss = values["inner_loss"]
                # EarlyStopping reads this; the fold's own val metrics are never logged here.
                self.log("inner_loss", loss, prog_bar=True)
                if loss < self.best_inner_loss:
                    self.best_inner_loss, self.best_epoch = loss, self.current_epoch + 1
                    self._best_state = copy.deepcopy(self.backbone.state_dict())

    def on_train_epoch_end(self) -> None:
        self._record("train", self.train_metrics)
        self.history["epoch"].append(self.current_epoch + 1)

    def restore_best(self) -> None:
        """Roll back to the epoch with the lowest inner validation loss, if one was tracked."""
        if self._best_state is not None:
            self.backbone.load_state_dict(self._best_state)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


@torch.no_grad()
def evaluate(
    backbone: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096
) -> tuple[dict[str, float], torch.Tensor]:
    """Loss, accuracy and macro-F1 in eval mode; also returns per-sample predictions.

    Scored with scikit-learn in float64 (torchmetrics' float32 can report 1.0000001);
    macro-F1 averages over the classes present in ``y`` or the predictions, as
    torchmetrics' per-epoch values and the lockbox's bootstrap do.
    """
    backbone.eval()
    device = next(backbone.parameters()).device
    loss, preds = 0.0, []
    for i in range(0, len(y), batch_size):
        logits = backbone(x[i : i + batch_size].to(device)).cpu()
        loss += float(nn.functional.cross_entropy(logits, y[i : i + batch_size], reduction="sum"))
        preds.append(logits.argmax(1))
    pred = torch.cat(preds)
    yt, yp = y.numpy(), pred.numpy()
    acc = accuracy_score(yt, yp)
    f1 = f1_score(yt, yp, average="macro", zero_division=0)
    return {"loss": loss / len(y), "acc": float(acc), "f1": float(f1)}, pred
