"""The sweep: grid → Hydra overrides, job identity, determinism, resume, failure isolation."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from conftest import tiny_params
from faultkit import Ran, clone, stage
from foldwise.fitting.configs import apply, config_hash, config_label, expand_grid


def prepared(fault_template, dest, uri: str, params):
    """A copy of conftest's prepared TINY project (`prepare` and `split` done) with these
    params: the sweep tests below change only sweep-side settings (grid, trainer, engine,
    launcher), which neither data stage reads."""
    return clone(fault_template, dest, uri, params)


def run(p, name: str, check: bool = True) -> Ran:
    """``python pipelines/<name>.py`` in this process (faultkit.stage), on ``p``'s store."""
    ran = stage(p.path, name, env={"MLFLOW_TRACKING_URI": p.env["MLFLOW_TRACKING_URI"]})
    if check:
        assert ran.code == 0, f"{name}: {ran.out[-3000:]}{ran.err[-3000:]}"
    return ran


def test_grid_expansion_matches_hydra_order_and_types():
    cfg = tiny_params(["sweep.grid.model.hidden=[8,16]", "sweep.grid.optim.lr=[0.001,0.01]"])
    grid = expand_grid(cfg)
    assert grid == [
        {"model.hidden": 8, "optim.lr": 0.001},
        {"model.hidden": 8, "optim.lr": 0.01},
        {"model.hidden": 16, "optim.lr": 0.001},
        {"model.hidden": 16, "optim.lr": 0.01},
    ]


def test_hydra_sweep_syntax_strings_are_expanded_by_hydra_parser():
    cfg = tiny_params()
    cfg.sweep.grid = {"model": {"hidden": "range(16,49,16)"}}
    assert [g["model.hidden"] for g in expand_grid(cfg)] == [16, 32, 48]


def test_a_list_of_grids_is_their_union_like_sklearns_parameter_grid():
    from sklearn.model_selection import ParameterGrid

    from foldwise.compose import compose_params
    from foldwise.config.grid import grid_leaves
    from foldwise.params import validate

    cfg = compose_params(["sweep=ensembles"])
    validate(cfg)
    got = expand_grid(cfg)
    raw = OmegaConf.to_container(cfg.sweep.grid)
    flat = [{f"{s}.{k}": v for s, d in g.items() for k, v in d.items()} for g in raw]
    want = list(ParameterGrid(flat))
    assert sorted(map(repr, got)) == sorted(map(repr, want)) and len(got) == 4
    labels = [config_label(apply(cfg, o), o) for o in got]
    assert labels[2] == "mlp bagging×10 hidden=128 lr=0.001"
    assert grid_leaves(cfg)["ensemble.name"] == ["bagging", "adaboost"]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ([{"model": {"hidden": [8]}}, 3], r"sweep.grid\[1\] is 3, not a mapping"),
        ([{"model": {"hiden": [8]}}], r"did you mean sweep.grid.model.hidden"),
        ([{"model": {"hidden": [8]}}, {"optim": {"lr": [-1.0]}}], r"sweep.grid.optim.lr value"),
        ([], r"sweep.grid is an empty list"),
    ],
)
def test_a_bad_grid_of_a_list_is_named(grid, message):
    from foldwise.errors import FoldwiseError
    from foldwise.params import validate

    cfg = tiny_params()
    cfg.sweep.grid = grid
    with pytest.raises(FoldwiseError, match=message):
        validate(cfg)


def test_config_hash_ignores_fold_and_sweep_settings_but_not_hyperparameters():
    cfg = tiny_params()
    base = config_hash(cfg)
    other = OmegaConf.merge(
        cfg, {"fold": 3, "sweep": {"n_jobs": 7}, "lockbox": {"override_reason": "x"}}
    )
    assert config_hash(other) == base
    assert config_hash(apply(cfg, {"optim.lr": 0.5})) != base
    assert config_hash(apply(cfg, {"trainer.max_epochs": 9})) != base


