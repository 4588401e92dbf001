"""End to end: `dvc repro` of the real pipeline in a throw-away copy of the repo.

Real DVC, real Hydra multirun, real Lightning fits, real MLflow (SQLite, and a
real `mlflow server` on 127.0.0.1), on a tiny configuration.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import TINY, Project, make_project, run_tree, tiny_params
from foldwise.files import sha256_file
from lockbox_back_doors import back_doors

pytestmark = pytest.mark.slow

N_CONFIGS, N_FOLDS, EPOCHS = 2, 2, 3
# The curves stage (the costliest after the sweep) where a test asserts nothing of it:
# the first test below checks the curves, their plots and their MLflow run.
NO_CURVES = [f"curves.{c}.enabled=false" for c in ("learning", "validation", "bias_variance")]


def check_tree(uri: str, sweeps: int = 1) -> dict[str, list]:
    tree = run_tree(uri)
    assert len(tree["sweep"]) == sweeps
    sweep_ids = {r.info.run_id for r in tree["sweep"]}
    configs = tree["config"]
    assert len(configs) == N_CONFIGS * sweeps
    assert all(r.data.tags["mlflow.parentRunId"] in sweep_ids for r in configs)
    config_ids = {r.info.run_id for r in configs}
    folds = tree["fold"]
    assert len(folds) == N_CONFIGS * N_FOLDS * sweeps
    c = MlflowClient(uri)
    for r in folds:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] in config_ids
        for tag in (
            "foldwise.fold",
            "foldwise.config_hash",
            "foldwise.split_manifest",
            "foldwise.git_commit",
        ):
            assert r.data.tags[tag]
        for m in ("val_f1", "val_acc", "val_loss", "train_f1", "train_loss"):
            assert 0 <= r.data.metrics[m] < 10
        curve = c.get_metric_history(r.info.run_id, "epoch/val_loss")
        assert [p.step for p in curve] == list(range(1, len(curve) + 1))
        assert 1 <= len(curve) <= EPOCHS
    for r in configs:  # aggregate logged the CV statistics onto each configuration run
        assert {"cv_val_f1_mean", "cv_val_f1_se", "cv_val_f1_ci_low", "cv_gap_f1_mean"} <= set(
            r.data.metrics
        )
    assert sum(r.data.tags.get("foldwise.selected") == "True" for r in configs) == sweeps
    return tree


def test_repro_sqlite_then_lockbox_rules(tmp_path, sqlite_uri):
    p = make_project(tmp_path, sqlite_uri, tiny_params())
    out = p.dvc("repro").stdout
    for stage in ("prepare", "split", "sweep", "aggregate", "refit", "test", "report"):
        assert f"Running stage '{stage}'" in out
    assert f"{N_CONFIGS * N_FOLDS} models: {N_CONFIGS * N_FOLDS} to train" in out

    root = p.path
    for rel in (
        "data/prepared/table.parquet",
        "data/split/dev.parquet",
        "data/split/folds.json",
        "data/lockbox/test.parquet",
        "results/cv_table.csv",
        "models/final/model.pt",
        "models/final/config.yaml",
    ):
        assert (root / rel).is_file(), rel
    selection = json.loads((root / "results/selection.json").read_text())
    cv = json.loads((root / "results/cv_metrics.json").read_text())
    assert cv["selected"]["config"] == selection["config_hash"]
    assert len(cv["configs"]) == N_CONFIGS
    test = json.loads((root / "results/test_metrics.json").read_text())
    assert test["look"] == 1 and test["reused_test_set"] is False
    assert (
        test["test"]["acc"]["ci_low"]
        <= test["test"]["acc"]["value"]
        <= test["test"]["acc"]["ci_high"]
    )
    # the CV estimate of the selection beside the test result, with the gap between them
    gap = test["cv_vs_test"]
    assert gap["metric"] == "val_f1" and gap["cv"]["mean"] == selection["score"]["mean"]
    assert gap["gap"] == gap["cv"]["mean"] - test["test"]["f1"]["value"]
    # the fit diagnosis and the comparison with the selection are in the metrics file
    for label, entry in cv["configs"].items():
        assert entry["fit"]["verdict"] in (
            "no better than chance",
            "overfitting",
            "underfitting",
            "good fit",
        )
        if label != cv["selected"]["label"]:
            assert 0 <= entry["vs_selected"]["p_value"] <= 1
    assert cv["verdict"]
    # precision and recall per fold; confusion matrices pooled over folds and on the test set
    assert 0 <= cv["selected"]["val_precision"]["mean"] <= 1
    cv_conf = pd.read_csv(root / "results/cv_confusion.csv")
    assert len(cv_conf) == len(pd.read_parquet(root / "data/split/dev.parquet"))
    test_conf = pd.read_csv(root / "results/test_confusion.csv")
    assert len(test_conf) == test["n_test"]
    assert (test_conf["actual"] == test_conf["predicted"]).mean() == pytest.approx(
        test["test"]["acc"]["value"]
    )
    # learning and validation curves: DVC plots, figures, an MLflow run with them
    learning = pd.read_csv(root / "results/curves/learning.csv")
    assert list(learning["x"]) == [0.5, 1.0]  # TINY's
    assert (learning["n_train_mean"].diff().dropna() > 0).all()  # more rows each step
    validation = pd.read_csv(root / "results/curves/validation.csv")
    assert list(validation["x"]) == [8, 16] and (validation["folds"] == N_FOLDS).all()
    assert (root / "results/curves/learning.png").stat().st_size > 10_000
    bv = pd.read_csv(root / "results/curves/bias_variance.csv")
    assert list(bv["x"]) == [8, 16]
    assert np.allclose(bv["expected_loss"], bv["bias"] + bv["net_variance"])
    plots = json.loads(p.dvc("plots", "show", "--json").stdout)
    # 3 curves, ensembles and their 2 bias–variance plots (empty here), 2 confusion matrices
    assert len(plots["data"]) == 8
    audit = (root / "lockbox/audit.jsonl").read_text().splitlines()
    assert len(audit) == 1
    tree = check_tree(sqlite_uri)
    assert len(tree["refit"]) == 1 and len(tree["lockbox"]) == 1
    # MLflow's Dataset column: the dev rows on CV runs, the test rows on the lockbox run only
    manifest = json.loads((root / "data/split/manifest.json").read_text())
    client = MlflowClient(sqlite_uri)

    def seen(run) -> set[tuple[str, str]]:
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        return {(d.dataset.digest, d.tags[0].value) for d in inputs}

    dev = (manifest["dev_sha256"][:12], "cross-validation")
    for kind in ("sweep", "config", "fold"):
        assert all(seen(r) == {dev} for r in tree[kind]), kind
    assert seen(tree["refit"][0]) == {(dev[0], "training")}
    assert seen(tree["lockbox"][0]) == {(manifest["test_sha256"][:12], "testing")}
    (curves,) = tree["curves"]
    names = {a.path for a in MlflowClient(sqlite_uri).list_artifacts(curves.info.run_id, "curves")}
    assert {"curves/learning.png", "curves/validation.png", "curves/bias_variance.png"} <= names
    assert tree["lockbox"][0].data.tags["foldwise.reused_test_set"] == "False"

    # A second repro does nothing; DVC reads the metrics files.
    again = p.dvc("repro").stdout
    assert "Running stage" not in again
    metrics = json.loads(p.dvc("metrics", "show", "--json").stdout)
    shown = next(iter(metrics.values()))["data"]

    # each to the decimal place two significant digits of its uncertainty set (by hand)
    def places(half: float) -> int:
        return max(0, 1 - math.floor(math.log10(half)))

    sel, f1 = selection["score"], test["test"]["f1"]
    cv_shown = shown["results/metrics/cv.json"]["data"]["cv"]["val_f1"]
    assert cv_shown == round(sel["mean"], places(sel["se"]))
    half = (f1["ci_high"] - f1["ci_low"]) / 2
    test_shown = shown["results/metrics/test.json"]["data"]["test"]["f1"]
    assert test_shown == round(f1["value"], places(half))
    table = p.dvc("metrics", "show").stdout  # the selection and the test result, not every config
    assert max(len(line) for line in table.splitlines()) <= 120, table

    # Re-running the test stage with the same model reports, and counts no new look.
    rerun = p.stage("test", in_process=True).stdout
    assert "no new look" in rerun
    assert len((root / "lockbox/audit.jsonl").read_text().splitlines()) == 1

    # Bad input fails before any work and leaves the previous outputs untouched.
    before = {
        f: sha256_file(root / f) for f in ("data/split/folds.json", "data/lockbox/test.parquet")
    }
    p.set_params(tiny_params(["split.n_splits=100000"]))
    bad = p.dvc("repro", check=False)
    assert bad.returncode != 0
    assert "split.n_splits=100000 is larger than the" in bad.stdout + bad.stderr
    assert before == {f: sha256_file(root / f) for f in before}

    # A different selection against the opened test set is refused...
    # (no curves from here on: a new selection would train them again, and nothing
    # below reads them)
    p.set_params(tiny_params(["trainer.max_epochs=2", *NO_CURVES]))
    refused = p.dvc("repro", check=False)
    assert refused.returncode != 0
    assert "tunes hyperparameters on the test set" in refused.stdout + refused.stderr
    assert len((root / "lockbox/audit.jsonl").read_text().splitlines()) == 1
    refused_doc = json.loads((root / "results/test_metrics.json").read_text())
    assert refused_doc["status"] == "refused" and "test" not in refused_doc  # no stale scores
    # the report (`make report`: DVC stops at the failed test stage) says so, without scores
    p.stage("report", in_process=True)
    page = (root / "results/report.html").read_text()
    assert "The lockbox refused this selection" in page and "bootstrap interval" not in page

    # ...unless overridden with a reason: audited and flagged.
    reason = "lockbox.override_reason='compare the 2-epoch budget'"
    p.set_params(tiny_params(["trainer.max_epochs=2", *NO_CURVES, reason]))
    p.dvc("repro")
    test = json.loads((root / "results/test_metrics.json").read_text())
    assert test["look"] == 2 and test["reused_test_set"] is True
    audit = [json.loads(x) for x in (root / "lockbox/audit.jsonl").read_text().splitlines()]
    assert [a["look"] for a in audit] == [1, 2]
    assert audit[1]["override_reason"] == "compare the 2-epoch budget"
    lockbox_runs = run_tree(sqlite_uri)["lockbox"]
    assert sorted(r.data.tags["foldwise.reused_test_set"] for r in lockbox_runs) == [
        "False",
        "True",
    ]
    # each opened model is a version of the registered model; champion is the latest
    versions = MlflowClient(sqlite_uri).search_model_versions("name = 'foldwise-digits'")
    assert sorted(v.tags["foldwise.look"] for v in versions) == ["1", "2"]
    champion = MlflowClient(sqlite_uri).get_model_version_by_alias("foldwise-digits", "champion")
    assert (champion.tags["foldwise.look"], champion.tags["foldwise.reused_test_set"]) == (
        "2", "True")  # fmt: skip
    # The same opened project: edited files, deleted records and a new seed are refused.
    back_doors(p, sqlite_uri)


def test_repro_against_mlflow_server(tmp_path, mlflow_server):
    """Every stage against a real `mlflow server` (the stages in this process: what is
    tested is the server path — runs, the artifact proxy, the registry — not DVC)."""
    p: Project = make_project(tmp_path, mlflow_server, tiny_params(NO_CURVES))
    p.repro()
    tree = check_tree(mlflow_server)
    assert len(tree["refit"]) == 1 and len(tree["lockbox"]) == 1
    # The refit model was logged through the server's artifact proxy.
    arts = MlflowClient(mlflow_server).list_artifacts(tree["refit"][0].info.run_id, "bundle")
    assert {a.path for a in arts} >= {"bundle/model.pt", "bundle/config.yaml"}
    # registered through the server, with its alias
    v = MlflowClient(mlflow_server).get_model_version_by_alias("foldwise-digits", "champion")
    assert v.run_id == tree["refit"][0].info.run_id


def test_dvc_exp_run_temp_composes_conf_and_shares_store_and_lockbox(tmp_path):
    """`dvc exp run --temp -S data=...`: DVC composes conf/ into params.yaml, the stages
    run in .dvc/tmp/exps/..., yet MLflow's default store and the lockbox audit log are
    the real checkout's."""
    p = make_project(tmp_path, "unused", tiny_params())
    p.env.pop("MLFLOW_TRACKING_URI")  # exercise the default store location
    overrides = [arg for o in [*TINY, *NO_CURVES, "data=breast_cancer"] for arg in ("-S", o)]
    p.dvc("exp", "run", "--temp", *overrides)
    root = p.path
    audit = [json.loads(x) for x in (root / "lockbox/audit.jsonl").read_text().splitlines()]
    assert len(audit) == 1 and audit[0]["n_test"] == 114  # 20 % of breast_cancer's 569 rows
    # two classes: ROC-AUC, precision and recall on the test set, with intervals
    scores = audit[0]["scores"]
    for name in ("auc", "precision", "recall"):
        assert scores[name]["ci_low"] <= scores[name]["value"] <= scores[name]["ci_high"]
    assert sum(map(sum, audit[0]["confusion"]["counts"])) == 114
    uri = f"sqlite:///{root / 'mlflow.db'}"
    sweeps = run_tree(uri)["sweep"]
    assert [r.data.params["data"] for r in sweeps] == ["breast_cancer"]
    shown = p.dvc("exp", "show", "--json").stdout
    assert "breast_cancer" in shown


def test_user_csv_in_data_raw_is_a_tracked_dependency(tmp_path, sqlite_uri):
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame
    wine["label"] = wine.pop("target").map({0: "barolo", 1: "grignolino", 2: "barbera"})
    wine.insert(0, "sample_id", range(1000, 1000 + len(wine)))
    extra = [
        "data=csv",
        "data.path=data/raw/wine.csv",
        "data.target=label",
        "data.id_column=sample_id",
    ]
    p = make_project(tmp_path, sqlite_uri, tiny_params(extra))
    wine.to_csv(p.path / "data/raw/wine.csv", index=False)
    p.dvc("repro", "prepare")
    meta = json.loads((p.path / "data/prepared/meta.json").read_text())
    assert meta["classes"] == ["barbera", "barolo", "grignolino"]
    assert meta["n_rows"] == 178 and meta["n_features"] == 13
    assert "up to date" in p.dvc("status", "prepare").stdout
    wine.iloc[:100].to_csv(p.path / "data/raw/wine.csv", index=False)  # the file changes
    assert "changed deps" in p.dvc("status", "prepare").stdout
