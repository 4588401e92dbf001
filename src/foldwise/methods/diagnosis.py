"""Fit diagnosis: underfitting, overfitting or a good fit, from a configuration's curves.

Evidence, per fold, from the per-epoch training and validation curves (the validation
rows never train or stop anything) and the final scores of the returned model:

- ``train_score`` / ``val_score``: the returned model's final score (``diagnosis.metric``,
  macro-F1 by default) on its training rows and on the validation rows; ``gap`` their
  difference.
- ``still_improving``: training ran to ``max_epochs`` and the validation loss of the last
  ``window`` epochs still fell (least-squares slope below ``−improving_slope`` per epoch)
  — more epochs would likely help.
- ``val_rise``: how far the validation loss ended above its minimum, relative to that
  minimum (``(last − min) / min``), and ``gap_growth``: how much the loss gap
  (validation − training loss) grew from the epoch of that minimum to the end.

Rules, applied to the median over folds (thresholds in ``conf/diagnosis/default.yaml``):

1. **overfitting** — ``val_rise ≥ overfit_rise`` and ``gap_growth ≥ overfit_gap_growth``:
   validation loss climbs after its minimum while the gap widens (memorising noise).
   With early stopping on, the returned model is the one at the minimum: the verdict
   then describes the training run the rule stopped, and the evidence names the epoch.
2. **underfitting** — training and validation scores both below ``poor_score`` with a
   gap below ``small_gap`` (too little capacity), or at least ``improving_share`` of the
   folds were still improving at ``max_epochs`` (too little training).
3. **good fit** otherwise.

For regression the "loss" above is ``1 − R²`` (the MSE over the scored rows' variance):
the MSE itself has the target's units, so absolute thresholds such as ``improving_slope``
would mean nothing; ``1 − R²`` is unit-free and on the scale cross-entropy thresholds
were chosen for. ``diagnosis.metric`` is then ``r2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULTS: dict[str, float] = {
    "poor_score": 0.8,
    "small_gap": 0.05,
    "improving_slope": 0.001,
    "improving_share": 0.5,
    "window": 5,
    "overfit_rise": 0.1,
    "overfit_gap_growth": 0.05,
}


@dataclass(frozen=True)
class Diagnosis:
    verdict: str  # "overfitting" | "underfitting" | "good fit"
    reason: str  # the rule that fired, in words, with its numbers
    train_score: float  # medians over folds
    val_score: float
    gap: float
    val_rise: float
    gap_growth: float
    min_epoch: float  # epoch of the validation-loss minimum
    still_improving: float  # share of folds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _slope(values: Sequence[float]) -> float:
    y = np.asarray(values, dtype=float)
    if len(y) < 2:
        return 0.0
    x = np.arange(len(y), dtype=float)
    return float(np.polyfit(x, y, 1)[0])


def fold_evidence(result: dict, metric: str, max_epochs: int, rules: dict) -> dict[str, float]:
    """One fold's evidence from its result dict (``metrics`` and ``history``)."""
    h, m = result["history"], result["metrics"]
    if "val_r2" in h:  # regression: unit-free 1 − R² (see the module doc)
        train_loss = 1 - np.asarray(h["train_r2"], dtype=float)
        val_loss = 1 - np.asarray(h["val_r2"], dtype=float)
    else:
        train_loss = np.asarray(h["train_loss"], dtype=float)
        val_loss = np.asarray(h["val_loss"], dtype=float)
    k = int(np.argmin(val_loss))
    window = int(rules["window"])
    ran_out = int(result.get("epochs_trained", len(val_loss))) >= max_epochs
    improving = ran_out and _slope(val_loss[-window:]) < -float(rules["improving_slope"])
    lo = float(val_loss[k])
    return {
        "train_score": float(m[f"train_{metric}"]),
        "val_score": float(m[f"val_{metric}"]),
        "val_rise": float((val_loss[-1] - lo) / lo) if lo > 0 else 0.0,
        "gap_growth": float((val_loss[-1] - train_loss[-1]) - (val_loss[k] - train_loss[k])),
        "min_epoch": float(k + 1),
        "still_improving": float(improving),
    }


def diagnose(
    results: Sequence[dict], *, metric: str = "f1", max_epochs: int, rules: dict | None = None
) -> Diagnosis:
    """The verdict for one configuration from its folds' results (see the module doc)."""
    r = {**DEFAULTS, **(rules or {})}
    ev = [fold_evidence(x, metric, max_epochs, r) for x in results]
    med = {k: float(np.median([e[k] for e in ev])) for k in ev[0]}
    share = float(np.mean([e["still_improving"] for e in ev]))
    gap = med["train_score"] - med["val_score"]
    common = dict(
        train_score=med["train_score"], val_score=med["val_score"], gap=gap,
        val_rise=med["val_rise"], gap_growth=med["gap_growth"], min_epoch=med["min_epoch"],
        still_improving=share,
    )  # fmt: skip
    if med["val_rise"] >= r["overfit_rise"] and med["gap_growth"] >= r["overfit_gap_growth"]:
        reason = (
            f"validation loss ends {med['val_rise']:.0%} above its minimum (epoch "
            f"{med['min_epoch']:.0f}) while the loss gap grew by {med['gap_growth']:.3f}"
        )
        return Diagnosis("overfitting", reason, **common)
    if (
        med["train_score"] < r["poor_score"]
        and med["val_score"] < r["poor_score"]
        and (gap < r["small_gap"])
    ):
        reason = (
            f"train {metric} {med['train_score']:.3f} and validation {med['val_score']:.3f} both "
            f"below {r['poor_score']:g} with a gap of {gap:.3f}"
        )
        return Diagnosis("underfitting", reason, **common)
    if share >= r["improving_share"]:
        reason = (
            f"{share:.0%} of folds were still improving at max_epochs={max_epochs} "
            "(validation loss falling over the last epochs)"
        )
        return Diagnosis("underfitting", reason, **common)
    reason = f"gap {gap:+.3f}; validation loss ends {med['val_rise']:.0%} above its minimum"
    return Diagnosis("good fit", reason, **common)