def test_a_label_says_the_ensemble_also_when_it_is_not_swept():
    plain = tiny_params()
    bagged = tiny_params(["ensemble=bagging", "ensemble.n_estimators=5"])
    o = {"model.hidden": 8, "optim.lr": 0.01}
    assert config_label(apply(plain, o), o) == "mlp hidden=8 lr=0.01"
    assert config_label(apply(bagged, o), o) == "mlp bagging×5 hidden=8 lr=0.01"
    swept = {"ensemble.name": "adaboost", "ensemble.n_estimators": 3, "model.hidden": 4}
    assert config_label(apply(plain, swept), swept) == "mlp adaboost×3 hidden=4"


def test_float_labels_keep_three_significant_digits_unless_two_would_collide():
    from foldwise.fitting.configs import unique_labels

    cfg = tiny_params()
    points = lambda *lrs: [(apply(cfg, {"optim.lr": v}), {"optim.lr": v}) for v in lrs]  # noqa: E731
    assert unique_labels(points(0.006251373574521752, 1e-5, 0.1)) == [
        "mlp lr=0.00625",
        "mlp lr=1e-05",
        "mlp lr=0.1",
    ]
    assert unique_labels(points(0.0062514, 0.0062491)) == ["mlp lr=0.006251", "mlp lr=0.006249"]
    # One at a time (Optuna's trials): the new label avoids the ones already given, which
    # keep theirs (an MLflow run is named by it)
    assert unique_labels(points(0.0062500), taken=["mlp lr=0.00625"]) == ["mlp lr=0.006250"]
    assert unique_labels(points(1234.5)) == ["mlp lr=1230.0"]


def test_a_different_ensemble_or_search_is_another_sweep_run():
    from foldwise.compose import compose_params
    from foldwise.fitting.configs import base_key
    from foldwise.sweep.plan import sweep_identity

    key = lambda *args: sweep_identity(compose_params(list(args)), "split", "code")  # noqa: E731
    assert len({key(), key("ensemble=bagging"), key("sweep=optuna")}) == 3
    # A larger grid keeps its sweep run, and a plain sweep's key is what it was before
    assert key("sweep.grid.model.hidden=[8,16,32]") == key()
    from foldwise.files import sha256_json

    tree = OmegaConf.to_container(tiny_params(), resolve=True)
    before = {k: tree[k] for k in ("data", "split", "model", "optim", "trainer", "seed")}
    assert base_key(tiny_params()) == sha256_json(before)[:16]


def test_fit_is_deterministic_on_cpu():
    import pandas as pd

    from foldwise import data, split
    from foldwise.fitting.train import fit

    cfg = tiny_params()
    table, meta = data.prepare(cfg)
    res = split.split(table, cfg)
    dev = res.dev.set_index("row_id", drop=False)
    f = res.folds[0]
    runs = [fit(cfg, meta, dev.loc[f.train], dev.loc[f.val])[1] for _ in range(2)]
    assert runs[0].metrics == runs[1].metrics
    assert runs[0].history == runs[1].history
    pd.testing.assert_frame_equal(dev.loc[f.train], dev.loc[f.train])  # inputs untouched


def test_early_stopping_never_sees_the_fold_validation_rows(monkeypatch):
    """Scramble the fold's validation labels: training and the chosen epoch must not change."""
    from foldwise import data, split
    from foldwise.fitting.train import fit

    cfg = tiny_params(["trainer.max_epochs=6"])
    table, meta = data.prepare(cfg)
    res = split.split(table, cfg)
    dev = res.dev.set_index("row_id", drop=False)
    f = res.folds[0]
    val = dev.loc[f.val]
    scrambled = val.assign(target=(val["target"] + 1) % meta.n_classes)
    a = fit(cfg, meta, dev.loc[f.train], val)[1]
    b = fit(cfg, meta, dev.loc[f.train], scrambled)[1]
    assert a.best_epoch == b.best_epoch and a.epochs_trained == b.epochs_trained
    assert a.history["inner_loss"] == b.history["inner_loss"]
    assert a.metrics["train_loss"] == b.metrics["train_loss"]
    assert a.metrics["val_acc"] != b.metrics["val_acc"]


