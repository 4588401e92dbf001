"""Baselines selectable when asked (issue 21, ``selection.baselines``): the same rule
over the networks and the baselines; a selected baseline's scikit-learn pipeline is
refit on every dev row, saved as a fingerprinted bundle, opened on the lockbox once and
served by `foldwise predict` and MLflow's pyfunc; where a surface cannot serve one, it
refuses before any work."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, TINY, make_project, tiny_params
from foldwise import artifact, params
from foldwise.aggregate import check_interval_of, choose, summarize_config
from foldwise.data import Meta
from foldwise.errors import FoldwiseError
from foldwise.methods import baselines


def _summary(name: str, order: int, scores: list[float], baseline: bool):
    fixed = {"train_loss": 0.1, "train_acc": 1.0, "train_f1": 1.0, "val_loss": 0.5, "val_acc": 0.5}
    rows = [{"status": "ok", "metrics": {**fixed, "val_f1": v}, "best_epoch": 1} for v in scores]
    s = summarize_config({"hash": name, "label": name, "overrides": {}, "run_id": None},
                         order, rows)  # fmt: skip
    s.complexity = float("inf") if baseline else float(order)
    s.baseline = baseline
    return s


scores = st.lists(st.floats(0, 1, allow_subnormal=False), min_size=3, max_size=3)


@given(nets=st.lists(scores, min_size=1, max_size=4), bases=st.lists(scores, max_size=3))
def test_a_baseline_is_selected_only_when_asked_and_then_by_the_same_rule(nets, bases):
    summaries = [_summary(f"n{i}", i, v, False) for i, v in enumerate(nets)]
    summaries += [_summary(f"b{i}", len(nets) + i, v, True) for i, v in enumerate(bases)]
    means = [round(float(np.mean(v)), 12) for v in nets + bases]
    ses = [float(np.std(v, ddof=1) / np.sqrt(3)) for v in nets + bases]
    # best mean by hand: highest mean, then the smaller standard error, then grid order
    order = sorted(range(len(means)), key=lambda i: (-means[i], ses[i], i))
    shut = choose(summaries, "val_f1", "best_mean")
    assert not shut.baseline
    assert shut.label == f"n{next(i for i in order if i < len(nets))}"
    free = choose(summaries, "val_f1", "best_mean", baselines=True)
    best = order[0]
    assert free.label == (f"n{best}" if best < len(nets) else f"b{best - len(nets)}")
    # one_se: a baseline is chosen only when no network is within one standard error
    picked = choose(summaries, "val_f1", "one_se", baselines=True)
    top = means[best]
    near = [i for i in range(len(nets)) if top - means[i] <= ses[best] + 1e-12]
    assert picked.baseline == (not near)


def test_selectable_baselines_with_nested_cv_are_refused_before_anything_runs():
    cfg = tiny_params(["selection.baselines=true", "nested.enabled=true"])
    with pytest.raises(FoldwiseError) as err:
        params.validate(cfg)
    assert "nested CV" in err.value.problem and "selection.baselines=false" in err.value.fix
    params.validate(tiny_params(["selection.baselines=true"]))  # alone: fine
    bad = tiny_params()
    bad.selection.baselines = "yes"
    with pytest.raises(FoldwiseError, match=r"selection\.baselines must be true or false"):
        params.validate(bad)


def test_a_selected_baseline_refuses_the_ncv_interval_before_training():
    base = _summary("baseline-linear", 1, [0.5, 0.6, 0.7], True)
    with pytest.raises(FoldwiseError) as err:
        check_interval_of(base, "ncv")
    assert "selection.interval=scheme" in err.value.fix
    check_interval_of(base, "scheme")
    check_interval_of(_summary("n", 0, [0.5, 0.6, 0.7], False), "ncv")  # a network: fine


def test_a_selected_baseline_refuses_the_fold_ensemble_refit():
    from foldwise.refit import check_baseline_refit

    sel = {"label": "baseline: RidgeCV", "baseline": "linear"}
    with pytest.raises(FoldwiseError) as err:
        check_baseline_refit(sel, "fold_ensemble")
    assert "refit=all_dev" in err.value.fix
    check_baseline_refit(sel, "all_dev")


@pytest.mark.parametrize("task", ["classification", "regression"])
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_a_baseline_bundle_predicts_as_scikit_learn_and_guards_its_fingerprint(
    tmp_path_factory, task, seed
):
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n, d, k = 60, 3, 3
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 100, size=d)
    y = (
        rng.normal(size=n) if task == "regression" else rng.integers(0, k - 1, size=n)
    )  # class 2 unseen
    model, metrics = baselines.fit_all(
        "linear", task, x, y, n_classes=0 if task == "regression" else k
    )
    assert set(metrics) >= {"train_loss"}
    meta = Meta.from_dict({
        "dataset": "t", "task": task, "n_features": d, "feature_names": ["a", "b", "c"],
        "classes": [] if task == "regression" else ["p", "q", "r"], "n_rows": n,
        "image_shape": None,
    })  # fmt: skip
    folder = tmp_path_factory.mktemp("bundle")
    fp = artifact.save_baseline(folder, model, meta, {"baseline": "linear", "task": task})
    loaded = artifact.load(folder / "model.pt")
    assert loaded.fingerprint == fp
    df = pd.DataFrame(x, columns=["x0", "x1", "x2"]).assign(target=y)
    rows = loaded.predict(df)
    own = make_pipeline(StandardScaler(), RidgeCV(np.logspace(-3, 3, 13)) if task == "regression"
                        else LogisticRegression(max_iter=1000)).fit(x, y)  # fmt: skip
    if task == "regression":
        np.testing.assert_allclose(rows["pred"], own.predict(x), rtol=1e-12)
    else:
        proba = loaded.outputs(x)["proba"]
        np.testing.assert_allclose(proba[:, :2], own.predict_proba(x), rtol=1e-12)
        assert (proba[:, 2] == 0).all() and (rows["pred"] == own.predict(x)).all()
    # the same fit again: the same fingerprint (the lockbox's "same model")
    again, _ = baselines.fit_all("linear", task, x, y, n_classes=0 if task == "regression" else k)
    assert artifact.save_baseline(folder, again, meta, {"baseline": "linear", "task": task}) == fp
    import torch

    bundle = torch.load(folder / "model.pt", weights_only=False)
    blob = bytearray(bundle["estimator"])
    blob[len(blob) // 2] ^= 1  # one bit of the fitted estimator
    bundle["estimator"] = bytes(blob)
    torch.save(bundle, folder / "model.pt")
    with pytest.raises(ValueError, match="corrupt"):
        artifact.load(folder / "model.pt")


@pytest.mark.slow
def test_a_selected_baseline_is_refit_tested_once_and_served(tmp_path):
    """Diabetes, a linear target: RidgeCV beats a 3-epoch MLP. aggregate → refit → test
    through the real stages; the test score is scikit-learn's own pipeline fit on the
    same dev rows; `foldwise predict` and the registered pyfunc give its predictions."""
    import mlflow
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import mean_squared_error, r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from foldwise.compose import compose_params
    from foldwise.data import feature_columns

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [
        *TINY, "data=diabetes", "split=kfold", "selection.baselines=true",
        "baselines=[dummy,linear]", "sweep.grid.model.hidden=[4]",
    ]  # fmt: skip
    project = make_project(tmp_path, uri, compose_params(overrides, root=ROOT))
    out = project.repro().stdout
    path = project.path
    sel = json.loads((path / "results/selection.json").read_text())
    assert sel["baseline"] == "linear" and sel["label"] == "baseline: RidgeCV"
    assert "The selection is a baseline (selection.baselines=true)" in out
    assert "[curves] skipped: the selection is a baseline" in out
    assert "baseline: RidgeCV ★" in out and "selectable (selection.baselines=true)" in out
    page = (path / "results/report.html").read_text()
    assert "The selection is a baseline" in page and "baseline: same resamples, selected" in page
    cv = json.loads((path / "results/cv_metrics.json").read_text())
    assert cv["optimism"]["winner"] == "baseline: RidgeCV"  # over the candidates chosen among
    info = json.loads((path / "models/final/info.json").read_text())
    assert info["baseline"] == "linear" and info["n_train"] > 0

    dev = pd.read_parquet(path / "data/split/dev.parquet")
    test = pd.read_parquet(path / "data/lockbox/test.parquet")
    own = make_pipeline(StandardScaler(), RidgeCV(np.logspace(-3, 3, 13)))
    own.fit(dev[feature_columns(dev)].to_numpy(float), dev["target"].to_numpy(float))
    want = own.predict(test[feature_columns(test)].to_numpy(float))
    y = test["target"].to_numpy(float)
    got = json.loads((path / "results/test_metrics.json").read_text())
    assert got["status"] == "opened" and got["label"] == "baseline: RidgeCV"
    assert got["test"]["mse"]["value"] == pytest.approx(mean_squared_error(y, want), rel=1e-9)
    assert got["test"]["r2"]["value"] == pytest.approx(r2_score(y, want), rel=1e-9)
    audit = [json.loads(line) for line in (path / "lockbox/audit.jsonl").read_text().splitlines()]
    assert len(audit) == 1 and audit[0]["model_sha256"] == info["model_sha256"]

    raw = test[feature_columns(test)].set_axis(
        list(json.loads((path / "data/prepared/meta.json").read_text())["feature_names"]), axis=1
    )
    raw.to_parquet(tmp_path / "rows.parquet")  # float32 as stored (a CSV would round them)
    project.run("foldwise", "predict", "--model", "models/final", "--input",
                str(tmp_path / "rows.parquet"), "--output", str(tmp_path / "cli.csv"))  # fmt: skip
    np.testing.assert_allclose(pd.read_csv(tmp_path / "cli.csv")["prediction"], want, rtol=1e-9)
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model("models:/foldwise-diabetes@champion").predict(raw)
    np.testing.assert_allclose(served["prediction"].to_numpy(), want, rtol=1e-9)
