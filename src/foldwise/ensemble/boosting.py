"""Boosting's arithmetic: multi-class AdaBoost (SAMME) and gradient boosting with squared
loss. Pure functions of the weak learners' predictions; :mod:`foldwise.ensemble` trains
the learners (Lightning weak learners in stacks, one boosting round at a time).

**SAMME** (Zhu, Zou, Rosset & Hastie 2009), as scikit-learn's
``AdaBoostClassifier`` implements it (checked against it in the tests). Sample weights
start uniform (``1/n``). In round m the weak learner trains with the weights in its loss;
with ``incorrect_i`` its mistakes on the training rows,

- ``err = Σ w_i·incorrect_i / Σ w_i``;
- ``err = 0``: a perfect learner; it is kept with weight 1 and boosting stops;
- ``err ≥ 1 − 1/K``: no better than chance for K classes; the learner is dropped and
  boosting stops (an ensemble whose first learner fails this cannot be fit);
- ``α = learning_rate · (log((1 − err)/err) + log(K − 1))``;
- unless it is the last round, ``w_i ← w_i · exp(α · incorrect_i)`` (only for ``w_i > 0``),
  then normalised to sum 1 (and, as scikit-learn, clipped below at machine epsilon
  before the next round, except rows whose weight was exactly 0 to begin with).

The ensemble's decision for class k is ``Σ_m α_m·c_mk / Σ_m α_m`` with ``c_mk = 1`` when
learner m predicts k and ``−1/(K−1)`` otherwise; its probabilities are
``softmax(decision / (K − 1))`` (their eq. 15; for K = 2, ``softmax([−d, d]/2)`` with the
binary decision ``d``).

**Gradient boosting, squared loss** (Friedman 2001): ``F_0`` = the mean training target;
stage m fits a weak regressor ``h_m`` to the residuals ``r_i = y_i − F_{m−1}(x_i)`` (the
negative gradient of ½(y − F)²) and ``F_m = F_{m−1} + ν·h_m`` with shrinkage ν
(``learning_rate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class SammeRound:
    """One SAMME round's outcome."""

    weights: np.ndarray | None  # the next round's sample weights (None: learner dropped)
    alpha: float | None  # the learner's weight (None: dropped)
    error: float  # its weighted training error
    stop: str | None  # why boosting stops after this round, if it does


def initial_weights(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def samme_round(
    weights: np.ndarray,
    incorrect: np.ndarray,
    n_classes: int,
    learning_rate: float,
    last: bool,
) -> SammeRound:
    """Estimator weight and updated sample weights after one weak learner (see above)."""
    w = np.asarray(weights, dtype=np.float64)
    miss = np.asarray(incorrect, dtype=bool)
    err = float(np.average(miss, weights=w))
    if err <= 0:
        return SammeRound(w, 1.0, 0.0, "a weak learner fit its training rows perfectly")
    if err >= 1.0 - 1.0 / n_classes:
        return SammeRound(None, None, err, f"a weak learner's weighted error {err:.3f} is no "
                          f"better than chance (1 − 1/{n_classes})")  # fmt: skip
    alpha = float(learning_rate) * (np.log((1.0 - err) / err) + np.log(n_classes - 1.0))
    if last:
        return SammeRound(w, alpha, err, None)
    new = np.exp(np.log(np.where(w > 0, w, 1.0)) + alpha * miss * (w > 0)) * (w > 0)
    total = new.sum()
    if not np.isfinite(total) or total <= 0:
        return SammeRound(new, alpha, err, "the sample weights overflowed (lower the rate)")
    return SammeRound(new / total, alpha, err, None)


def clip_weights(weights: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """scikit-learn's guard before each round: no weight below machine epsilon, except
    the rows that started at exactly 0."""
    out = np.clip(np.asarray(weights, dtype=np.float64), EPS, None)
    out[zero] = 0.0
    return out


def samme_decision(
    predictions: Sequence[np.ndarray], alphas: Sequence[float], n_classes: int
) -> np.ndarray:
    """``[n, K]`` symmetric-coded weighted votes, normalised by ``Σ α`` (see above)."""
    total = np.zeros((len(predictions[0]), n_classes))
    for pred, alpha in zip(predictions, alphas, strict=True):
        hit = np.asarray(pred)[:, None] == np.arange(n_classes)[None, :]
        total += np.where(hit, alpha, -alpha / (n_classes - 1))
    return total / float(np.sum(alphas))


def samme_proba(
    predictions: Sequence[np.ndarray], alphas: Sequence[float], n_classes: int
) -> np.ndarray:
    """The ensemble's class probabilities, ``softmax(decision / (K − 1))``."""
    from scipy.special import softmax

    d = samme_decision(predictions, alphas, n_classes)
    if n_classes == 2:
        binary = d[:, 1] - d[:, 0]  # scikit-learn's 1-d binary decision
        z = np.stack([-binary, binary], axis=1) / 2
    else:
        z = d / (n_classes - 1)
    return softmax(z, axis=1)


def residuals(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """The negative gradient of ½(y − F)²: what the next stage fits."""
    return np.asarray(y, dtype=float) - np.asarray(f, dtype=float)


def staged(f0: float, stage_predictions: Sequence[np.ndarray], learning_rate: float) -> list:
    """``[F_0, F_1, …, F_M]`` at the rows the stage predictions are for."""
    out = [np.full(len(stage_predictions[0]) if stage_predictions else 0, float(f0))]
    for h in stage_predictions:
        out.append(out[-1] + float(learning_rate) * np.asarray(h, dtype=float))
    return out
