"""Regression through foldwise's pure parts: data, params, summaries per kind, .632+ with
squared error, lockbox scores — each number against scikit-learn, scipy or a hand
computation. (The engine's regression path is checked in test_engine.py against the
independent reference loop; the pipeline end to end in test_regression_e2e.py.)"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from sklearn.datasets import load_diabetes
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from conftest import ROOT, tiny_params
from foldwise import params, scores
from foldwise.aggregate import rope_for, select, summarize_config
from foldwise.compose import compose_params
from foldwise.data import prepare
from foldwise.errors import FoldwiseError
from foldwise.methods import bootstrap632, diagnosis, resampling
from foldwise.split import split

# ------------------------------------------------------------------------------- data


def test_diabetes_is_a_float_target_with_no_classes():
    cfg = OmegaConf.create({"data": {"name": "diabetes", "task": "regression"}, "seed": 0})
    table, meta = prepare(cfg)
    x, y = load_diabetes(return_X_y=True)
    assert meta.regression and meta.classes == [] and meta.n_outputs == 1
    assert table["target"].dtype == np.float64
    np.testing.assert_array_equal(table["target"].to_numpy(), y)
    assert meta.n_features == x.shape[1] == 10


def _csv(tmp_path, target_values, task="regression"):
    df = pd.DataFrame({"a": np.arange(6.0), "b": np.arange(6.0) ** 2, "y": target_values})
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    return OmegaConf.create(
        {"data": {"name": "csv", "path": str(path), "target": "y", "task": task, "drop": [],
                  "id_column": None, "image_shape": None}, "seed": 0}
    )  # fmt: skip


def test_csv_regression_target_must_be_numbers(tmp_path):
    cfg = _csv(tmp_path, ["1.5", "2", "x", "4", "oops", "6"])
    with pytest.raises(FoldwiseError) as err:
        prepare(cfg)
    msg = str(err.value)
    assert "2 target values are not numbers" in msg and "'x'" in msg
    assert "data.task=classification" in msg


def test_csv_regression_target_kept_as_values(tmp_path):
    table, meta = prepare(_csv(tmp_path, [1.5, 2, 3, 4, 5, 6.25]))
    assert meta.task == "regression"
    assert table["target"].tolist() == [1.5, 2, 3, 4, 5, 6.25]


def test_constant_regression_target_is_refused(tmp_path):
    with pytest.raises(FoldwiseError, match="constant"):
        prepare(_csv(tmp_path, [3.0] * 6))


# ----------------------------------------------------------------------------- params


def test_regression_defaults_select_on_validation_mse():
    cfg = tiny_params(["data=diabetes", "split=kfold"])
    params.validate(cfg)
    assert scores.selection_metric(cfg) == "val_mse"
    assert scores.diagnosis_metric(cfg) == "r2"


@pytest.mark.parametrize(
    ("overrides", "needle", "fix"),
    [
        (["split=stratified_kfold"], "stratification does not apply", "split=kfold"),
        (["split=repeated_stratified_kfold"], "stratification does not apply",
         "split=repeated_kfold"),
        (["split=holdout"], "split.stratify stratifies", "split.stratify=false"),
        (["split=kfold", "selection.metric=val_f1"], "val_f1 is not a regression score",
         "val_mse, val_mae, val_r2"),
        (["split=bootstrap"], "selects on val_mse", "selection.metric=val_mse"),
        (["split=kfold", "data.task=classification"], "diabetes is a regression dataset",
         "drop the data.task override"),
        (["split=kfold", "diagnosis.metric=f1"], "diagnosis.metric must be r2", ""),
    ],
)  # fmt: skip
def test_regression_params_refused_with_the_fix(overrides, needle, fix):
    cfg = compose_params(["data=diabetes", *overrides], root=ROOT)
    if "split=bootstrap" in overrides:
        cfg.selection.metric = "val_r2"
    with pytest.raises(FoldwiseError) as err:
        params.validate(cfg)
    assert needle in str(err.value) and fix in str(err.value)


def test_data_diabetes_alone_brings_an_unstratified_split_and_a_given_split_wins():
    # conf/data/diabetes.yaml's defaults list overrides the split (no -S split=kfold needed)
    alone = compose_params(["data=diabetes"], root=ROOT)
    assert alone.split.scheme == "kfold"
    params.validate(alone)
    given = compose_params(["data=diabetes", "split=repeated_kfold"], root=ROOT)
    assert given.split.scheme == "repeated_kfold"
    # ...and only there: a classification dataset keeps the stratified default
    assert compose_params(["data=wine"], root=ROOT).split.scheme == "stratified_kfold"


def test_classification_metric_names_are_refused_for_regression_and_vice_versa():
    cfg = tiny_params(["selection.metric=val_mse"])
    with pytest.raises(FoldwiseError, match="val_mse is not a classification score"):
        params.validate(cfg)


def test_regression_lockbox_is_an_unstratified_random_split():
    cfg = tiny_params(["data=diabetes", "split=kfold"])
    table, _ = prepare(cfg)
    res = split(table, cfg, regression=True)
    assert res.manifest["lockbox_by"] == "random" and res.manifest["task"] == "regression"
    assert res.manifest["n_test"] == math.ceil(0.2 * len(table))
    assert not set(res.test["row_id"]) & set(res.dev["row_id"])


# ------------------------------------------------------------------ summaries per kind


def _reg_result(y, pred, *, train_mse=100.0, rows=None):
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    mse = mean_squared_error(y, pred)
    return {
        "status": "ok", "best_epoch": 3, "epochs_trained": 5, "n_train": 40, "n_val": len(y),
        "metrics": {
            "train_loss": train_mse, "train_mse": train_mse, "train_mae": 8.0, "train_r2": 0.9,
            "val_loss": mse, "val_mse": mse, "val_mae": mean_absolute_error(y, pred),
            "val_r2": r2_score(y, pred) if len(y) > 1 else math.nan,
        },
        "predictions": {"val": {
            "row": list(range(len(y))) if rows is None else list(rows),
            "true": y.tolist(), "pred": pred.tolist(), "loss": ((pred - y) ** 2).tolist()}},
    }  # fmt: skip


def test_folds_summary_and_gap_sign_for_errors():
    rng = np.random.default_rng(0)
    rows = [_reg_result(rng.normal(0, 10, 20), rng.normal(0, 10, 20), train_mse=50.0)
            for _ in range(5)]  # fmt: skip
    st, _ = resampling.summarize("folds", rows)
    assert set(st) >= {"val_mse", "val_mae", "val_r2", "gap_mse", "gap_r2"}
    v = np.array([r["metrics"]["val_mse"] for r in rows])
    assert st["val_mse"]["mean"] == pytest.approx(v.mean())
    assert st["val_mse"]["se"] == pytest.approx(v.std(ddof=1) / math.sqrt(5))
    # an error's gap is validation − train: positive means the model fits its rows better
    assert st["gap_mse"]["mean"] == pytest.approx(v.mean() - 50.0)
    assert st["gap_r2"]["mean"] == pytest.approx(0.9 - st["val_r2"]["mean"])
    assert st["val_mse"]["ci_low"] >= 0  # an MSE interval is clipped at 0
    assert "val_precision" not in st  # classification-only scores


def test_exhaustive_regression_pools_every_prediction():
    rng = np.random.default_rng(1)
    y, pred = rng.normal(100, 20, 30), rng.normal(100, 20, 30)
    rows = [_reg_result([y[i]], [pred[i]], rows=[i]) for i in range(30)]
    st, _ = resampling.summarize("exhaustive", rows)
    assert st["val_mse"]["mean"] == pytest.approx(mean_squared_error(y, pred))
    assert st["val_mae"]["mean"] == pytest.approx(mean_absolute_error(y, pred))
    assert st["val_r2"]["mean"] == pytest.approx(r2_score(y, pred))
    assert math.isnan(st["val_r2"]["ci_low"])


def test_holdout_regression_interval_is_a_scipy_bootstrap():
    from scipy import stats

    rng = np.random.default_rng(2)
    y = rng.normal(0, 5, 60)
    pred = y + rng.normal(0, 2, 60)
    st, method = resampling.summarize("holdout", [_reg_result(y, pred)], row_resamples=300,
                                      seed=7)  # fmt: skip
    rng = np.random.default_rng(7)
    ci = stats.bootstrap((y, pred), r2_score, paired=True, vectorized=False, n_resamples=300,
                         method="BCa", random_state=rng).confidence_interval  # fmt: skip
    assert st["val_r2"]["mean"] == pytest.approx(r2_score(y, pred))
    assert (st["val_r2"]["ci_low"], st["val_r2"]["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert "bootstrap" in method


def test_lockbox_scores_for_regression_name_their_interval():
    rng = np.random.default_rng(3)
    y = rng.normal(0, 5, 50)
    pred = y + rng.normal(0, 3, 50)
    out = resampling.bootstrap_scores(y, pred, (pred - y) ** 2, resamples=200, confidence=0.9,
                                      seed=1, extra=True, task="regression")  # fmt: skip
    assert set(out) == {"loss", "mse", "mae", "r2"}
    assert out["mse"]["value"] == pytest.approx(mean_squared_error(y, pred))
    assert out["mae"]["value"] == pytest.approx(mean_absolute_error(y, pred))
    assert out["r2"]["value"] == pytest.approx(r2_score(y, pred))
    for s in out.values():
        assert s["interval"] in ("BCa", "percentile") and s["ci_low"] <= s["value"] <= s["ci_high"]


def test_selection_on_an_error_takes_the_lowest_mean():
    rng = np.random.default_rng(4)
    y = rng.normal(0, 5, 20)
    good = [_reg_result(y, y + rng.normal(0, 1, 20)) for _ in range(3)]
    bad = [_reg_result(y, y + rng.normal(0, 3, 20)) for _ in range(3)]
    summaries = [summarize_config({"hash": h, "label": h, "overrides": {}}, i, rows)
                 for i, (h, rows) in enumerate([("bad", bad), ("good", good)])]  # fmt: skip
    assert select(summaries, "val_mse").hash == "good"
    assert select(summaries, "val_r2").hash == "good"
    # the region of practical equivalence is relative for errors in the target's units
    assert rope_for("val_mse", 0.01, summaries[1]) == pytest.approx(
        0.01 * summaries[1].score("val_mse")
    )
    assert rope_for("val_r2", 0.01, summaries[1]) == 0.01


# -------------------------------------------------------------------- .632+ squared


def test_no_information_squared_error_is_the_mean_over_all_pairs():
    rng = np.random.default_rng(5)
    y, pred = rng.normal(0, 3, 7), rng.normal(1, 2, 7)
    brute = np.mean([(a - b) ** 2 for a, b in itertools.product(y, pred)])
    assert bootstrap632.no_information_squared(y, pred) == pytest.approx(brute)


def test_632plus_with_squared_error_by_hand():
    # two out-of-bag models; rows 1, 2, 3 are scored; the apparent fit saw every row
    draws = [
        _reg_result([2.0, 4.0], [3.0, 4.0], rows=[1, 2]),  # losses 1, 0
        _reg_result([4.0, 1.0], [6.0, 1.0], rows=[2, 3]),
    ]  # losses 4, 0
    apparent = _reg_result([0.0, 2.0, 4.0, 1.0], [0.5, 2.0, 3.5, 1.0], train_mse=0.125)
    e = bootstrap632.from_results(draws, apparent)
    err1 = (1 + (0 + 4) / 2 + 0) / 3  # per row first, then over rows
    gamma = np.mean([(a - b) ** 2 for a in (0, 2, 4, 1) for b in (0.5, 2, 3.5, 1)])
    assert e.apparent == 0.125 and e.loo_bootstrap == pytest.approx(err1)
    assert e.gamma == pytest.approx(gamma)
    r = (min(err1, gamma) - 0.125) / (gamma - 0.125)
    plus = 0.368 * 0.125 + 0.632 * err1 + (min(err1, gamma) - 0.125) * (
        0.368 * 0.632 * r / (1 - 0.368 * r))  # fmt: skip
    assert e.err_632plus == pytest.approx(plus)
    st, method = resampling.summarize("bootstrap", draws, apparent=apparent)
    assert st["val_mse"]["mean"] == pytest.approx(plus) and "squared error" in method


# ------------------------------------------------------------------------- diagnosis


def test_diagnosis_of_regression_uses_unit_free_one_minus_r2():
    r = _reg_result([1.0, 2.0, 3.0], [1.1, 2.1, 2.9])
    # MSE curves in the thousands would swamp absolute slopes; 1 − R² does not
    r["history"] = {"train_loss": [5000, 4000, 3000], "val_loss": [5200, 4100, 3300],
                    "train_r2": [0.2, 0.4, 0.6], "val_r2": [0.15, 0.35, 0.5]}  # fmt: skip
    ev = diagnosis.fold_evidence(r, "r2", 3, {**diagnosis.DEFAULTS, "window": 3})
    assert ev["gap_growth"] == pytest.approx((0.5 - 0.4) - (0.5 - 0.4))
    assert ev["val_score"] == r["metrics"]["val_r2"] and ev["still_improving"] == 1.0
