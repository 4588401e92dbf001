"""The cross-validation sweep: plan, per-(configuration, fold) job, and wrap-up.

Hydra does the sweeping: :func:`hydra_overrides` turns ``sweep.grid`` and the fold
count into multirun overrides (``model.hidden=32,128 optim.lr=0.001,0.01
+fold=0,1,2,3,4``); Hydra's basic sweeper takes their cartesian product and the
configured Hydra launcher runs one :func:`run_job` per (configuration, fold).

The contract between the pieces is the session file ``results/sweep/session.json``
written by :func:`begin` (the plan, the MLflow run ids) and one result file per job
under ``results/sweep/jobs/``. A job needs nothing else, so it behaves the same
whether it shares a process with 19 others (basic launcher), runs in a joblib
worker, or on a SLURM node.

A job whose result file exists with the same *job key* — a hash of the
configuration, the fold, the split and foldwise's own code — is skipped, so an
interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import time
import traceback
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from foldwise import params as P
from foldwise.data import Meta
from foldwise.errors import FoldwiseError
from foldwise.files import (
    code_version,
    flatten,
    git_commit,
    read_json,
    sha256_file,
    sha256_json,
    write_json,
)
from foldwise.results import (
    OUTCOME,
    Session,
    collect,
    is_done,
    job_cache,
    job_key,
    job_path,
    read_result,
)
from foldwise.split import Fold, load_folds

# Keys whose values define a configuration (and so its hash). Data and split enter
# through the split key; sweep/selection/lockbox/tracking don't change a fit.
HYPER_KEYS = ("model", "optim", "trainer", "seed")


# --------------------------------------------------------------------------- plan
def expand_grid(cfg: DictConfig) -> list[dict[str, Any]]:
    """All configurations of ``sweep.grid``, in the order Hydra's basic sweeper runs them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    axes: list[tuple[str, list[Any]]] = []
    for key, values in P.grid_leaves(cfg).items():
        if isinstance(values, str):  # Hydra sweep syntax: range(...), choice(...), a,b
            override = parser.parse_override(f"{key}={values}")
            vals = (
                list(override.sweep_iterator())
                if override.is_sweep_override()
                else [override.value()]
            )
        else:
            vals = list(values)
        axes.append((key, vals))
    keys = [k for k, _ in axes]
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))
    ]


def _render(value: Any) -> str:
    """A value in Hydra's override grammar (floats keep full precision)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_overrides(cfg: DictConfig, n_folds: int) -> list[str]:
    """Multirun overrides for Hydra's basic sweeper: the grid axes, then the fold axis."""
    out = []
    for key, values in P.grid_leaves(cfg).items():
        out.append(
            f"{key}={values}"
            if isinstance(values, str)
            else f"{key}={','.join(_render(v) for v in values)}"
        )
    out.append("+fold=" + ",".join(str(i) for i in range(n_folds)))
    return out


def apply(cfg: DictConfig, overrides: dict[str, Any]) -> DictConfig:
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key, value in overrides.items():
        OmegaConf.update(out, key, value, force_add=False)
    return out


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The part of a config that defines a fit (:data:`HYPER_KEYS`), as plain containers."""
    return {
        k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig)
        else cfg[k]
        for k in HYPER_KEYS
    }  # fmt: skip


def config_hash(cfg: DictConfig) -> str:
    """Identity of a configuration: every hyperparameter that can change a fit."""
    return sha256_json(hyperparameters(cfg))[:12]


def config_label(cfg: DictConfig, overrides: dict[str, Any]) -> str:
    """``mlp hidden=32 lr=0.001``: the model, then the swept values (last key part)."""
    parts = [] if "model.name" in overrides else [str(cfg.model.name)]
    return " ".join(parts + [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in overrides.items()])


def split_key(manifest: dict) -> str:
    """What a fold result depends on from the split: the dev rows and the folds."""
    return sha256_json({"dev": manifest["dev_sha256"], "folds": manifest["folds_sha256"]})[:16]


def base_key(cfg: DictConfig) -> str:
    """The sweep's identity apart from the grid: extending the grid keeps the parent run."""
    return sha256_json(
        {
            k: OmegaConf.to_container(cfg, resolve=True).get(k)
            for k in ("data", "split", *HYPER_KEYS)
        }
    )[:16]


