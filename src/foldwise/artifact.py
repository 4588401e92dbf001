"""The refit model on disk: ``models/final/model.pt`` + ``config.yaml`` + ``info.json``.

The bundle carries everything needed to score new rows — weights, the
standardisation fitted on the dev rows, the dataset metadata and the
hyperparameters (for an ensemble: every member's weights and scaler) — and a content
fingerprint that the lockbox uses to recognise
"the same model" across re-runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from foldwise import transforms
from foldwise.data import Meta, feature_columns
from foldwise.models import build_backbone, carry_code, use_carried_code


def fingerprint(
    state_dict: dict[str, torch.Tensor], scaler: dict[str, list[float]], config: dict[str, Any]
) -> str:
    """SHA-256 over the weights' bytes, the scaler and the config (not file bytes)."""
    return members_fingerprint([(state_dict, scaler)], config)


def members_fingerprint(
    members: list[tuple[dict[str, torch.Tensor], dict[str, Any]]],
    config: dict[str, Any],
    combine: dict[str, Any] | None = None,
) -> str:
    """:func:`fingerprint` of an ensemble: every member's weights and scaler, in order,
    and how they combine (boosting's weights). A single model is an ensemble of one (the
    same hash as before ensembles existed)."""
    h = hashlib.sha256()
    for state_dict, scaler in members:
        for key in sorted(state_dict):
            h.update(key.encode())
            h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
        h.update(np.asarray(scaler["mean"], dtype=np.float64).tobytes())
        h.update(np.asarray(scaler["scale"], dtype=np.float64).tobytes())
        if "y_mean" in scaler:  # regression: the target's standardisation
            h.update(np.asarray([scaler["y_mean"], scaler["y_scale"]], dtype=np.float64).tobytes())
        if "transform" in scaler:  # the user's fitted transform, as pickled at the save
            h.update(scaler["transform"])
    h.update(OmegaConf.to_yaml(OmegaConf.create(config), sort_keys=True).encode())
    if combine:
        h.update(json.dumps(combine, sort_keys=True).encode())
    return h.hexdigest()


def save(
    folder: Path,
    backbones: torch.nn.Module | list[torch.nn.Module],
    scalers: dict | list[dict],
    meta: Meta,
    config: dict[str, Any],
    combine: dict[str, Any] | None = None,
) -> str:
    """Write the bundle atomically (temp file + rename); return its fingerprint.

    One network and scaler, or an ensemble's members (lists, in member order) and how
    they combine (``combine``: bagging averages; boosting's ``alphas`` and ``f0``)."""
    single = not isinstance(backbones, list)
    nets = [backbones] if single else backbones
    scs = [_stored(sc) for sc in ([scalers] if single else scalers)]
    states = [{k: v.detach().cpu() for k, v in n.state_dict().items()} for n in nets]
    fp = members_fingerprint(list(zip(states, scs, strict=True)), config, combine)
    bundle: dict[str, Any] = {"meta": meta.to_dict(), "config": config, "fingerprint": fp}
    code = carry_code(config["model"])  # a user's network: its source travels with it
    if code:
        bundle["code"] = code
    if transforms.is_user(config.get("normalize")):  # and the user's transform's source
        code = carry_code(config["normalize"])
        if code:
            bundle["transform_code"] = code
    if combine:
        bundle["combine"] = combine
    if single:
        bundle.update(state_dict=states[0], scaler=scs[0])
    else:
        pairs = zip(states, scs, strict=True)
        bundle["members"] = [{"state_dict": st, "scaler": sc} for st, sc in pairs]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".model.pt.tmp"
    torch.save(bundle, tmp)
    tmp.replace(folder / "model.pt")
    return fp


def baseline_fingerprint(estimator: bytes, config: dict[str, Any]) -> str:
    """SHA-256 over a baseline's pickled, fitted scikit-learn estimator and its config."""
    h = hashlib.sha256(b"baseline\0")
    h.update(estimator)
    h.update(json.dumps(config, sort_keys=True).encode())
    return h.hexdigest()


def save_baseline(folder: Path, estimator: Any, meta: Meta, config: dict[str, Any]) -> str:
    """A selected baseline's bundle (``selection.baselines=true``): the fitted scikit-learn
    estimator, pickled, in ``model.pt`` beside the metadata, with a fingerprint over the
    pickled bytes, so the lockbox, ``foldwise predict`` and the pyfunc treat it as any
    bundle. ``config``: ``{"baseline": name, "task": ...}``. Returns the fingerprint."""
    blob = pickle.dumps(estimator)
    fp = baseline_fingerprint(blob, config)
    bundle = {"meta": meta.to_dict(), "config": config, "fingerprint": fp, "estimator": blob}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".model.pt.tmp"
    torch.save(bundle, tmp)
    tmp.replace(folder / "model.pt")
    return fp


