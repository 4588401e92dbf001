"""Fit diagnosis on hand-made curves: each rule, its evidence numbers, its thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from foldwise.methods.diagnosis import diagnose, fold_evidence


def fold(val_loss, train_loss, train_f1=0.99, val_f1=0.95, epochs=None):
    return {
        "history": {"val_loss": list(val_loss), "train_loss": list(train_loss)},
        "metrics": {"train_f1": train_f1, "val_f1": val_f1},
        "epochs_trained": epochs if epochs is not None else len(val_loss),
    }


# validation loss falls to 0.20 at epoch 5, then climbs to 0.30; training loss keeps falling
OVERFIT_VAL = [0.8, 0.5, 0.35, 0.25, 0.20, 0.22, 0.25, 0.27, 0.30]
OVERFIT_TRAIN = [0.8, 0.5, 0.30, 0.20, 0.15, 0.10, 0.07, 0.05, 0.03]


def test_overfitting_evidence_by_hand():
    f = fold(OVERFIT_VAL, OVERFIT_TRAIN)
    ev = fold_evidence(f, "f1", max_epochs=40, rules={"window": 5, "improving_slope": 0.001})
    assert ev["min_epoch"] == 5
    assert ev["val_rise"] == pytest.approx((0.30 - 0.20) / 0.20)
    # gap (val − train loss) at the minimum 0.05, at the end 0.27
    assert ev["gap_growth"] == pytest.approx((0.30 - 0.03) - (0.20 - 0.15))
    d = diagnose([f, f, f], max_epochs=40)
    assert d.verdict == "overfitting" and "50% above its minimum (epoch 5)" in d.reason
    # the thresholds are the user's: demand a 60 % rise and it is no longer overfitting
    assert diagnose([f], max_epochs=40, rules={"overfit_rise": 0.6}).verdict == "good fit"


def test_underfitting_poor_scores_small_gap():
    falling = np.linspace(1.5, 1.0, 10)
    f = fold(falling, falling - 0.01, train_f1=0.62, val_f1=0.60, epochs=8)
    d = diagnose([f], max_epochs=40)
    assert d.verdict == "underfitting" and "both below 0.8" in d.reason
    assert d.gap == pytest.approx(0.02)


def test_underfitting_still_improving_at_max_epochs():
    falling = np.linspace(0.6, 0.2, 20)
    still = fold(falling, falling - 0.05, epochs=20)
    d = diagnose([still, still, fold(OVERFIT_VAL[:5] + [0.2] * 5, [0.1] * 10)], max_epochs=20)
    assert d.verdict == "underfitting" and d.still_improving == pytest.approx(2 / 3)
    # the same curves with epochs to spare (early stopping ended them) are not "still improving"
    assert diagnose([fold(falling, falling - 0.05, epochs=20)], max_epochs=40).verdict == "good fit"


def test_good_fit():
    val = [0.8, 0.5, 0.3, 0.25, 0.24, 0.245, 0.25]
    d = diagnose([fold(val, [v - 0.03 for v in val])], max_epochs=40)
    assert d.verdict == "good fit"
    assert d.val_rise == pytest.approx((0.25 - 0.24) / 0.24)
