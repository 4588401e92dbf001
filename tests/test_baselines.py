"""foldwise.methods.baselines: scikit-learn baselines scored on the sweep's resamples, and
how the aggregate stage shows them (ranked beside the networks, never selected)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_diabetes, load_iris
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from foldwise import aggregate as A
from foldwise.errors import FoldwiseError
from foldwise.methods import baselines as B

# Built here, not by foldwise: the independent side of each comparison.
CLASSIFIERS = {
    "dummy": lambda: DummyClassifier(strategy="prior"),
    "linear": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    "hgb": lambda: HistGradientBoostingClassifier(
        max_iter=50, early_stopping=False, random_state=0
    ),
}
REGRESSORS = {
    "dummy": DummyRegressor,
    "linear": lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))),
    "hgb": lambda: HistGradientBoostingRegressor(max_iter=50, early_stopping=False, random_state=0),
}


@pytest.mark.parametrize("name", B.NAMES)
def test_classification_scores_are_cross_validates_on_the_same_folds(name):
    x, y = load_iris(return_X_y=True)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=1).split(x, y))
    got = B.score_all(name, "classification", x, y, folds, n_classes=3)
    with threadpool_limits(1):  # OpenMP's thread per core crawls on a shared machine
        want = cross_validate(
            CLASSIFIERS[name](), x, y, cv=folds, return_train_score=True,
            scoring={"acc": "accuracy", "f1": "f1_macro", "loss": "neg_log_loss"},
        )  # fmt: skip
    for side in ("train", "val"):
        for k, sign in (("acc", 1), ("f1", 1), ("loss", -1)):
            ours = [r["metrics"][f"{side}_{k}"] for r in got]
            theirs = sign * want[f"{'test' if side == 'val' else 'train'}_{k}"]
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)
    assert [r["n_val"] for r in got] == [len(v) for _, v in folds]
    # the stored predictions are the validation rows', in order, with their labels
    assert got[0]["predictions"]["val"]["true"] == y[folds[0][1]].tolist()


@pytest.mark.parametrize("name", B.NAMES)
def test_regression_scores_are_cross_validates_on_the_same_folds(name):
    x, y = load_diabetes(return_X_y=True)
    x, y = x[:200], y[:200]
    folds = list(KFold(4, shuffle=True, random_state=2).split(x))
    got = B.score_all(name, "regression", x, y, folds)
    with threadpool_limits(1):
        want = cross_validate(
            REGRESSORS[name](), x, y, cv=folds,
            scoring={"mse": "neg_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2"},
        )  # fmt: skip
    for k, sign in (("mse", -1), ("mae", -1), ("r2", 1)):
        np.testing.assert_allclose(
            [r["metrics"][f"val_{k}"] for r in got], sign * want[f"test_{k}"], rtol=1e-6
        )
    assert [r["metrics"]["val_loss"] for r in got] == [r["metrics"]["val_mse"] for r in got]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(["dummy", "linear"]))
def test_a_bootstrap_draws_multiplicity_is_a_weight_equal_to_repeating_the_rows(seed, name):
    """Weights = counts gives the fit on the drawn rows themselves (repeats included):
    the same weighted loss, so the same model up to the solver's tolerance."""
    rng = np.random.default_rng(seed)
    n = 40
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + rng.normal(size=n) > 0).astype(int)
    draw = rng.integers(0, n, size=n)
    oob = np.setdiff1d(np.arange(n), draw)
    if len(np.unique(y[draw])) < 2 or len(oob) == 0:
        return
    got = B.score("dummy" if name == "dummy" else "linear", "classification", x, y, draw, oob,
                  n_classes=2)  # fmt: skip
    model = CLASSIFIERS[name]().fit(x[draw], y[draw])  # the repeated rows, unweighted
    proba = model.predict_proba(x[oob])[:, 1]
    np.testing.assert_allclose(got["predictions"]["val"]["prob"], proba, atol=2e-4)


def test_an_unknown_baseline_is_refused_before_any_work():
    from foldwise.params import validate as check

    cfg = _params(["baselines=[dummy,ridge]"])
    with pytest.raises(FoldwiseError, match="baselines must be a list of dummy, linear, hgb"):
        check(cfg)
    check(_params(["baselines=[]"]))  # off is fine


def _params(overrides: list[str]):
    from conftest import tiny_params

    return tiny_params(overrides)


# ── in the aggregate stage ─────────────────────────────────────────────────────────


def _net(name: str, order: int, values: list[float], n_params: int = 10) -> A.ConfigSummary:
    rows = [_row(v) for v in values]
    s = A.summarize_config(
        {"hash": f"h-{name}", "label": name, "overrides": {}, "run_id": None}, order, rows
    )
    s.complexity = n_params
    return s


def _row(f1: float) -> dict:
    m = {"train_loss": 0.1, "train_acc": 0.95, "train_f1": 0.95, "val_loss": 0.3,
         "val_acc": f1, "val_f1": f1}  # fmt: skip
    return {"status": "ok", "metrics": m, "best_epoch": 3, "n_val": 30}


def _base(name: str, order: int, values: list[float]) -> A.ConfigSummary:
    s = _net(f"baseline: {name}", order, values)
    s.hash, s.baseline, s.complexity = f"baseline-{name}", True, np.inf
    return s


