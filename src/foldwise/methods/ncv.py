"""Nested-CV interval for a configuration's CV error (Bates, Hastie & Tibshirani 2023).

S. Bates, T. Hastie, R. Tibshirani, "Cross-validation: what does it estimate and how well
does it do it?", JASA 2023 (arXiv:2104.00673), Algorithm 1; transcribed from their R
package ``nestedcv`` (github.com/stephenbates19/nestedcv, ``R/core.R``: ``nested_cv``
and ``nested_cv_helper``).

The naive CV interval ``mean ± z·sd(e)/√n`` treats the n per-point errors as independent;
they are not (every point trains the other folds' models), so it is too narrow. Nested
CV estimates the mean squared error of the CV estimate itself. One *repetition* cuts the
rows into K folds and, besides the K usual fold models, fits one model per pair of folds
{j, k} on the other K − 2 folds, scored on both:

- ``e_out[k]``: losses on fold k of the model fit without fold k (plain CV);
- ``e_in[k]``: losses on every fold j ≠ k of the models fit without folds j and k
  (an inner CV of the rows outside fold k);
- pivots ``a_k = (mean(e_in[k]) − mean(e_out[k]))²`` and ``b_k = var(e_out[k]) / |fold k|``.

Over all repetitions: ``MSE = mean(a) − mean(b)``; ``Err_NCV`` = the mean of every inner
loss; the bias correction ``(1 + ((K−2)/K)^{3/2})·(Err_NCV − Err_CV)`` (inner models see
(K−2)/K of the rows, fold models (K−1)/K: extrapolated to n); the interval
``Err_NCV − bias ± z·√((K−1)/K)·√MSE``, its standard error kept between the naive one
(``sd(e_in)/√n``) and √K times it, as the R code does.

Differences from the R code, both deliberate:
- ``Err_CV`` defaults to the mean of the repetitions' own fold-model losses (plain CV on
  the same partitions: the same expectation as R's ``bias_reps`` fresh CV runs, at no
  extra fits); pass ``err_cv`` for R's choice.
- Folds may differ in size (R drops n mod K rows); ``n`` is the rows of a repetition and
  the sub-sample size is ``n·(K−1)/K`` unrounded.

The functions are pure (arrays in, numbers out); :mod:`foldwise.ncv` trains the models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from foldwise.errors import FoldwiseError
from foldwise.scores import PER_ROW_SCORES

REFERENCE = "Bates, Hastie & Tibshirani (2023), nested CV"

# Scores that are a mean of per-row losses (the estimator needs one); F1 and R² are
# ratios over a whole fold.
PER_ROW = PER_ROW_SCORES


@dataclass(frozen=True)
class Repetition:
    """One random K-fold partition's losses.

    ``outer[k]``: per-row losses on fold k of the model fit without fold k.
    ``inner[(j, k)]``: per-row losses on fold j of the model fit without folds j and k,
    for every ordered pair j ≠ k (one model per unordered pair scores both folds).
    """

    outer: Sequence[np.ndarray]
    inner: Mapping[tuple[int, int], np.ndarray]

    @property
    def k(self) -> int:
        return len(self.outer)


@dataclass(frozen=True)
class NCVInterval:
    estimate: float  # bias-corrected centre: Err_NCV − bias
    ci_low: float
    ci_high: float
    se: float  # √((K−1)/K · MSE), kept within [naive_se, √K · naive_se]
    mse: float  # MSE estimate of Err_NCV: mean(a) − mean(b) (may be negative: noise)
    err_ncv: float  # mean of every inner loss
    err_cv: float  # plain CV mean used by the bias correction
    bias: float
    naive_se: float  # sd(inner losses) / √n
    inflation: float  # se / naive_se, in [1, √K]
    confidence: float
    folds: int
    repetitions: int
    method: str = REFERENCE

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def pivots(rep: Repetition) -> tuple[np.ndarray, np.ndarray]:
    """The paper's ``(a_k, b_k)`` terms of one repetition, k = 0..K−1 (``a`` unsquared:
    ``mean(e_in) − mean(e_out)``, as ``nested_cv_helper`` returns it)."""
    k = rep.k
    diff, var = np.empty(k), np.empty(k)
    for f in range(k):
        e_out = np.asarray(rep.outer[f], dtype=float)
        e_in = np.concatenate([np.asarray(rep.inner[(j, f)], dtype=float)
                               for j in range(k) if j != f])  # fmt: skip
        diff[f] = e_in.mean() - e_out.mean()
        var[f] = e_out.var(ddof=1) / len(e_out)
    return diff, var


def check(reps: Sequence[Repetition]) -> None:
    """A clear error for input the estimator cannot use, before any arithmetic."""
    if not reps:
        raise FoldwiseError("nested CV needs at least one repetition.", "pass its losses.")
    ks = {r.k for r in reps}
    if len(ks) != 1 or min(ks) < 3:
        raise FoldwiseError(
            f"nested CV needs the same number of folds, at least 3, in every repetition "
            f"(got {sorted(ks)}): its inner models train on K − 2 folds.",
            "use split.n_splits >= 3 (the paper uses 5 or 10).",
        )
    for r in reps:
        missing = [(j, f) for j in range(r.k) for f in range(r.k)
                   if j != f and (j, f) not in r.inner]  # fmt: skip
        if missing:
            raise FoldwiseError(f"nested CV is missing the inner losses {missing[:3]}.",
                                "re-run the stage: it trains only the missing models.")  # fmt: skip
        if any(len(o) < 2 for o in r.outer):
            raise FoldwiseError("nested CV needs at least 2 rows per fold (a variance).",
                                "use fewer folds.")  # fmt: skip


def interval(
    reps: Sequence[Repetition], confidence: float = 0.95, err_cv: float | None = None
) -> NCVInterval:
    """Algorithm 1's bias-corrected interval from the repetitions' losses."""
    check(reps)
    k = reps[0].k
    diffs, vars_ = zip(*(pivots(r) for r in reps), strict=True)
    a, b = np.concatenate(diffs) ** 2, np.concatenate(vars_)
    mse = float(a.mean() - b.mean())
    inner = np.concatenate([np.asarray(v, dtype=float) for r in reps for v in r.inner.values()])
    outer = np.concatenate([np.asarray(v, dtype=float) for r in reps for v in r.outer])
    n = len(outer) / len(reps)  # rows per repetition
    err_ncv = float(inner.mean())
    cv = float(outer.mean()) if err_cv is None else float(err_cv)
    bias = (err_ncv - cv) * (1 + ((k - 2) / k) ** 1.5)
    naive = float(inner.std(ddof=1) / np.sqrt(n))
    # R: infl = sqrt(max(0, MSE)) / (sd / sqrt(n_sub)), clipped to [1, sqrt(K)]; the
    # interval's se = sd / sqrt(n) * infl = sqrt(n_sub / n) * sqrt(MSE) when not clipped.
    n_sub = n * (k - 1) / k
    infl = np.sqrt(max(0.0, mse)) / (naive * np.sqrt(n) / np.sqrt(n_sub)) if naive > 0 else 1.0
    infl = float(min(max(infl, 1.0), np.sqrt(k)))
    se = naive * infl
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    centre = err_ncv - bias
    return NCVInterval(
        estimate=centre, ci_low=centre - z * se, ci_high=centre + z * se, se=se, mse=mse,
        err_ncv=err_ncv, err_cv=cv, bias=float(bias), naive_se=naive, inflation=infl,
        confidence=confidence, folds=k, repetitions=len(reps),
    )  # fmt: skip


def naive(losses: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """The naive CV interval the paper compares with (R's ``naive_cv``): the mean of the
    n per-row CV losses ± z·sd/√n. Returns (mean, low, high)."""
    e = np.asarray(losses, dtype=float)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    m, h = float(e.mean()), z * float(e.std(ddof=1)) / np.sqrt(len(e))
    return m, m - h, m + h


def check_metric(metric: str) -> None:
    """The estimator needs a score that is a mean of per-row losses."""
    if metric not in PER_ROW:
        raise FoldwiseError(
            f"selection.interval=ncv needs a score that is a mean over rows; {metric} is not.",
            f"select on one of {', '.join(PER_ROW)} (selection.metric=...), or use "
            "selection.interval=scheme.",
        )


def row_losses(record: Mapping[str, list], y: np.ndarray, metric: str) -> np.ndarray:
    """Per-row losses of a prediction record (``{"pred", "loss"}``, rows in order) whose
    mean is ``metric``: the model's own loss for val_loss / val_mse, |error| for val_mae,
    1 for a right class for val_acc (a score: higher is better; the estimator is linear)."""
    check_metric(metric)
    if metric in ("val_loss", "val_mse"):
        return np.asarray(record["loss"], dtype=float)
    pred = np.asarray(record["pred"], dtype=float)
    if metric == "val_mae":
        return np.abs(pred - np.asarray(y, dtype=float))
    return (pred == np.asarray(y, dtype=float)).astype(float)
