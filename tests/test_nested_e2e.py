"""Nested cross-validation end to end: `dvc repro nested` on a tiny table, real MLflow."""

from __future__ import annotations

import json

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
    out = project.dvc("repro", "nested")
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

    # MLflow: sweep run → nested run → one outer-fold run per outer fold with its inner table
    c = MlflowClient(uri)
    by_type = run_tree(uri)
    (nest,) = by_type["nested"]
    assert nest.data.tags["mlflow.parentRunId"] == by_type["sweep"][0].info.run_id
    assert nest.data.metrics["optimism_val_f1_mean"] == pytest.approx(report["optimism"]["mean"])
    outer = by_type["outer_fold"]
    assert len(outer) == 3
    for r in outer:
        assert r.data.tags["mlflow.parentRunId"] == nest.info.run_id
        assert r.info.status == "FINISHED"
        (art,) = c.list_artifacts(r.info.run_id, "inner")
        assert art.path.endswith(".csv")

    # a forced re-run reuses every cached inner model and refit
    out = project.dvc("repro", "-f", "-s", "nested")
    assert "12 inner models cached" in out.stdout
    again = json.loads((project.path / "results/nested.json").read_text())
    assert again["outer"] == report["outer"]


def test_nested_is_off_by_default(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    project = make_project(tmp_path, uri, compose_params([*TINY], root=ROOT))
    out = project.stage("nested")
    assert "[nested] off" in out.stdout
    assert json.loads((project.path / "results/nested.json").read_text()) == {"enabled": False}
