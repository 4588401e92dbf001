"""Nested cross-validation end to end on a tiny table, real MLflow: the stages `dvc repro
nested` (then `refit`, `test`) runs, in this process (`Project.repro`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import IRIS, ROOT, TINY, iris_csv, make_project, run_tree
from foldwise.compose import compose_params

pytestmark = pytest.mark.slow

OVERRIDES = [
    *IRIS,
    "split=stratified_kfold",
    "split.n_splits=3",
    "nested.enabled=true",
    "nested.inner.n_splits=2",
]


def test_nested_cv_end_to_end(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    project = make_project(tmp_path, uri, compose_params(OVERRIDES, root=ROOT))
    iris_csv().drop(columns=["site", "day"]).to_csv(project.path / "data/raw/iris.csv", index=False)
    project.commit("iris")
    # the stages in this process (Project.repro), as `dvc repro nested` runs them
    out = project.repro("prepare", "split", "sweep", "aggregate", "nested")
    assert "3 outer folds × 2 configurations × 2 inner folds" in out.stdout
    assert "optimism of plain CV" in out.stdout
    assert not (project.path / "results/test_metrics.json").exists()  # the lockbox stays shut

    report = json.loads((project.path / "results/nested.json").read_text())
    cv = json.loads((project.path / "results/cv_metrics.json").read_text())
    selected = cv["selected"]
    assert report["selected"] == selected["label"]
    # the plain side of the optimism is the selected configuration's own CV mean
    assert report["plain"]["mean"] == pytest.approx(selected["val_f1"]["mean"])
    assert len(report["outer"]) == 3 and sum(report["winners"].values()) == 3
    diffs = [o["plain"] - o["val_f1"] for o in report["outer"]]
    assert report["optimism"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert report["nested"]["mean"] == pytest.approx(
        report["plain"]["mean"] - report["optimism"]["mean"]
    )
    # Tibshirani–Tibshirani, recomputed here from the sweep's result files with numpy
    tt = cv["optimism"]
    scores = {
        label: [
            json.loads((project.path / f"results/sweep/jobs/{e['config']}-fold{k}.json")
                       .read_text())["metrics"]["val_f1"]
            for k in range(3)
        ]
        for label, e in cv["configs"].items()
    }  # fmt: skip
    labels, m = list(scores), np.array(list(scores.values()))
    winner = labels.index(selected["label"])  # best_mean: ties broken by the aggregate
    assert tt["winner"] == selected["label"] and m[winner].mean() == m.mean(axis=1).max()
    assert tt["bias"] == pytest.approx(np.mean(m.max(axis=0) - m[winner]))
    assert tt["corrected"] == pytest.approx(m[winner].mean() - tt["bias"])
    assert "optimism of " in out.stdout and "Tibshirani & Tibshirani 2009" in out.stdout

    # MLflow: sweep run → nested run → one outer-fold run per outer fold with its inner table
    c = MlflowClient(uri)
    by_type = run_tree(uri)
    (nest,) = by_type["nested"]
    assert nest.data.tags["mlflow.parentRunId"] == by_type["sweep"][0].info.run_id
    assert nest.data.metrics["optimism_val_f1_mean"] == pytest.approx(report["optimism"]["mean"])
    sweep = by_type["sweep"][0].data.metrics
    assert sweep["best_val_f1_optimism_tt"] == pytest.approx(tt["bias"])
    assert sweep["best_val_f1_corrected_tt"] == pytest.approx(tt["corrected"])
    outer = by_type["outer_fold"]
    assert len(outer) == 3
    for r in outer:
        assert r.data.tags["mlflow.parentRunId"] == nest.info.run_id
        assert r.info.status == "FINISHED"
        (art,) = c.list_artifacts(r.info.run_id, "inner")
        assert art.path.endswith(".csv")

    # a forced re-run reuses every cached inner model and refit
    out = project.repro("nested")  # dvc repro -f -s nested
    assert "12 inner models cached" in out.stdout
    again = json.loads((project.path / "results/nested.json").read_text())
    assert again["outer"] == report["outer"]

    # refit=fold_ensemble: nested CV now estimates "select, then average the winner's fold
    # models" (no outer refits), and that estimate is the final model's CV estimate.
    fe = compose_params([*OVERRIDES, "refit=fold_ensemble"], root=ROOT)
    project.set_params(fe)
    out = project.repro("nested", "refit")  # what `dvc repro refit` re-runs
    assert "inner-fold ensemble per outer fold" in out.stdout
    nested = json.loads((project.path / "results/nested.json").read_text())
    assert nested["refit"] == "fold_ensemble" and len(nested["outer"]) == 3
    info = json.loads((project.path / "models/final/info.json").read_text())
    assert info["refit"] == "fold_ensemble" and info["folds"] == 3
    assert info["cv"]["method"] == "nested CV"
    assert info["cv"]["mean"] == pytest.approx(nested["nested"]["mean"])
    # the fold models are the very models CV scored
    assert info["max_fold_score_drift"] < 1e-6
    jobs = project.path / "results/sweep/jobs"
    sel = json.loads((project.path / "results/selection.json").read_text())
    for fold, m in info["fold_metrics"].items():
        swept = json.loads((jobs / f"{sel['config_hash']}-fold{fold}.json").read_text())
        assert m["val_f1"] == pytest.approx(swept["metrics"]["val_f1"], abs=1e-6)
    _check_fold_ensemble(project)

    # without nested CV the fold ensemble has no honest estimate, and says so
    project.set_params(compose_params([*OVERRIDES[:-2], "refit=fold_ensemble"], root=ROOT))
    out = project.repro("nested", "refit", "test")  # what `dvc repro test` re-runs
    info = json.loads((project.path / "models/final/info.json").read_text())
    assert info["cv"] is None and "nested.enabled=true" in info["cv_unavailable"]
    assert "CV estimate of this fold_ensemble model: not available" in out.stdout
    test = json.loads((project.path / "results/test_metrics.json").read_text())
    assert test["refit"] == "fold_ensemble" and "cv_vs_test" not in test


def _check_fold_ensemble(project) -> None:
    """The saved fold ensemble predicts the mean of its members' probabilities, each
    member with its own fold's scaler (computed here by hand)."""
    import numpy as np
    import pandas as pd
    import torch

    from foldwise.artifact import LoadedModel

    model = LoadedModel(project.path / "models/final/model.pt")
    assert len(model.members) == 3 and model.combine["name"] == "fold_ensemble"
    from foldwise.data import feature_columns

    dev = pd.read_parquet(project.path / "data/split/dev.parquet")
    feats = feature_columns(dev)
    probs = []
    for net, sc in model.members:
        x = (dev[feats].to_numpy() - np.asarray(sc["mean"])) / np.asarray(sc["scale"])
        with torch.no_grad():
            probs.append(net(torch.tensor(x, dtype=torch.float64)).softmax(1).numpy())
    assert (model.predict(dev)["pred"] == np.mean(probs, 0).argmax(1)).all()


def test_nested_is_off_by_default(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    project = make_project(tmp_path, uri, compose_params([*TINY], root=ROOT))
    out = project.stage("nested", in_process=True)
    assert "[nested] off" in out.stdout
    assert json.loads((project.path / "results/nested.json").read_text()) == {"enabled": False}