@pytest.mark.slow
def test_interrupted_sweep_reruns_only_missing_jobs(tmp_path, sqlite_uri, fault_template):
    p = prepared(fault_template, tmp_path / "p", sqlite_uri, tiny_params())
    first = run(p, "sweep").out
    assert "4 to train in 2 stack(s) of 2, 0 already done" in first
    jobs = sorted((p.path / "results/sweep/jobs").glob("*.json"))
    assert len(jobs) == 4
    kept = {j.name: j.read_text() for j in jobs[1:]}
    # As if the process died before this model was recorded: no result, no cache entry...
    first_job = json.loads(jobs[0].read_text())
    from foldwise.engine import VERSION
    from foldwise.results import Session

    # Which engine computed it is on record, and part of the key cached results go by.
    assert first_job["engine_version"] == VERSION
    doc = json.loads((p.path / "results/sweep/session.json").read_text())
    key = first_job["job_key"]
    assert key == Session(doc).job_key(first_job["config_hash"], first_job["fold"])
    assert key != Session({**doc, "engine": VERSION - 1}).job_key(
        first_job["config_hash"], first_job["fold"]
    )
    jobs[0].unlink()
    (p.path / ".foldwise/jobs" / f"{key}.json").unlink()
    from mlflow import MlflowClient

    c = MlflowClient(sqlite_uri)
    session = json.loads((p.path / "results/sweep/session.json").read_text())
    orphan = c.create_run(  # ...leaving its fold run RUNNING
        session["experiment_id"],
        tags={
            "foldwise.run_type": "fold",
            "mlflow.parentRunId": session["configs"][0]["run_id"],
        },
    ).info.run_id
    second = run(p, "sweep").out
    assert "1 to train in 1 stack(s) of 1, 3 already done" in second
    assert {j.name: j.read_text() for j in jobs[1:]} == kept  # finished results untouched
    assert jobs[0].is_file()
    runs = c.search_runs([session["experiment_id"]], "tags.`foldwise.run_type` = 'sweep'")
    assert len(runs) == 1  # the resumed sweep reopened the same parent run
    assert c.get_run(orphan).info.status == "KILLED"


@pytest.mark.slow
def test_failed_job_is_isolated_and_its_configuration_cannot_be_selected(
    tmp_path, sqlite_uri, fault_template
):
    # lr=1e38 drives the loss to inf/NaN: one configuration fails on every fold, while the
    # other configuration in the same stack trains on.
    params = tiny_params(["sweep.grid.model.hidden=[8]", "sweep.grid.optim.lr=[0.01,1e38]"])
    p = prepared(fault_template, tmp_path / "p", sqlite_uri, params)
    res = run(p, "sweep", check=False)
    assert res.code == 1
    assert "2 ok, 2 failed" in res.out
    results = [json.loads(f.read_text()) for f in (p.path / "results/sweep/jobs").glob("*")]
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) == 2 and all("non-finite" in r["error"] for r in failed)
    agg = run(p, "aggregate").out
    assert "incomplete" in agg
    selection = json.loads((p.path / "results/selection.json").read_text())
    assert selection["overrides"]["optim.lr"] == 0.01
    assert selection["incomplete"] == ["mlp hidden=8 lr=1e+38"]
    from mlflow import MlflowClient

    c = MlflowClient(sqlite_uri)
    statuses = sorted(c.get_run(r["fold_run_id"]).info.status for r in results)
    assert statuses == ["FAILED", "FAILED", "FINISHED", "FINISHED"]


