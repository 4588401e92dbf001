"""Boosting's arithmetic against scikit-learn and hand computation: SAMME's estimator
weights, sample-weight updates and probabilities equal ``AdaBoostClassifier``'s when both
are fed the same weak-learner predictions; gradient boosting's stages by hand."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import AdaBoostClassifier

from foldwise.ensemble import boosting


class Scripted(ClassifierMixin, BaseEstimator):
    """A weak learner whose predictions are fixed in advance (round by round); it records
    the sample weights scikit-learn fits it with. Column 0 of X is the row index."""

    log: ClassVar[list[np.ndarray]] = []
    script: ClassVar[list[np.ndarray]] = []

    def fit(self, X, y, sample_weight=None):
        self.classes_ = np.unique(y)
        self.round_ = len(Scripted.log)
        Scripted.log.append(np.array(sample_weight, dtype=float))
        return self

    def predict(self, X):
        return Scripted.script[self.round_][X[:, 0].astype(int)]


def ours(y, script, k, lr):
    """foldwise's SAMME loop over the same scripted predictions."""
    w = boosting.initial_weights(len(y))
    zero = w == 0
    weights, alphas, used = [], [], []
    for m, pred in enumerate(script):
        w = boosting.clip_weights(w, zero)
        weights.append(w.copy())
        r = boosting.samme_round(w, pred != y, k, lr, last=m == len(script) - 1)
        if r.alpha is None:
            break
        alphas.append(r.alpha)
        used.append(pred)
        if r.stop:
            break
        w = r.weights
    return weights, alphas, used


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("lr", [1.0, 0.5])
def test_samme_equals_scikit_learn_on_the_same_predictions(k, lr):
    rng = np.random.default_rng(k)
    n, rounds = 60, 5
    y = rng.integers(0, k, n)
    # weak learners right ~70 % of the time
    script = [np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n)) for _ in range(rounds)]
    Scripted.log, Scripted.script = [], script
    x = np.column_stack([np.arange(n), rng.normal(size=n)])
    sk = AdaBoostClassifier(estimator=Scripted(), n_estimators=rounds, learning_rate=lr).fit(x, y)
    weights, alphas, used = ours(y, script, k, lr)
    assert len(alphas) == len(sk.estimators_)
    np.testing.assert_allclose(alphas, sk.estimator_weights_[: len(alphas)], rtol=1e-12)
    for got, want in zip(weights, Scripted.log, strict=True):
        np.testing.assert_allclose(got / got.sum(), want / want.sum(), rtol=1e-10)
    proba = boosting.samme_proba(used, alphas, k)
    np.testing.assert_allclose(proba, sk.predict_proba(x), rtol=1e-10, atol=1e-12)
    assert (proba.argmax(1) == sk.predict(x)).all()


def test_samme_stops_on_a_learner_no_better_than_chance():
    y = np.array([0, 1, 2, 0, 1, 2])
    bad = (y + 1) % 3  # always wrong
    r = boosting.samme_round(boosting.initial_weights(6), bad != y, 3, 1.0, last=False)
    assert r.alpha is None and r.weights is None and "no better than chance" in r.stop


def test_samme_round_by_hand():
    w = boosting.initial_weights(4)
    r = boosting.samme_round(w, np.array([1, 0, 0, 0]), 3, 0.5, last=False)
    err = 0.25
    alpha = 0.5 * (np.log((1 - err) / err) + np.log(2))
    assert r.error == err and r.alpha == pytest.approx(alpha)
    raw = np.array([np.exp(alpha), 1, 1, 1]) / 4
    np.testing.assert_allclose(r.weights, raw / raw.sum())


def test_gradient_boosting_stages_by_hand():
    y = np.array([3.0, 5.0, 10.0])
    f0 = y.mean()  # 6
    r1 = boosting.residuals(y, np.full(3, f0))
    np.testing.assert_allclose(r1, [-3, -1, 4])
    h1 = np.array([-2.0, -1.0, 3.0])  # a weak fit of r1
    h2 = np.array([-0.5, 0.5, 1.0])
    stages = boosting.staged(f0, [h1, h2], 0.5)
    np.testing.assert_allclose(stages[1], [5.0, 5.5, 7.5])
    np.testing.assert_allclose(stages[2], [4.75, 5.75, 8.0])
    np.testing.assert_allclose(boosting.residuals(y, stages[1]), [-2.0, -0.5, 2.5])


def test_boosting_the_wrong_task_is_refused_with_the_fix():
    from conftest import ROOT
    from foldwise import params
    from foldwise.compose import compose_params
    from foldwise.errors import FoldwiseError

    cfg = compose_params(["data=diabetes", "split=kfold", "ensemble=adaboost"], root=ROOT)
    with pytest.raises(
        FoldwiseError, match=r"(?s)boosts classifiers.*use ensemble=gradient_boosting"
    ):
        params.validate(cfg)
    cfg = compose_params(["ensemble=gradient_boosting"], root=ROOT)
    with pytest.raises(FoldwiseError, match=r"(?s)boosts regressors.*use ensemble=adaboost"):
        params.validate(cfg)
