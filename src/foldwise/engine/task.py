"""Tasks: what one model is trained on and scored on, and what came of it.

A :class:`Task` is (configuration, training rows with multiplicity, evaluation rows,
seed), as the design note defines it; the engine needs nothing else. :func:`prepare`
turns one into the arrays a stack uses: the inner early-stopping split carved from the
*training* rows, and standardisation statistics fit on the rows the model fits on.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

from foldwise import transforms
from foldwise.transforms import standardise


@dataclass(frozen=True)
class Hyper:
    """The per-model training settings; models that differ only in these share a stack."""

    lr: float
    weight_decay: float
    dropout: float
    max_epochs: int
    early_stopping: bool
    inner_fraction: float
    patience: int


@dataclass
class Task:
    """One model to train.

    ``model`` is the architecture config (``name``, ``hidden``, ``depth``, ...);
    ``train`` holds row positions into the engine's data arrays, repeated for rows drawn
    more than once (bootstrap); ``evals`` names row positions scored every epoch and at
    the end (``{"val": ...}``), never used to train or to pick the epoch.
    """

    key: str
    model: dict[str, Any]
    hyper: Hyper
    batch_size: int
    seed: int
    train: np.ndarray
    evals: dict[str, np.ndarray] = field(default_factory=dict)
    label: str = ""
    predict: tuple[str, ...] = ()  # eval sets whose per-row predictions the outcome keeps
    # Row sets only predicted once training ends (not scored every epoch), e.g. a bagging
    # member's fold-training rows for the out-of-bag score; name them in ``predict`` too.
    finals: dict[str, np.ndarray] = field(default_factory=dict)
    proba: bool = False  # predictions also keep every class's probability ("proba")
    group: str = ""  # tasks sharing a group are planned into one stack (ensemble members)
    # Boosting: per-row loss weights (AdaBoost's sample weights) and per-row regression
    # targets (gradient boosting's residuals), each over every row of the engine's data
    # arrays; None: weight 1, and the data's own target.
    weights: np.ndarray | None = None
    targets: np.ndarray | None = None
    # An ensemble this task stands for (``cfg.ensemble``); the engine never reads it:
    # :mod:`foldwise.ensemble` expands such a task into member tasks before training.
    ensemble: dict[str, Any] | None = None
    # An ensemble's "val" prediction record also keeps ``staged``: the prediction of the
    # ensemble of its first 1, 2, …, B members (the bias–variance-by-members curves).
    staged: bool = False
    # The optimizer (``cfg.optim``: ``name`` or ``_target_`` and its options); its lr and
    # weight decay are per model (``hyper``), the rest is shared by a stack. {}: Adam.
    optim: dict[str, Any] = field(default_factory=dict)
    # How the inputs are standardised, fit on the rows the model fits on: per feature
    # ("feature", a StandardScaler), per image channel ("channel": one mean and std per
    # channel over every pixel), not at all ("none"), or by the user's transform (a
    # ``_target_`` mapping, :mod:`foldwise.transforms`). Per model, never shared.
    normalize: str | dict[str, Any] = "feature"
    # The learning-rate scheduler (``cfg.scheduler``: ``_target_``, ``interval``,
    # ``monitor`` and its arguments), each model's own; {}: a constant lr.
    scheduler: dict[str, Any] = field(default_factory=dict)

    def arch(self) -> tuple:
        """Tasks with equal ``arch()`` can train in one stack. A built-in's dropout is per
        model; any key of a user's network (``_target_``) may change its structure."""
        own = "_target_" in self.model
        shape = {k: _hashable(v) for k, v in self.model.items() if own or k != "dropout"}
        opt = {k: _hashable(v) for k, v in self.optim.items() if k not in ("lr", "weight_decay")}
        if opt.get("name", "adam") == "adam" and len(opt) <= 1:
            opt = {}  # Adam, however it is spelled
        # a scheduler is per model, unless it moves the momentum too (then torch's own
        # optimizer trains the model alone)
        solo = cycles_momentum(self.scheduler)
        return (tuple(sorted(shape.items())), self.batch_size, tuple(sorted(opt.items())), solo)


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


