"""Bias–variance decomposition: a hand-worked case, the exact identity, and mlxtend's
`bias_variance_decomp` fed the very same predictions."""

from __future__ import annotations

import numpy as np
import pytest
from mlxtend.evaluate import bias_variance_decomp

from foldwise.methods.bias_variance import main_prediction, squared, zero_one


class Replay:
    """An 'estimator' that ignores its bootstrap sample and replays fixed predictions,
    so mlxtend decomposes exactly the predictions foldwise decomposes."""

    def __init__(self, rounds: np.ndarray) -> None:
        self.rounds, self.i = rounds, -1

    def fit(self, x, y):
        self.i += 1
        return self

    def predict(self, x):
        return self.rounds[self.i]


def mlxtend_on(pred: np.ndarray, y: np.ndarray, loss: str) -> tuple[float, float, float]:
    x = np.zeros((len(y), 1))
    return bias_variance_decomp(Replay(pred), x, y, x, y, loss=loss, num_rounds=len(pred),
                                random_seed=0)  # fmt: skip


def test_hand_worked_zero_one():
    # 4 models, 3 rows, true classes (0, 1, 2)
    pred = np.array([[0, 1, 1], [0, 2, 1], [1, 1, 2], [0, 1, 1]])
    y = np.array([0, 1, 2])
    d = zero_one(pred, y)
    # main predictions 0, 1, 1 -> the last row is biased
    assert list(main_prediction(pred)) == [0, 1, 1]
    assert d.bias == pytest.approx(1 / 3)
    # V: row 0: 1/4, row 1: 1/4, row 2: 1/4 (one model says 2)
    assert d.variance == pytest.approx(0.25)
    # row 2: of the disagreeing models (one), all predict the true class: c = 1
    assert d.unbiased_variance == pytest.approx((0.25 + 0.25) / 3)
    assert d.biased_variance == pytest.approx(0.25 / 3)
    assert d.expected_loss == pytest.approx(5 / 12)  # wrong: 1 + 1 + 3 of 12
    assert d.expected_loss == pytest.approx(d.bias + d.net_variance)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_one_equals_mlxtend_and_the_identity_holds(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 60)
    # 25 models: right 70 % of the time, otherwise a random class
    pred = np.where(rng.random((25, 60)) < 0.7, y, rng.integers(0, 4, (25, 60)))
    d = zero_one(pred, y)
    loss, bias, var = mlxtend_on(pred, y, "0-1_loss")
    assert (d.expected_loss, d.bias, d.variance) == pytest.approx((loss, bias, var))
    assert d.expected_loss == pytest.approx(d.bias + d.net_variance)  # Domingos, no noise


def test_squared_equals_mlxtend():
    rng = np.random.default_rng(3)
    y = rng.normal(size=40)
    pred = y + rng.normal(0.3, 0.5, (30, 40))
    d = squared(pred, y)
    loss, bias2, var = mlxtend_on(pred, y, "mse")
    assert (d.expected_loss, d.bias, d.variance) == pytest.approx((loss, bias2, var))
    assert d.expected_loss == pytest.approx(d.bias + d.variance) and d.noise is None


def test_ensemble_terms_by_members_decompose_each_stage():
    """The curves stage's table: row b decomposes the draws' stage-b predictions; the
    single network's terms ride along as constant ``single_*`` columns."""
    from foldwise.curves import ensemble_bias_variance

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 25)
    staged = rng.integers(0, 3, (6, 4, 25)).tolist()  # 6 draws × 4 stages × 25 rows
    staged[2] = staged[2][:3]  # a boosted draw that stopped after 3 rounds
    single = rng.integers(0, 3, (6, 25)).tolist()
    table = ensemble_bias_variance(staged, single, y, zero_one)
    assert table["members"].tolist() == [1, 2, 3]
    for b in range(3):
        want = zero_one(np.array([s[b] for s in staged]), y)
        assert table.loc[b, "bias"] == pytest.approx(want.bias)
        assert table.loc[b, "net_variance"] == pytest.approx(want.net_variance)
    assert (table["single_variance"] == zero_one(np.array(single), y).variance).all()