# ------------------------------------------------------------------------ session
def _warn_if_lockbox_open(layout: P.Layout, test_sha256: str) -> None:
    """Say before training, not after, that the test stage will refuse a new model."""
    from foldwise.audit import openings

    seen = openings(layout.root, test_sha256)
    if seen:
        last = seen[-1]
        print(
            f"[foldwise] note: this test set was already opened ({len(seen)} look(s); last: "
            f"{last['label']}, model {last['model_sha256'][:12]}). Unless this sweep selects "
            "that same model again, `dvc repro` will stop at the test stage. To explore "
            "without touching the lockbox, stop at aggregate: "
            "`dvc exp run aggregate -S ...`.",
            flush=True,
        )


def begin(cfg: DictConfig, layout: P.Layout) -> Session:
    """Plan the sweep, open (or reopen) its MLflow runs, and write the session file."""
    from foldwise import tracking

    for need in (layout.manifest, layout.folds, layout.dev, layout.meta):
        if not need.is_file():
            raise FoldwiseError(f"{need} is missing.", "run the earlier stages: dvc repro split")
    manifest = read_json(layout.manifest)
    _warn_if_lockbox_open(layout, manifest["test_sha256"])
    n_folds = int(manifest["n_splits"])
    skey, code = split_key(manifest), code_version()
    configs, hyper = [], {}
    for overrides in expand_grid(cfg):
        full = apply(cfg, overrides)
        P.validate(full)
        h = config_hash(full)
        hyper[h] = hyperparameters(full)
        configs.append({"hash": h, "label": config_label(full, overrides), "overrides": overrides})
    if len({c["hash"] for c in configs}) != len(configs):
        raise FoldwiseError(
            "sweep.grid lists the same configuration twice.",
            "remove duplicate values from sweep.grid.",
        )

    sweep_dir = layout.sweep_dir
    old = read_json(sweep_dir / "session.json") if (sweep_dir / "session.json").is_file() else {}
    sweep_key = sha256_json({"base": base_key(cfg), "split": skey, "code": code})[:16]
    uri = tracking.tracking_uri(cfg)
    c = tracking.client(cfg)
    exp_id = tracking.experiment_id(c, str(cfg.tracking.experiment))
    commit = git_commit(layout.root)
    common = {
        f"{tracking.TAG}split_manifest": sha256_file(layout.manifest)[:16],
        f"{tracking.TAG}git_commit": commit,
        "mlflow.source.git.commit": commit.removesuffix("+dirty"),
    }
    reuse = (
        old.get("sweep_key") == sweep_key
        and old.get("tracking_uri") == uri
        and tracking.run_exists(c, old.get("sweep_run_id"))
    )
    if reuse:
        sweep_run = old["sweep_run_id"]
        c.update_run(sweep_run, status="RUNNING")
        old_runs = {x["hash"]: x["run_id"] for x in old.get("configs", [])}
        tracking.kill_orphans(c, exp_id, set(old_runs.values()))
    else:
        sweep_run = tracking.start_run(
            c,
            exp_id,
            f"sweep {cfg.data.name} {cfg.model.name} {dt.datetime.now():%Y-%m-%d %H:%M}",
            "sweep",
            {**common, f"{tracking.TAG}sweep_key": sweep_key},
        )
        tracking.log(
            c,
            sweep_run,
            params={
                "data": cfg.data.name,
                "split.scheme": cfg.split.scheme,
                "split.n_splits": n_folds,
                "split.test_fraction": cfg.split.test_fraction,
                "seed": cfg.seed,
            },
        )
        old_runs = {}
    # Tags, not params: extending the grid reuses this run, and params are immutable.
    tracking.log(
        c,
        sweep_run,
        tags={f"{tracking.TAG}grid": P.grid_leaves(cfg), f"{tracking.TAG}n_configs": len(configs)},
    )
    for conf in configs:
        run = old_runs.get(conf["hash"])
        if not run:
            run = tracking.start_run(
                c,
                exp_id,
                conf["label"],
                "config",
                {**common, f"{tracking.TAG}config_hash": conf["hash"]},
                parent=sweep_run,
            )
            tracking.log(c, run, params=flatten(hyper[conf["hash"]]))
        else:
            c.update_run(run, status="RUNNING")
        conf["run_id"] = run
    pending = [
        (conf["hash"], f)
        for conf in configs
        for f in range(n_folds)
        if not is_done(
            read_result(sweep_dir, conf["hash"], f), job_key(conf["hash"], f, skey, code)
        )
    ]
    doc = {
        "sweep_key": sweep_key,
        "split_key": skey,
        "code": code,
        "git_commit": commit,
        "tracking_uri": uri,
        "experiment_id": exp_id,
        "sweep_run_id": sweep_run,
        "n_folds": n_folds,
        "configs": configs,
        "common_tags": common,
        "started": time.time(),
        "pending": [f"{h}-fold{f}" for h, f in pending],
    }
    write_json(sweep_dir / "session.json", doc)
    return Session(doc)


