"""sweep=optuna: the search space, fold-level pruning, the grid's answer on an exhaustive
space, RDB storage (SQLite, PostgreSQL) and resuming (foldwise.sweep.trials + the Hydra sweeper)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from conftest import TINY, make_project, postgres_installed, run_tree
from faultkit import stage
from foldwise import params as P
from foldwise.config.space import distributions
from foldwise.errors import FoldwiseError
from foldwise.sweep import study as sweep_study

# TINY without its grid (sweep=optuna has none) and its 2 folds.
BASE = [t for t in TINY if not t.startswith(("sweep.grid", "split.n_splits"))]


def optuna_params(space: dict, *extra: str, n_splits: int = 2) -> DictConfig:
    from foldwise.compose import compose_params

    cfg = compose_params([*BASE, "sweep=optuna", f"split.n_splits={n_splits}", *extra])
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    cfg.sweep.space = space  # a whole new space (a -S override would merge into conf/'s)
    return cfg


def grid_space(hidden: list, lr: list) -> dict:
    return {"model": {"hidden": {"choices": hidden}}, "optim": {"lr": {"choices": lr}}}


def session(p) -> dict:
    return json.loads((p.path / "results/sweep/session.json").read_text())


def fold_results(p) -> dict[str, dict]:
    return {
        f.name: json.loads(f.read_text()) for f in (p.path / "results/sweep/jobs").glob("*.json")
    }


def study_of(p, storage: str | None = None):
    import optuna

    doc = session(p)["study"]
    url = storage or f"sqlite:///{p.path / '.foldwise/optuna.db'}"
    return optuna.load_study(study_name=doc["name"], storage=url)


# --------------------------------------------------------------------------- unit
def test_space_becomes_optuna_distributions():
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    cfg = optuna_params({
        "optim": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                  "weight_decay": {"type": "float", "low": 0.0, "high": 0.01, "step": 0.005}},
        "model": {"hidden": {"type": "int", "low": 8, "high": 64, "step": 8},
                  "dropout": {"choices": [0.0, 0.5]}},
    })  # fmt: skip
    P.validate(cfg)
    d = distributions(cfg)
    assert d["optim.lr"] == FloatDistribution(1e-4, 0.1, log=True)
    assert d["optim.weight_decay"] == FloatDistribution(0.0, 0.01, step=0.005)
    assert d["model.hidden"] == IntDistribution(8, 64, step=8)
    assert d["model.dropout"] == CategoricalDistribution([0.0, 0.5])
    assert list(d) == ["optim.lr", "optim.weight_decay", "model.hidden", "model.dropout"]
    # conf/sweep/optuna.yaml's own space is valid as shipped
    shipped = optuna_params({})
    shipped.sweep.space = OmegaConf.load(P.repo_root() / "conf/sweep/optuna.yaml").space
    P.validate(shipped)
    assert sweep_study.direction(shipped) == "maximize"  # val_f1
    regression = optuna_params(grid_space([8], [0.01]), "data=diabetes")
    assert sweep_study.direction(regression) == "minimize"


@pytest.mark.parametrize(
    ("space", "says"),
    [
        ({}, "sweep.space is empty"),
        ({"model": {"hiden": {"choices": [8]}}}, "did you mean sweep.space.model.hidden"),
        ({"split": {"n_splits": {"choices": [2, 3]}}}, "the same for every configuration"),
        ({"optim": {"lr": {"type": "float", "low": 0.1, "high": 0.01}}}, "must be below high"),
        ({"optim": {"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, "low > 0"),
        ({"model": {"hidden": {"choices": []}}}, "choices is empty"),
        ({"model": {"hidden": {"choices": [8, 8]}}}, "lists a value twice"),
        ({"model": {"hidden": {"type": "int", "low": 1.5, "high": 9}}}, "numeric low and high"),
        ({"model": {"hidden": {"type": "ints", "low": 1, "high": 9}}}, ".type is 'ints'"),
        ({"model": {"hidden": {"type": "int", "lo": 1, "high": 9}}}, "unknown field"),
        ({"model": {"hidden": 8}}, "not a dimension"),
        ({"optim": {"lr": {"choices": [0.01, -1.0]}}}, "sweep.space.optim.lr value -1.0"),
    ],
)
def test_bad_spaces_are_refused_before_any_work(space, says):
    with pytest.raises(FoldwiseError, match=None) as err:
        P.validate(optuna_params(space))
    assert says in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("sweep.optuna.n_trials=0", "n_trials must be an integer >= 1"),
        ("sweep.optuna.sampler=cmaes", "unknown sweep.optuna.sampler"),
        ("sweep.optuna.pruner=median", "unknown sweep.optuna.pruner"),
        ("sweep.optuna.p_threshold=1.5", "p_threshold must be in (0, 1)"),
        ("sweep.optuna.storage=redis://x", "is not an RDB URL"),
        ("sweep.search=bayes", "unknown sweep.search"),
    ],
)
def test_bad_study_settings_are_refused(extra, says):
    with pytest.raises(FoldwiseError) as err:
        P.validate(optuna_params(grid_space([8], [0.01]), extra))
    assert says in str(err.value), str(err.value)


def test_grid_sampler_needs_choices():
    space = {"optim": {"lr": {"type": "float", "low": 0.001, "high": 0.1}}}
    with pytest.raises(FoldwiseError, match="needs every dimension"):
        P.validate(optuna_params(space, "sweep.optuna.sampler=grid"))


def test_the_sweeper_plugin_is_discovered():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = [s.__name__ for s in Plugins.instance().discover(Sweeper)]
    assert "FoldwiseOptunaSweeper" in names


# ---------------------------------------------------------------------------- e2e
@pytest.mark.slow
def test_pruning_saves_fold_jobs_and_aggregate_never_selects_a_pruned_trial(tmp_path):
    # Two learning rates, one hopeless (1e-6 for 3 epochs: chance-level F1): the Wilcoxon
    # pruner stops its trials after 3 of 5 folds (p = 1/8 < 0.2, one-sided).
    n_folds, n_trials = 5, 6
    space = grid_space([8, 16], [0.03, 1e-6])
    cfg = optuna_params(space, f"sweep.optuna.n_trials={n_trials}",
                        "sweep.optuna.p_threshold=0.2", n_splits=n_folds)  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    p = make_project(tmp_path, uri, cfg)
    out = p.dvc("repro", "aggregate").stdout

    doc, results = session(p), fold_results(p)
    configs = {c["hash"]: c for c in doc["configs"]}
    pruned = {h for h, c in configs.items() if "pruned_after" in c}
    assert pruned, out
    assert all(configs[h]["overrides"]["optim.lr"] == 1e-6 for h in pruned)
    # Fold jobs trained: one result file each. Without pruning every configuration the
    # study tried would have trained all its folds.
    trained = len(results)
    assert trained == sum(c.get("pruned_after", n_folds) for c in configs.values())
    assert trained < len(configs) * n_folds
    saved = len(configs) * n_folds - trained
    assert f"pruning spared {saved} of {len(configs) * n_folds} fold jobs" in out
    assert f"{saved} pruned (not trained)" in out

    study = study_of(p)
    assert len(study.trials) == n_trials
    best = study.best_trial
    best_conf = next(c for c in doc["configs"] if c["trial"] == best.number)
    assert "pruned_after" not in best_conf
    rows = [results[f"{best_conf['hash']}-fold{f}.json"] for f in range(n_folds)]
    assert all(r["status"] == "ok" for r in rows)
    assert best.value == pytest.approx(np.mean([r["metrics"]["val_f1"] for r in rows]))

    # The aggregate: the pruned configurations are incomplete and never selected.
    selection = json.loads((p.path / "results/selection.json").read_text())
    assert selection["config_hash"] == best_conf["hash"]
    labels = {configs[h]["label"] for h in pruned}
    assert set(selection["incomplete"]) == labels
    assert "pruned after 3 of 5 folds" in out
    # MLflow: each trial's configuration run under the sweep run, its folds beneath; a
    # pruned one KILLED with foldwise.pruned.
    tree = run_tree(uri)
    sweep_run = tree["sweep"][0].info.run_id
    by_hash = {r.data.tags["foldwise.config_hash"]: r for r in tree["config"]}
    assert set(by_hash) == set(configs)
    for h, run in by_hash.items():
        assert run.data.tags["mlflow.parentRunId"] == sweep_run
        assert run.info.status == ("KILLED" if h in pruned else "FINISHED")
        assert (run.data.tags.get("foldwise.pruned") == "true") == (h in pruned)
        folds = [r for r in tree["fold"] if r.data.tags["mlflow.parentRunId"] == run.info.run_id]
        assert len(folds) == configs[h].get("pruned_after", n_folds)

    # Re-running the stage: the study has its n_trials, nothing is trained again, and the
    # pruned configurations stay pruned (not "missing" folds to train).
    again = stage(p.path, "sweep", env={"MLFLOW_TRACKING_URI": uri})
    assert again.code == 0, again.out[-3000:] + again.err[-3000:]
    assert "0 to train" in again.out
    assert {k: r["fold_run_id"] for k, r in fold_results(p).items()} == {
        k: r["fold_run_id"] for k, r in results.items()
    }
    assert {c["hash"]: c.get("pruned_after") for c in session(p)["configs"]} == {
        h: c.get("pruned_after") for h, c in configs.items()
    }
    assert len(study_of(p).trials) == n_trials


@pytest.mark.slow
def test_exhaustive_search_finds_the_grids_best(tmp_path):
    # The same two configurations: sweep=grid (TINY's hidden [8, 16] × lr [0.01]) and
    # sweep=optuna with the grid sampler, no pruning, in two independent projects.
    from conftest import tiny_params

    grid = make_project(tmp_path / "grid", f"sqlite:///{tmp_path / 'g.db'}", tiny_params())
    cfg = optuna_params(grid_space([8, 16], [0.01]), "sweep.optuna.sampler=grid",
                        "sweep.optuna.pruner=none", "sweep.optuna.n_trials=10")  # fmt: skip
    opt = make_project(tmp_path / "optuna", f"sqlite:///{tmp_path / 'o.db'}", cfg)
    for p in (grid, opt):
        for name in ("prepare", "split", "sweep", "aggregate"):  # in-process: no startups
            ran = stage(p.path, name, env={"MLFLOW_TRACKING_URI": p.env["MLFLOW_TRACKING_URI"]})
            assert ran.code == 0, ran.out[-3000:] + ran.err[-3000:]
    g = json.loads((grid.path / "results/selection.json").read_text())
    o = json.loads((opt.path / "results/selection.json").read_text())
    study = study_of(opt)  # SQLite in the checkout's .foldwise/ by default
    assert len(study.trials) == 2  # n_trials is capped at the grid's size
    best_conf = next(c for c in session(opt)["configs"] if c["trial"] == study.best_trial.number)
    assert o["config_hash"] == g["config_hash"] == best_conf["hash"]
    assert study.best_value == pytest.approx(g["score"]["mean"], abs=1e-9)
    assert o["score"]["mean"] == pytest.approx(g["score"]["mean"], abs=1e-9)
    # ...and every trial's objective is the grid's CV mean of that configuration
    grid_means = json.loads((grid.path / "results/cv_metrics.json").read_text())["configs"]
    labels = {c["trial"]: c["label"] for c in session(opt)["configs"]}
    for t in study.trials:
        assert t.value == pytest.approx(grid_means[labels[t.number]]["val_f1"]["mean"], abs=1e-9)
    assert {c["hash"] for c in session(opt)["configs"]} == {
        c["hash"] for c in session(grid)["configs"]
    }


@pytest.mark.slow
@pytest.mark.skipif(
    not postgres_installed() and os.environ.get("CI") is None,
    reason="PostgreSQL's server programs are not installed (.ci/run installs them on CI)",
)
def test_postgresql_storage_and_resume(tmp_path, monkeypatch):
    import optuna
    from optuna.trial import TrialState

    from foldwise.tracking.server import DB_NAME, DB_USER, postgres

    folder = Path(tempfile.mkdtemp(prefix="foldwise-pg-"))  # the postgres user can enter it
    with postgres(folder) as cluster:
        url = f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{cluster.port}/{DB_NAME}"
        space = grid_space([8, 12, 16], [0.01])
        cfg = optuna_params(space, "sweep.optuna.sampler=grid", "sweep.optuna.n_trials=2",
                            f"sweep.optuna.storage={url}")  # fmt: skip
        p = make_project(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", cfg)
        monkeypatch.setenv("PGPASSFILE", str(cluster.passfile))  # libpq reads the password
        p.env["PGPASSFILE"] = str(cluster.passfile)
        env = {"MLFLOW_TRACKING_URI": p.env["MLFLOW_TRACKING_URI"]}
        for name in ("prepare", "split", "sweep"):  # in-process: no startups
            ran = stage(p.path, name, env=env)
            assert ran.code == 0, ran.out[-3000:] + ran.err[-3000:]
        assert not (p.path / ".foldwise/optuna.db").exists()  # nothing fell back to SQLite
        study = study_of(p, url)
        first = [(t.number, t.params, t.value) for t in study.trials]
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
        with cluster.connect() as conn, conn.cursor() as cur:  # stored in PostgreSQL itself
            cur.execute("select count(*) from trials")
            assert cur.fetchone()[0] == 2
        runs_before = {k: r["fold_run_id"] for k, r in fold_results(p).items()}
        assert len(runs_before) == 4

        # A sweep killed mid-trial left the third configuration RUNNING, its process gone.
        (untried,) = {8, 12, 16} - {params["model.hidden"] for _, params, _ in first}
        study.enqueue_trial({"model.hidden": untried, "optim.lr": 0.01})
        left = study.ask(distributions(cfg))
        left.set_user_attr(sweep_study.CHECKOUT, sweep_study.checkout_id(P.Layout(p.path)))
        left.set_user_attr(sweep_study.OWNER, f"{socket.gethostname()}:{2**22 + 12345}")
        # Re-run with one more trial: the study goes on, the two finished trials are kept
        # (their folds not trained again), the killed one failed and asked again.
        cfg.sweep.optuna.n_trials = 3
        p.set_params(cfg)
        ran = stage(p.path, "sweep", env=env)
        assert ran.code == 0, ran.out[-3000:] + ran.err[-3000:]
        out = ran.out
        trials = optuna.load_study(study_name=study.study_name, storage=url).trials
        assert [(t.number, t.params, t.value) for t in trials[:2]] == first
        assert trials[2].state == TrialState.FAIL and trials[2].user_attrs[sweep_study.INTERRUPTED]
        assert len(trials) == 4 and trials[3].state == TrialState.COMPLETE
        assert trials[3].params == {"model.hidden": untried, "optim.lr": 0.01}
        assert trials[3].system_attrs["fixed_params"] == trials[2].params  # asked again
        assert "asked again" in out
        after = fold_results(p)
        assert len(after) == 6 and len(session(p)["configs"]) == 3
        assert {k: after[k]["fold_run_id"] for k in runs_before} == runs_before