@dataclass
class Outcome:
    """What training one task produced."""

    status: str  # "ok" or "failed"
    metrics: dict[str, float] = field(default_factory=dict)  # train_* and eval-set scores
    history: dict[str, list[float]] = field(default_factory=dict)  # per-epoch curves
    best_epoch: int = 0
    epochs_trained: int = 0
    n_train: int = 0
    n_val: int = 0
    scaler: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None
    state_dict: dict | None = None  # only when asked for (the refit)
    # per eval set named in Task.predict: {"pred": class (or value) per row, "loss": per-row
    # loss, "prob": P(class 1) for two classes},
    # rows in the order of Task.evals[name]
    predictions: dict[str, dict[str, list]] = field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        """The JSON-able part: what a result file records."""
        out = {
            "status": self.status,
            "metrics": self.metrics,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "epochs_trained": self.epochs_trained,
            "n_train": self.n_train,
            "n_val": self.n_val,
        }
        if self.error:
            out["error"] = self.error
        if self.predictions:
            out["predictions"] = self.predictions
        return out


@dataclass
class Prepared:
    """A task's rows and preprocessing, ready for a stack."""

    fit: np.ndarray  # positions the model trains on (with multiplicity), in batch-draw order
    inner: np.ndarray | None  # early-stopping rows, disjoint from ``fit``'s rows
    evals: dict[str, np.ndarray]  # scored every epoch; ``finals`` rows join them here
    mean: np.ndarray
    scale: np.ndarray
    y_mean: float = 0.0  # regression: the target's mean and scale over the fit rows
    y_scale: float = 1.0
    # the user's transform, fit on ``fit`` (then ``mean``/``scale`` are 0 and 1)
    transform: Any = None


def prepare(
    task: Task,
    x: np.ndarray | None,
    y: np.ndarray,
    *,
    regression: bool = False,
    image_shape=None,
    items: Any = None,
) -> Prepared:
    """Inner split (seeded; for classification stratified when every class has two rows
    and both sides can hold a row of every class present) and the scalers (left empty
    when ``x`` is None: streamed rows, whose statistics :mod:`.feed` accumulates). A
    user's transform is fit on the fit rows of ``items`` (a :class:`transforms.Rows`).

    The inner split is drawn over the task's *distinct* training rows, so a row drawn
    several times (bootstrap) is either all fit or all inner, never both.
    """
    rows = pd.unique(task.train)
    if task.hyper.early_stopping:
        yr = y[rows]
        n_inner = math.ceil(task.hyper.inner_fraction * len(rows))  # as train_test_split
        present = len(np.unique(yr))
        stratifiable = (
            not regression
            and np.bincount(yr).min(initial=len(yr)) >= 2
            and min(n_inner, len(rows) - n_inner) >= present
        )
        strat = yr if stratifiable else None
        fit_rows, inner = train_test_split(
            rows, test_size=task.hyper.inner_fraction, stratify=strat, random_state=task.seed
        )
        if len(rows) == len(task.train):
            fit = fit_rows
        else:  # keep each fit row's multiplicity
            count = pd.Series(task.train).value_counts()
            fit = np.repeat(fit_rows, count.loc[fit_rows].to_numpy())
    else:
        fit, inner = np.asarray(task.train), None
    fitted = None
    if transforms.is_user(task.normalize):
        fitted = transforms.fit(task.normalize, items, np.asarray(fit), torch.float64)
        d = len(np.asarray(items[0][0]).reshape(-1))
        mean, scale = np.zeros(d), np.ones(d)
    elif x is None:
        mean = scale = np.zeros(0)
    else:
        mean, scale = standardise(x[fit], task.normalize, image_shape)
    target = {}
    if regression:
        yf = y[fit].astype(np.float64)
        target = {"y_mean": float(yf.mean()), "y_scale": float(yf.std()) or 1.0}
    return Prepared(
        fit=np.asarray(fit, dtype=np.int64),
        inner=None if inner is None else np.asarray(inner, dtype=np.int64),
        evals={k: np.asarray(v, dtype=np.int64) for k, v in {**task.finals, **task.evals}.items()},
        mean=mean,
        scale=scale,
        transform=fitted,
        **target,
    )


def cycles_momentum(spec: dict) -> bool:
    """Whether the scheduler also moves the optimizer's momentum (OneCycleLR and CyclicLR
    by default): a stand-in optimizer (:class:`foldwise.engine.optim.Schedules`) would
    lose that, so such a model trains with torch's own optimizer, the scheduler on it."""
    if not spec.get("_target_"):
        return False
    from foldwise.models import resolve

    cls = resolve(str(spec["_target_"]), "scheduler._target_")
    param = inspect.signature(cls).parameters.get("cycle_momentum")
    return param is not None and bool(spec.get("cycle_momentum", param.default))
