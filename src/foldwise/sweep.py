"""The cross-validation sweep: plan, stacks of (configuration, fold) tasks, and wrap-up.

:func:`begin` expands ``sweep.grid`` (Hydra's override grammar: lists, ``range(...)``,
``choice(...)``) into configurations, opens their MLflow runs, and groups the
(configuration, fold) tasks that still need training into *stacks*: tasks that share
an architecture train together as one stacked model in the many-models engine
(:mod:`foldwise.engine`). Hydra then launches one job per stack (``+stack=0,1,...``)
with the configured launcher (basic: one process; joblib: parallel workers;
submitit_local / submitit_slurm: a process / a SLURM array task per stack, see
:mod:`foldwise.workers`), and each job calls :func:`run_stack`.

The contract between the pieces is the session file ``results/sweep/session.json``
written by :func:`begin` (the plan, the stacks, the MLflow run ids) and one result
file per (configuration, fold) under ``results/sweep/jobs/``. A result whose *job key*
— a hash of the configuration, the fold, the split and foldwise's own code — matches
is skipped, so an interrupted sweep resumes where it stopped; a model's result does
not depend on which stack, process or machine trained it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
    remove_stale_temp,
    sha256_file,
    sha256_json,
    write_json,
)
from foldwise.progress import Progress
from foldwise.redact import redact
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
from foldwise.split import load_folds
from foldwise.workers import parallel_workers, submitit_overrides

# Keys whose values define a configuration (and so its hash). Data and split enter
# through the split key; sweep/selection/lockbox/tracking don't change a fit.
HYPER_KEYS = ("model", "optim", "trainer", "seed")


# --------------------------------------------------------------------------- plan
def expand_grid(cfg: DictConfig) -> list[dict[str, Any]]:
    """All configurations of ``sweep.grid``: the cartesian product of each grid (last key
    fastest), grid after grid for a list of grids (:func:`foldwise.params.grids`)."""
    out = []
    for leaves in P.grids(cfg):
        axes = [(key, P.axis_values(key, values)) for key, values in leaves.items()]
        keys = [k for k, _ in axes]
        out += [dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*(v for _, v in axes))]  # fmt: skip
    return out


def apply(cfg: DictConfig, overrides: dict[str, Any]) -> DictConfig:
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key, value in overrides.items():
        OmegaConf.update(out, key, value, force_add=False)
    return out


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The part of a config that defines a fit (:data:`HYPER_KEYS`, and the ensemble when
    there is one: a single model's hash is the same as before ensembles existed)."""
    out = {
        k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig)
        else cfg[k]
        for k in HYPER_KEYS
    }  # fmt: skip
    from foldwise.ensemble import spec

    ens = spec(cfg)
    if ens is not None:
        out["ensemble"] = ens
    return out


def config_hash(cfg: DictConfig) -> str:
    """Identity of a configuration: every hyperparameter that can change a fit."""
    return sha256_json(hyperparameters(cfg))[:12]


def n_params(cfg: DictConfig, layout: P.Layout) -> int:
    """The network's parameter count: the complexity order of ``selection=one_se``."""
    from foldwise.data import Meta
    from foldwise.models import build_backbone

    meta = Meta.from_dict(read_json(layout.meta))
    return int(sum(p.numel() for p in build_backbone(cfg.model, meta).parameters()))


