"""Bagging (Breiman 1996): B members fit on bootstrap draws, predictions averaged.

Each member trains on ``round(max_samples · n)`` rows drawn with replacement from the
n training rows it is given (a fold's training rows in CV, every dev row in the
refit). The ensemble's prediction for a row is the mean of the members' class
probabilities (classification; the predicted class is its argmax, the loss the
cross-entropy ``−log p̄_y`` of the averaged probabilities) or of their values
(regression). Averaging leaves the members' bias and divides the part of their
variance that is not shared — the reason bagging helps flexible, unstable learners.

The **out-of-bag** (OOB) estimate scores each training row with only the members whose
draw left it out (about ``e^{−max_samples}`` of them: 37 % at ``max_samples=1``), then
averages over the rows left out at least once: a validation score that needs no held
out rows, computed inside each fold beside the fold's own validation score.

This module is pure (arrays in, numbers out); :mod:`foldwise.ensemble` turns it into
engine tasks and results.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from foldwise import scores

EPS = 1e-12  # probabilities are clipped here before the log: a finite loss for p̄_y = 0


def draw_seed(rows: np.ndarray, seed: int) -> int:
    """A seed from the training rows themselves (and ``seed``): members of different
    configurations on the same fold get the same draws, so B = 5 and B = 10 share their
    first five members and differ only by the added ones."""
    digest = hashlib.sha256(np.sort(np.asarray(rows, dtype=np.int64)).tobytes()).digest()
    return int.from_bytes(digest[:4], "little") ^ (int(seed) & 0xFFFFFFFF)


def draws(rows: np.ndarray, n_estimators: int, max_samples: float, seed: int) -> list[np.ndarray]:
    """``n_estimators`` bootstrap draws of ``rows`` (``round(max_samples · n)`` rows each,
    with replacement); draw b depends on (seed, b) only."""
    rows = np.asarray(rows)
    n = max(1, round(float(max_samples) * len(rows)))
    return [np.random.default_rng([int(seed), b]).choice(rows, n) for b in range(n_estimators)]


def average(member_values: Sequence[np.ndarray]) -> np.ndarray:
    """The members' mean prediction: probabilities [n, C] or values [n]."""
    return np.mean(np.stack([np.asarray(v, dtype=float) for v in member_values]), axis=0)


def scores_of(task: str, y: np.ndarray, averaged: np.ndarray) -> dict[str, float]:
    """The task's scores (:mod:`foldwise.scores`) of averaged predictions."""
    y = np.asarray(y)
    if task == "regression":
        return scores.row_scores(task, y, averaged, (averaged - y) ** 2)
    return scores.row_scores(task, y, averaged.argmax(1), row_losses(y, averaged))


def row_losses(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Cross-entropy of averaged probabilities, per row: ``−log p̄_y``."""
    p = proba[np.arange(len(y)), np.asarray(y, dtype=np.int64)]
    return -np.log(np.clip(p, EPS, None))


def out_of_bag(
    rows: np.ndarray, member_draws: Sequence[np.ndarray], member_values: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per training row, the mean prediction of the members whose draw left it out.

    ``member_values[b]`` holds member b's predictions for every row of ``rows`` (in that
    order). Returns (the rows left out by at least one member, their OOB predictions).
    """
    rows = np.asarray(rows)
    total = np.zeros_like(np.asarray(member_values[0], dtype=float))
    count = np.zeros(len(rows))
    for drawn, values in zip(member_draws, member_values, strict=True):
        out = ~np.isin(rows, drawn)
        total[out] += np.asarray(values, dtype=float)[out]
        count[out] += 1
    seen = count > 0
    shape = (-1,) + (1,) * (total.ndim - 1)
    return rows[seen], total[seen] / count[seen].reshape(shape)