def load(path: Path) -> Any:
    """The bundle at ``path`` (``model.pt``): a network's (:class:`LoadedModel`) or a
    selected baseline's (:class:`BaselineModel`)."""
    bundle = torch.load(path, map_location="cpu", weights_only=False)
    if "estimator" in bundle:
        return BaselineModel(path, bundle)
    return LoadedModel(path, bundle)


class BaselineModel:
    """A selected baseline's bundle: a scikit-learn pipeline fit on every dev row, with
    :class:`LoadedModel`'s interface (``meta``, ``fingerprint``, ``outputs``,
    ``predict``), so every surface that serves a network serves it."""

    def __init__(self, path: Path, bundle: dict[str, Any]):
        self.meta = Meta.from_dict(bundle["meta"])
        self.config = bundle["config"]
        self.fingerprint = baseline_fingerprint(bundle["estimator"], self.config)
        if self.fingerprint != bundle["fingerprint"]:
            raise ValueError(f"{path} is corrupt: its estimator does not match its fingerprint.")
        self.estimator = pickle.loads(bundle["estimator"])

    def outputs(self, x: np.ndarray) -> dict[str, np.ndarray | None]:
        """As :meth:`LoadedModel.outputs`: ``pred`` and ``proba`` [n, C] over every class
        of the task (a class the dev rows lacked: probability 0)."""
        from threadpoolctl import threadpool_limits

        x = np.asarray(x, dtype=np.float64)
        with threadpool_limits(1):  # as the baselines were scored: one thread
            if self.meta.regression:
                return {"pred": np.asarray(self.estimator.predict(x), float), "proba": None}
            proba = np.zeros((len(x), self.meta.n_classes))
            proba[:, self.estimator.classes_] = self.estimator.predict_proba(x)
        return {"pred": proba.argmax(1), "proba": proba}

    def predict(self, df: pd.DataFrame) -> dict[str, np.ndarray | None]:
        """As :meth:`LoadedModel.predict`: ``y``, ``pred``, per-row ``loss``, ``prob``."""
        out = self.outputs(df[feature_columns(df)].to_numpy(dtype=np.float64))
        if self.meta.regression:
            yv = df["target"].to_numpy(dtype=np.float64)
            return {"y": yv, "pred": out["pred"], "loss": (out["pred"] - yv) ** 2, "prob": None}
        yv = df["target"].to_numpy(dtype=np.int64)
        proba = out["proba"]
        loss = -np.log(np.clip(proba[np.arange(len(yv)), yv], 1e-12, None))
        return {"y": yv, "pred": out["pred"], "loss": loss,
                "prob": proba[:, 1] if proba.shape[1] == 2 else None}  # fmt: skip


