"""Regression end to end: every stage on scikit-learn's diabetes table, real MLflow (the
stages in dvc.yaml's order in this process: `Project.repro`).

One run covers every stage: split (random lockbox), sweep of MLP regressors, selection on
validation MSE, nested CV, curves with the squared-loss bias–variance decomposition,
refit and the test stage with bootstrap intervals — and the saved model's predictions
reproduce the test scores with scikit-learn.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from conftest import ROOT, TINY, make_project, run_tree
from foldwise.compose import compose_params

pytestmark = pytest.mark.slow


def check_baselines(project, cv: dict, stdout: str) -> None:
    """The baselines' rows: scikit-learn's own cross_validate on the split's folds gives
    the same scores; never selected, unranked in cv_table.csv, in the terminal and report."""
    from sklearn.dummy import DummyRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from foldwise.data import feature_columns
    from foldwise.split import load_folds

    dev = pd.read_parquet(project.path / "data/split/dev.parquet").set_index("row_id", drop=False)
    folds = load_folds(json.loads((project.path / "data/split/folds.json").read_text()))
    cv_sets = [(dev.index.get_indexer(f.train), dev.index.get_indexer(f.val)) for f in folds]
    x, y = dev[feature_columns(dev)].to_numpy(float), dev["target"].to_numpy(float)
    for label, model in (
        ("baseline: Dummy (mean)", DummyRegressor()),
        ("baseline: RidgeCV", make_pipeline(StandardScaler(), RidgeCV(np.logspace(-3, 3, 13)))),
    ):
        want = cross_validate(model, x, y, cv=cv_sets,
                              scoring=("neg_mean_squared_error", "r2"))  # fmt: skip
        got = cv["baselines"][label]
        assert got["baseline"] is True and "vs_selected" in got
        assert got["val_mse"]["mean"] == pytest.approx(-want["test_neg_mean_squared_error"].mean())
        assert got["val_r2"]["mean"] == pytest.approx(want["test_r2"].mean())
    assert "baseline: HistGradientBoosting" in cv["baselines"]
    assert not any(k.startswith("baseline") for k in cv["configs"])  # the networks only
    assert cv["selected"]["label"] in cv["configs"]
    table = pd.read_csv(project.path / "results/cv_table.csv")
    bases = table[table["baseline"]]
    assert len(bases) == 3 and bases["rank"].isna().all()
    assert table.loc[~table["baseline"], "rank"].notna().all()
    assert "base │ baseline: RidgeCV" in stdout and "best baseline" in stdout
    page = (project.path / "results/report.html").read_text()
    assert "baseline: RidgeCV" in page and "best baseline" in page


def test_diabetes_regression_end_to_end(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [
        *TINY, "data=diabetes", "split=kfold", "nested.enabled=true",
        "nested.inner.scheme=kfold", "nested.inner.n_splits=2",
        "curves.validation.values=[4,16]", "curves.learning.fractions=[0.5,1.0]",
        "+sweep.grid.ensemble.name=[none,gradient_boosting]", "ensemble.n_estimators=3",
    ]  # fmt: skip
    project = make_project(tmp_path, uri, compose_params(overrides, root=ROOT))
    out = project.repro()
    assert "a numeric target (regression)" in out.stdout
    assert "test (lockbox, by random)" in out.stdout

    cv = json.loads((project.path / "results/cv_metrics.json").read_text())
    sel = cv["selected"]
    assert sel["metric"] == "val_mse"
    assert {"val_mse", "val_mae", "val_r2", "gap_mse_mean"} <= set(sel)
    nets = [c for c in cv["configs"].values() if c["complete"]]
    assert sel["val_mse"]["mean"] == min(c["val_mse"]["mean"] for c in nets)  # lowest wins
    check_baselines(project, cv, out.stdout)
    # no classes: the confusion-matrix plot file keeps only its header
    assert (project.path / "results/cv_confusion.csv").read_text().strip() == "actual,predicted"

    nested = json.loads((project.path / "results/nested.json").read_text())
    assert nested["metric"] == "val_mse" and len(nested["outer"]) == 2
    assert nested["higher_is_better"] is False

    bv = pd.read_csv(project.path / "results/curves/bias_variance.csv")
    assert list(bv["x"]) == [4, 16]
    # squared loss: expected loss = bias² + variance exactly
    np.testing.assert_allclose(bv["expected_loss"], bv["bias"] + bv["variance"], rtol=1e-9)
    learning = pd.read_csv(project.path / "results/curves/learning.csv")
    np.testing.assert_allclose(learning["val_score_mean"], learning["val_r2_mean"])

    test = json.loads((project.path / "results/test_metrics.json").read_text())
    assert set(test["test"]) == {"loss", "mse", "mae", "r2"}
    assert test["cv_vs_test"]["metric"] == "val_mse"
    # the gap for an error is test − CV (positive: CV was optimistic)
    g = test["cv_vs_test"]
    assert g["gap"] == pytest.approx(g["test"]["value"] - g["cv"]["mean"])

    # the saved model scores the test rows as the stage reported, by scikit-learn
    from foldwise.artifact import LoadedModel

    model = LoadedModel(project.path / "models/final/model.pt")
    rows = model.predict(pd.read_parquet(project.path / "data/lockbox/test.parquet"))
    y, pred, got = rows["y"], rows["pred"], test["test"]
    assert got["mse"]["value"] == pytest.approx(mean_squared_error(y, pred))
    assert got["mae"]["value"] == pytest.approx(mean_absolute_error(y, pred))
    assert got["r2"]["value"] == pytest.approx(r2_score(y, pred))

    # MLflow: fold runs carry the regression scores; the lockbox run its test scores
    by_type = run_tree(uri)
    fold = by_type["fold"][0]
    assert {"val_mse", "val_mae", "val_r2"} <= set(fold.data.metrics)
    (lock,) = by_type["lockbox"]
    assert lock.data.metrics["test_r2"] == pytest.approx(test["test"]["r2"]["value"])

    # gradient boosting was judged by the same CV: its staged residual fits are recorded
    gb = [r for r in by_type["fold"] if "n_learners" in r.data.metrics]
    assert gb and all(r.data.metrics["n_learners"] == 3 for r in gb)
    curves = pd.read_csv(project.path / "results/ensembles.csv")
    assert set(curves["score"]) == {"r2"} and curves["members"].max() == 3
