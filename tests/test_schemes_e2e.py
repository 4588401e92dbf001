"""Every resampling scheme end to end on a tiny table: prepare, split, sweep, aggregate.

The table is scikit-learn's iris (150 rows, 3 classes) written as a CSV with a group
column (8 groups) and a time column, so grouped and temporal schemes run too. Each
scheme trains a 2-configuration grid for 3 epochs and selects; a few (FULL) run every
stage, refit and open the lockbox. The stages run in this process (faultkit.stage:
`python pipelines/<stage>.py` without a process start-up each); DVC's wiring of the
stages does not depend on the scheme, and test_pipeline_e2e runs it for real.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import IRIS, ROOT, iris_csv, make_project, run_tree
from faultkit import stage
from foldwise.compose import compose_params
from foldwise.split import SCHEMES

pytestmark = pytest.mark.slow

BASE = [
    *IRIS,
    "data.group_column=site",
    "data.time_column=day",
    # the curves do not depend on the scheme (test_pipeline_e2e covers them): off here
    "curves.learning.enabled=false",
    "curves.validation.enabled=false",
    "curves.bias_variance.enabled=false",
]

# Small options per scheme (every scheme's other options keep their defaults).
OPTIONS = {
    "kfold": ["split.n_splits=2"],
    "stratified_kfold": ["split.n_splits=2"],
    "group_kfold": ["split.n_splits=3"],
    "stratified_group_kfold": ["split.n_splits=3"],
    "leave_one_group_out": [],
    "leave_p_groups_out": ["split.p=2"],
    "repeated_kfold": ["split.n_splits=2", "split.n_repeats=2"],
    "repeated_stratified_kfold": ["split.n_splits=2", "split.n_repeats=2"],
    "shuffle_split": ["split.n_splits=3"],
    "stratified_shuffle_split": ["split.n_splits=3"],
    "holdout": [],
    "time_series": ["split.n_splits=3", "split.gap=2"],
    "leave_one_out": [],
    "leave_p_out": ["split.sample=30"],
    "bootstrap": ["split.n_resamples=8", "selection.metric=val_acc"],
}


# These go through refit and the lockbox too; the others stop at aggregate (the
# stages after it do not depend on the scheme), which keeps the suite's time down.
FULL = {"time_series", "bootstrap"}  # the temporal lockbox; .632+ beside a test score


def test_every_scheme_has_a_case():
    assert set(OPTIONS) == set(SCHEMES)


@pytest.mark.parametrize("scheme", list(OPTIONS))
def test_scheme_end_to_end(tmp_path, scheme):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_params([*BASE, f"split={scheme}", *OPTIONS[scheme]], root=ROOT)
    project = make_project(tmp_path, uri, cfg)
    iris_csv().to_csv(project.path / "data/raw/iris.csv", index=False)
    project.commit("iris")
    if scheme in FULL:  # every stage, the lockbox too
        stdout = project.repro().stdout
    else:
        stdout = ""
        for name in ("prepare", "split", "sweep", "aggregate"):
            ran = stage(project.path, name, env={"MLFLOW_TRACKING_URI": uri})
            assert ran.code == 0, f"{name}: {ran.out[-3000:]}{ran.err[-3000:]}"
            stdout += ran.out
    assert "[split]" in stdout
    if scheme == "leave_one_out":  # 2 configurations × ~120 dev rows: priced before training
        assert "estimated training time" in stdout
        assert "(estimated " in stdout.split("sweep done")[-1]

    manifest = json.loads((project.path / "data/split/manifest.json").read_text())
    cls = SCHEMES[scheme]
    assert manifest["scheme"] == scheme and manifest["kind"] == cls.kind
    checks = {c["name"]: c["outcome"] for c in manifest["checks"]}
    assert checks["test_rows_in_no_resample"] == "pass"
    test = pd.read_parquet(project.path / "data/lockbox/test.parquet")
    dev = pd.read_parquet(project.path / "data/split/dev.parquet")
    if cls.temporal:  # the lockbox is the latest period
        assert test["time"].min() > dev["time"].max()
    else:  # the data has groups: no group on both sides of the lockbox
        assert set(test["group"]).isdisjoint(dev["group"])
        assert checks["groups_test_dev_disjoint"] == "pass"
    if cls.grouped:
        assert checks["groups_train_val_disjoint"] == "pass"

    metrics = json.loads((project.path / "results/cv_metrics.json").read_text())
    metric = "val_acc" if scheme == "bootstrap" else "val_f1"
    selected = metrics["selected"]
    assert 0 <= selected[metric]["mean"] <= 1
    assert metrics["method"]
    if cls.kind in ("exhaustive", "bootstrap"):  # no interval pretending folds
        assert selected[metric]["ci_low"] is None
    if cls.kind == "bootstrap":
        assert 0 <= selected["err_632plus"] <= 1
        assert selected["err_632"] <= selected["err_loo_bootstrap"] + 1e-12 or (
            selected["err_apparent"] > selected["err_loo_bootstrap"]
        )
    if scheme in FULL:
        test_metrics = json.loads((project.path / "results/test_metrics.json").read_text())
        assert 0 <= test_metrics["test"]["acc"]["value"] <= 1

    # tracking: one run per resample, or one table artifact per configuration
    c = MlflowClient(uri)
    by_type = run_tree(uri)
    n = manifest["n_splits"]
    if n <= 25:
        assert len(by_type.get("fold", [])) == 2 * n
    else:
        assert "fold" not in by_type
        for conf in by_type["config"]:
            names = [a.path for a in c.list_artifacts(conf.info.run_id, "resamples")]
            assert names == [f"resamples/{conf.data.tags['foldwise.config_hash']}.csv"]
            path = c.download_artifacts(conf.info.run_id, names[0], str(tmp_path))
            table = pd.read_csv(path)
            assert len(table) == n and set(table["status"]) == {"ok"}


@pytest.mark.parametrize(
    "overrides",
    [
        # many models, no fold runs: the probe's epochs rule
        [*BASE, "split=leave_one_out", "sweep.grid.model.hidden=[8,32]"],
        # the default data and scheme (4 configurations × 5 folds = ESTIMATE_FROM):
        # 20 fold runs, so MLflow's requests count too
        ["trainer.accelerator=cpu", "trainer.max_epochs=15"],
    ],
    ids=["iris-loo", "digits-5-fold"],
)
def test_the_time_estimate_is_not_wildly_off_the_training_time(tmp_path, overrides):
    """Issue 22: the estimate before training read 3-10× the measured time (iris
    leave-one-out: 0:43 for 0:06). A bound, not a timing: at most 4× the measured time,
    at least a tenth of it, or within 2 s for runs of a few seconds. The estimate is the
    machine's pace when nothing else runs (the probe's fastest steady epoch); on 2 busy
    cores (the other test worker) training itself varies 2-3× from run to run, and under
    heavy load the estimate read 0.14-0.4× (benchmarks/bench_estimate.py: 0.18-1.25×)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    project = make_project(tmp_path, uri, compose_params(overrides, root=ROOT))
    iris_csv().to_csv(project.path / "data/raw/iris.csv", index=False)
    project.commit("iris")
    for name in ("prepare", "split", "sweep"):
        ran = stage(project.path, name, env={"MLFLOW_TRACKING_URI": uri})
        assert ran.code == 0, f"{name}: {ran.out[-3000:]}{ran.err[-3000:]}"
    # no earlier fits on these rows: every model to max_epochs, said to be a bound
    # no earlier fits on these rows: every model to max_epochs; but at the probe's pace,
    # not yet corrected by a sweep here, so not said to be a bound
    assert "estimated training time up to " not in ran.out
    assert "no earlier sweep here has corrected the probe's pace yet" in ran.out
    assert "(estimated " in ran.out.split("sweep done")[-1]
    session = json.loads((project.path / "results/sweep/session.json").read_text())
    metrics = MlflowClient(uri).get_run(session["sweep_run_id"]).data.metrics
    estimated, trained = metrics["estimated_training_seconds"], metrics["training_seconds"]
    assert estimated == pytest.approx(session["estimate"]["seconds"])
    print(f"estimated {estimated:.1f} s, training {trained:.1f} s")
    assert trained / 10 <= estimated <= 4 * trained or abs(estimated - trained) < 2, (
        estimated, trained)  # fmt: skip
    # The sweep's pace, its training time over the probe's estimate with the epochs as
    # trained (here from the result files), is kept, and each architecture's throughput:
    # the next sweep of them on these rows needs no probe.
    from foldwise.results import Session, parse_task_name, read_result
    from foldwise.sweep.estimate import hindsight_seconds, read_paces

    est, sweep_dir = session["estimate"], project.path / "results/sweep"
    epochs = [
        [read_result(sweep_dir, *parse_task_name(n))["epochs_trained"] for n in names]
        for names in Session(session).doc["stacks"]
    ]
    paces = read_paces(project.path, "cpu")
    stacks = trained - est["tracking_seconds"] - est["prepare_seconds"]
    assert paces["sweeps"] == [pytest.approx(stacks / hindsight_seconds(est, epochs))]
    assert set(paces["archs"]) == set(est["probe_keys"])
    if "split=leave_one_out" not in overrides:
        return
    for rel in ("results/sweep", ".foldwise/jobs", ".foldwise/sweeps.json"):
        path = project.path / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    again = stage(project.path, "sweep", env={"MLFLOW_TRACKING_URI": uri})
    assert again.code == 0, again.err[-3000:]
    assert "(throughput these rows trained at in earlier sweeps here;" in again.out
    assert "estimated training time up to" not in again.out  # epochs from the first sweep
    assert "no earlier sweep here has corrected" not in again.out
    second = json.loads((sweep_dir / "session.json").read_text())["estimate"]
    assert second["archs_from_history"] == second["archs"] == len(est["probe_keys"])