@pytest.mark.slow
def test_joblib_launcher_runs_every_job_in_parallel_workers(tmp_path, sqlite_uri, fault_template):
    params = tiny_params(["sweep.launcher=joblib", "sweep.n_jobs=2"])
    p = prepared(fault_template, tmp_path / "p", sqlite_uri, params)
    out = p.stage("sweep").stdout  # a process of its own, as `dvc repro` starts it
    assert "Joblib.Parallel(n_jobs=2" in out
    assert "4 ok, 0 failed, 0 missing of 4 models" in out
    results = [json.loads(f.read_text()) for f in (p.path / "results/sweep/jobs").glob("*")]
    assert sorted((r["label"], r["fold"]) for r in results) == [
        ("mlp hidden=16 lr=0.01", 0),
        ("mlp hidden=16 lr=0.01", 1),
        ("mlp hidden=8 lr=0.01", 0),
        ("mlp hidden=8 lr=0.01", 1),
    ]
    assert all(r["status"] == "ok" for r in results)


@pytest.mark.slow
def test_going_back_to_an_earlier_grid_reuses_cached_jobs(tmp_path, sqlite_uri, fault_template):
    p = prepared(fault_template, tmp_path / "p", sqlite_uri, tiny_params())
    run(p, "sweep")
    jobs = p.path / "results/sweep/jobs"
    first = {f.name: json.loads(f.read_text()) for f in jobs.glob("*.json")}
    p.set_params(tiny_params(["sweep.grid.model.hidden=[16]"]))
    narrowed = run(p, "sweep").out
    assert "0 to train in 0 stack(s)" in narrowed and len(list(jobs.glob("*.json"))) == 2
    p.set_params(tiny_params())  # back to hidden=[8,16]: the pruned hidden=8 jobs
    back = run(p, "sweep").out
    assert back.count("[foldwise] reuse ") == 2  # restored from .foldwise/jobs, no training
    again = {f.name: json.loads(f.read_text()) for f in jobs.glob("*.json")}
    assert again.keys() == first.keys()
    for name, result in again.items():
        assert result["metrics"] == first[name]["metrics"]
    from mlflow import MlflowClient

    folds = MlflowClient(sqlite_uri).search_runs(
        [json.loads((p.path / "results/sweep/session.json").read_text())["experiment_id"]],
        "tags.`foldwise.run_type` = 'fold'",
    )
    # The same sweep and configuration runs throughout: the restored models' fold runs
    # are still the record (not recorded twice), each named by its result file.
    assert sorted(r.info.status for r in folds) == ["FINISHED"] * 4
    assert {r.info.run_id for r in folds} == {r["fold_run_id"] for r in again.values()}
    assert all(r.data.metrics["val_f1"] > 0 for r in folds)


@pytest.mark.slow
def test_a_bagged_sweep_is_its_own_mlflow_run_and_fold_runs_say_their_configuration(
    tmp_path, sqlite_uri, fault_template
):
    p = prepared(fault_template, tmp_path / "p", sqlite_uri, tiny_params())
    run(p, "sweep")
    p.set_params(tiny_params(["ensemble=bagging", "ensemble.n_estimators=2"]))
    run(p, "sweep")
    from conftest import run_tree

    tree = run_tree(sqlite_uri)
    assert len(tree["sweep"]) == 2  # not the bagged configurations under the plain sweep
    parents = {r.info.run_id: r.info.run_name for r in tree["config"]}
    by_sweep: dict[str, list[str]] = {}
    for r in tree["config"]:
        by_sweep.setdefault(r.data.tags["mlflow.parentRunId"], []).append(r.info.run_name)
    assert sorted(map(sorted, by_sweep.values())) == [
        ["mlp bagging×2 hidden=16 lr=0.01", "mlp bagging×2 hidden=8 lr=0.01"],
        ["mlp hidden=16 lr=0.01", "mlp hidden=8 lr=0.01"],
    ]
    folds = {(parents[r.data.tags["mlflow.parentRunId"]], r.info.run_name) for r in tree["fold"]}
    assert len(folds) == 8
    assert all(name == f"{label} · fold {name[-1]}" for label, name in folds)


