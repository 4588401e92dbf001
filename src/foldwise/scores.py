"""What a model is scored with, by task: metric names, direction, range, row-level scores.

Classification models report ``loss`` (cross-entropy), ``acc`` (accuracy) and ``f1``
(macro-F1); regression models report ``loss`` (= ``mse``, the mean squared error in the
target's units), ``mse``, ``mae`` (mean absolute error) and ``r2`` (the coefficient of
determination of the scored rows, as scikit-learn's ``r2_score``). Every per-row score
here is scikit-learn's, so pooled and bootstrap summaries agree with it by construction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

TASKS = ("classification", "regression")
SCORES = {"classification": ("loss", "acc", "f1"), "regression": ("loss", "mse", "mae", "r2")}
# The score selection and diagnosis use when the config leaves them to the task.
PRIMARY = {"classification": "f1", "regression": "mse"}
# Validation scores that are a mean of per-row losses (selection.interval=ncv needs one).
PER_ROW_SCORES = ("val_loss", "val_mse", "val_mae", "val_acc")
# The scikit-learn baselines a sweep's networks are scored beside (foldwise.methods.baselines).
BASELINES = ("dummy", "linear", "hgb")
LOWER_IS_BETTER = frozenset({"loss", "mse", "mae"})
BOUNDS = {
    "loss": (0.0, math.inf),
    "acc": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "mse": (0.0, math.inf),
    "mae": (0.0, math.inf),
    "r2": (-math.inf, 1.0),
}
NAMES = {
    "loss": "loss",
    "acc": "accuracy",
    "f1": "macro-F1",
    "mse": "mean squared error",
    "mae": "mean absolute error",
    "r2": "R²",
}


def base(metric: str) -> str:
    """``val_f1`` → ``f1``; ``cv_val_mse`` → ``mse``."""
    return metric.rsplit("_", 1)[-1]


def higher_is_better(metric: str) -> bool:
    return base(metric) not in LOWER_IS_BETTER


def bounds(metric: str) -> tuple[float, float]:
    return BOUNDS.get(base(metric), (-math.inf, math.inf))


def task_of(metric_names: Iterable[str]) -> str:
    """The task whose scores a result's metric names hold (``val_r2`` → regression)."""
    names = {base(m) for m in metric_names}
    return "regression" if "mse" in names else "classification"


def selection_metric(cfg) -> str:
    """``selection.metric``, or the task's primary validation score when it is null."""
    metric = cfg.selection.get("metric")
    return str(metric) if metric else f"val_{PRIMARY[task(cfg)]}"


def diagnosis_metric(cfg) -> str:
    """``diagnosis.metric``, or the task's bounded score (F1; R² for regression)."""
    metric = cfg.get("diagnosis", {}).get("metric")
    return str(metric) if metric else ("r2" if task(cfg) == "regression" else "f1")


def task(cfg) -> str:
    return str(cfg.data.get("task") or "classification")


def row_scores(task_name: str, y: np.ndarray, pred: np.ndarray, loss: np.ndarray) -> dict:
    """Every score of ``task_name`` over scored rows (labels or values ``y``, predictions,
    per-row losses)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    y, pred, loss = np.asarray(y), np.asarray(pred), np.asarray(loss, dtype=float)
    if task_name == "regression":
        return {
            "loss": float(loss.mean()),
            "mse": float(mean_squared_error(y, pred)),
            "mae": float(mean_absolute_error(y, pred)),
            "r2": r2(y, pred),
        }
    return {"loss": float(loss.mean()), "acc": float((y == pred).mean()), "f1": macro_f1(y, pred)}


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="macro", zero_division=0))


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """scikit-learn's R²; NaN with fewer than two rows (undefined, and sklearn warns)."""
    from sklearn.metrics import r2_score

    return float(r2_score(y, pred)) if len(y) >= 2 else math.nan
