"""foldwise.methods: .632/.632+ on hand-worked cases, the per-kind summaries against
independent computations (scipy, scikit-learn), and the nested-CV report."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from foldwise.aggregate import select, summarize_config
from foldwise.methods import bootstrap632, nested, resampling

# --------------------------------------------------------------------------- .632+


def test_632plus_overfitting_between_the_bounds():
    # err = .1, Err1 = .3, γ = .5: R = (.3 − .1)/(.5 − .1) = .5, w = .632/(1 − .368·.5)
    e = bootstrap632.estimates(0.1, 0.3, 0.5)
    assert e.err_632 == pytest.approx(0.368 * 0.1 + 0.632 * 0.3)  # .2264
    assert e.r == pytest.approx(0.5)
    w = 0.632 / (1 - 0.368 * 0.5)
    assert e.err_632plus == pytest.approx((1 - w) * 0.1 + w * 0.3)  # .254902
    assert e.err_632plus == pytest.approx(0.25490196, abs=1e-8)


def test_632plus_no_overfitting_is_the_632_estimate():
    # Err1 ≤ err: R' = 0 and .632+ = .632
    e = bootstrap632.estimates(0.2, 0.15, 0.5)
    assert e.r == 0 and e.err_632plus == pytest.approx(e.err_632) == pytest.approx(0.1684)


def test_632plus_gamma_below_apparent_error():
    # γ ≤ err: R' = 0; Err1' = min(Err1, γ) only enters through R', so .632+ = .632
    e = bootstrap632.estimates(0.6, 0.7, 0.5)
    assert e.r == 0 and e.err_632plus == pytest.approx(0.368 * 0.6 + 0.632 * 0.7)


def test_632plus_oob_error_above_gamma_is_capped():
    # Err1 = .6 > γ = .5: Err1' = .5 and R' clipped to 1:
    # .632 + (.5 − .1)·.368·.632/(1 − .368) = .416 + .1472
    e = bootstrap632.estimates(0.1, 0.6, 0.5)
    assert e.r == 1.0
    assert e.err_632 == pytest.approx(0.416)
    assert e.err_632plus == pytest.approx(0.5632)


def test_no_information_error_by_hand():
    # p = (.5, .5), q = (.25, .75): γ = .5·.75 + .5·.25 = .5
    assert bootstrap632.no_information_error([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)
    # a rule predicting one class everywhere: γ = 1 − p_k of that class
    assert bootstrap632.no_information_error([0, 1, 1, 2], [1, 1, 1, 1]) == pytest.approx(0.5)


def test_leave_one_out_bootstrap_averages_per_row_first():
    # row 1: 1; row 2: (0 + 1)/2; row 3: 1 → (1 + .5 + 1)/3; row 0 never out of bag
    err1, scored = bootstrap632.loo_bootstrap_error(
        [(np.array([1, 2]), np.array([1.0, 0.0])), (np.array([2, 3]), np.array([1.0, 1.0]))]
    )
    assert scored == 3 and err1 == pytest.approx(2.5 / 3)


def _pred(rows, true, pred) -> dict:
    return {
        "predictions": {"val": {"row": rows, "true": true, "pred": pred, "loss": [0.0] * len(rows)}}
    }


def test_from_results_matches_the_pieces():
    draws = [_pred([1, 2], [1, 0], [0, 0]), _pred([2, 3], [0, 1], [1, 0])]
    apparent = _pred([0, 1, 2, 3], [0, 1, 0, 1], [0, 1, 1, 1])
    apparent["metrics"] = {"train_acc": 0.75}  # its error on the rows it trained on
    e = bootstrap632.from_results(draws, apparent)
    assert e.apparent == pytest.approx(0.25)
    assert e.loo_bootstrap == pytest.approx((1 + 0.5 + 1) / 3)
    assert e.gamma == pytest.approx(bootstrap632.no_information_error([0, 1, 0, 1], [0, 1, 1, 1]))
    assert e == bootstrap632.estimates(e.apparent, e.loo_bootstrap, e.gamma, 3)


# ------------------------------------------------------------------ per-kind summaries


def test_corrected_t_matches_nadeau_bengio_by_hand():
    x = np.array([0.80, 0.90, 0.85, 0.95, 0.88, 0.83])
    n_train, n_val = 80, 20
    out = resampling.corrected_t_summary(x, n_train, n_val, 0.95)
    j = len(x)
    se = math.sqrt((1 / j + n_val / n_train) * x.var(ddof=1))
    half = stats.t.ppf(0.975, j - 1) * se
    assert out["se"] == pytest.approx(se)
    assert out["ci_low"] == pytest.approx(x.mean() - half)
    assert out["ci_high"] == pytest.approx(x.mean() + half)
    # wider than the naive interval, which ignores that resamples overlap
    assert out["se"] > resampling.t_summary(x)["se"]


def _result(train_acc, val_acc, *, preds=None, n_val=20):
    r = {
        "status": "ok",
        "best_epoch": 3,
        "n_val": n_val,
        "metrics": {
            "train_acc": train_acc, "train_f1": train_acc, "train_loss": 1 - train_acc,
            "val_acc": val_acc, "val_f1": val_acc, "val_loss": 1 - val_acc,
        },
    }  # fmt: skip
    if preds is not None:
        r["predictions"] = {"val": preds}
    return r


def test_exhaustive_pools_predictions_without_an_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    pred = np.where(rng.random(40) < 0.7, y, rng.integers(0, 3, 40))
    loss = rng.random(40)
    rows = [
        _result(0.9, float(y[i] == pred[i]), n_val=1,
                preds={"row": [i], "true": [int(y[i])], "pred": [int(pred[i])],
                       "loss": [float(loss[i])]})
        for i in range(40)
    ]  # fmt: skip
    st, method = resampling.summarize("exhaustive", rows)
    assert st["val_acc"]["mean"] == pytest.approx((y == pred).mean())
    assert st["val_f1"]["mean"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert st["val_loss"]["mean"] == pytest.approx(loss.mean())
    assert math.isnan(st["val_f1"]["ci_low"]) and math.isnan(st["val_f1"]["se"])
    assert "pooled over 40 held-out predictions" in method and "no interval" in method


def test_repeated_kind_uses_the_corrected_interval():
    rows = [_result(0.95, v) for v in (0.8, 0.9, 0.85, 0.95)]
    st, method = resampling.summarize("repeated", rows, n_dev=100)
    ref = resampling.corrected_t_summary([0.8, 0.9, 0.85, 0.95], 80, 20)
    assert st["val_acc"]["se"] == pytest.approx(ref["se"])
    assert "Nadeau–Bengio" in method


def test_selection_works_without_standard_errors():
    """Pooled (exhaustive) statistics have no se: ranking must still be by the mean."""

    def conf(h, acc):
        preds = {"row": [0, 1], "true": [0, 1], "pred": [0, 1 if acc > 0.6 else 0],
                 "loss": [0.1, 0.2]}  # fmt: skip
        return summarize_config(
            {"hash": h, "label": h, "overrides": {}}, ord(h[0]), [_result(0.9, acc, preds=preds)],
            kind="exhaustive",
        )  # fmt: skip

    a, b = conf("a", 0.5), conf("b", 0.9)
    assert select([a, b], "val_acc").hash == "b"


# ------------------------------------------------------------------------- nested


def test_nested_summary_optimism_and_winners():
    outer = [
        {"fold": 0, "winner": "h1", "label": "wide", "metrics": {"val_f1": 0.90}},
        {"fold": 1, "winner": "h2", "label": "narrow", "metrics": {"val_f1": 0.80}},
        {"fold": 2, "winner": "h1", "label": "wide", "metrics": {"val_f1": 0.85}},
    ]
    plain = [0.93, 0.86, 0.87]
    out = nested.summarize(outer, plain, "val_f1")
    assert out["nested"]["mean"] == pytest.approx(0.85)
    assert out["plain"]["mean"] == pytest.approx(np.mean(plain))
    d = np.array(plain) - np.array([0.9, 0.8, 0.85])
    ref = resampling.t_summary(d)
    assert out["optimism"]["mean"] == pytest.approx(d.mean())
    assert out["optimism"]["ci_low"] == pytest.approx(ref["ci_low"])
    assert out["winners"] == {"wide": 2, "narrow": 1}
    # for a loss, optimism is nested − plain (positive = plain CV looked better)
    loss = nested.summarize(
        [{**o, "metrics": {"val_loss": 0.5}} for o in outer], [0.4, 0.4, 0.4], "val_loss"
    )
    assert loss["optimism"]["mean"] == pytest.approx(0.1)


def test_inner_resamples_split_only_the_outer_training_rows():
    from foldwise.split import Resample
    from foldwise.split.schemes import make_scheme

    dev_ids = np.arange(100, 160)
    y = np.tile([0, 1, 2], 20)
    outer = Resample(0, dev_ids[:45].tolist(), dev_ids[45:].tolist())
    scheme = make_scheme({"scheme": "stratified_kfold", "n_splits": 3, "shuffle": True}, 1)
    inner = nested.inner_resamples(outer, dev_ids, y, scheme)
    assert len(inner) == 3
    for r in inner:
        assert set(r.train) | set(r.val) == set(outer.train)
        assert not set(r.train) & set(outer.val)


# ------------------------------------------------------------------- params checks


def test_nested_refuses_outer_schemes_it_cannot_honour():
    from omegaconf import OmegaConf

    from conftest import ROOT, TINY, tiny_params
    from foldwise import params
    from foldwise.compose import compose_params
    from foldwise.errors import FoldwiseError

    csv = ["data=csv", "data.path=/tmp/t.csv", "data.target=y", "data.group_column=g"]
    base = [t for t in TINY if not t.startswith("split.")]
    for extra in (["split=leave_one_out"], ["split=group_kfold", *csv]):
        cfg = compose_params([*base, "nested.enabled=true", *extra], root=ROOT)
        with pytest.raises(FoldwiseError, match="nested CV uses the split's resamples"):
            params.validate(OmegaConf.create(OmegaConf.to_container(cfg)))
    cfg = tiny_params(["nested.enabled=true", "+nested.inner.test_fraction=0.2"])
    with pytest.raises(FoldwiseError, match=r"nested\.inner has test_fraction"):
        params.validate(cfg)
    params.validate(tiny_params(["nested.enabled=true", "split=repeated_kfold"]))


@pytest.mark.parametrize(
    ("key", "value"), [("tracking.max_fold_runs", -1), ("engine.cpu_stack_params", 0)]
)
def test_engine_and_tracking_bounds_are_checked(key, value):
    from conftest import tiny_params
    from foldwise import params
    from foldwise.errors import FoldwiseError

    with pytest.raises(FoldwiseError, match=key.replace(".", r"\.")):
        params.validate(tiny_params([f"{key}={value}"]))


def test_a_group_lockbox_that_would_take_every_group_is_refused():
    import pandas as pd

    from foldwise.errors import FoldwiseError
    from foldwise.split import holdout

    table = pd.DataFrame({"row_id": range(6), "x0": range(6), "target": [0, 1] * 3,
                          "group": ["a", "a", "a", "b", "b", "b"]})  # fmt: skip
    with pytest.raises(FoldwiseError, match="every group in the test set"):
        holdout(table, 0.6, 0, by="group")


# -------------------------------------------------------------------------- curves


def test_learning_curve_subsets_are_nested_and_seeded():
    from foldwise.methods.curves import nested_subsets

    train = np.arange(100, 200)
    subsets = nested_subsets(train, [0.1, 0.25, 0.5, 1.0], seed=3)
    assert [len(s) for s in subsets] == [10, 25, 50, 100]
    for small, big in itertools.pairwise(subsets):
        assert set(small) <= set(big)  # each size adds rows, never swaps them
    assert set(subsets[-1]) == set(train)
    again = nested_subsets(train, [0.1, 0.25, 0.5, 1.0], seed=3)
    assert all((a == b).all() for a, b in zip(subsets, again, strict=True))
    assert set(nested_subsets(train, [0.1], seed=4)[0]) != set(subsets[0])


def test_curve_summary_is_a_t_band_per_x():
    import pandas as pd

    from foldwise.methods.curves import summarize_curve

    rows = pd.DataFrame({"x": [1, 1, 1, 2, 2, 2], "val_f1": [0.5, 0.6, 0.7, 0.8, 0.8, 0.8]})
    out = summarize_curve(rows, "x", ["val_f1"])
    ref = resampling.t_summary([0.5, 0.6, 0.7])
    first = out.iloc[0]
    assert first["val_f1_mean"] == pytest.approx(0.6)
    assert first["val_f1_low"] == pytest.approx(ref["ci_low"])
    assert first["val_f1_high"] == pytest.approx(ref["ci_high"])
    assert out.iloc[1]["val_f1_std"] == 0.0 and list(out["folds"]) == [3, 3]


def test_prediction_metrics_per_fold_and_pooled():
    from sklearn.metrics import precision_score, roc_auc_score

    from foldwise.aggregate import pooled_confusion

    rng = np.random.default_rng(5)
    rows = []
    for _ in range(4):
        y = rng.integers(0, 2, 30)
        prob = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 30), 0, 1)
        pred = (prob > 0.5).astype(int)
        preds = {"row": list(range(30)), "true": y.tolist(), "pred": pred.tolist(),
                 "loss": [0.1] * 30, "prob": prob.tolist()}  # fmt: skip
        rows.append(_result(0.9, float((y == pred).mean()), preds=preds, n_val=30))
    st, _ = resampling.summarize("folds", rows)
    per = [roc_auc_score(r["predictions"]["val"]["true"], r["predictions"]["val"]["prob"])
           for r in rows]  # fmt: skip
    assert st["val_auc"]["mean"] == pytest.approx(np.mean(per))
    assert st["val_auc"]["ci_low"] == pytest.approx(
        resampling.t_summary(per, 0.95, (0, 1))["ci_low"]
    )
    prec = [precision_score(r["predictions"]["val"]["true"], r["predictions"]["val"]["pred"],
                            average="macro") for r in rows]  # fmt: skip
    assert st["val_precision"]["mean"] == pytest.approx(np.mean(prec))
    # pooled for leave-out schemes
    st2, _ = resampling.summarize("exhaustive", rows)
    y = np.concatenate([r["predictions"]["val"]["true"] for r in rows])
    p = np.concatenate([r["predictions"]["val"]["prob"] for r in rows])
    assert st2["val_auc"]["mean"] == pytest.approx(roc_auc_score(y, p))
    # the pooled confusion rows skip the bootstrap's apparent fit
    table = pooled_confusion(rows, ["neg", "pos"], apparent=3)
    assert len(table) == 90 and set(table["actual"]) <= {"neg", "pos"}
