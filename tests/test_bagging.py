"""Bagging's pieces on hand-made inputs: nested seeded draws, averaging, out-of-bag
predictions by hand, and one parent's members combined into one result."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from foldwise.engine import Hyper, Outcome, Task
from foldwise.ensemble import bagging, combine, expand


def test_draws_are_seeded_bootstrap_samples_and_nested_in_b():
    rows = np.arange(100, 150)
    five = bagging.draws(rows, 5, 1.0, seed=7)
    ten = bagging.draws(rows, 10, 0.5, seed=7)
    assert all(len(d) == 50 and set(d) <= set(rows) for d in five)
    assert all(len(d) == 25 for d in ten)
    assert len(set(five[0])) < 50  # with replacement
    again = bagging.draws(rows, 10, 1.0, seed=7)
    for a, b in zip(five, again[:5], strict=True):  # B = 5 is B = 10's first five
        np.testing.assert_array_equal(a, b)
    assert bagging.draw_seed(rows[::-1], 3) == bagging.draw_seed(rows, 3)  # order-free


def test_out_of_bag_by_hand():
    rows = np.array([10, 11, 12, 13])
    draws = [np.array([10, 10, 11, 12]), np.array([11, 12, 13, 13])]
    values = [np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 6.0, 7.0, 8.0])]
    seen, oob = bagging.out_of_bag(rows, draws, values)
    # row 10: only member 1 left it out; 13: only member 0; 11 and 12: nobody
    np.testing.assert_array_equal(seen, [10, 13])
    np.testing.assert_allclose(oob, [5.0, 4.0])


def _member_outcome(val_proba, fold_proba, epochs=3):
    return Outcome(
        status="ok", metrics={}, history={"epoch": list(range(1, epochs + 1)),
                                          "val_loss": [1.0] * epochs},
        best_epoch=epochs, epochs_trained=epochs,
        predictions={"val": {"proba": val_proba}, "fold": {"proba": fold_proba}},
    )  # fmt: skip


def test_members_combine_into_averaged_probabilities_and_oob_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 30)
    train, val = np.arange(20), np.arange(20, 30)
    parent = Task("p", {"name": "mlp"}, Hyper(0.01, 0, 0, 3, False, 0.2, 2), 8, 1, train,
                  {"val": val}, predict=("val",),
                  ensemble={"name": "bagging", "n_estimators": 4, "max_samples": 1.0})  # fmt: skip
    members = expand(parent)
    assert [m.group for m in members] == ["p"] * 4 and len({m.seed for m in members}) == 4
    probas = [rng.dirichlet(np.ones(3), 30) for _ in members]
    outs = [_member_outcome(p[val].tolist(), p[train].tolist()) for p in probas]
    got = combine(parent, members, outs, y, regression=False)
    avg = np.mean(probas, axis=0)
    assert got.metrics["val_acc"] == pytest.approx(accuracy_score(y[val], avg[val].argmax(1)))
    assert got.metrics["val_f1"] == pytest.approx(
        f1_score(y[val], avg[val].argmax(1), average="macro", zero_division=0))  # fmt: skip
    assert got.metrics["val_loss"] == pytest.approx(log_loss(y[val], avg[val], labels=[0, 1, 2]))
    seen, oob = bagging.out_of_bag(train, [m.train for m in members],
                                   [p[train] for p in probas])  # fmt: skip
    assert got.metrics["oob_acc"] == pytest.approx(accuracy_score(y[seen], oob.argmax(1)))
    assert got.predictions["val"]["pred"] == avg[val].argmax(1).tolist()
    # staged: the ensemble of the first b members, b = 1..4
    first = np.mean(probas[:1], axis=0)[val]
    assert got.history["stage_val_acc"][0] == pytest.approx(accuracy_score(y[val], first.argmax(1)))
    assert len(got.history["stage_val_acc"]) == 4


def test_a_failed_member_fails_its_ensemble():
    parent = Task("p", {"name": "mlp"}, Hyper(0.01, 0, 0, 3, False, 0.2, 2), 8, 1,
                  np.arange(10), ensemble={"name": "bagging", "n_estimators": 2,
                                           "max_samples": 1.0})  # fmt: skip
    members = expand(parent)
    outs = [Outcome(status="failed", error="loss became non-finite"), Outcome(status="ok")]
    got = combine(parent, members, outs, np.zeros(10, dtype=int), regression=False)
    assert got.status == "failed" and "1 of 2 bagging members failed" in got.error


def test_staged_predictions_and_extra_row_sets_are_averaged_by_hand():
    """With ``staged``, the val record keeps each stage's class (first b members); a row
    set predicted at the end (here "outer", as nested CV's fold ensemble asks) is
    averaged like val, with every class's probability when ``proba``."""
    import dataclasses

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 40)
    train, val, outer = np.arange(20), np.arange(20, 30), np.arange(30, 40)
    parent = Task("p", {"name": "mlp"}, Hyper(0.01, 0, 0, 3, False, 0.2, 2), 8, 1, train,
                  {"val": val}, predict=("val", "outer"), finals={"outer": outer}, proba=True,
                  staged=True, ensemble={"name": "bagging", "n_estimators": 3,
                                         "max_samples": 1.0})  # fmt: skip
    members = expand(parent)
    assert all(set(m.finals) == {"outer", "fold"} and "outer" in m.predict for m in members)
    probas = [rng.dirichlet(np.ones(3), 40) for _ in members]
    outs = [dataclasses.replace(_member_outcome(p[val].tolist(), p[train].tolist()),
                                predictions={"val": {"proba": p[val].tolist()},
                                             "fold": {"proba": p[train].tolist()},
                                             "outer": {"proba": p[outer].tolist()}})
            for p in probas]  # fmt: skip
    got = combine(parent, members, outs, y, regression=False)
    staged = got.predictions["val"]["staged"]
    assert len(staged) == 3
    for b in range(3):
        assert staged[b] == np.mean(probas[: b + 1], axis=0)[val].argmax(1).tolist()
    np.testing.assert_allclose(got.predictions["outer"]["proba"], np.mean(probas, 0)[outer])
    assert got.predictions["outer"]["pred"] == np.mean(probas, 0)[outer].argmax(1).tolist()
