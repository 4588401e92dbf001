"""How much the winner's CV score flatters it, from the sweep's own fold scores.

The best of many noisy CV means is biased towards looking good: the configuration with
the best mean won partly because its folds happened to be kind. Nested CV
(:mod:`foldwise.methods.nested`) measures that optimism by repeating the whole selection
inside each outer fold, at the cost of another sweep per fold. Tibshirani & Tibshirani
(2009) estimate it from the fold-by-configuration matrix the sweep already has, with
no further training:

    R. J. Tibshirani and R. Tibshirani, "A bias correction for the minimum error rate
    in cross-validation", Ann. Appl. Stat. 3(2):822–829, 2009 (doi:10.1214/08-AOAS224).

With ``e_k(θ)`` the error of configuration θ on fold k, ``θ̂`` the minimiser of the mean
error and ``θ̂_k`` the minimiser on fold k alone, the bias of the minimum CV error is
estimated by

    bias = (1/K) Σ_k [ e_k(θ̂) − e_k(θ̂_k) ]   (≥ 0: each term compares with fold k's best)

and the corrected estimate is ``CV(θ̂) + bias``. For a score (higher is better) the signs
flip: ``bias = (1/K) Σ_k [ s_k(θ̂_k) − s_k(θ̂) ]`` and the corrected estimate is
``CV(θ̂) − bias``. Either way a positive bias means plain CV flattered the winner, the
convention of nested CV's optimism, so the two can be read side by side.

The estimate needs paired per-fold scores (every configuration scored on the same
folds), so the aggregate stage gives it for k-fold-like and repeated schemes only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from foldwise.headline import fixed


@dataclass(frozen=True)
class Optimism:
    bias: float  # ≥ 0: how much plain CV flatters the winner (in the metric's units)
    cv: float  # the winner's plain CV mean
    corrected: float  # cv − bias for a score, cv + bias for an error
    per_fold: list[float]  # the K terms whose mean is ``bias``
    fold_winners: list[int]  # θ̂_k: the best configuration's row on each fold
    winner: int  # θ̂: the row of the winner
    n_configs: int
    n_folds: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tibshirani_bias(
    scores: Sequence[Sequence[float]], *, higher_is_better: bool, winner: int | None = None
) -> Optimism:
    """The Tibshirani–Tibshirani bias estimate of the winner's CV score.

    ``scores[c][k]``: configuration c's score (or error) on fold k, every row over the
    same folds. ``winner`` is θ̂'s row when the caller broke ties among equal means its own
    way; by default the first row with the best mean.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise ValueError(f"need a configurations × folds matrix, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("the score matrix holds a NaN or an infinity")
    # Work with errors (lower is better) throughout, as the paper does.
    e = -s if higher_is_better else s
    theta = int(np.argmin(e.mean(axis=1))) if winner is None else int(winner)
    per_fold = e[theta] - e.min(axis=0)
    bias = float(per_fold.mean())
    cv = float(s[theta].mean())
    return Optimism(
        bias=bias,
        cv=cv,
        corrected=cv - bias if higher_is_better else cv + bias,
        per_fold=[float(v) for v in per_fold],
        fold_winners=[int(v) for v in np.argmin(e, axis=0)],
        winner=theta,
        n_configs=int(s.shape[0]),
        n_folds=int(s.shape[1]),
    )


def in_words(doc: dict[str, Any], higher_is_better: bool, se: float | None = None) -> str:
    """The estimate in words, from :meth:`Optimism.to_dict` plus ``metric`` and the
    configurations' labels in ``winner`` (what the aggregate stage prints); with ``se``,
    the winner's standard error, every number to the precision it supports
    (:func:`foldwise.headline.fixed`: the bias has no interval of its own)."""
    way = "CV − bias" if higher_is_better else "CV + bias"
    metric = doc["metric"]
    return (
        f"optimism of {doc['winner']}'s CV {metric} (Tibshirani & Tibshirani 2009, from the "
        f"{doc['n_configs']} configurations × {doc['n_folds']} folds): bias "
        f"{fixed(doc['bias'], se, sign=True)}; corrected {metric} = {way} = "
        f"{fixed(doc['corrected'], se)} (plain {fixed(doc['cv'], se)})"
    )
