"""``selection.interval=ncv`` end to end on a tiny table, real MLflow: the stages
prepare → aggregate run in this process (``Project.repro``); the pair-of-folds models
train through the engine, land in the job cache, and a second aggregate trains none."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import IRIS, ROOT, TINY, iris_csv, make_project, run_tree
from foldwise.compose import compose_params

IRIS_ACC = [*IRIS, "split=stratified_kfold", "selection.metric=val_acc"]
# regression, a per-row score that is not the model's loss, and bagged models (their
# members predict the pair models' folds)
DIABETES_BAGGED = [*TINY, "data=diabetes", "split=kfold", "selection.metric=val_mae",
                   "+sweep.grid.ensemble.name=[bagging]", "ensemble.n_estimators=2"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [IRIS_ACC, DIABETES_BAGGED], ids=["iris", "diabetes_bagged"])
def test_ncv_interval_end_to_end(tmp_path, overrides):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = [*overrides, "split.n_splits=3", "selection.interval=ncv"]
    project = make_project(tmp_path, uri, compose_params(settings, root=ROOT))
    metric = "val_acc" if overrides is IRIS_ACC else "val_mae"
    if overrides is IRIS_ACC:
        iris = iris_csv().drop(columns=["site", "day"])
        iris.to_csv(project.path / "data/raw/iris.csv", index=False)
        project.commit("iris")
    out = project.repro("prepare", "split", "sweep", "aggregate")
    # K = 3: one model per pair of folds, 3 pairs
    assert "1 partition(s) × 3 folds = 3 more models" in out.stdout and "0 cached" in out.stdout
    cv = json.loads((project.path / "results/cv_metrics.json").read_text())
    ncv = cv["selected"]["ncv"]
    assert ncv["method"].startswith("Bates, Hastie & Tibshirani (2023)")
    assert (ncv["folds"], ncv["repetitions"], ncv["models"]) == (3, 1, 3)
    # Err_CV is the pooled score of the sweep's own fold models: recomputed from their
    # result files (fold score × fold rows).
    jobs = [
        json.loads((project.path / f"results/sweep/jobs/{cv['selected']['config']}-fold{k}.json")
                   .read_text())
        for k in range(3)
    ]  # fmt: skip
    pooled = sum(j["metrics"][metric] * j["n_val"] for j in jobs) / sum(j["n_val"] for j in jobs)
    assert ncv["err_cv"] == pytest.approx(pooled, rel=1e-6)
    assert ncv["ci_low"] <= ncv["estimate"] <= ncv["ci_high"]
    assert 1.0 <= ncv["inflation"] <= np.sqrt(3) + 1e-12
    assert ncv["estimate"] == pytest.approx(ncv["err_ncv"] - ncv["bias"])
    selection = json.loads((project.path / "results/selection.json").read_text())
    assert selection["ncv"] == ncv
    sweep = run_tree(uri)["sweep"][0].data.metrics
    assert sweep[f"selected_{metric}_ncv_ci_low"] == pytest.approx(ncv["ci_low"])
    assert "nested CV" in out.stdout and "CI [" in out.stdout

    # A second partition (fresh folds: 3 fold models + 3 pair models); the first
    # partition's pair models come from the job cache.
    path = project.path / "params.yaml"
    path.write_text(path.read_text().replace("ncv_repeats: 1", "ncv_repeats: 2"))
    again = project.repro("aggregate")
    assert "2 partition(s) × 3 folds = 9 more models" in again.stdout
    assert "3 cached" in again.stdout
    ncv2 = json.loads((project.path / "results/cv_metrics.json").read_text())["selected"]["ncv"]
    assert (ncv2["repetitions"], ncv2["models"]) == (2, 9)
    third = project.repro("aggregate")  # nothing left to train, the same numbers
    assert "9 cached" in third.stdout
    ncv3 = json.loads((project.path / "results/cv_metrics.json").read_text())["selected"]["ncv"]
    assert ncv3 == ncv2
