"""Learning and validation curves: the resamples they train on and their summaries.

- **Learning curve**: score against training-set size. For each fold, the training rows
  are permuted once (seeded) and the first ⌈f·n⌉ of them train the model at fraction f,
  so the subsets are *nested* (each contains the smaller ones): the curve moves only
  because data is added, not because a different sample was drawn.
- **Validation (complexity) curve**: score against one hyperparameter, every other
  setting as selected, on the same folds.

Both are summarised per x value over folds: mean, standard deviation and a t interval
(the band), for the training rows and for the validation rows. The gap between the two
lines is the generalization gap; where the validation line flattens, more data (or more
capacity) stops paying.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from foldwise import scores
from foldwise.methods.resampling import t_summary


def nested_subsets(train: Sequence[int], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Nested prefixes of one seeded permutation of ``train`` (row ids or positions)."""
    order = np.random.default_rng(seed).permutation(np.asarray(train))
    return [np.sort(order[: max(1, math.ceil(f * len(order)))]) for f in fractions]


def summarize_curve(
    rows: pd.DataFrame, x: str, metrics: Sequence[str], confidence: float = 0.95
) -> pd.DataFrame:
    """Per ``x`` value: ``<metric>_mean``, ``_std``, ``_low``, ``_high`` over folds; the
    band is clipped to the metric's range (an F1 band ends at 1 however few folds)."""
    out = []
    for value, group in rows.groupby(x, sort=True):
        row: dict = {x: value, "folds": len(group)}
        for m in metrics:
            bounds = scores.bounds(m) if m.startswith(("train_", "val_")) else (-np.inf, np.inf)
            st = t_summary(group[m].to_numpy(dtype=float), confidence, bounds)
            row[f"{m}_mean"], row[f"{m}_std"] = st["mean"], st["std"]
            row[f"{m}_low"], row[f"{m}_high"] = st["ci_low"], st["ci_high"]
        out.append(row)
    return pd.DataFrame(out)
