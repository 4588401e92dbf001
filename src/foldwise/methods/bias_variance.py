"""Bias–variance decomposition from the predictions of B models on one evaluation set.

The B models are trained on bootstrap draws of a fixed training part of the dev rows
and all predict the same evaluation part (the curves stage builds them); this module
only decomposes their predictions ``pred`` [B, n] against the labels ``y`` [n].

**0-1 loss** (Domingos 2000). The *main prediction* of a row is the class most of the B
models predict (ties: the smallest class, as ``np.bincount(...).argmax()``). Per row,
bias ``B(x)`` is 1 when the main prediction is wrong; variance ``V(x)`` is the share of
models that disagree with the main prediction. Averaged over rows:

- ``bias`` = mean B(x); ``variance`` = mean V(x) (mlxtend's ``avg_var``);
- ``unbiased_variance`` = mean of V(x) over rows with B(x) = 0 (weighted by their share),
  ``biased_variance`` = mean of c(x)·V(x) over rows with B(x) = 1, where
  c(x) = P(a model predicts the true class | it disagrees with the main prediction);
- ``net_variance = unbiased_variance − biased_variance``: on biased rows, variance helps
  (a disagreeing model may be right); and, without label noise,
  ``expected_loss = bias + net_variance`` exactly (checked in the tests).

**Squared loss** (for numeric predictions): ``expected_loss = bias² + variance`` with the
main prediction the mean over models; noise is not estimable without repeated labels
for one input, so it is folded into bias² and reported as ``null``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Decomposition:
    expected_loss: float
    bias: float  # 0-1: mean bias; squared loss: mean squared bias
    variance: float
    net_variance: float  # 0-1 only (squared loss: = variance)
    unbiased_variance: float
    biased_variance: float
    noise: float | None = None  # not estimable from one label per input

    def to_dict(self) -> dict:
        return asdict(self)


def main_prediction(pred: np.ndarray) -> np.ndarray:
    """Per row, the class most models predict (ties: the smallest class)."""
    pred = np.asarray(pred, dtype=np.int64)
    return np.array([np.bincount(col).argmax() for col in pred.T])


def zero_one(pred: np.ndarray, y: np.ndarray) -> Decomposition:
    """Domingos' decomposition of the 0-1 loss of ``pred`` [B, n] against ``y`` [n]."""
    pred, y = np.asarray(pred, dtype=np.int64), np.asarray(y, dtype=np.int64)
    main = main_prediction(pred)
    wrong = pred != y  # [B, n]
    disagree = pred != main  # [B, n]
    bias = (main != y).astype(float)  # B(x)
    var = disagree.mean(0)  # V(x)
    # c(x) on biased rows: of the models that disagree with the main prediction, the
    # share that predicts the true class
    n_dis = disagree.sum(0)
    right_when_dis = (disagree & ~wrong).sum(0)
    c = np.divide(right_when_dis, n_dis, out=np.zeros(len(y)), where=n_dis > 0)
    unbiased = float(np.mean(np.where(bias == 0, var, 0.0)))
    biased = float(np.mean(np.where(bias == 1, c * var, 0.0)))
    return Decomposition(
        expected_loss=float(wrong.mean()),
        bias=float(bias.mean()),
        variance=float(var.mean()),
        net_variance=unbiased - biased,
        unbiased_variance=unbiased,
        biased_variance=biased,
    )


def squared(pred: np.ndarray, y: np.ndarray) -> Decomposition:
    """``E[(f − y)²] = (mean f − y)² + var f``, averaged over rows."""
    pred, y = np.asarray(pred, dtype=float), np.asarray(y, dtype=float)
    main = pred.mean(0)
    bias2 = float(((main - y) ** 2).mean())
    var = float(((pred - main) ** 2).mean())
    return Decomposition(
        expected_loss=float(((pred - y) ** 2).mean()),
        bias=bias2,
        variance=var,
        net_variance=var,
        unbiased_variance=var,
        biased_variance=0.0,
    )
