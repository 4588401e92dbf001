"""The refit model on disk: ``models/final/model.pt`` + ``config.yaml`` + ``info.json``.

The bundle carries everything needed to score new rows — weights, the
standardisation fitted on the dev rows, the dataset metadata and the
hyperparameters — and a content fingerprint that the lockbox uses to recognise
"the same model" across re-runs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from foldwise.data import Meta, feature_columns
from foldwise.models import build_backbone


def fingerprint(
    state_dict: dict[str, torch.Tensor], scaler: dict[str, list[float]], config: dict[str, Any]
) -> str:
    """SHA-256 over the weights' bytes, the scaler and the config (not file bytes)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    h.update(np.asarray(scaler["mean"], dtype=np.float64).tobytes())
    h.update(np.asarray(scaler["scale"], dtype=np.float64).tobytes())
    if "y_mean" in scaler:  # regression: the target's standardisation
        h.update(np.asarray([scaler["y_mean"], scaler["y_scale"]], dtype=np.float64).tobytes())
    h.update(OmegaConf.to_yaml(OmegaConf.create(config), sort_keys=True).encode())
    return h.hexdigest()


def save(
    folder: Path, backbone: torch.nn.Module, scaler: dict, meta: Meta, config: dict[str, Any]
) -> str:
    """Write the bundle atomically (temp file + rename); return its fingerprint."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    fp = fingerprint(state, scaler, config)
    tmp = folder / ".model.pt.tmp"
    torch.save(
        {
            "state_dict": state,
            "scaler": scaler,
            "meta": meta.to_dict(),
            "config": config,
            "fingerprint": fp,
        },
        tmp,
    )
    tmp.replace(folder / "model.pt")
    return fp


class LoadedModel:
    """A saved bundle, ready to score a canonical table."""

    def __init__(self, path: Path):
        bundle = torch.load(path, map_location="cpu", weights_only=False)
        self.meta = Meta.from_dict(bundle["meta"])
        self.config = bundle["config"]
        self.scaler = bundle["scaler"]
        self.backbone = build_backbone(OmegaConf.create(self.config["model"]), self.meta)
        self.backbone.load_state_dict(bundle["state_dict"])
        self.backbone.eval()
        self.fingerprint = fingerprint(bundle["state_dict"], self.scaler, self.config)
        if self.fingerprint != bundle["fingerprint"]:
            raise ValueError(f"{path} is corrupt: its weights do not match its fingerprint.")

    def tensors(self, df: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale(df, self.scaler)

    @torch.no_grad()
    def predict(self, df: pd.DataFrame) -> dict[str, np.ndarray | None]:
        """Scores of every row of a canonical table: ``y``, ``pred`` (class, or value in
        the target's units), per-row ``loss`` (cross-entropy, or squared error) and
        ``prob`` (P(class 1) for two classes, else None)."""
        x, y = self.tensors(df)
        out = self.backbone(x)
        if self.meta.regression:
            pred = out[:, 0].double() * self.scaler["y_scale"] + self.scaler["y_mean"]
            yv = y.double()
            return {"y": yv.numpy(), "pred": pred.numpy(), "loss": ((pred - yv) ** 2).numpy(),
                    "prob": None}  # fmt: skip
        loss = torch.nn.functional.cross_entropy(out, y, reduction="none")
        prob = out.softmax(1)[:, 1].numpy() if out.shape[1] == 2 else None
        return {"y": y.numpy(), "pred": out.argmax(1).numpy(), "loss": loss.numpy(), "prob": prob}

    @staticmethod
    def scale(df: pd.DataFrame, scaler: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardise a canonical table with a saved scaler: ``(x, y)`` tensors."""
        x = df[feature_columns(df)].to_numpy(dtype=np.float64)
        x = (x - np.asarray(scaler["mean"])) / np.asarray(scaler["scale"])
        kind = np.float64 if df["target"].dtype.kind == "f" else np.int64
        y = df["target"].to_numpy(dtype=kind, copy=True)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
