"""Selection statistics: the corrected resampled t-test and the Bayesian correlated t-test
against scipy and baycomp, the one-standard-error rule and the leaderboard's verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from baycomp import CorrelatedTTest
from scipy import stats

from foldwise.aggregate import (
    ConfigSummary,
    compare_to_selected,
    one_se,
    select,
    summarize_config,
    verdict,
)
from foldwise.errors import FoldwiseError
from foldwise.methods.compare import compare, indistinguishable


def test_corrected_t_test_by_hand():
    best = np.array([0.91, 0.93, 0.90, 0.94, 0.92])
    other = np.array([0.90, 0.91, 0.90, 0.92, 0.90])
    c = compare(best, other, ratio=1 / 4)  # 5-fold: n_val/n_train = 1/4
    d = best - other
    se = math.sqrt((1 / 5 + 1 / 4) * d.var(ddof=1))
    t = d.mean() / se
    assert c.mean == pytest.approx(d.mean()) and c.se == pytest.approx(se)
    assert c.t == pytest.approx(t)
    assert c.p_value == pytest.approx(2 * stats.t.sf(abs(t), 4))
    half = stats.t.ppf(0.975, 4) * se
    assert (c.ci_low, c.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    # wider than the uncorrected paired t-test, which treats folds as independent
    assert c.p_value > stats.ttest_rel(best, other).pvalue


@pytest.mark.parametrize(("k", "runs"), [(5, 1), (10, 1), (5, 3)])
@pytest.mark.parametrize("rope", [0.0, 0.01])
def test_bayesian_correlated_t_test_matches_baycomp(k, runs, rope):
    rng = np.random.default_rng(k * runs)
    other = rng.normal(0.90, 0.02, k * runs)
    best = other + rng.normal(0.008, 0.01, k * runs)
    c = compare(best, other, ratio=1 / (k - 1), rope=rope)
    ref = CorrelatedTTest.probs(other, best, rope=rope, runs=runs)  # diff = best − other
    if rope:
        assert (c.p_worse, c.p_equivalent, c.p_better) == pytest.approx(ref, abs=1e-9)
    else:
        assert (c.p_worse, c.p_better) == pytest.approx(ref, abs=1e-9)


def test_loss_direction_and_no_variance():
    # for a loss, lower is better: the selected one (lower) is better
    c = compare([0.30, 0.32, 0.31], [0.35, 0.36, 0.37], ratio=0.5, higher_is_better=False)
    assert c.mean > 0 and c.p_better > 0.5
    same = compare([0.9, 0.9, 0.9], [0.8, 0.8, 0.8], ratio=0.5, rope=0.01)
    assert same.se == 0 and same.p_better == 1.0 and same.p_value == 0.0
    tie = compare([0.9, 0.9], [0.9, 0.9], ratio=1.0, rope=0.01)
    assert tie.p_equivalent == 1.0 and tie.p_value == 1.0
    with pytest.raises(ValueError, match="two or more"):
        compare([0.9], [0.8], ratio=1.0)


def _summary(name, order, vals, n_params):
    def row(v):
        metrics = {f"{p}_{m}": v for p in ("train", "val") for m in ("acc", "f1", "loss")}
        return {"status": "ok", "best_epoch": 3, "n_val": 20, "metrics": metrics}

    s = summarize_config({"hash": name, "label": name, "overrides": {}}, order,
                         [row(v) for v in vals])  # fmt: skip
    s.complexity = n_params
    return s


def test_one_standard_error_rule_picks_the_simplest_within_one_se():
    big = _summary("big", 0, [0.90, 0.94, 0.92, 0.96, 0.93], 10_000)  # mean .930, se .0100
    small = _summary("small", 1, [0.91, 0.93, 0.91, 0.93, 0.92], 1_000)  # mean .920: within
    tiny = _summary("tiny", 2, [0.88, 0.90, 0.89, 0.91, 0.89], 100)  # mean .894: outside
    assert select([big, small, tiny], "val_f1").hash == "big"
    assert one_se([big, small, tiny], "val_f1").hash == "small"
    assert select([big, small, tiny], "val_f1", "one_se").hash == "small"
    small.complexity = 20_000  # now the best is also the simplest within reach
    assert one_se([big, small, tiny], "val_f1").hash == "big"


def test_one_se_needs_a_standard_error():
    s = _summary("a", 0, [0.9, 0.92], 10)
    s.stats["val_f1"]["se"] = float("nan")
    with pytest.raises(FoldwiseError, match="needs a standard error"):
        one_se([s], "val_f1")


def test_comparisons_and_verdict():
    a = _summary("a", 0, [0.93, 0.95, 0.94, 0.96, 0.95], 10)
    b = _summary("b", 1, [0.80, 0.82, 0.81, 0.83, 0.82], 10)
    near = _summary("near", 2, [0.929, 0.951, 0.938, 0.961, 0.949], 10)
    chosen = select([a, b, near], "val_f1")
    compare_to_selected([a, b, near], chosen, "val_f1", kind="folds", n_dev=100, rope=0.01)
    assert chosen.versus is None
    # n_val = 20 of 100 dev rows: ratio 20/80, as for 5-fold CV
    ref = compare(chosen.values["val_f1"], b.values["val_f1"], ratio=20 / 80, rope=0.01)
    assert b.versus == ref and not indistinguishable(b.versus)
    assert indistinguishable(near.versus)
    sentence = verdict([a, b, near], chosen, "val_f1")
    assert "statistically indistinguishable" in sentence and "near" in sentence
    # without the close rival, the verdict says the selection wins
    assert "beats the closest rival, b" in verdict([chosen, b], chosen, "val_f1")
    # pooled schemes (leave-one-out) have no paired per-resample scores to compare
    c = ConfigSummary("x", "x", {}, None, 0, True)
    compare_to_selected([chosen, c], chosen, "val_f1", kind="exhaustive", n_dev=100, rope=0.01)
    assert c.versus is None
