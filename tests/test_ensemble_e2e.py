"""Single, bagged and boosted models in one sweep, end to end: every stage on iris (in
dvc.yaml's order, in this process: `Project.repro`) with real MLflow — the same CV
judges all three, the selected one is refit as what it is (one network, B members or
weighted weak learners) and the lockbox opens once for it."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score

from conftest import ROOT, make_project, run_tree
from foldwise.compose import compose_params

pytestmark = pytest.mark.slow

OVERRIDES = [
    "data=iris",
    "split.n_splits=3",
    "trainer.max_epochs=15",
    "trainer.accelerator=cpu",
    "+sweep.grid.ensemble.name=[none,bagging,adaboost]",
    "sweep.grid.model.hidden=[4]",
    "sweep.grid.optim.lr=[0.03]",
    "ensemble.n_estimators=4",
    "curves.learning.enabled=false",
    "curves.validation.enabled=false",
    "curves.validation.values=[4]",  # the bias–variance curve needs one value
    "curves.bias_variance.models=4",
    "lockbox.bootstrap_resamples=200",
]


def kind(label: str) -> str:
    """The ensemble a label names: "mlp bagging×4 hidden=4 lr=0.03"; a plain model none."""
    return next((e for e in ("bagging", "adaboost") if f"{e}×4" in label), "none")


def test_single_bagged_and_boosted_side_by_side(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    project = make_project(tmp_path, uri, compose_params(OVERRIDES, root=ROOT))
    out = project.repro()  # every stage, in this process
    cv = json.loads((project.path / "results/cv_metrics.json").read_text())
    labels = {kind(k): v for k, v in cv["configs"].items()}
    assert set(labels) == {"none", "bagging", "adaboost"}
    for entry in labels.values():  # one CV, one kind of interval, for all three
        assert entry["complete"] and entry["val_f1"]["ci_low"] is not None
    assert "oob_f1" in labels["bagging"] and "oob_f1" not in labels["none"]

    jobs = project.path / "results/sweep/jobs"
    boosted = [json.loads(p.read_text()) for p in jobs.glob("*.json")
               if "n_learners" in json.loads(p.read_text())["metrics"]]  # fmt: skip
    assert len(boosted) == 3 and all(1 <= r["metrics"]["n_learners"] <= 4 for r in boosted)
    curves = pd.read_csv(project.path / "results/ensembles.csv")
    assert set(curves["config"].map(kind)) == {"bagging", "adaboost"}
    assert curves.groupby("config")["members"].max().min() >= 1

    # the selected model, refit as what it is, scored by the lockbox exactly as saved
    sel = json.loads((project.path / "results/selection.json").read_text())
    bundle = torch.load(project.path / "models/final/model.pt", weights_only=False)
    name = kind(sel["label"])
    if name == "none":
        assert "members" not in bundle and "one model" in out.stdout
    else:
        assert 1 <= len(bundle["members"]) <= 4 and bundle["combine"]["name"] == name
        assert f"({name}, up to 4 members)" in out.stdout
    from foldwise.artifact import LoadedModel

    model = LoadedModel(project.path / "models/final/model.pt")
    rows = model.predict(pd.read_parquet(project.path / "data/lockbox/test.parquet"))
    test = json.loads((project.path / "results/test_metrics.json").read_text())
    assert test["test"]["acc"]["value"] == pytest.approx(accuracy_score(rows["y"], rows["pred"]))
    assert test["look"] == 1

    # using it: MLflow's pyfunc and `foldwise predict` on the raw test rows (original
    # column names, unscaled) give the classes the test stage scored
    import mlflow
    import numpy as np

    from foldwise.data import feature_columns

    info = json.loads((project.path / "models/final/info.json").read_text())
    lockbox = pd.read_parquet(project.path / "data/lockbox/test.parquet")
    raw = lockbox[feature_columns(lockbox)].set_axis(list(model.meta.feature_names), axis=1)
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{info['mlflow_run_id']}/model").predict(raw)
    labels = np.asarray(model.meta.classes)[rows["pred"]]
    assert (served["prediction"].to_numpy() == labels).all()
    raw.to_parquet(tmp_path / "raw.parquet")
    project.run("foldwise", "predict", "--input", str(tmp_path / "raw.parquet"),
                "--output", str(tmp_path / "cli.csv"))  # fmt: skip
    cli = pd.read_csv(tmp_path / "cli.csv")
    assert (cli["prediction"].astype(str).to_numpy() == labels.astype(str)).all()
    want = served.drop(columns="prediction").to_numpy()
    np.testing.assert_allclose(cli.drop(columns="prediction").to_numpy(), want, rtol=1e-12)

    # bias–variance vs members (bagging, beside the network alone) and vs rounds (AdaBoost)
    bag = pd.read_csv(project.path / "results/curves/bias_variance_bagging.csv")
    assert bag["members"].tolist() == [1, 2, 3, 4]
    assert {"bias", "net_variance", "single_bias", "single_net_variance"} <= set(bag.columns)
    boost = pd.read_csv(project.path / "results/curves/bias_variance_boosting.csv")
    assert 1 <= len(boost) <= 4 and boost["members"].iloc[0] == 1
    for t in (bag, boost):  # Domingos: without label noise, loss = bias + net variance
        assert (t["expected_loss"] - t["bias"] - t["net_variance"]).abs().max() < 1e-9
    summary = json.loads((project.path / "results/curves/summary.json").read_text())
    assert kind(summary["bias_variance_bagging"]["config"]) == "bagging"
    assert kind(summary["bias_variance_boosting"]["config"]) == "adaboost"

    # MLflow: a fold run of a boosted configuration carries its staged curve (per member)
    by_type = run_tree(uri)
    c = __import__("mlflow").MlflowClient(uri)
    folds = [r for r in by_type["fold"] if "n_learners" in r.data.metrics]
    assert folds
    staged = c.get_metric_history(folds[0].info.run_id, "epoch/stage_val_f1")
    assert 1 <= len(staged) <= 4
