"""Fit diagnosis on hand-made curves: each rule, its evidence numbers, its thresholds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, r2_score

from foldwise.methods.diagnosis import (
    PERMUTATIONS,
    chance_evidence,
    chance_score,
    diagnose,
    fold_evidence,
    permuted_scores,
)


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


# ── relative to chance ──────────────────────────────────────────────────────────────


def scored(y, pred, train_f1=0.99, val_f1=None):
    """A good-looking fold (falling curves, early-stopped) with stored predictions."""
    val = [0.8, 0.5, 0.3, 0.25, 0.24, 0.245, 0.25]
    f = fold(val, [v - 0.03 for v in val], train_f1=train_f1,
             val_f1=f1_score(y, pred, average="macro") if val_f1 is None else val_f1)  # fmt: skip
    f["predictions"] = {"val": {"true": list(y), "pred": list(pred)}}
    return f


SKLEARN = {
    "f1": lambda t, p: f1_score(t, p, average="macro", zero_division=0),
    "acc": lambda t, p: accuracy_score(t, p),
    "r2": lambda t, p: r2_score(t, p),
}


@pytest.mark.parametrize("metric", ["f1", "acc", "r2"])
def test_chance_score_is_the_mean_over_every_permutation(metric):
    y = np.array([0, 0, 1, 2, 2, 2]) if metric != "r2" else np.array([1.0, 2, 2.5, 4, 0, 3])
    pred = np.array([0, 1, 1, 2, 0, 2]) if metric != "r2" else np.array([1.5, 2, 2, 3, 1, 2])
    every = [SKLEARN[metric](y[list(p)], pred) for p in itertools.permutations(range(6))]
    assert chance_score(y, pred, metric) == pytest.approx(np.mean(every), abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["f1", "acc", "r2"]), st.integers(2, 40))
def test_permuted_scores_are_sklearns(seed, metric, n):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n) if metric != "r2" else rng.normal(size=n)
    pred = rng.integers(0, 4, n) if metric != "r2" else rng.normal(size=n)
    if metric == "r2" and np.all(y == y[0]):
        return
    perms = np.stack([rng.permutation(n) for _ in range(7)])
    expected = [SKLEARN[metric](y[p], pred) for p in perms]
    assert permuted_scores(y, pred, metric, perms) == pytest.approx(expected, abs=1e-12)


def noise_folds(seed=0, k=5, n=60, classes=4):
    """Pure-noise labels: predictions drawn independently of them (a model that
    memorised its training rows: train F1 0.99, clean curves)."""
    rng = np.random.default_rng(seed)
    return [scored(rng.integers(0, classes, n), rng.integers(0, classes, n)) for _ in range(k)]


def test_pure_noise_is_no_better_than_chance_not_a_good_fit():
    folds = noise_folds()
    d = diagnose(folds, max_epochs=40)
    assert d.verdict == "no better than chance"
    assert d.chance_p >= 0.05 and d.chance_score == pytest.approx(
        np.mean([chance_score(f["predictions"]["val"]["true"],
                              f["predictions"]["val"]["pred"], "f1") for f in folds])
    )  # fmt: skip
    assert f"permutation p = {d.chance_p:.3f}" in d.reason
    # without stored predictions the same curves read as before: the rule needs them
    bare = [{k: v for k, v in f.items() if k != "predictions"} for f in folds]
    assert diagnose(bare, max_epochs=40).verdict == "good fit"


def test_real_signal_is_a_good_fit_and_says_by_how_much_it_beats_chance():
    rng = np.random.default_rng(1)
    folds = []
    for _ in range(5):
        y = rng.integers(0, 4, 60)
        pred = np.where(rng.random(60) < 0.9, y, rng.integers(0, 4, 60))  # 90 % right
        folds.append(scored(y, pred))
    d = diagnose(folds, max_epochs=40)
    assert d.verdict == "good fit" and d.chance_p == pytest.approx(1 / 1000)
    assert f"vs {d.chance_score:.3f} for its predictions shuffled" in d.reason


def test_chance_p_value_is_a_loop_over_the_same_shuffles():
    folds = noise_folds(seed=3, k=3, n=25)
    _, p = chance_evidence(folds, "f1", seed=7)
    rng = np.random.default_rng(7)  # the same shuffles, scored one by one with sklearn
    null = np.zeros(PERMUTATIONS)
    observed = []
    for f in folds:
        y, pred = (np.asarray(f["predictions"]["val"][k]) for k in ("true", "pred"))
        observed.append(SKLEARN["f1"](y, pred))
        perms = rng.permuted(np.tile(np.arange(len(y), dtype=np.int32), (PERMUTATIONS, 1)), axis=1)
        null += [SKLEARN["f1"](y[q], pred) for q in perms]
    null /= len(folds)
    assert p == (1 + (null >= np.mean(observed) - 1e-12).sum()) / (PERMUTATIONS + 1)


def test_a_constant_predictor_is_no_better_than_chance_even_at_90_percent_accuracy():
    y = np.array([0] * 54 + [1] * 6)  # 90 % one class
    folds = [scored(y, np.zeros(60, dtype=int), val_f1=0.9) for _ in range(3)]
    for f in folds:
        f["metrics"].update(train_acc=0.9, val_acc=0.9)
    d = diagnose(folds, metric="acc", max_epochs=40)
    assert d.verdict == "no better than chance" and d.chance_p == 1.0
    assert d.chance_score == pytest.approx(0.9)


def test_the_gap_in_words_is_the_tables_mean_gap():
    """Median train and median validation F1 can give a gap of the opposite sign to the
    mean of the per-fold gaps; the verdict quotes the mean, as the table does."""
    from foldwise.aggregate import summarize_config

    rng = np.random.default_rng(0)
    pairs = [(1.0, 0.9), (0.8, 0.85), (0.8, 0.82)]  # gaps +0.10, −0.05, −0.02: mean +0.01
    folds = []
    for train, val in pairs:
        y = rng.integers(0, 3, 50)
        f = scored(y, y, train_f1=train, val_f1=val)
        f.update(status="ok", best_epoch=4, n_val=50)
        f["metrics"].update(train_loss=0.1, val_loss=0.2, train_acc=train, val_acc=val)
        f["history"]["train_f1"] = [train] * 7
        folds.append(f)
    assert np.median([t for t, _ in pairs]) - np.median([v for _, v in pairs]) < 0
    conf = {"hash": "h", "label": "c", "overrides": {}, "max_epochs": 40}
    s = summarize_config(conf, 0, folds, diagnosis={"metric": "f1"})
    assert s.fit is not None
    assert s.fit.gap == pytest.approx(s.stats["gap_f1"]["mean"]) == pytest.approx(0.01)
    assert s.fit.train_score == pytest.approx(s.stats["train_f1"]["mean"])
    assert s.fit.val_score == pytest.approx(s.stats["val_f1"]["mean"])
    assert "train − validation gap +0.010" in s.fit.reason and "means over 3 folds" in s.fit.reason