class LoadedModel:
    """A saved bundle (one network, or an ensemble's members), ready to score a table."""

    def __init__(self, path: Path, bundle: dict[str, Any] | None = None):
        if bundle is None:
            bundle = torch.load(path, map_location="cpu", weights_only=False)
        if bundle.get("code"):  # loads wherever it is, with the code it was trained with
            use_carried_code(bundle["code"])
        if bundle.get("transform_code"):
            use_carried_code(bundle["transform_code"])
        self.meta = Meta.from_dict(bundle["meta"])
        self.config = bundle["config"]
        members = bundle.get("members") or [
            {"state_dict": bundle["state_dict"], "scaler": bundle["scaler"]}
        ]
        self.members: list[tuple[torch.nn.Module, dict]] = []
        self.item_shape = tuple(self.meta.image_shape or (self.meta.n_features,))
        for m in members:
            net = build_backbone(OmegaConf.create(self.config["model"]), self.meta)
            net.load_state_dict(m["state_dict"])
            # Scored in float64: the same rows give the same numbers in any process, whatever
            # its thread count (float32 sums vary in their last bits with the blocking).
            scaler = dict(m["scaler"])
            if "transform" in scaler:  # the user's transform, as fit on the refit's rows
                scaler["transform"] = pickle.loads(scaler["transform"])
            self.members.append((net.double().eval(), scaler))
        self.backbone, self.scaler = self.members[0]
        self.combine = bundle.get("combine") or {"name": "bagging"}
        self.fingerprint = members_fingerprint(
            [(m["state_dict"], m["scaler"]) for m in members], self.config, bundle.get("combine")
        )
        if self.fingerprint != bundle["fingerprint"]:
            raise ValueError(f"{path} is corrupt: its weights do not match its fingerprint.")

    def tensors(self, df: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale(df, self.scaler)

    @torch.no_grad()
    def outputs(self, x: np.ndarray) -> dict[str, np.ndarray | None]:
        """The model on raw (unscaled) features ``x`` [n, d], in the canonical column order:
        ``pred`` (class code, or value in the target's units) and ``proba`` [n, C] (None
        for regression). Each member standardises with its own scaler; an ensemble
        averages its members' probabilities (or values), a boosted one combines them by
        its weights."""
        outs = []
        for net, scaler in self.members:
            xs = self._transformed(np.asarray(x, dtype=np.float64), scaler)
            xs = (xs - np.asarray(scaler["mean"])) / np.asarray(scaler["scale"])
            out = net(torch.from_numpy(xs))
            if self.meta.regression:
                outs.append(out[:, 0] * scaler["y_scale"] + scaler["y_mean"])
            else:
                outs.append(out.log_softmax(1))
        if self.combine["name"] in ("adaboost", "gradient_boosting"):
            return self._boosted(outs)
        if self.meta.regression:
            return {"pred": torch.stack(outs).mean(0).numpy(), "proba": None}
        # the mean probability, exactly: logsumexp of the members' log-probabilities
        logp = torch.logsumexp(torch.stack(outs), 0) - math.log(len(outs))
        return {"pred": logp.argmax(1).numpy(), "proba": logp.exp().numpy(), "logp": logp.numpy()}

    def predict(self, df: pd.DataFrame) -> dict[str, np.ndarray | None]:
        """Scores of every row of a canonical table: ``y``, ``pred`` (class, or value in
        the target's units), per-row ``loss`` (cross-entropy, or squared error) and
        ``prob`` (P(class 1) for two classes, else None)."""
        out = self.outputs(df[feature_columns(df)].to_numpy(dtype=np.float64))
        if self.meta.regression:
            yv = df["target"].to_numpy(dtype=np.float64)
            return {"y": yv, "pred": out["pred"], "loss": (out["pred"] - yv) ** 2, "prob": None}
        yv = df["target"].to_numpy(dtype=np.int64)
        rows = np.arange(len(yv))
        if "logp" in out:
            loss = -out["logp"][rows, yv]
        else:
            loss = -np.log(np.clip(out["proba"][rows, yv], 1e-12, None))
        proba = out["proba"]
        return {"y": yv, "pred": out["pred"], "loss": loss,
                "prob": proba[:, 1] if proba.shape[1] == 2 else None}  # fmt: skip

    def _boosted(self, outs: list[torch.Tensor]) -> dict[str, np.ndarray | None]:
        """Boosting's combination (:mod:`foldwise.ensemble.boosting`): SAMME's weighted
        votes, or ``F_0 + Σ ν·h_m``."""
        from foldwise.ensemble import boosting

        alphas = self.combine["alphas"]
        if self.meta.regression:
            f = boosting.staged(self.combine["f0"], [o.numpy() for o in outs], alphas[0])[-1]
            return {"pred": np.asarray(f), "proba": None}
        k = self.meta.n_classes
        proba = boosting.samme_proba([o.argmax(1).numpy() for o in outs], alphas, k)
        return {"pred": proba.argmax(1), "proba": proba}

    def _transformed(self, x: np.ndarray, scaler: dict) -> np.ndarray:
        if "transform" not in scaler:
            return x
        return transforms.apply(scaler["transform"], torch.from_numpy(x), self.item_shape).numpy()

    def scale(self, df: pd.DataFrame, scaler: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardise a canonical table with a saved scaler: ``(x, y)`` tensors."""
        x = self._transformed(df[feature_columns(df)].to_numpy(dtype=np.float64), scaler)
        x = (x - np.asarray(scaler["mean"])) / np.asarray(scaler["scale"])
        kind = np.float64 if df["target"].dtype.kind == "f" else np.int64
        y = df["target"].to_numpy(dtype=kind, copy=True)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


def _stored(scaler: dict) -> dict:
    """A scaler as the bundle keeps it: a user's fitted transform pickled once, so the
    fingerprint hashes the very bytes that are loaded."""
    if "transform" not in scaler or isinstance(scaler["transform"], bytes):
        return scaler
    return {**scaler, "transform": pickle.dumps(scaler["transform"])}
