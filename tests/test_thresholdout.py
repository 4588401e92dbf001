"""The reusable lockbox (lockbox.mode=thresholdout): Thresholdout's budget accounting, its
noise scales, its guarantee, the records it keeps, and a simulation of adaptive
overfitting (foldwise.lockbox.thresholdout)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from scipy import stats

from foldwise.errors import FoldwiseError
from foldwise.lockbox import thresholdout as to

TEST_A = "a" * 64


def make(budget: int = 5, m: int = 20, tau: float = 0.05, beta: float = 0.05, **kw) -> to.Settings:
    section = {"budget": budget, "max_queries": m, "tolerance": tau, "beta": beta,
               "threshold": kw.get("threshold"), "sigma": kw.get("sigma")}  # fmt: skip
    return to.Settings.of(OmegaConf.create(section))


def entry(model: str, answer: to.Answer, s: to.Settings, key_sha: str = "k" * 64) -> dict:
    """An audit entry as the test stage writes it (the fields the decisions read)."""
    return {
        "opened_at": f"t{answer.query}",
        "test_sha256": TEST_A,
        "model_sha256": model,
        "label": f"model {model[:4]}",
        "thresholdout": {"query": answer.query, "over": answer.over, "answer": answer.value,
                         "settings": s.as_dict(), "key_sha256": key_sha},
    }  # fmt: skip


# --------------------------------------------------------------------------------------------
# budget accounting
# --------------------------------------------------------------------------------------------
pairs = st.lists(
    st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=25
)  # (CV accuracy, test accuracy) of each model queried


@settings(max_examples=200, deadline=None)
@given(budget=st.integers(1, 5), extra=st.integers(0, 8), queries=pairs,
       threshold=st.floats(0.01, 0.3))  # fmt: skip
def test_budget_accounting_over_query_sequences(budget, extra, queries, threshold):
    """With noise too small to matter, a query is over the threshold exactly when its two
    accuracies differ by more than T; only those spend the budget B; the lockbox answers
    until B of them or m queries in all, then refuses with the counts — in the live
    mechanism, and in the decision the test stage makes from the audit log."""
    s = make(budget, budget + extra, threshold=threshold, sigma=1e-12)
    assume(all(abs(abs(h - t) - threshold) > 1e-6 for t, h in queries))
    live = to.Thresholdout(s, key=7)
    audit: list[dict] = []
    asked = over = 0  # this test's own counters
    for i, (train, holdout) in enumerate(queries):
        model = f"{i:064d}"
        if over >= budget or asked >= s.max_queries:
            with pytest.raises(FoldwiseError) as err:
                live.query(train, holdout)
            assert f"{over} of B = {budget}" in str(err.value)
            with pytest.raises(FoldwiseError) as err:
                to.decide(audit, TEST_A, model, s)
            assert f"{asked} queries answered" in str(err.value) or f"{asked} of m" in str(
                err.value
            )
            assert (live.asked, live.over) == (asked, over)  # a refusal spends nothing
            continue
        assert to.decide(audit, TEST_A, model, s)[0] == "query"
        a = live.query(train, holdout)
        asked += 1
        expected_over = abs(holdout - train) > threshold
        over += expected_over
        assert a.over == expected_over
        assert a.value == (pytest.approx(holdout, abs=1e-9) if a.over else train)
        assert (a.query, a.budget_left, a.queries_left) == (
            asked,
            budget - over,
            s.max_queries - asked,
        )
        audit.append(entry(model, a, s))
        assert to.state(audit) == (asked, over)


@settings(max_examples=50, deadline=None)
@given(queries=pairs, key=st.integers(0, 2**128 - 1), budget=st.integers(1, 4))
def test_a_state_rebuilt_from_the_counts_answers_as_the_live_mechanism(queries, key, budget):
    """The test stage answers each query with a mechanism rebuilt from the audit log's
    counts (queries answered, over-threshold answers): the same answers as one mechanism
    kept alive, noise included — so a re-run cannot draw new noise."""
    s = make(budget, 30, threshold=0.05, sigma=0.02)
    live = to.Thresholdout(s, key)
    for train, holdout in queries:
        rebuilt = to.Thresholdout(s, key, asked=live.asked, over=live.over)
        if to.spent(s, live.asked, live.over):
            break
        assert rebuilt.query(train, holdout) == live.query(train, holdout)


def test_a_repeat_is_reported_even_when_the_budget_is_spent():
    s = make(1, 3, threshold=0.01, sigma=1e-12)
    a = to.Thresholdout(s, 1).query(0.5, 0.9)  # over: the budget of 1 is spent
    audit = [entry("1" * 64, a, s)]
    kind, _, recorded = to.decide(audit, TEST_A, "1" * 64, s)
    assert kind == "repeat" and recorded is audit[0]
    with pytest.raises(FoldwiseError) as err:
        to.decide(audit, TEST_A, "2" * 64, s)
    message = str(err.value)
    assert "budget is spent: 1 of B = 1 over-threshold answers used (1 queries answered" in message
    assert "#1 model 1111 (t1, over threshold)" in message
    assert "lockbox.test_rows=new" in message


def test_settings_are_fixed_at_the_first_query_and_modes_do_not_mix():
    s = make(2, 5)
    a = to.Thresholdout(s, 1).query(0.9, 0.9)
    audit = [entry("1" * 64, a, s)]
    with pytest.raises(FoldwiseError) as err:
        to.decide(audit, TEST_A, "2" * 64, make(3, 5))
    assert "budget: 2 at the first query, 3 now" in str(err.value)
    plain = {"opened_at": "t0", "test_sha256": TEST_A, "model_sha256": "0" * 64, "label": "x"}
    with pytest.raises(FoldwiseError) as err:
        to.decide([plain], TEST_A, "2" * 64, s)
    assert "already opened in the default mode (t0 x)" in str(err.value)
    assert to.decide([plain], "b" * 64, "2" * 64, s)[0] == "query"  # another test set


# --------------------------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------------------------
SIGMA = 0.01


def test_answer_noise_is_laplace_sigma():
    """ξ = answer − test accuracy of over-threshold answers is Lap(σ) (KS test); the same
    sample is clearly not Lap(2σ), so the test can tell the scales apart."""
    n = 2000
    mech = to.Thresholdout(make(n, n, threshold=0.01, sigma=SIGMA), key=11)
    xi = np.array([mech.query(0.1, 0.5).value - 0.5 for _ in range(n)])
    assert mech.over == n  # every query was 0.4 apart: over the threshold
    assert stats.kstest(xi, stats.laplace(scale=SIGMA).cdf).pvalue > 1e-3
    assert stats.kstest(xi, stats.laplace(scale=2 * SIGMA).cdf).pvalue < 1e-6


def test_threshold_noise_is_laplace_2sigma_and_query_noise_laplace_4sigma():
    """T̂ − T is Lap(2σ), drawn anew after each over-threshold answer; η (each query's
    draw) is Lap(4σ): found from the mechanism's own answers, by bisecting for the gap
    between the two accuracies at which query i turns over the threshold (T̂ + η_i)."""
    s = make(10**6, 10**6, threshold=0.1, sigma=SIGMA)
    gamma = np.array([to.Thresholdout(s, 3, over=k).threshold_hat - 0.1 for k in range(1000)])
    assert stats.kstest(gamma, stats.laplace(scale=2 * SIGMA).cdf).pvalue > 1e-3
    assert stats.kstest(gamma, stats.laplace(scale=SIGMA).cdf).pvalue < 1e-6

    t_hat = to.Thresholdout(s, 3).threshold_hat
    eta = []
    for i in range(1000):
        lo, hi = 0.0, 1.0  # the gap: under at lo, over at hi
        for _ in range(30):
            mid = (lo + hi) / 2
            over = to.Thresholdout(s, 3, asked=i).query(0.0, mid).over
            lo, hi = (lo, mid) if over else (mid, hi)
        eta.append((lo + hi) / 2 - t_hat)
    eta = np.array(eta)
    # a crossing outside the gaps [0, 1] is not found: the law truncated to them
    sample = eta[(eta > -t_hat + 1e-6) & (eta < 1 - t_hat - 1e-6)]
    assert len(sample) > 900
    lap = stats.laplace(scale=4 * SIGMA)
    lo_p, hi_p = lap.cdf(-t_hat), lap.cdf(1 - t_hat)
    cdf = lambda x: (lap.cdf(x) - lo_p) / (hi_p - lo_p)  # noqa: E731  (truncated to [0, 1])
    assert stats.kstest(sample, cdf).pvalue > 1e-3
    wrong = stats.laplace(scale=2 * SIGMA)
    wlo, whi = wrong.cdf(-t_hat), wrong.cdf(1 - t_hat)
    assert stats.kstest(sample, lambda x: (wrong.cdf(x) - wlo) / (whi - wlo)).pvalue < 1e-6


def test_noise_is_fixed_by_the_key_and_the_query():
    s = make(5, 20, threshold=0.01, sigma=SIGMA)
    a = to.Thresholdout(s, 5).query(0.1, 0.5)
    assert to.Thresholdout(s, 5).query(0.1, 0.5) == a  # a re-run draws the same noise
    assert to.Thresholdout(s, 6).query(0.1, 0.5).value != a.value
    assert to.Thresholdout(s, 5, asked=1).query(0.1, 0.5).value != a.value


# --------------------------------------------------------------------------------------------
# adaptive overfitting: a simulation
# --------------------------------------------------------------------------------------------
def boosting_attack(n: int, k: int, seed: int, mech: to.Thresholdout | None) -> tuple[dict, list]:
    """An analyst fishing on the holdout (the "boosting attack" of Blum & Hardt 2015, in
    the spirit of Dwork et al.'s Fig. 1): the labels are pure noise, so every classifier's
    true accuracy is 0.5. It asks the accuracy of k random classifiers, keeps those
    answered above 0.5, and asks the accuracy of their majority vote. Returns the vote's
    accuracy on each set, and every answer the analyst got."""
    rng = np.random.default_rng(seed)
    y = {s: rng.integers(0, 2, n) for s in ("train", "holdout", "fresh")}
    pred = {s: rng.integers(0, 2, (k, n)) for s in y}  # each classifier's rows
    acc = {s: (pred[s] == y[s]).mean(axis=1) for s in y}

    def ask(train: float, holdout: float) -> float:
        return holdout if mech is None else mech.query(train, holdout).value

    answers = [ask(acc["train"][i], acc["holdout"][i]) for i in range(k)]
    kept = [i for i in range(k) if answers[i] > 0.5]
    vote = {s: (pred[s][kept].mean(axis=0) > 0.5) for s in y}
    final = {s: float((vote[s] == y[s]).mean()) for s in y}
    answers.append(ask(final["train"], final["holdout"]))
    return final, answers


def test_adaptive_overfitting_shows_on_the_plain_holdout_not_through_thresholdout():
    """The plain holdout reports the fished vote ≥ τ above its true accuracy of 0.5 (and
    fresh rows show 0.5); Thresholdout with the theorem's T and σ keeps every answer
    within τ of the truth, as its guarantee states (here at n = 2000 rows, m = 401)."""
    n, k, tau = 2000, 400, 0.05
    s = make(budget=40, m=k + 1, tau=tau)
    assert to.guarantee(s, n)["covered"]
    for seed in range(10):
        plain, answers = boosting_attack(n, k, seed, None)
        assert answers[-1] - 0.5 > tau, (seed, plain)  # overfit to the holdout...
        assert abs(plain["fresh"] - 0.5) < 0.04  # ...which new rows do not confirm
        mech = to.Thresholdout(s, key=seed)
        _, reused = boosting_attack(n, k, seed, mech)
        assert mech.over < s.budget  # every answer came before the budget ran out
        assert max(abs(a - 0.5) for a in reused) < tau, seed


# --------------------------------------------------------------------------------------------
# the guarantee and the settings
# --------------------------------------------------------------------------------------------
def test_theorem_settings_and_guarantee_by_hand():
    s = make(5, 20, tau=0.05, beta=0.05)
    assert s.threshold == pytest.approx(0.0375)
    assert s.sigma == pytest.approx(0.05 / (96 * math.log(1600)))
    g = to.guarantee(s, 360)
    ln = math.log(400)  # ln(m/β)
    assert g["n0_scale"] == pytest.approx(
        ln / 0.05**2 * min(5, math.sqrt(5 * math.log(ln / 0.05)) / 0.05)
    )
    assert g["covered"] and "n = 360" in g["text"] and "B = 5" in g["text"]
    assert "m = 20" in g["text"] and "τ = 0.05" in g["text"] and "≥ 95%" in g["text"]
    mine = to.guarantee(make(5, 20, threshold=0.04, sigma=0.01), 360)
    assert not mine["covered"] and "does not cover these answers" in mine["text"]


def test_answers_are_clipped_to_0_1():
    s = make(50, 50, threshold=0.01, sigma=0.5)
    values = [to.Thresholdout(s, 9, asked=i).query(0.0, 1.0).value for i in range(50)]
    assert min(values) >= 0 and max(values) <= 1 and max(values) == 1.0


# --------------------------------------------------------------------------------------------
# the noise key
# --------------------------------------------------------------------------------------------
def test_the_key_is_made_once_then_checked(tmp_path):
    (tmp_path / ".git").mkdir()
    key, sha = to.key_for(tmp_path, TEST_A, [])
    path = to.key_path(tmp_path, TEST_A)
    assert path.is_file() and key.bit_length() <= 128
    assert to.key_for(tmp_path, TEST_A, []) == (key, sha)
    s = make()
    a = to.Thresholdout(s, key).query(0.9, 0.9)
    answered = [entry("1" * 64, a, s, key_sha=sha)]
    assert to.key_for(tmp_path, TEST_A, answered) == (key, sha)
    path.write_text("ff" * 16 + "\n")
    with pytest.raises(FoldwiseError, match="is not the noise key"):
        to.key_for(tmp_path, TEST_A, answered)
    path.unlink()
    with pytest.raises(FoldwiseError, match="is missing: the noise key") as err:
        to.key_for(tmp_path, TEST_A, answered)
    assert "answered 1 Thresholdout queries" in str(err.value)


# --------------------------------------------------------------------------------------------
# params: refused before any work
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["lockbox.mode=twice"], "unknown lockbox.mode 'twice'"),
        (["lockbox.mode=thresholdout"], "selects on val_f1"),
        (["lockbox.mode=thresholdout", "data=diabetes", "selection.metric=val_mse"],
         "this regression run selects on val_mse"),
        (["lockbox.mode=thresholdout", "selection.metric=val_acc",
          "lockbox.thresholdout.budget=0"], "budget must be a whole number >= 1"),
        (["lockbox.mode=thresholdout", "selection.metric=val_acc",
          "lockbox.thresholdout.max_queries=3"], "max_queries must be a whole number >= budget"),
        (["lockbox.mode=thresholdout", "selection.metric=val_acc",
          "lockbox.thresholdout.beta=1.5"], "beta must be in (0, 1)"),
        (["lockbox.mode=thresholdout", "selection.metric=val_acc",
          "lockbox.thresholdout.sigma=0"], "sigma must be a number > 0 or null"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused(overrides, needle):
    from foldwise import params
    from foldwise.compose import compose_params

    with pytest.raises(FoldwiseError) as err:
        params.validate(compose_params(overrides))
    assert needle in str(err.value)


def test_thresholdout_settings_pass_validation():
    from foldwise import params
    from foldwise.compose import compose_params

    params.validate(compose_params(["lockbox.mode=thresholdout", "selection.metric=val_acc"]))