# ---------------------------------------------------------------------------- job
@functools.lru_cache(maxsize=2)
def _inputs(root: str) -> tuple[pd.DataFrame, dict[int, Fold], Meta]:
    """Dev rows, folds and metadata, read once per process however many jobs it runs."""
    layout = P.Layout(Path(root))
    dev = pd.read_parquet(layout.dev).set_index("row_id", drop=False)
    folds = {f.index: f for f in load_folds(read_json(layout.folds))}
    return dev, folds, Meta.from_dict(read_json(layout.meta))


# Durations of the jobs this process has run: the ETA's basis. The first fit of a
# process pays one-off warm-up, so it is left out once there are others.
_durations: list[float] = []


def _progress(session: Session, name: str, label: str, fold: int) -> None:
    """The sweep-level line: job i of N, configuration, fold, elapsed, ETA."""
    pending = session.doc["pending"]
    pos = pending.index(name) if name in pending else 0
    elapsed = time.time() - session.doc["started"]
    typical = _durations[1:] or _durations
    eta = sum(typical) / len(typical) * (len(pending) - pos) if typical else float("nan")
    fmt = lambda s: "--:--" if s != s else f"{int(s) // 60}:{int(s) % 60:02d}"  # noqa: E731
    total, done_before = session.n_jobs, session.n_jobs - len(pending)
    print(
        f"[foldwise] job {done_before + pos + 1}/{total} · {label} · fold {fold} · "
        f"elapsed {fmt(elapsed)} · ETA {fmt(eta)}",
        flush=True,
    )