@pytest.mark.slow
def test_stacked_and_one_at_a_time_sweeps_give_the_same_results(
    tmp_path, sqlite_uri, fault_template
):
    """The sweep stage end to end: the engine setting changes speed, not results (float64)."""
    extra = ["trainer.precision=64", "sweep.grid.optim.lr=[0.01,0.03]", "model.dropout=0.2"]
    results = {}
    for engine in ("stacked", "one_at_a_time"):
        params = tiny_params([*extra, f"engine={engine}"])
        p = prepared(fault_template, tmp_path / engine, sqlite_uri, params)
        out = run(p, "sweep").out
        stacks = "2 stack(s) of 4" if engine == "stacked" else "8 stack(s) of 1"
        assert f"8 to train in {stacks}" in out
        results[engine] = {
            f.name: json.loads(f.read_text()) for f in (p.path / "results/sweep/jobs").glob("*")
        }
    assert results["stacked"].keys() == results["one_at_a_time"].keys()
    for name, a in results["stacked"].items():
        b = results["one_at_a_time"][name]
        assert a["best_epoch"] == b["best_epoch"] and a["epochs_trained"] == b["epochs_trained"]
        for k, v in a["metrics"].items():
            assert v == pytest.approx(b["metrics"][k], abs=1e-6), (name, k)


@pytest.mark.slow
def test_ctrl_c_keeps_finished_models_closes_the_rest_and_resume_trains_only_those(
    tmp_path, sqlite_uri, fault_template
):
    import signal
    import subprocess
    import sys
    import time

    from mlflow import MlflowClient

    # One stack: the max_epochs=1 models finish (and are recorded) long before the others.
    params = tiny_params(["sweep.grid.model.hidden=[8]", "+sweep.grid.trainer.max_epochs=[1,4000]",
                          "trainer.early_stopping.enabled=false"])  # fmt: skip
    p = prepared(fault_template, tmp_path / "p", sqlite_uri, params)
    jobs = p.path / "results/sweep/jobs"
    proc = subprocess.Popen(  # a process of its own: SIGINT goes to it
        [sys.executable, "pipelines/sweep.py"], cwd=p.path, env=p.env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while len(list(jobs.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted; finished work is kept" in out
    done = {f.name: f.read_text() for f in jobs.glob("*.json")}
    assert len(done) == 2  # the two 1-epoch models
    assert all(json.loads(t)["epochs_trained"] == 1 for t in done.values())
    c = MlflowClient(sqlite_uri)
    session = json.loads((p.path / "results/sweep/session.json").read_text())
    folds = c.search_runs([session["experiment_id"]], "tags.`foldwise.run_type` = 'fold'")
    assert sorted(r.info.status for r in folds) == ["FINISHED", "FINISHED", "KILLED", "KILLED"]
    everything = c.search_runs([session["experiment_id"]])
    assert "RUNNING" not in {r.info.status for r in everything}  # configs and sweep too

    p.set_params(tiny_params(["sweep.grid.model.hidden=[8]", "+sweep.grid.trainer.max_epochs=[1,3]",
                              "trainer.early_stopping.enabled=false"]))  # fmt: skip
    # (a shorter second configuration, so the resumed sweep is quick; the first is unchanged)
    again = run(p, "sweep").out
    assert "2 to train in 1 stack(s) of 2, 2 already done" in again
    assert {n: t for n, t in done.items()} == {
        n: (jobs / n).read_text() for n in done
    }  # finished results untouched
    runs = c.search_runs([session["experiment_id"]], "tags.`foldwise.run_type` = 'fold'")
    assert "RUNNING" not in {r.info.status for r in runs}
    sweeps = c.search_runs([session["experiment_id"]], "tags.`foldwise.run_type` = 'sweep'")
    assert [r.info.status for r in sweeps] == ["FINISHED"]  # the same sweep run, reopened
