"""The .632 and .632+ bootstrap estimates of prediction error (Efron & Tibshirani 1997).

With B bootstrap draws of the n dev rows, each model scored on its out-of-bag rows,
and one model fit on all n rows:

- apparent error ``err`` — the all-rows model's error on its own training rows;
- leave-one-out bootstrap ``Err1`` — for each row, its mean error over the models
  whose draw left it out, averaged over the rows left out at least once;
- ``Err.632 = .368·err + .632·Err1``;
- no-information error ``γ = Σ_k p_k (1 − q_k)`` for 0-1 loss (p_k: share of class k
  among the labels, q_k: share of the all-rows model's predictions equal to k) — the
  error if features and labels were independent; for squared error (regression) the
  general form ``γ = (1/n²) Σ_i Σ_j (y_i − ŷ_j)²`` (their eq. 27) over every pairing of a
  label with a prediction;
- ``Err1' = min(Err1, γ)``, relative overfitting rate
  ``R' = (Err1' − err) / (γ − err)`` when ``Err1 > err`` and ``γ > err``, else 0, clipped to
  [0, 1];
- ``Err.632+ = Err.632 + (Err1' − err) · .368·.632·R' / (1 − .368·R')`` (their eq. 32),
  which moves the weight on ``Err1`` from .632 towards 1 as overfitting grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Efron:
    apparent: float  # err
    loo_bootstrap: float  # Err1
    err_632: float
    err_632plus: float
    gamma: float  # no-information error
    r: float  # relative overfitting rate R', in [0, 1]
    rows_scored: int  # rows left out by at least one draw (Err1 averages over these)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def no_information_error(y: np.ndarray, pred: np.ndarray) -> float:
    """γ for 0-1 loss: ``Σ_k p_k (1 − q_k)`` over the classes seen in ``y`` or ``pred``."""
    y, pred = np.asarray(y), np.asarray(pred)
    classes = np.union1d(y, pred)
    p = np.array([(y == k).mean() for k in classes])
    q = np.array([(pred == k).mean() for k in classes])
    return float((p * (1 - q)).sum())


def no_information_squared(y: np.ndarray, pred: np.ndarray) -> float:
    """γ for squared error: the mean of ``(y_i − ŷ_j)²`` over all n² pairs, computed as
    ``mean(y²) − 2·mean(y)·mean(ŷ) + mean(ŷ²)`` (no n × n matrix)."""
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    return float((y**2).mean() - 2 * y.mean() * pred.mean() + (pred**2).mean())


def loo_bootstrap_error(draws: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, int]:
    """``Err1`` from each draw's (out-of-bag row ids, per-row losses); returns
    (estimate, number of rows scored at least once)."""
    total: dict[int, float] = {}
    count: dict[int, int] = {}
    for rows, losses in draws:
        for r, v in zip(np.asarray(rows).tolist(), np.asarray(losses, dtype=float).tolist(),
                        strict=True):  # fmt: skip
            total[r] = total.get(r, 0.0) + v
            count[r] = count.get(r, 0) + 1
    if not total:
        return float("nan"), 0
    return float(np.mean([total[r] / count[r] for r in total])), len(total)


def estimates(apparent: float, loo_bootstrap: float, gamma: float, rows_scored: int = 0) -> Efron:
    """The .632 and .632+ estimates from ``err``, ``Err1`` and ``γ`` (formulas above)."""
    err, err1 = apparent, loo_bootstrap
    err_632 = 0.368 * err + 0.632 * err1
    err1_capped = min(err1, gamma)
    if err1 > err and gamma > err:
        r = min(max((err1_capped - err) / (gamma - err), 0.0), 1.0)
    else:
        r = 0.0
    err_plus = err_632 + (err1_capped - err) * (0.368 * 0.632 * r) / (1 - 0.368 * r)
    return Efron(err, err1, err_632, err_plus, gamma, r, rows_scored)


def from_results(resamples: Sequence[dict], apparent: dict) -> Efron:
    """Estimates of 0-1 error (classification) or squared error (regression: results
    with ``train_mse``) from the result dicts of the out-of-bag models and of the
    all-rows (apparent) model; each holds ``predictions["val"]`` with ``row``, ``true``,
    ``pred`` and per-row ``loss`` (the squared error, for regression).

    ``err`` is the apparent model's error on the rows it trained on (``1 − train_acc``, or
    ``train_mse``): with early stopping, its inner rows decide the epoch but are not
    trained on, so they are not part of the apparent error. ``γ`` uses its predictions on
    every dev row.
    """
    squared = "train_mse" in apparent["metrics"]
    draws = []
    for r in resamples:
        p = r["predictions"]["val"]
        lost = (
            np.asarray(p["loss"], dtype=float)
            if squared
            else np.asarray(p["pred"]) != np.asarray(p["true"])
        )
        draws.append((np.asarray(p["row"]), lost))
    err1, scored = loo_bootstrap_error(draws)
    a = apparent["predictions"]["val"]
    y, pred = np.asarray(a["true"]), np.asarray(a["pred"])
    if squared:
        err = float(apparent["metrics"]["train_mse"])
        return estimates(err, err1, no_information_squared(y, pred), scored)
    err = 1.0 - float(apparent["metrics"]["train_acc"])
    return estimates(err, err1, no_information_error(y, pred), scored)