def run_job(cfg: DictConfig, layout: P.Layout) -> dict:
    """Train and score one (configuration, fold); never raises for a failed fit.

    A failure is recorded in the result file (``status: failed``) and in MLflow
    (run status FAILED), so the other jobs of the sweep carry on.
    """
    from foldwise import tracking

    fold = int(cfg.fold)
    session = Session(read_json(layout.sweep_dir / "session.json"))
    cfg_hash = config_hash(cfg)
    conf = session.config(cfg_hash)
    if conf is None:
        raise FoldwiseError(
            f"job configuration {cfg_hash} is not in the sweep plan.",
            "change the search space through params.yaml (sweep.grid), not on the command line.",
        )
    key = job_key(cfg_hash, fold, session.doc["split_key"], session.doc["code"])
    path = job_path(layout.sweep_dir, cfg_hash, fold)
    if is_done(read_result(layout.sweep_dir, cfg_hash, fold), key):
        print(f"[foldwise] skip {conf['label']} · fold {fold}: result exists", flush=True)
        return read_json(path)
    _progress(session, f"{cfg_hash}-fold{fold}", conf["label"], fold)
    from foldwise.train import fit  # torch + Lightning: only once there is a fit to do

    result: dict[str, Any] = {
        "job_key": key,
        "config_hash": cfg_hash,
        "label": conf["label"],
        "overrides": conf["overrides"],
        "fold": fold,
        "sweep_run_id": session.doc["sweep_run_id"],
        "config_run_id": conf["run_id"],
    }
    c = tracking.client(cfg)
    run = tracking.start_run(
        c,
        session.doc["experiment_id"],
        f"fold {fold}",
        "fold",
        {
            **session.doc["common_tags"],
            f"{tracking.TAG}config_hash": cfg_hash,
            f"{tracking.TAG}fold": fold,
            f"{tracking.TAG}job_key": key,
        },
        parent=conf["run_id"],
    )
    result["fold_run_id"] = run
    t0 = time.perf_counter()
    cache = job_cache(layout.root, key)
    try:
        cached = read_json(cache) if cache.is_file() else None
        if cached is not None:  # same inputs, same code: the fit would give this again
            outcome = {k: cached[k] for k in OUTCOME}
            tracking.log(c, run, tags={f"{tracking.TAG}reused_from": cached["fold_run_id"]})
            print(f"[foldwise] reuse {conf['label']} · fold {fold}: identical job found in "
                  ".foldwise/jobs/, no training", flush=True)  # fmt: skip
        else:
            dev, folds, meta = _inputs(str(layout.root))
            f = folds[fold]
            _, res = fit(cfg, meta, dev.loc[f.train], dev.loc[f.val])
            outcome = {
                "status": "ok",
                "metrics": res.metrics,
                "history": res.history,
                "best_epoch": res.best_epoch,
                "epochs_trained": res.epochs_trained,
                "n_train": res.n_train,
                "n_val": res.n_val,
            }
        result |= outcome
        tracking.log(
            c,
            run,
            params={"fold": fold, **conf["overrides"]},
            metrics={
                **outcome["metrics"],
                "best_epoch": outcome["best_epoch"],
                "epochs_trained": outcome["epochs_trained"],
            },
            history=outcome["history"],
            history_prefix="epoch/",
        )
        status = "FINISHED"
    except Exception as err:  # isolate the failure: record it, let the sweep go on
        result |= {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
        tracking.log(c, run, tags={f"{tracking.TAG}error": result["error"][:5000]})
        status = "FAILED"
        print(f"[foldwise] FAILED {conf['label']} · fold {fold}: {result['error']}", flush=True)
    except BaseException:  # Ctrl-C, SystemExit: no result file, so a re-run redoes this job
        c.set_terminated(run, "KILLED")
        raise
    result["duration_s"] = round(time.perf_counter() - t0, 3)
    _durations.append(result["duration_s"])
    c.set_terminated(run, status)
    write_json(path, result)
    if status == "FINISHED" and not cache.is_file():
        write_json(cache, result)
    return result


# ------------------------------------------------------------------------- finish
def finish(cfg: DictConfig, layout: P.Layout) -> dict[str, int]:
    """Close the MLflow runs, drop result files not in this plan, count outcomes."""
    from foldwise import tracking

    session = Session(read_json(layout.sweep_dir / "session.json"))
    results = collect(session, layout.sweep_dir)
    keep = {
        job_path(layout.sweep_dir, h, f).name
        for h in results
        for f in range(session.doc["n_folds"])
    }
    for stale in (layout.sweep_dir / "jobs").glob("*.json"):
        if stale.name not in keep:
            stale.unlink()
    counts = {"ok": 0, "failed": 0, "missing": 0}
    c = tracking.client(cfg)
    for conf in session.configs:
        rows = results[conf["hash"]]
        states = ["missing" if r is None else r["status"] for r in rows]
        for s in states:
            counts[s] += 1
        c.set_terminated(conf["run_id"], "FINISHED" if set(states) == {"ok"} else "FAILED")
    counts["total"] = session.n_jobs
    tracking.log(
        c,
        session.doc["sweep_run_id"],
        metrics={
            "jobs_ok": counts["ok"],
            "jobs_failed": counts["failed"],
            "jobs_missing": counts["missing"],
            "sweep_seconds": time.time() - session.doc["started"],
        },
    )
    ok = counts["ok"] == counts["total"]
    c.set_terminated(session.doc["sweep_run_id"], "FINISHED" if ok else "FAILED")
    return counts
