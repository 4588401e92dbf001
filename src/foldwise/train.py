"""Fit one model on given rows: the unit shared by every CV job and by the refit.

Preprocessing (standardisation) is fit on the rows the model trains on and only
applied to the others. With early stopping enabled, an *inner* validation split is
carved out of the training rows; the epoch with the lowest inner loss is restored.
The rows passed as ``val`` are evaluated every epoch for the learning curve and at
the end for the fold score, and never influence training or the choice of epoch.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset

from foldwise.data import Meta, feature_columns
from foldwise.models import Classifier, build_backbone, evaluate

# Lightning's start-up chatter ("GPU available: ...", tips) repeats on every fit of a sweep.
for _name in ("pytorch_lightning", "lightning.fabric", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
warnings.filterwarnings("ignore", ".*but have no `val_dataloader`.*")


@dataclass
class FitResult:
    """What a fit produced, besides the model itself."""

    metrics: dict[str, float]  # final train_*/val_* after the best epoch is restored
    history: dict[str, list[float]]  # per-epoch curves: epoch, train_*, val_*, inner_*
    best_epoch: int  # epochs to reach the restored weights
    epochs_trained: int
    n_train: int
    n_val: int
    scaler: dict[str, list[float]] = field(default_factory=dict)


def _tensors(df: pd.DataFrame, scaler: StandardScaler) -> tuple[torch.Tensor, torch.Tensor]:
    x = scaler.transform(df[feature_columns(df)].to_numpy(dtype=np.float32)).astype(np.float32)
    y = df["target"].to_numpy(dtype=np.int64, copy=True)  # Parquet-backed arrays are read-only
    return torch.from_numpy(x), torch.from_numpy(y)


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int):
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen)


def fit(
    cfg: DictConfig,
    meta: Meta,
    train: pd.DataFrame,
    val: pd.DataFrame | None = None,
    *,
    epochs: int | None = None,
    progress: bool | None = None,
) -> tuple[torch.nn.Module, FitResult]:
    """Train ``cfg.model`` on ``train``; report on ``val`` (may be ``None`` for the refit).

    ``epochs`` forces a fixed epoch count and disables early stopping (the refit).
    """
    seed = int(cfg.seed)
    pl.seed_everything(seed, workers=True, verbose=False)
    tr = cfg.trainer
    early = bool(tr.early_stopping.enabled) and epochs is None
    if early:
        y = train["target"].to_numpy()
        strat = y if np.bincount(y).min(initial=len(y)) >= 2 else None
        fit_rows, inner = train_test_split(
            train,
            test_size=float(tr.early_stopping.inner_fraction),
            stratify=strat,
            random_state=seed,
        )
    else:
        fit_rows, inner = train, None

    scaler = StandardScaler().fit(fit_rows[feature_columns(fit_rows)].to_numpy(dtype=np.float32))
    x_fit, y_fit = _tensors(fit_rows, scaler)
    named = [("inner", inner), ("val", val)]
    named = [(n, d) for n, d in named if d is not None]
    val_sets = {n: _tensors(d, scaler) for n, d in named}

    module = Classifier(
        build_backbone(cfg.model, meta),
        meta.n_classes,
        float(cfg.optim.lr),
        float(cfg.optim.weight_decay),
        val_names=tuple(val_sets),
    )
    callbacks = []
    if early:
        callbacks.append(EarlyStopping("inner_loss", patience=int(tr.early_stopping.patience)))
    if progress is None:
        progress = sys.stderr.isatty() and not os.environ.get("CI")
    trainer = pl.Trainer(
        max_epochs=int(epochs or tr.max_epochs),
        accelerator=str(tr.accelerator),
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        deterministic=True,
        callbacks=callbacks,
    )
    bs = int(tr.batch_size)
    trainer.fit(
        module,
        train_dataloaders=_loader(x_fit, y_fit, bs, True, seed),
        val_dataloaders=[_loader(x, y, 1024, False, seed) for x, y in val_sets.values()] or None,
    )
    epochs_trained = int(trainer.current_epoch)
    module.restore_best()
    backbone = module.backbone.cpu()
    metrics = {f"train_{k}": v for k, v in evaluate(backbone, x_fit, y_fit)[0].items()}
    if "val" in val_sets:
        metrics |= {f"val_{k}": v for k, v in evaluate(backbone, *val_sets["val"])[0].items()}
    result = FitResult(
        metrics=metrics,
        history={k: list(v) for k, v in module.history.items()},
        best_epoch=module.best_epoch if early else epochs_trained,
        epochs_trained=epochs_trained,
        n_train=len(fit_rows),
        n_val=0 if val is None else len(val),
        scaler={"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()},
    )
    return backbone, result