def config_label(cfg: DictConfig, overrides: dict[str, Any]) -> str:
    """``mlp hidden=32 lr=0.001``: the model, then the swept values (last key part)."""
    parts = [] if "model.name" in overrides else [str(cfg.model.name)]
    short = lambda k: "ensemble" if k == "ensemble.name" else k.rsplit(".", 1)[-1]  # noqa: E731
    return " ".join(parts + [f"{short(k)}={v}" for k, v in overrides.items()])


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
def _warn_if_lockbox_open(layout: P.Layout, test_row_ids: str | None) -> None:
    """Say before training, not after, that the test stage will refuse a new model."""
    from foldwise.audit import openings_of_rows

    seen = openings_of_rows(layout.root, test_row_ids) if test_row_ids else []
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

    global _progress
    _progress = None  # a new sweep: a new progress line (matters when run in-process)

    for need in (layout.dev_manifest, layout.folds, layout.dev, layout.meta):
        if not need.is_file():
            raise FoldwiseError(f"{need} is missing.", "run the earlier stages: dvc repro split")
    uri = tracking.require(cfg)  # an unreachable tracking server: exit 2 before any work
    manifest = read_json(layout.dev_manifest)
    _warn_if_lockbox_open(layout, manifest.get("test_row_ids"))
    n_folds = int(manifest["n_splits"])
    kind = manifest.get("kind", "folds")
    fold_runs = n_folds <= int(cfg.tracking.get("max_fold_runs", 25))
    from foldwise.engine import VERSION as eng

    skey, code = split_key(manifest), code_version()
    configs, hyper = [], {}
    from foldwise import search

    # sweep=optuna: the study's trials so far (more are asked during the sweep).
    points = (
        search.known_points(cfg, layout) if search.enabled(cfg)
        else [(overrides, {}) for overrides in expand_grid(cfg)]
    )  # fmt: skip
    for overrides, extra in points:
        conf, h = new_config(cfg, layout, overrides, extra)
        hyper[conf["hash"]] = h
        configs.append(conf)
    if len({c["hash"] for c in configs}) != len(configs):
        raise FoldwiseError(
            "sweep.grid lists the same configuration twice.",
            "remove duplicate values from sweep.grid.",
        )

    sweep_dir = layout.sweep_dir
    for folder in (sweep_dir, sweep_dir / "jobs"):  # left by a writer killed mid-write
        if folder.is_dir():
            remove_stale_temp(folder)
    old = read_json(sweep_dir / "session.json") if (sweep_dir / "session.json").is_file() else {}
    sweep_key = sha256_json({"base": base_key(cfg), "split": skey, "code": code})[:16]
    shown_uri = redact(uri)  # what is printed and written: never a password
    c = tracking.client(cfg)
    exp_id = tracking.experiment_id(c, str(cfg.tracking.experiment))
    if tracking.pending(layout.root):  # records MLflow missed while it was away
        sent, _, _ = tracking.replay(c, uri, layout.root)
        if sent:
            print(f"[foldwise] sent MLflow {sent} record(s) kept while it was unreachable",
                  flush=True)  # fmt: skip
    commit = git_commit(layout.root)
    common = {
        f"{tracking.TAG}split_manifest": sha256_file(layout.dev_manifest)[:16],
        f"{tracking.TAG}git_commit": commit,
        "mlflow.source.git.commit": commit.removesuffix("+dirty"),
    }
    # What every cross-validation run sees: the dev rows (MLflow's Dataset column).
    dataset = {"name": f"{cfg.data.name} dev", "digest": manifest["dev_sha256"][:12],
               "rows": int(manifest["n_dev"]), "context": "cross-validation",
               "manifest": "data/split/dev_manifest.json"}  # fmt: skip
    sweep_run = _known_sweep(c, exp_id, layout, old, sweep_key, shown_uri)
    name = sweep_name(cfg, manifest, len(configs))
    opened: list[str] = []  # runs set RUNNING here: closed as KILLED if begin does not finish
    try:
        if sweep_run:  # the same sweep again (maybe a larger grid): its name says the new size
            c.update_run(sweep_run, status="RUNNING", name=name)
            opened.append(sweep_run)
            old_runs, all_runs = _adopt_configs(c, exp_id, sweep_run, old)
        else:
            # The claim is on disk before the run exists: a process killed in between
            # leaves a run the next one finds by its claim tag, not an orphan.
            claim = _remember_sweep(layout, sweep_key, shown_uri, None)
            sweep_run = tracking.start_run(
                c,
                exp_id,
                name,
                "sweep",
                {**common, f"{tracking.TAG}sweep_key": sweep_key, f"{tracking.TAG}claim": claim},
            )
            opened.append(sweep_run)
            _remember_sweep(layout, sweep_key, shown_uri, sweep_run)
            tracking.log_dataset(c, sweep_run, dataset)
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
            old_runs, all_runs = {}, set()
        # Tags, not params: extending the grid reuses this run, and params are immutable.
        tracking.log(
            c,
            sweep_run,
            tags={f"{tracking.TAG}grid": search.space_tag(cfg) if search.enabled(cfg)
                  else P.grid_leaves(cfg),
                  f"{tracking.TAG}n_configs": len(configs)},
        )  # fmt: skip
        for conf in configs:
            run = old_runs.get(conf["hash"])
            if not run:
                run = open_config_run(c, exp_id, sweep_run, common, dataset, conf,
                                      hyper[conf["hash"]])  # fmt: skip
            else:
                c.update_run(run, status="RUNNING")
            opened.append(run)
            conf["run_id"] = run
        head = {
            "sweep_key": sweep_key,
            "split_key": skey,
            "code": code,
            "engine": eng,
            "git_commit": commit,
            "tracking_uri": shown_uri,
            "experiment_id": exp_id,
            "sweep_run_id": sweep_run,
            "n_folds": n_folds,
            "scheme": manifest["scheme"],
            "kind": kind,
            "dataset": dataset,
            "n_dev": int(manifest["n_dev"]),
            "fold_runs": fold_runs,
            "common_tags": common,
            **search.session_head(cfg, layout),
        }
        session = _plan(cfg, layout, configs, head)
        if all_runs:  # fold runs a dead process left open under this sweep's configurations
            to_train = set(session.doc["pending"]) - set(session.doc["cached"])
            unrecorded = {job_key(h, f, skey, code, eng) for h, f in map(parse_task_name, to_train)}
            tracking.kill_orphans(c, exp_id, all_runs | set(old_runs.values()), unrecorded)
        return session
    except BaseException:  # Ctrl-C, SIGTERM, an error: leave nothing RUNNING behind
        for run in opened:
            with contextlib.suppress(Exception):
                c.set_terminated(run, "KILLED")
        raise


def sweep_name(cfg: DictConfig, manifest: dict, n_configs: int) -> str:
    """What tells this sweep's MLflow run from its neighbours: the data, the resampling
    scheme and its size, the number of configurations (``digits · stratified_kfold k=5 ·
    4 configs``); the start time is MLflow's own column."""
    scheme, n = manifest["scheme"], int(manifest["n_splits"])
    size = f"k={n}" if "fold" in scheme else f"{n} resamples"
    from foldwise import search

    if search.enabled(cfg):  # trials are asked as the sweep goes
        grid = f"optuna {int(cfg.sweep.optuna.n_trials)} trials"
    else:
        grid = f"{n_configs} config{'s' * (n_configs != 1)}"
    return f"{cfg.data.name} · {scheme} {size} · {grid}"


