"""Preprocessing fit on a model's own training rows: the built-in standardisation, or
the user's transform (``data.normalize._target_``).

A transform is any object with

- ``fit(dataset, train_indices)``: learn its state from the rows ``train_indices`` of
  ``dataset`` (a map-style dataset of ``(x, y)`` items, ``x`` a tensor of the item's
  shape: ``[d]``, or ``[C, H, W]`` for images), returning itself (or None);
- ``__call__(x)``: the transformed batch ``x`` ``[B, *item shape]``, same shape and dtype.

The engine fits one per model, on the rows that model fits on (never its early-stopping,
validation or test rows, exactly as the table scaler), and applies it to every batch that
model sees, in training and scoring; the refit model carries its fitted transform, so
``foldwise predict`` and the test stage apply the same. The built-in normalisation
(:class:`Standardize`) follows the same contract; the engine computes its statistics
directly from the rows (one vectorised pass over a stack) with :func:`standardise`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

from foldwise.errors import FoldwiseError
from foldwise.targets import accepts, resolve

BUILTIN = ("feature", "channel", "none")
KEY = "data.normalize._target_"


def standardise(xf: np.ndarray, how: str, image_shape=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``mean`` and ``scale`` from the fit rows ``xf`` [n, d]: each feature's
    own (``"feature"``, scikit-learn's StandardScaler), each image channel's over all its
    pixels (``"channel"``, repeated over the channel's features), or 0 and 1 (``"none"``).
    A zero spread scales by 1, as StandardScaler does."""
    if how == "none":
        return np.zeros(xf.shape[1]), np.ones(xf.shape[1])
    if how == "channel":
        if not image_shape:
            raise ValueError("normalize=channel needs images (an image_shape)")
        c = int(image_shape[0])
        per = xf.astype(np.float64).reshape(len(xf), c, -1)
        mean, std = per.mean((0, 2)), per.std((0, 2))
        std[std == 0] = 1.0
        size = per.shape[2]
        return np.repeat(mean, size), np.repeat(std, size)
    scaler = StandardScaler().fit(xf.astype(np.float32))
    return scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)


class Standardize:
    """The built-in normalisation (``data.normalize=feature|channel|none``) as a
    transform: statistics from the training rows, ``(x - mean) / scale`` after."""

    def __init__(self, per: str = "feature", image_shape: Sequence[int] | None = None) -> None:
        self.per, self.image_shape = per, image_shape
        self.mean_: torch.Tensor | None = None
        self.scale_: torch.Tensor | None = None

    def fit(self, dataset: Any, train_indices: Sequence[int]) -> Standardize:
        xf = np.stack([np.asarray(dataset[int(i)][0]).reshape(-1) for i in train_indices])
        mean, scale = standardise(xf, self.per, self.image_shape)
        self.mean_, self.scale_ = torch.from_numpy(mean), torch.from_numpy(scale)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1)
        out = (flat - self.mean_.to(x)) / self.scale_.to(x)
        return out.reshape(x.shape)


class Rows(torch.utils.data.Dataset):
    """The engine's rows as a transform's ``dataset``: item ``i`` is ``(x_i, y_i)``, ``x_i``
    a tensor of the item's shape read from ``source`` (an array [N, d], or anything whose
    item ``i`` is row ``i``'s flat features), ``y_i`` the row's label (or value)."""

    def __init__(self, source: Any, y: np.ndarray, item_shape: Sequence[int]) -> None:
        self.source, self.y, self.shape = source, y, tuple(int(s) for s in item_shape)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        return torch.as_tensor(np.asarray(self.source[i])).reshape(self.shape), self.y[i]


def is_user(spec: Any) -> bool:
    """Whether ``data.normalize`` names the user's transform (a ``_target_`` mapping)."""
    return isinstance(spec, Mapping)


