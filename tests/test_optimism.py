"""Tibshirani & Tibshirani (2009) optimism of the winner's CV score: a hand-worked
matrix, an independent computation over random matrices, and the aggregate stage's use."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_aggregate import config, fold

from foldwise.aggregate import optimism
from foldwise.methods.optimism import in_words, tibshirani_bias

# Errors of 3 configurations (rows) on 4 folds. Means 0.175, 0.17, 0.22: θ̂ = row 1.
# Per-fold minima 0.10 (row 0), 0.10 (row 2), 0.15 (row 0), 0.22 (row 1), so the terms
# are 0.12−0.10, 0.14−0.10, 0.20−0.15, 0.22−0.22 = 0.02, 0.04, 0.05, 0 → bias 0.0275.
ERRORS = [
    [0.10, 0.20, 0.15, 0.25],
    [0.12, 0.14, 0.20, 0.22],
    [0.30, 0.10, 0.18, 0.30],
]


def test_hand_worked_errors():
    est = tibshirani_bias(ERRORS, higher_is_better=False)
    assert est.winner == 1 and est.fold_winners == [0, 2, 0, 1]
    assert est.per_fold == pytest.approx([0.02, 0.04, 0.05, 0.0])
    assert est.bias == pytest.approx(0.0275)
    assert est.cv == pytest.approx(0.17)
    assert est.corrected == pytest.approx(0.1975)  # an error: corrected upwards
    assert (est.n_configs, est.n_folds) == (3, 4)


def test_hand_worked_scores_flip_the_signs():
    acc = 1 - np.asarray(ERRORS)  # the same models as accuracies
    est = tibshirani_bias(acc, higher_is_better=True)
    assert est.winner == 1 and est.fold_winners == [0, 2, 0, 1]
    assert est.bias == pytest.approx(0.0275)
    assert est.cv == pytest.approx(0.83)
    assert est.corrected == pytest.approx(0.8025)  # a score: corrected downwards


def test_one_configuration_has_no_selection_to_flatter_it():
    assert tibshirani_bias([[0.3, 0.1, 0.2]], higher_is_better=False).bias == 0.0


def test_a_given_winner_is_used_and_bad_input_refused():
    est = tibshirani_bias(ERRORS, higher_is_better=False, winner=0)
    assert est.winner == 0 and est.bias == pytest.approx((0 + 0.10 + 0 + 0.03) / 4)
    with pytest.raises(ValueError, match="NaN"):
        tibshirani_bias([[0.1, float("nan")]], higher_is_better=False)
    with pytest.raises(ValueError, match="matrix"):
        tibshirani_bias([0.1, 0.2], higher_is_better=False)


def reference(matrix: list[list[float]], higher: bool) -> tuple[float, float]:
    """The paper's definition written out with plain loops: (bias, corrected)."""
    n_conf, n_fold = len(matrix), len(matrix[0])
    err = [[-v if higher else v for v in row] for row in matrix]
    means = [sum(row) / n_fold for row in err]
    theta = means.index(min(means))
    terms = [err[theta][k] - min(err[c][k] for c in range(n_conf)) for k in range(n_fold)]
    bias = sum(terms) / n_fold
    cv = sum(matrix[theta]) / n_fold
    return bias, (cv - bias if higher else cv + bias)


matrices = st.integers(1, 6).flatmap(
    lambda c: st.integers(2, 10).flatmap(
        lambda k: st.lists(
            st.lists(st.floats(0, 1, allow_nan=False), min_size=k, max_size=k),
            min_size=c,
            max_size=c,
        )
    )
)


@settings(max_examples=200, deadline=None)
@given(matrices, st.booleans(), st.floats(-0.5, 0.5))
def test_matches_the_definition_on_random_matrices(matrix, higher, shift):
    bias, corrected = reference(matrix, higher)
    est = tibshirani_bias(matrix, higher_is_better=higher)
    assert est.bias == pytest.approx(bias, abs=1e-12)
    assert est.corrected == pytest.approx(corrected, abs=1e-12)
    assert est.bias >= 0.0
    # A fold that is easier for every configuration alike changes nothing.
    fold_shift = np.asarray(matrix) + shift * np.arange(len(matrix[0]))
    again = tibshirani_bias(fold_shift, higher_is_better=higher, winner=est.winner)
    assert again.bias == pytest.approx(est.bias, abs=1e-9)


def test_aggregate_uses_the_complete_configurations_on_the_same_folds():
    # val_f1 per fold; b has the best mean, but a wins fold 0 and c wins fold 2.
    a = config("a", 0, [fold(0.90), fold(0.80), fold(0.70)])
    b = config("b", 1, [fold(0.85), fold(0.86), fold(0.75)])
    c = config("c", 2, [fold(0.60), fold(0.70), fold(0.95)])
    inc = config("i", 3, [fold(0.99), fold(0.99), None])  # incomplete: not a contender
    summaries = [a, b, c, inc]
    doc = optimism(summaries, "val_f1")
    assert doc is not None and doc["winner"] == "cfg b"
    assert doc["fold_winners"] == ["cfg a", "cfg b", "cfg c"]
    # (0.90 − 0.85 + 0 + 0.95 − 0.75) / 3
    assert doc["bias"] == pytest.approx(0.25 / 3)
    assert doc["corrected"] == pytest.approx(np.mean([0.85, 0.86, 0.75]) - 0.25 / 3)
    assert doc["n_configs"] == 3 and doc["n_folds"] == 3
    # the loss is lower-is-better: its bias is measured on the loss itself
    loss = optimism(
        [config("a", 0, [fold(0.9, val_loss=v) for v in (0.2, 0.4)]),
         config("b", 1, [fold(0.9, val_loss=v) for v in (0.3, 0.2)])],
        "val_loss",
    )  # fmt: skip
    assert loss is not None and loss["winner"] == "cfg b"
    assert loss["bias"] == pytest.approx((0.3 - 0.2) / 2)
    assert loss["corrected"] == pytest.approx(0.25 + 0.05)
    text = in_words(doc, higher_is_better=True)
    assert "bias +0.0833" in text
    assert f"corrected val_f1 = CV − bias = {doc['corrected']:.4f}" in text
    assert "plain 0.8200" in text
    # with the winner's standard error: the precision it supports (0.012 → 3 decimals)
    text = in_words(doc, higher_is_better=True, se=0.012)
    assert "bias +0.083" in text and "plain 0.820)" in text
    assert f"CV − bias = {doc['corrected']:.3f} " in text


def test_no_estimate_without_paired_per_fold_scores():
    single = config("s", 0, [fold(0.9)])  # one fold: nothing to pair
    assert optimism([single], "val_f1") is None
    pooled = config("p", 0, [fold(0.9), fold(0.8)])
    pooled.values = {}  # what summarize_config leaves for leave-out, holdout and bootstrap
    assert optimism([pooled, config("q", 1, [fold(0.9), fold(0.8)])], "val_f1") is None