def new_config(
    cfg: DictConfig, layout: P.Layout, overrides: dict[str, Any], extra: dict | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One configuration of the session file (and its hyperparameters, logged as params)."""
    full = apply(cfg, overrides)
    P.validate(full, grid=False)  # each point whole (validate checked each value)
    conf = {"hash": config_hash(full), "label": config_label(full, overrides),
            "overrides": overrides, "n_params": n_params(full, layout),
            "max_epochs": int(full.trainer.max_epochs), "models": models_per_task(full),
            **(extra or {})}  # fmt: skip
    return conf, hyperparameters(full)


def open_config_run(
    c, exp_id: str, sweep_run: str, common: dict, dataset: dict, conf: dict, hyper: dict
) -> str:
    """A configuration's MLflow run under the sweep run: its hyperparameters as params."""
    from foldwise import tracking

    run = tracking.start_run(
        c, exp_id, conf["label"], "config", {**common, f"{tracking.TAG}config_hash": conf["hash"]},
        parent=sweep_run,
    )  # fmt: skip
    tracking.log(c, run, params=flatten(hyper))
    tracking.log_dataset(c, run, dataset)
    return run


def _remember_sweep(layout: P.Layout, sweep_key: str, uri: str, run_id: str | None) -> str | None:
    """Record this checkout's sweep run for ``sweep_key`` outside DVC's outputs.

    ``results/sweep/session.json`` is a DVC output: ``dvc exp run`` (and ``dvc checkout``)
    put back the committed one, which may predate an interrupted sweep; this record in
    ``.foldwise/`` (git-ignored, shared with ``dvc exp`` temporary copies) survives that,
    so a re-run reopens the same sweep run instead of starting a twin. Without a run id,
    a *claim* (returned) that the sweep run about to be created carries as a tag.
    """
    import uuid

    path = sweeps_index(layout.root)
    known = read_json(path) if path.is_file() else {}
    entry = {"sweep_key": sweep_key, "tracking_uri": uri, "run_id": run_id}
    entry["claim"] = uuid.uuid4().hex if run_id is None else None
    known[sha256_json([sweep_key, uri])[:16]] = entry
    write_json(path, known)
    return entry["claim"]


def sweeps_index(root: Path) -> Path:
    from foldwise.files import shared_root

    return shared_root(root) / ".foldwise" / "sweeps.json"


def _known_sweep(
    c, exp_id: str, layout: P.Layout, old: dict, sweep_key: str, uri: str
) -> str | None:
    """The sweep run to reopen: this checkout's last one for the same data, split and code
    (and tracking store), if MLflow still has it; else None (a new sweep run)."""
    from foldwise import tracking

    path = sweeps_index(layout.root)
    known = read_json(path) if path.is_file() else {}
    entry = known.get(sha256_json([sweep_key, uri])[:16], {})
    mine = entry.get("run_id")
    if not mine and entry.get("claim"):  # killed between claiming and creating the run
        found = c.search_runs(
            [exp_id], filter_string=f"tags.`{tracking.TAG}claim` = '{entry['claim']}'"
        )
        mine = found[0].info.run_id if found else None
    from_session = (
        old.get("sweep_run_id")
        if old.get("sweep_key") == sweep_key and redact(old.get("tracking_uri", "")) == uri
        else None
    )
    for run in dict.fromkeys(r for r in (mine, from_session) if r):
        if tracking.run_exists(c, run):
            if run != entry.get("run_id"):
                _remember_sweep(layout, sweep_key, uri, run)
            return run
    return None


def _adopt_configs(c, exp_id: str, sweep_run: str, old: dict) -> tuple[dict[str, str], set[str]]:
    """The configuration runs already under ``sweep_run``, one per configuration hash
    (MLflow is the record: a run created by a process killed before it wrote the session
    file is found too); twins an older foldwise made are closed, not reused. Returns
    (hash → run id, every configuration run id under the sweep)."""
    from foldwise import tracking

    prefer = (
        {x["hash"]: x["run_id"] for x in old.get("configs", [])}
        if old.get("sweep_run_id") == sweep_run
        else {}
    )
    by_hash: dict[str, list] = {}
    for r in tracking.children(c, exp_id, sweep_run, "config"):
        by_hash.setdefault(r.data.tags.get(f"{tracking.TAG}config_hash"), []).append(r)
    out = {}
    for h, runs in by_hash.items():
        ids = [r.info.run_id for r in runs]
        out[h] = prefer[h] if prefer.get(h) in ids else ids[0]
        for r in runs:
            if r.info.run_id != out[h] and r.info.status == "RUNNING":
                c.set_terminated(r.info.run_id, "KILLED")
    return out, {r.info.run_id for runs in by_hash.values() for r in runs}


def _plan(cfg: DictConfig, layout: P.Layout, configs: list[dict], head: dict) -> Session:
    """What is left to train, in stacks; writes and returns the session file (``head``:
    the sweep's identity and MLflow ids, the top of the file)."""
    sweep_dir, key = layout.sweep_dir, Session(head).job_key
    n_folds = head["n_folds"]
    pending = [
        (conf["hash"], f)
        for conf in configs
        for f in range(conf.get("pruned_after", n_folds))  # a pruned trial: the folds it ran
        if not is_done(read_result(sweep_dir, conf["hash"], f), key(conf["hash"], f))
    ]
    # Finished elsewhere (another experiment, an earlier grid): restored, not trained.
    cached = [(h, f) for h, f in pending if job_cache(layout.root, key(h, f)).is_file()]
    train = [t for t in pending if t not in cached]
    stacks, tasks = plan_stacks(cfg, layout, configs, train) if train else ([], {})
    estimate = estimate_seconds(cfg, layout, stacks, tasks) if len(train) >= ESTIMATE_FROM else None
    doc = {
        **head,
        "classes": read_json(layout.meta)["classes"],
        "task": read_json(layout.meta).get("task", "classification"),
        "apparent": next(
            (
                int(f["fold"])
                for f in read_json(layout.folds)["folds"]
                if f.get("role") == "apparent"
            ),
            None,
        ),
        "configs": configs,
        "started": time.time(),
        "pending": [task_name(h, f) for h, f in pending],
        "cached": [task_name(h, f) for h, f in cached],
        "stacks": stacks,
        "estimate": estimate,
    }
    write_json(sweep_dir / "session.json", doc)
    return Session(doc)


def describe(session: Session) -> str:
    """The line the sweep starts with: what will be trained, in how many stacks, where logged."""
    stacks, cached = session.doc["stacks"], len(session.doc["cached"])
    todo = sum(len(s) for s in stacks)
    done = session.n_jobs - len(session.doc["pending"]) + cached  # finished, here or elsewhere
    sizes = "/".join(map(str, sorted({len(s) for s in stacks}, reverse=True))) or "0"
    est = session.doc.get("estimate")
    when = ""
    if est:
        from foldwise.progress import clock

        basis = (
            f"epochs from {est['epochs_from_history']} earlier fits"
            if est["epochs_from_history"] == est["models"]
            else "max_epochs, an upper bound" if not est["epochs_from_history"]
            else f"epochs from earlier fits for {est['epochs_from_history']} of {est['models']}"
        )  # fmt: skip
        when = f" · estimated training time {clock(est['seconds'])} (probed throughput; {basis})"
    tracked = (
        "one MLflow run per resample"
        if session.doc.get("fold_runs", True)
        else "resamples as a table artifact per configuration"
    )
    return (
        f"[foldwise] sweep: {len(session.configs)} configurations × {session.doc['n_folds']} "
        f"resamples ({session.doc.get('scheme', 'folds')}) = {session.n_jobs} models: {todo} "
        f"to train in {len(stacks)} stack(s) of {sizes}, {done} already done"
        f"{f' ({cached} of them restored from .foldwise/jobs)' if cached else ''}"
        f" · MLflow run {session.doc['sweep_run_id']} at "
        f"{session.doc['tracking_uri']} ({tracked}){when}"
    )


def launch_overrides(cfg: DictConfig, n_stacks: int) -> list[str]:
    """Hydra multirun overrides: one job per stack, on the configured launcher."""
    from foldwise import search

    # sweep=optuna: the sweeper asks the trials (and first runs the planned stacks).
    out = (
        ["hydra/sweeper=foldwise_optuna"] if search.enabled(cfg)
        else ["+stack=" + ",".join(str(i) for i in range(n_stacks))]
    )  # fmt: skip
    out.append(f"hydra/launcher={cfg.sweep.launcher}")
    if cfg.sweep.launcher == "joblib":
        out.append(f"hydra.launcher.n_jobs={int(cfg.sweep.n_jobs)}")
    elif cfg.sweep.launcher.startswith("submitit"):
        import torch

        out += submitit_overrides(cfg, torch.cuda.device_count())
    return out


# ---------------------------------------------------------------------------- job
def task_name(cfg_hash: str, fold: int) -> str:
    return f"{cfg_hash}-fold{fold}"


def parse_task_name(name: str) -> tuple[str, int]:
    cfg_hash, fold = name.rsplit("-fold", 1)
    return cfg_hash, int(fold)


@dataclass
class Inputs:
    """Dev rows as engine arrays, and each fold's rows as positions into them."""

    x: np.ndarray
    y: np.ndarray
    folds: dict[int, tuple[np.ndarray, np.ndarray]]
    meta: Meta
    row_ids: np.ndarray  # dev row id at each position


@functools.lru_cache(maxsize=2)
def _inputs(root: str) -> Inputs:
    """Read once per process however many stacks it runs."""
    from foldwise.train import arrays

    layout = P.Layout(Path(root))
    dev = pd.read_parquet(layout.dev).set_index("row_id", drop=False)
    pos = lambda ids: dev.index.get_indexer(ids)  # noqa: E731
    folds = {f.index: (pos(f.train), pos(f.val)) for f in load_folds(read_json(layout.folds))}
    x, y = arrays(dev)
    return Inputs(x, y, folds, Meta.from_dict(read_json(layout.meta)),
                  dev["row_id"].to_numpy())  # fmt: skip


# Every model keeps its validation rows' predictions: exhaustive, holdout and bootstrap
# summaries pool them, and the aggregate derives precision, recall, ROC-AUC (two
# classes) and the pooled confusion matrix from them.
PREDICT = ("val",)


def engine_settings(cfg: DictConfig) -> dict[str, Any]:
    from foldwise.engine import device_for

    e = cfg.engine
    cpu_params = e.get("cpu_stack_params")
    on_cpu = device_for(str(cfg.trainer.accelerator)) == "cpu"
    return {
        "max_models": 1 if not e.stack else (int(e.max_models) if e.max_models else None),
        "memory_mb": float(e.memory_mb),
        "max_params": int(cpu_params) if cpu_params and on_cpu else None,
        "precision": int(cfg.trainer.precision),
    }


def plan_stacks(
    cfg: DictConfig, layout: P.Layout, configs: list[dict], pending: list[tuple[str, int]]
) -> tuple[list[list[str]], dict[str, Any]]:
    """Group the pending tasks into stacks (see :func:`foldwise.engine.plan`); returns
    the stacks (task names) and, by task name, the engine tasks that train it (itself,
    or an ensemble's members: planned as the models they are, always in one stack)."""
    from foldwise import engine
    from foldwise.ensemble import expand
    from foldwise.train import make_task

    inputs = _inputs(str(layout.root))
    by_hash = {c["hash"]: c for c in configs}
    full_cfgs: dict[str, DictConfig] = {}  # composing a config is ~10 ms: once per config
    tasks = []
    for h, f in pending:
        if h not in full_cfgs:
            full_cfgs[h] = apply(cfg, by_hash[h]["overrides"])
        full = full_cfgs[h]
        tr, va = inputs.folds[f]
        tasks += expand(make_task(full, task_name(h, f), tr, {"val": va}))
    workers = parallel_workers(cfg)
    stacks = engine.plan(
        tasks, inputs.meta, min_stacks=min(workers, len(tasks)), **engine_settings(cfg)
    )
    by_parent: dict[str, list[Any]] = {}
    for t in tasks:
        by_parent.setdefault(t.group or t.key, []).append(t)
    parent = lambda t: t.group or t.key  # noqa: E731
    return [list(dict.fromkeys(parent(tasks[i]) for i in s)) for s in stacks], by_parent


# Plans with at least this many models to train get a time estimate before training.
ESTIMATE_FROM = 100
PROBE_MODELS = 1024


def epochs_index(root: Path) -> Path:
    """Mean epochs trained per configuration hash, from earlier sweeps on this checkout."""
    from foldwise.files import shared_root

    return shared_root(root) / ".foldwise" / "epochs.json"


def estimate_seconds(
    cfg: DictConfig, layout: P.Layout, stacks: list[list[str]], tasks: dict[str, Any]
) -> dict[str, Any]:
    """Training time of the plan from a probe of each architecture on this machine.

    See :mod:`foldwise.engine.estimate`. Epochs per model: the mean of earlier fits of
    the same configuration (early stopping), else ``max_epochs`` (an upper bound).
    """
    from foldwise.engine.estimate import probe, steps_per_epoch

    inputs = _inputs(str(layout.root))
    known = read_json(epochs_index(layout.root)) if epochs_index(layout.root).is_file() else {}
    probes, total, measured, models = {}, 0.0, 0, 0
    for names in stacks:
        ts = [t for n in names for t in tasks[n]]
        arch = ts[0].arch()
        if arch not in probes:
            probes[arch] = probe(
                ts[:PROBE_MODELS], inputs.x, inputs.y, inputs.meta,
                accelerator=str(cfg.trainer.accelerator), precision=int(cfg.trainer.precision),
            )  # fmt: skip
        epochs = []
        for t in ts:
            h = parse_task_name(t.group or t.key)[0]
            if h in known and t.hyper.early_stopping:
                epochs.append(known[h]["mean"])
                measured += 1
            else:
                epochs.append(t.hyper.max_epochs)
        steps = float(np.mean([steps_per_epoch(t) for t in ts]))
        total += probes[arch].stack_seconds(len(ts), steps, float(np.mean(epochs)))
        models += len(ts)
    return {
        "seconds": total,
        "models": models,
        "epochs_from_history": measured,
        "probes": [
            {
                "models": p.models,
                "step_seconds": p.step_seconds,
                "epoch_end_seconds": p.epoch_end_seconds,
                "setup_seconds": p.setup_seconds,
            }
            for p in probes.values()
        ],
    }


def record_epochs(layout: P.Layout, results: dict[str, list[dict | None]]) -> None:
    """Remember each configuration's mean epochs trained, for the next plan's estimate."""
    path = epochs_index(layout.root)
    known = read_json(path) if path.is_file() else {}
    for h, rows in results.items():
        e = [r["epochs_trained"] for r in rows if r and r.get("status") == "ok"]
        if e:
            known[h] = {"mean": float(np.mean(e)), "n": len(e)}
    write_json(path, known)


_progress: Progress | None = None


def _progress_for(session: Session) -> Progress:
    """One progress line for the whole sweep, kept across the stacks a process runs."""
    global _progress
    if _progress is None or _progress.total != session.n_jobs:
        from foldwise.progress import default_every

        done = session.n_jobs - len(session.doc["pending"]) + len(session.doc["cached"])
        _progress = Progress(total=session.n_jobs, done=done, every=default_every())
    return _progress


def restore_cached(cfg: DictConfig, layout: P.Layout) -> int:
    """Record the models whose identical result is in ``.foldwise/jobs/``, without training.

    Each gets its own MLflow fold run (tagged ``foldwise.reused_from``) and result file —
    unless it was trained under this very configuration run (a sweep whose result files
    ``dvc exp run`` or ``dvc checkout`` put back to older ones): its fold run is then
    still the record, and only the result file is written again.
    """
    session = Session(read_json(layout.sweep_dir / "session.json"))
    durable = _durable(cfg, layout)
    for name in session.doc["cached"]:
        cfg_hash, fold = parse_task_name(name)
        conf = session.config(cfg_hash)
        key = session.job_key(cfg_hash, fold)
        cached = read_json(job_cache(layout.root, key))
        if cached.get("config_run_id") == conf["run_id"] and _finished(durable, cached):
            _write_result(session, layout, conf, fold, key, cached, cached["fold_run_id"], False)
            where = f"its MLflow fold run {cached['fold_run_id']} stays the record"
        else:
            _record(durable, session, layout, conf, fold, key, cached, reused=True)
            where = "identical model found in .foldwise/jobs/"
        print(f"[foldwise] reuse {conf['label']} · fold {fold}: {where}, no training",
              flush=True)  # fmt: skip
    return len(session.doc["cached"])


def _finished(durable, result: dict) -> bool:
    """Whether the result's fold run exists and is FINISHED (False when unknown)."""
    run = result.get("fold_run_id")
    try:
        return bool(run) and durable.c.get_run(run).info.status == "FINISHED"
    except Exception:
        return False


def run_stack(cfg: DictConfig, layout: P.Layout) -> list[dict]:
    """Train one stack of the plan; every finished model is recorded at once.

    A failed model (non-finite loss, an error in its configuration) is recorded as
    failed (result file and MLflow status) and the rest of its stack trains on.
    """
    from foldwise import engine, ensemble, tracking
    from foldwise.train import make_task

    number = int(cfg.stack)
    session = Session(read_json(layout.sweep_dir / "session.json"))
    names = session.doc["stacks"][number]
    progress = _progress_for(session)
    durable = _durable(cfg, layout)
    inputs = _inputs(str(layout.root))
    todo, results = [], []
    where: dict[str, tuple[dict, int, str]] = {}
    full_cfgs: dict[str, DictConfig] = {}
    for name in names:
        cfg_hash, fold = parse_task_name(name)
        conf = session.config(cfg_hash)
        if cfg_hash not in full_cfgs:
            full_cfgs[cfg_hash] = apply(cfg, conf["overrides"])
            if config_hash(full_cfgs[cfg_hash]) != cfg_hash:
                raise FoldwiseError(
                    f"configuration {cfg_hash} is not what params.yaml now gives.",
                    "params.yaml changed during the sweep; re-run `dvc repro`.",
                )
        full = full_cfgs[cfg_hash]
        key = session.job_key(cfg_hash, fold)
        if is_done(read_result(layout.sweep_dir, cfg_hash, fold), key):
            progress.skipped()
            continue
        tr, va = inputs.folds[fold]
        todo.append(make_task(full, name, tr, {"val": va}, label=conf["label"], predict=PREDICT))
        where[name] = (conf, fold, key)
    if not todo:
        return results
    started = time.time()
    n_stacks = len(session.doc["stacks"])
    progress.pending_epochs = pending_epochs(cfg, session, number)
    t0, busy0 = time.perf_counter(), tracking.busy_seconds()
    runs: dict[str, str] = {}  # task name -> its MLflow fold run, created as the stack starts
    recorded: set[str] = set()
    with tracking.Background() as background:

        def open_runs() -> None:  # on the tracking thread, while the stack trains
            if not session.doc.get("fold_runs", True):
                return  # many resamples: one table artifact per configuration at the end
            for t in todo:
                conf, fold, key = where[t.key]
                run = _open_fold_run(durable, session, conf, fold, key, started)
                if run is None:  # MLflow is away: the run is created with its record
                    return
                runs[t.key] = run

        def record(name: str, conf: dict, fold: int, key: str, result: dict) -> None:
            results.append(
                _record(durable, session, layout, conf, fold, key, result, run=runs.get(name))
            )
            recorded.add(name)

        def done(task: engine.Task, outcome: engine.Outcome) -> None:
            conf, fold, key = where[task.key]
            result = outcome.result()
            for name, pred in result.get("predictions", {}).items():
                rows = task.evals[name]  # positions → the row ids and labels they score
                pred["row"] = inputs.row_ids[rows].tolist()
                pred["true"] = inputs.y[rows].tolist()
            if outcome.status == "ok":
                progress.finished(conf["label"], fold, _score(result))
            else:
                progress.skipped()
                print(f"[foldwise] FAILED {conf['label']} · fold {fold}: {outcome.error}",
                      flush=True)  # fmt: skip
            background.submit(record, task.key, conf, fold, key, result)

        def epoch(_stack: int, info: engine.EpochInfo) -> None:
            if _parent is not None and os.getppid() != _parent:
                # A joblib worker whose sweep process was killed: stop, as on Ctrl-C (its
                # unfinished runs are closed), instead of training for nobody.
                raise KeyboardInterrupt("the sweep process is gone")
            progress.epoch(
                number, n_stacks, info.epoch, info.max_epochs, info.work_epochs, info.seconds,
                info.remaining, info.active,
            )  # fmt: skip

        def close_unfinished() -> None:
            for name, run in runs.items():
                if name not in recorded:
                    durable.terminate(run, "KILLED")

        background.submit(open_runs)
        try:
            ensemble.train(
                todo,
                inputs.x,
                inputs.y,
                inputs.meta,
                accelerator=str(cfg.trainer.accelerator),
                precision=engine_settings(cfg)["precision"],
                stacks=[list(range(len(todo)))],
                on_done=done,
                on_epoch=epoch,
            )
        except BaseException:  # Ctrl-C, SIGTERM: finished models are kept, the rest KILLED
            background.submit(close_unfinished)
            raise
    stats = {
        "stack_models": len(todo),
        "stack_seconds": time.perf_counter() - t0,
        "stack_tracking_seconds": tracking.busy_seconds() - busy0,
        "stack_tracking_wait_seconds": background.waited,
    }
    durable.log(session.doc["sweep_run_id"], metrics=stats, step=number)
    return results


_parent: int | None = None  # set in joblib workers: the sweep process they work for


def watch_parent() -> None:
    """In a worker process: stop training if the sweep process that started it dies."""
    global _parent
    _parent = os.getppid()


def models_per_task(full: DictConfig) -> int:
    """Models one (configuration, resample) trains: 1, or an ensemble's members."""
    from foldwise.ensemble import spec

    ens = spec(full)
    return int(ens.get("n_estimators", 1)) if ens else 1


def pending_epochs(cfg: DictConfig, session: Session, number: int) -> int:
    """Model-epochs of the stacks after ``number``, at most (each model to its own
    configuration's ``max_epochs``, an ensemble's members each): the rest of the ETA.
    Parallel workers share them."""
    later = [
        conf["max_epochs"] * conf.get("models", 1)
        for stack in session.doc["stacks"][number + 1 :]
        for conf in (session.config(parse_task_name(name)[0]) for name in stack)
    ]
    workers = parallel_workers(cfg)
    return int(sum(later) / max(1, workers))


def _durable(cfg: DictConfig, layout: P.Layout):
    """The sweep's tracking calls: retried, then queued for later if MLflow is away."""
    from foldwise import tracking

    return tracking.Durable(tracking.client(cfg), tracking.tracking_uri(cfg), layout.root)


def _score(result: dict) -> str:
    from foldwise.train import headline

    return headline(result.get("metrics", {})) or result.get("status", "?")


def _fold_tags(session: Session, conf: dict, fold: int, key: str) -> dict[str, Any]:
    from foldwise import tracking

    return {
        **session.doc["common_tags"],
        f"{tracking.TAG}config_hash": conf["hash"],
        f"{tracking.TAG}fold": fold,
        f"{tracking.TAG}job_key": key,
    }


def _open_fold_run(
    durable, session: Session, conf: dict, fold: int, key: str, started: float | None = None
) -> str | None:
    return durable.open_run(
        session.doc["experiment_id"], f"fold {fold}", "fold",
        _fold_tags(session, conf, fold, key), conf["run_id"], started,
        session.doc.get("dataset"),
    )  # fmt: skip


def _record(
    durable,
    session: Session,
    layout: P.Layout,
    conf: dict,
    fold: int,
    key: str,
    outcome: dict,
    *,
    reused: bool = False,
    run: str | None = None,
) -> dict:
    """Log a finished model to its MLflow fold run (created here unless ``run`` is given),
    close the run (FINISHED, or FAILED with the error as a tag and in full, traceback and
    all, as the artifact ``error.txt``), then write the result file.

    The result file is written last, so it exists only for a fold whose tracking is
    complete — or queued in ``.foldwise/pending/`` when MLflow is unreachable (see
    :class:`foldwise.tracking.Durable`). A fold run a killed process left open is closed
    as KILLED when the sweep resumes (:func:`foldwise.tracking.kill_orphans`).
    """
    from foldwise import tracking

    if not session.doc.get("fold_runs", True):
        return _write_result(session, layout, conf, fold, key, outcome, None, reused)
    ok = outcome["status"] == "ok"
    tags = _fold_tags(session, conf, fold, key)
    if reused:
        tags[f"{tracking.TAG}reused_from"] = outcome.get("fold_run_id", "")
    error = redact(str(outcome.get("error", "")))
    if not ok:
        tags[f"{tracking.TAG}error"] = (error.splitlines() or ["failed"])[0][:500]
    entry = {
        "experiment_id": session.doc["experiment_id"],
        "parent": conf["run_id"],
        "run_id": run,
        "name": f"fold {fold}",
        "tags": tags,
        "params": {"fold": fold, **conf["overrides"]},
        "metrics": {
            **outcome.get("metrics", {}),
            "best_epoch": outcome.get("best_epoch", 0),
            "epochs_trained": outcome.get("epochs_trained", 0),
        }
        if ok
        else {},
        "history": outcome.get("history") if ok else None,
        "history_prefix": "epoch/",
        "artifacts": {} if ok else {"error.txt": error + "\n"},
        "status": "FINISHED" if ok else "FAILED",
        "dataset": session.doc.get("dataset"),
    }
    durable.record(entry)
    return _write_result(session, layout, conf, fold, key, outcome, entry["run_id"], reused)


def _write_result(
    session: Session,
    layout: P.Layout,
    conf: dict,
    fold: int,
    key: str,
    outcome: dict,
    run: str | None,
    reused: bool,
) -> dict:
    """The result file (and the job cache): written last, once tracking is complete."""
    cfg_hash, ok = conf["hash"], outcome["status"] == "ok"
    result = {
        "job_key": key,
        "config_hash": cfg_hash,
        "label": conf["label"],
        "overrides": conf["overrides"],
        "fold": fold,
        "sweep_run_id": session.doc["sweep_run_id"],
        "config_run_id": conf["run_id"],
        "fold_run_id": run,
        "engine_version": session.doc["engine"],
        **{k: outcome[k] for k in OUTCOME if k in outcome},
    }
    if "error" in outcome:
        result["error"] = outcome["error"]
    write_json(job_path(layout.sweep_dir, cfg_hash, fold), result)
    cache = job_cache(layout.root, key)
    if ok and not reused and not cache.is_file():
        write_json(cache, result)
    return result


# ------------------------------------------------------------------------- finish
def resample_table(rows: list[dict | None]) -> pd.DataFrame:
    """One row per resample: status, final metrics, epochs (what a fold run would hold)."""
    out = []
    for i, r in enumerate(rows):
        row: dict[str, Any] = {"resample": i, "status": "missing" if r is None else r["status"]}
        if r is not None:
            row.update(r.get("metrics", {}))
            for k in ("best_epoch", "epochs_trained", "n_train", "n_val", "error"):
                if k in r:
                    row[k] = r[k]
        out.append(row)
    return pd.DataFrame(out)


def _log_resample_table(durable, conf: dict, rows: list[dict | None]) -> None:
    """Many resamples: one CSV artifact on the configuration run instead of many runs."""
    durable.artifact(
        conf["run_id"], f"resamples/{conf['hash']}.csv", resample_table(rows).to_csv(index=False)
    )


def abort(cfg: DictConfig, layout: P.Layout, status: str = "KILLED") -> None:
    """After Ctrl-C (KILLED) or an error (FAILED): close the sweep's configuration runs
    and the sweep run.

    (Fold runs of unfinished models are closed by :func:`run_stack`.) A re-run reopens
    the same runs and trains only what is missing.
    """
    session = Session(read_json(layout.sweep_dir / "session.json"))
    durable = _durable(cfg, layout)
    for conf in session.configs:
        durable.terminate(conf["run_id"], status)
    durable.terminate(session.doc["sweep_run_id"], status)


def train(cfg: DictConfig, layout: P.Layout, session: Session, launch) -> bool:
    """Restore cached models, then ``launch()`` the stacks (Hydra's multirun).

    Ctrl-C or SIGTERM: the runs are closed as KILLED and the interrupt goes on (the
    stage says how to resume). A stack that failed as a whole, or a worker process that
    died: the runs are closed as FAILED, the error is printed, and False is returned (a
    full disk or an unwritable folder is raised instead, for the stage to name the file).
    """
    import sys
    import traceback

    from foldwise.errors import DISK_ERRORS

    # A stack's error reaches us as itself (not as Hydra's exit 1), to be reported below.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        restore_cached(cfg, layout)
        if session.doc["stacks"] or session.doc.get("search") == "optuna":
            launch()
    except KeyboardInterrupt:  # finished models are kept
        abort(cfg, layout, "KILLED")
        raise
    except Exception as err:
        abort(cfg, layout, "FAILED")
        if isinstance(err, OSError) and err.errno in DISK_ERRORS:
            raise
        traceback.print_exc()
        print(
            f"foldwise: the sweep stopped: {type(err).__name__}: {err}\n  Finished models "
            "are kept (results/sweep/jobs); re-run to train only the others.",
            file=sys.stderr,
        )
        return False
    return True


def wrap_up(cfg: DictConfig, layout: P.Layout, session: Session, trained: float) -> int:
    """Close the sweep (:func:`finish`), say how it went; the stage's exit status
    (1 when more models failed or are missing than ``sweep.max_failures`` allows)."""
    import sys

    from foldwise.progress import clock

    counts = finish(cfg, layout, trained)
    print(
        f"[foldwise] sweep done: {counts['ok']} ok, {counts['failed']} failed, "
        + (f"{counts['pruned']} pruned (not trained), " if counts.get("pruned") else "")
        + f"{counts['missing']} missing of {counts['total']} models · training "
        f"{clock(trained)}{estimate_note(session)}",
        flush=True,
    )
    note = pending_note(counts, session.doc["tracking_uri"])
    if note:
        print(note, file=sys.stderr, flush=True)
    bad_jobs = counts["failed"] + counts["missing"]
    if bad_jobs > int(cfg.sweep.max_failures):
        print(
            f"[foldwise] {bad_jobs} models did not finish (sweep.max_failures="
            f"{cfg.sweep.max_failures}); re-run to retry only those.",
            file=sys.stderr,
        )
        return 1
    return 0


def estimate_note(session: Session) -> str:
    est = session.doc.get("estimate")
    if not est:
        return ""
    from foldwise.progress import clock

    return f" (estimated {clock(est['seconds'])} before training)"


def finish(cfg: DictConfig, layout: P.Layout, trained: float | None = None) -> dict[str, int]:
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
    record_epochs(layout, results)
    counts = {"ok": 0, "failed": 0, "missing": 0, "pruned": 0}
    durable = _durable(cfg, layout)
    for conf in session.configs:
        rows = results[conf["hash"]]
        # A pruned trial's folds after pruned_after were never meant to train.
        cut = conf.get("pruned_after", len(rows))
        states = ["pruned" if i >= cut else "missing" if r is None else r["status"]
                  for i, r in enumerate(rows)]  # fmt: skip
        for s in states:
            counts[s] += 1
        if not session.doc.get("fold_runs", True):
            _log_resample_table(durable, conf, rows)
        if "pruned" in states:  # see foldwise.search: KILLED, tagged foldwise.pruned
            durable.log(conf["run_id"], tags={f"{tracking.TAG}pruned": "true"})
            durable.terminate(conf["run_id"], "KILLED")
            continue
        durable.terminate(conf["run_id"], "FINISHED" if set(states) == {"ok"} else "FAILED")
    counts["total"] = session.n_jobs
    durable.log(
        session.doc["sweep_run_id"],
        metrics={
            "jobs_ok": counts["ok"],
            "jobs_failed": counts["failed"],
            "jobs_missing": counts["missing"],
            **({"jobs_pruned": counts["pruned"]} if counts["pruned"] else {}),
            "sweep_seconds": time.time() - session.doc["started"],
            # this process's time in MLflow calls (with the basic launcher: all of it;
            # joblib workers report theirs per stack as stack_tracking_seconds)
            "tracking_seconds": tracking.busy_seconds(),
            # ...and the part of it the sweep waited for (the rest overlapped training)
            "tracking_blocking_seconds": tracking.blocking_seconds(),
            **({"training_seconds": trained} if trained is not None else {}),
            **(
                {"estimated_training_seconds": session.doc["estimate"]["seconds"]}
                if session.doc.get("estimate")
                else {}
            ),
        },
    )
    ok = counts["ok"] + counts["pruned"] == counts["total"]
    durable.terminate(session.doc["sweep_run_id"], "FINISHED" if ok else "FAILED")
    counts["pending"] = len(tracking.pending(layout.root))
    return counts


def pending_note(counts: dict[str, int], session_uri: str) -> str:
    """What to do about tracking records MLflow did not take (empty when none)."""
    from foldwise import tracking

    n = counts.get("pending", 0)
    if not n:
        return ""
    why = f" ({tracking.Durable.last_error})" if tracking.Durable.last_error else ""
    return (
        f"[foldwise] MLflow at {session_uri} was unreachable{why}: every result is on disk, "
        f"and {n} tracking record(s) wait in .foldwise/pending/. Once it is back, run "
        "`python -m foldwise.sync` (or any later sweep) to send them."
    )
