"""Is the selected configuration really better than another? Paired, corrected comparisons.

Two configurations scored on the same resamples give paired differences
``d_j = best_j − other_j`` (for a loss, ``other_j − best_j``: positive always means the
selected one did better). Resamples share training rows, so ``var(d)/J`` understates the
variance of the mean difference; Nadeau & Bengio (2003) correct it to
``(1/J + n_val/n_train)·var(d)``, which is right for k-fold (n_val/n_train = 1/(k−1)),
repeated k-fold and shuffle-split alike.

- **Corrected resampled t-test**: ``t = mean(d)/se`` with J − 1 degrees of freedom, a
  two-sided p-value and a t interval of the mean difference.
- **Bayesian correlated t-test** (Corani & Benavoli 2015): the posterior of the mean
  difference is Student t (J − 1 df, location mean(d), the corrected scale); with a
  region of practical equivalence ``rope`` it gives P(selected better by more than the
  rope), P(practically equivalent) and P(other better). baycomp's ``CorrelatedTTest``
  computes the same posterior (checked in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import stdtr, stdtrit  # Student t cdf and quantile (cheap imports)


@dataclass(frozen=True)
class Comparison:
    mean: float  # mean difference, positive: the selected configuration did better
    se: float  # Nadeau–Bengio corrected standard error
    t: float
    p_value: float  # two-sided, corrected resampled t-test
    ci_low: float
    ci_high: float
    rope: float
    p_better: float  # P(difference > rope): the selected one is better
    p_equivalent: float  # P(|difference| <= rope)
    p_worse: float  # P(difference < -rope)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def compare(
    best: Sequence[float],
    other: Sequence[float],
    *,
    ratio: float,
    rope: float = 0.0,
    confidence: float = 0.95,
    higher_is_better: bool = True,
) -> Comparison:
    """Compare per-resample scores (same resamples, same order); ``ratio`` = n_val/n_train."""
    b, o = np.asarray(best, dtype=float), np.asarray(other, dtype=float)
    if b.shape != o.shape or len(b) < 2:
        raise ValueError("need two or more paired resample scores")
    d = b - o if higher_is_better else o - b
    j, mean = len(d), float(d.mean())
    se = math.sqrt((1 / j + ratio) * float(d.var(ddof=1)))
    df = j - 1
    if se == 0.0:  # identical differences on every resample: no uncertainty left
        sign = float(np.sign(mean))
        better, worse = float(mean > rope), float(mean < -rope)
        return Comparison(mean, 0.0, math.copysign(math.inf, sign) if mean else 0.0,
                          0.0 if mean else 1.0, mean, mean, rope, better,
                          1.0 - better - worse, worse)  # fmt: skip
    t = mean / se
    p = float(2 * stdtr(df, -abs(t)))
    half = float(stdtrit(df, (1 + confidence) / 2)) * se
    cdf = lambda v: float(stdtr(df, (v - mean) / se))  # noqa: E731
    p_worse, below_rope = cdf(-rope), cdf(rope)
    return Comparison(mean, se, t, p, mean - half, mean + half, rope,
                      1.0 - below_rope, below_rope - p_worse, p_worse)  # fmt: skip


def indistinguishable(c: Comparison, alpha: float = 0.05, threshold: float = 0.95) -> bool:
    """Neither test separates the two: p ≥ alpha and P(better) < threshold."""
    return c.p_value >= alpha and c.p_better < threshold