def test_a_better_baseline_is_ranked_and_compared_but_never_selected(capsys):
    nets = [_net("a", 0, [0.80, 0.82, 0.81]), _net("b", 1, [0.70, 0.71, 0.72])]
    selected = A.select(nets, "val_f1")
    base = _base("linear", 2, [0.90, 0.91, 0.93])
    everyone = [*nets, base]
    A.compare_to_selected(everyone, selected, "val_f1", kind="folds", n_dev=90, rope=0.01)
    assert selected.label == "a" and base.versus is not None and base.versus.mean < 0
    ranks = [(r, s.label) for r, s in A.numbered(everyone, "val_f1")]
    assert ranks == [(None, "baseline: linear"), (1, "a"), (2, "b")]
    rows = A.table_rows(everyone, "val_f1")
    assert [r["baseline"] for r in rows] == [True, False, False] and rows[0]["rank"] is None
    doc = A.metrics_document(everyone, selected, "val_f1")
    # in cv_metrics.json apart from the networks: "configs" stays what the sweep trained
    assert doc["baselines"]["baseline: linear"]["baseline"] is True
    assert set(doc["configs"]) == {"a", "b"}
    assert "is beaten by the best baseline, baseline: linear" in A.baseline_verdict(
        everyone, "val_f1"
    )
    # a selected baseline is compared with the best other one, and said to be a baseline
    dummy = _base("dummy", 3, [0.30, 0.31, 0.29])
    A.compare_to_selected([*everyone, dummy], base, "val_f1", kind="folds", n_dev=90, rope=0.01)
    said = A.baseline_verdict([*everyone, dummy], "val_f1", base)
    assert said.startswith("The selected baseline beats the best other baseline, baseline: dummy")
    A.compare_to_selected(everyone, selected, "val_f1", kind="folds", n_dev=90, rope=0.01)
    # the closest rival of the verdict is a network, never a baseline
    assert "b" in A.verdict(everyone, selected, "val_f1")
    A.print_table(everyone, selected, "val_f1", 0.95)
    out = capsys.readouterr().out
    assert "│ base │ baseline: linear" in out and "│    1 │ a ★" in out


def test_cv_table_rounds_each_number_to_the_precision_its_uncertainty_supports():
    s = _net("a", 0, [0.8012345, 0.8234567, 0.8123456])
    (row,) = A.table_rows([s], "val_f1")
    se = s.stats["val_f1"]["se"]  # 0.0064...: two significant digits → 4 decimals
    assert row["val_f1_se"] == round(se, 4) and row["val_f1_mean"] == round(
        s.stats["val_f1"]["mean"], 4
    )
    # one decimal place per statistic: its interval at the standard error's
    assert row["val_f1_ci_low"] == round(s.stats["val_f1"]["ci_low"], 4)


def test_relative_fit_uses_baselines_and_larger_configurations():
    """A low-scoring network is underfitting only if a reference beats it; with every
    reference level, it is the noise floor (a good fit)."""
    from foldwise.methods.diagnosis import Diagnosis

    def poor(s: A.ConfigSummary) -> Diagnosis:
        v = s.score("val_f1")
        return Diagnosis("underfitting", "both below 0.8", v + 0.01, v, 0.01, 0.3, 0.001,
                         0.0, 0.0, 3.0, 0.0, rule="poor_score")  # fmt: skip

    small = _net("small", 0, [0.50, 0.52, 0.51, 0.49, 0.50], n_params=10)
    wide = _net("wide", 1, [0.51, 0.52, 0.50, 0.50, 0.50], n_params=1000)
    flat = _base("linear", 2, [0.49, 0.51, 0.50, 0.48, 0.50])
    small.fit = poor(small)
    A.relative_fits([small, wide, flat], "f1", n_dev=150, kind="folds")
    assert small.fit.verdict == "good fit" and "noise floor" in small.fit.reason
    assert "no better than baseline: linear" in small.fit.reason
    assert "[evidence: curves, chance test, baselines, larger configurations]" in small.fit.reason
    # a wider network clearly ahead on every fold: the verdict stands, and names it
    wider = _net("wider", 1, [0.70, 0.71, 0.72, 0.69, 0.70], n_params=1000)
    small.fit = poor(small)
    A.relative_fits([small, wider, flat], "f1", n_dev=150, kind="folds")
    assert small.fit.verdict == "underfitting"
    assert "wider (larger configuration) does better" in small.fit.reason
    # ahead by more than the rope but noisily: no noise-floor claim without the evidence
    noisy = _net("noisy", 1, [0.45, 0.75, 0.40, 0.80, 0.50], n_params=1000)
    small.fit = poor(small)
    A.relative_fits([small, noisy, flat], "f1", n_dev=150, kind="folds")
    assert small.fit.verdict == "underfitting"
    assert "noisy (larger configuration) scores higher" in small.fit.reason
    assert "though not significantly" in small.fit.reason
    # a baseline significantly ahead is said, whatever the verdict
    good = _net("good", 0, [0.60, 0.61, 0.62, 0.60, 0.61])
    good.fit = Diagnosis("good fit", "fine", 0.7, 0.61, 0.09, 0.3, 0.001, 0.0, 0.0, 3.0, 0.0,
                         rule="good")  # fmt: skip
    hgb = _base("hgb", 2, [0.80, 0.81, 0.80, 0.82, 0.81])
    A.relative_fits([good, hgb], "f1", n_dev=150, kind="folds")
    assert good.fit.verdict == "good fit" and "worse than baseline: hgb" in good.fit.reason


def test_a_fit_that_fails_is_a_failed_result_not_a_crash():
    x = np.arange(12, dtype=float).reshape(6, 2)
    y = np.array([0, 0, 0, 1, 1, 1])
    one_class = (np.array([0, 1, 2]), np.array([3, 4, 5]))  # trains on class 0 only
    (r,) = B.score_all("linear", "classification", x, y, [one_class], n_classes=2)
    assert r["status"] == "failed" and "ValueError" in r["error"]
    s = A.summarize_config({"hash": "baseline-linear", "label": "baseline: linear",
                            "overrides": {}, "run_id": None}, 0, [r])  # fmt: skip
    assert not s.complete and "failed" in s.problems[0]
