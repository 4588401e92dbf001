"""Nested cross-validation: an honest estimate of the *whole* selection procedure.

Plain CV picks the configuration with the best fold mean, then reports that same mean:
the maximum of noisy estimates is biased upwards (Cawley & Talbot 2010). Nested CV
wraps the procedure in an outer loop: for each outer fold, the inner sweep (every
configuration × inner folds on the outer-training rows) selects with the configured
rule, the winner is refit on the outer-training rows, and scored on the outer
validation rows, which took no part in the choice.

The outer folds are the split stage's resamples, so each outer score pairs with the
plain CV score of the selected configuration on the same validation rows: the
**optimism** of plain CV is the mean paired difference (plain − nested for scores,
nested − plain for a loss or error: positive means plain CV flattered the selection), with a
t interval over the outer folds.

This module is pure (no training, no files): :func:`inner_resamples` builds each outer
fold's inner folds, :func:`summarize` turns outer results into the report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from foldwise.methods.resampling import BOUNDS, t_summary
from foldwise.scores import higher_is_better

# Kinds of outer resampling nested CV accepts: each outer fold is one model's worth of
# validation rows. (An exhaustive or bootstrap outer loop would multiply the cost by
# hundreds.)
OUTER_KINDS = ("folds", "repeated", "holdout")


def inner_resamples(outer: Any, dev_ids: np.ndarray, y: np.ndarray, scheme: Any) -> list[Any]:
    """The inner scheme's resamples of ``outer``'s training rows (row ids).

    ``outer`` is a :class:`foldwise.split.Resample`, ``scheme`` a
    :class:`foldwise.split.schemes.Scheme` (not imported here: the aggregate stage,
    which uses this package, does not depend on the split code).

    ``dev_ids``/``y`` are the dev rows in row-id order, as the split stage stores them;
    the inner splitter sees the outer-training rows in that order.
    """
    train = np.asarray(sorted(set(outer.train)))
    pos = np.searchsorted(dev_ids, train)
    return scheme.split(train, y[pos])


def paired_optimism(plain: Sequence[float], nested: Sequence[float], metric: str) -> np.ndarray:
    """Per outer fold: how much better plain CV made the selection look."""
    d = np.asarray(plain, dtype=float) - np.asarray(nested, dtype=float)
    return d if higher_is_better(metric) else -d


def summarize(
    outer: Sequence[dict[str, Any]],
    plain: Sequence[float],
    metric: str,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The nested report from outer results and the plain CV fold scores.

    ``outer[k]``: ``{"fold", "winner", "label", "metrics"}`` (the refit winner's scores on
    outer fold k's validation rows); ``plain[k]``: the plain CV score of the selected
    configuration on the same fold.
    """
    if len(outer) != len(plain):
        raise ValueError(f"{len(outer)} outer folds but {len(plain)} plain CV fold scores")
    score = metric.removeprefix("val_")
    nested = [o["metrics"][metric] for o in outer]
    wins = Counter(o["label"] for o in outer)
    return {
        "metric": metric,
        "nested": t_summary(nested, confidence, BOUNDS.get(score, (-np.inf, np.inf))),
        "plain": t_summary(plain, confidence, BOUNDS.get(score, (-np.inf, np.inf))),
        "optimism": t_summary(paired_optimism(plain, nested, metric), confidence),
        "winners": dict(wins.most_common()),
        "outer": [
            {
                "fold": o["fold"],
                "winner": o["label"],
                "config": o["winner"],
                metric: o["metrics"][metric],
                "plain": p,
            }
            for o, p in zip(outer, plain, strict=True)
        ],
    }