def spec_of(value: Any) -> str | dict[str, Any]:
    """``data.normalize`` as a task holds it: a built-in's name, or the transform's
    ``_target_`` mapping as a plain dict."""
    if is_user(value):
        from omegaconf import DictConfig, OmegaConf

        return (
            OmegaConf.to_container(value, resolve=True)
            if isinstance(value, DictConfig)
            else dict(value)
        )
    return str(value or "feature")


def build(spec: Mapping[str, Any]) -> Any:
    """A new, unfitted instance of the transform ``spec`` names (its other keys are its
    arguments); refused, naming the fix, when it lacks ``fit`` or is not callable."""
    target = str(spec.get("_target_") or "")
    if not target:
        raise FoldwiseError(
            "params: data.normalize is a mapping without _target_.",
            "name your transform: -S 'data.normalize={_target_: mypkg.MyTransform}', or use "
            f"one of {', '.join(BUILTIN)}.",
        )
    cls = resolve(target, KEY)
    kwargs = {k: v for k, v in spec.items() if k != "_target_"}
    names, var_kw = accepts(cls)
    unknown = sorted(set(kwargs) - names) if not var_kw else []
    if unknown:
        raise FoldwiseError(
            f"params: data.normalize: {target} takes no argument {', '.join(unknown)}.",
            f"remove them, or use its arguments: {', '.join(sorted(names)) or 'none'}.",
        )
    try:
        obj = cls(**kwargs)
    except Exception as err:
        raise FoldwiseError(
            f"params: data.normalize: {target}({_shown(kwargs)}) raised "
            f"{type(err).__name__}: {err}.",
            "fix the transform or its arguments (data.normalize.<argument>).",
        ) from err
    if not callable(getattr(obj, "fit", None)) or not callable(obj):
        raise FoldwiseError(
            f"params: data.normalize: {target} is not a transform: it needs a "
            "fit(dataset, train_indices) method and a __call__(x) that returns x transformed.",
            "add fit(dataset, train_indices) and __call__(x) (docs/data.md, 'Preprocessing "
            f"fit on the training rows'), or use one of {', '.join(BUILTIN)}.",
        )
    return obj


def fit(spec: Mapping[str, Any], dataset: Any, rows: np.ndarray, dtype: torch.dtype) -> Any:
    """The transform fit on ``rows`` of ``dataset``, checked on two of them: it must give
    back a finite tensor of the batch's shape."""
    obj = build(spec)
    target = spec["_target_"]
    try:
        fitted = obj.fit(dataset, np.asarray(rows, dtype=np.int64))
    except Exception as err:
        raise FoldwiseError(
            f"data.normalize: {target}.fit(dataset, train_indices) raised "
            f"{type(err).__name__}: {err}.",
            "fix the transform's fit: it gets a dataset of (x, y) items (x a tensor of the "
            "item's shape) and the training rows' indices.",
        ) from err
    obj = obj if fitted is None else fitted
    batch = torch.stack([dataset[int(i)][0] for i in rows[:2]]).to(dtype)
    try:
        out = obj(batch)
    except Exception as err:
        raise FoldwiseError(
            f"data.normalize: {target}(x) on a batch of shape {tuple(batch.shape)} raised "
            f"{type(err).__name__}: {err}.",
            "it gets a batch [B, *item shape] of the engine's dtype and returns one of the "
            "same shape.",
        ) from err
    if not isinstance(out, torch.Tensor) or out.shape != batch.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FoldwiseError(
            f"data.normalize: {target}(x) turned a batch of shape {tuple(batch.shape)} into {got}.",
            "return a tensor of the input's shape (the network's input size is the data's).",
        )
    if not torch.isfinite(out).all():
        raise FoldwiseError(
            f"data.normalize: {target}(x) gave NaN or infinite values on training rows.",
            "check its fitted state (e.g. a division by a zero spread).",
        )
    return obj


def apply(obj: Any, x: torch.Tensor, item_shape: Sequence[int]) -> torch.Tensor:
    """``obj`` on flat rows ``x`` [B, d]: reshaped to the items' shape and back."""
    out = obj(x.reshape(len(x), *item_shape))
    return out.reshape(len(x), -1).to(x.dtype)


def _shown(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
