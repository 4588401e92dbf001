"""Plan a sweep: expand the search space into configurations, adopt or open their MLflow
runs, group the (configuration, fold) tasks still to train into stacks, and write the
session file ``results/sweep/session.json`` every job reads.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from foldwise import params as P
from foldwise.config import space as search_space
from foldwise.config.grid import grid_leaves
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
from foldwise.fitting.configs import (
    apply,
    base_key,
    config_hash,
    expand_grid,
    hyperparameters,
    n_params,
    split_key,
    unique_labels,
)
from foldwise.redact import redact
from foldwise.results import (
    Session,
    is_done,
    job_cache,
    job_key,
    parse_task_name,
    read_result,
    task_name,
)
from foldwise.sweep import study
from foldwise.sweep.estimate import ESTIMATE_FROM, estimate_seconds, is_bound, models_per_task
from foldwise.sweep.jobs import plan_stacks, reset_progress
from foldwise.sweep.launch import submitit_overrides


# ------------------------------------------------------------------------ session
def _warn_if_lockbox_open(layout: P.Layout, test_row_ids: str | None) -> None:
    """Say before training, not after, that the test stage will refuse a new model."""
    from foldwise.lockbox.audit import openings_of_rows

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
    from foldwise.tracking import pending

    reset_progress()  # a new sweep: a new progress line (matters when run in-process)

    for need in (layout.dev_manifest, layout.folds, layout.dev, layout.meta):
        if not need.is_file():
            raise FoldwiseError(f"{need} is missing.", "run the earlier stages: dvc repro split")
    from foldwise.engine import resolve_devices
    from foldwise.sweep.launch import devices_setting

    # GPUs this machine lacks (engine.devices): refused before any run is opened
    resolve_devices(devices_setting(cfg), str(cfg.trainer.accelerator))
    uri = tracking.require(cfg)  # an unreachable tracking server: exit 2 before any work
    manifest = read_json(layout.dev_manifest)
    _warn_if_lockbox_open(layout, manifest.get("test_row_ids"))
    n_folds = int(manifest["n_splits"])
    kind = manifest.get("kind", "folds")
    fold_runs = n_folds <= int(cfg.tracking.get("max_fold_runs", 25))
    from foldwise.engine import VERSION as eng

    skey, code = split_key(manifest), code_version()
    configs, hyper = [], {}
    # sweep=optuna: the study's trials so far (more are asked during the sweep).
    points = (
        study.known_points(cfg, layout) if search_space.enabled(cfg)
        else [(overrides, {}) for overrides in expand_grid(cfg)]
    )  # fmt: skip
    # A grid's labels are made together (the digits that tell its floats apart); Optuna's
    # one trial at a time, as the sweep asks them, so a re-run gives each the same label.
    labels = grid_labels(cfg, [o for o, _ in points]) if not search_space.enabled(cfg) else []
    for i, (overrides, extra) in enumerate(points):
        label = labels[i] if labels else None
        taken = [c["label"] for c in configs]
        conf, h = new_config(cfg, layout, overrides, extra, label=label, taken=taken)
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
    sweep_key = sweep_identity(cfg, skey, code)
    shown_uri = redact(uri)  # what is printed and written: never a password
    c = tracking.client(cfg)
    exp_id = tracking.experiment_id(c, str(cfg.tracking.experiment))
    if pending.pending(layout.root):  # records MLflow missed while it was away
        sent, _, _ = pending.replay(c, uri, layout.root)
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
            tags={f"{tracking.TAG}grid": search_space.space_tag(cfg) if search_space.enabled(cfg)
                  else grid_leaves(cfg),
                  f"{tracking.TAG}n_configs": len(configs)},
        )  # fmt: skip
        for conf in configs:
            run = old_runs.get(conf["hash"])
            if not run:
                run = open_config_run(c, exp_id, sweep_run, common, dataset, conf,
                                      hyper[conf["hash"]])  # fmt: skip
            else:  # its label may have gained digits (a grid that grew): the name follows
                c.update_run(run, status="RUNNING", name=conf["label"])
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
            **study.session_head(cfg, layout),
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


def sweep_identity(cfg: DictConfig, skey: str, code: str) -> str:
    """The key of the MLflow sweep run a sweep reopens: same data, split, fixed
    hyperparameters and ensemble (:func:`base_key`), code and kind of search. A larger grid
    keeps it; an Optuna search is its own sweep run, never a grid's (whose key is as before)."""
    search = {"search": search_space.space_tag(cfg)} if search_space.enabled(cfg) else {}
    return sha256_json({"base": base_key(cfg), "split": skey, "code": code, **search})[:16]


def sweep_name(cfg: DictConfig, manifest: dict, n_configs: int) -> str:
    """What tells this sweep's MLflow run from its neighbours: the data, the resampling
    scheme and its size, the number of configurations (``digits · stratified_kfold k=5 ·
    4 configs``); the start time is MLflow's own column."""
    scheme, n = manifest["scheme"], int(manifest["n_splits"])
    size = f"k={n}" if "fold" in scheme else f"{n} resamples"
    if search_space.enabled(cfg):  # trials are asked as the sweep goes
        grid = f"optuna {int(cfg.sweep.optuna.n_trials)} trials"
    else:
        grid = f"{n_configs} config{'s' * (n_configs != 1)}"
    return f"{cfg.data.name} · {scheme} {size} · {grid}"


def grid_labels(cfg: DictConfig, points: list[dict[str, Any]]) -> list[str]:
    """The labels of a grid's configurations, unique among them (:func:`unique_labels`)."""
    return unique_labels([(apply(cfg, o), o) for o in points])


def new_config(
    cfg: DictConfig,
    layout: P.Layout,
    overrides: dict[str, Any],
    extra: dict | None = None,
    *,
    label: str | None = None,
    taken: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One configuration of the session file (and its hyperparameters, logged as params);
    its label is ``label``, else one that differs from the sweep's ``taken`` labels."""
    full = apply(cfg, overrides)
    P.validate(full, grid=False)  # each point whole (validate checked each value)
    label = label or unique_labels([(full, overrides)], taken)[0]
    conf = {"hash": config_hash(full), "label": label,
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
    t = time.perf_counter()
    stacks, tasks = plan_stacks(cfg, layout, configs, train) if train else ([], {})
    # the jobs read the rows and make the tasks again, each its own
    prepare = time.perf_counter() - t
    rows = head.get("dataset", {}).get("digest", "")  # earlier fits count on the same rows
    estimate = None
    if len(train) >= ESTIMATE_FROM:
        estimate = estimate_seconds(
            cfg, layout, stacks, tasks, head.get("fold_runs", True), data=rows,
            prepare_seconds=prepare,
        )  # fmt: skip
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


def throughput_basis(est: dict) -> str:
    """Where the estimate's pace came from: earlier sweeps here, a probe, or both."""
    earlier, archs = est.get("archs_from_history", 0), est.get("archs", 1)
    measured = "throughput these rows trained at in earlier sweeps here"
    if earlier == archs:
        return measured
    n = est.get("pace_sweeps", 0)
    probed = "probed throughput" + (
        f" × {est['pace']:.2g}, this machine's pace in its last "
        f"{'sweep' if n == 1 else f'{n} sweeps'}"
        if n
        else ""
    )
    return f"{measured} for {earlier} of {archs} architectures, {probed}" if earlier else probed


def busy_note(est: dict) -> str:
    """A probe times the machine's quiet pace: say so when other work wants more cores
    than there are (training then runs slower than estimated; seen 2× at load 5 on 2)."""
    load, cores = est.get("load"), est.get("cores", 1)
    if not load or load <= cores:
        return ""
    return f" · this machine is busy (load {load:.1f} on {cores} cores): expect longer"


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

        n, known = est["models"], est["epochs_from_history"]
        basis = (
            f"epochs from earlier fits on these rows for {known} of {n}, max_epochs for the "
            "rest" if 0 < known < n
            else "epochs from earlier fits on these rows" if known
            else "no earlier fits on these rows: every model to max_epochs"
        )  # fmt: skip
        if est.get("upper_bound"):  # early stopping can only make it shorter
            basis += ", which early stopping shortens"
        if not (est.get("pace_sweeps") or est.get("archs_from_history")):
            basis += "; no earlier sweep here has corrected the probe's pace yet"
        when = (
            f" · estimated training time {'up to ' if is_bound(est) else ''}"
            f"{clock(est['seconds'])} ({throughput_basis(est)}; {basis}){busy_note(est)}"
        )
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
    # sweep=optuna: the sweeper asks the trials (and first runs the planned stacks).
    out = (
        ["hydra/sweeper=foldwise_optuna"] if search_space.enabled(cfg)
        else ["+stack=" + ",".join(str(i) for i in range(n_stacks))]
    )  # fmt: skip
    out.append(f"hydra/launcher={cfg.sweep.launcher}")
    if cfg.sweep.launcher == "joblib":
        out.append(f"hydra.launcher.n_jobs={int(cfg.sweep.n_jobs)}")
    elif cfg.sweep.launcher.startswith("submitit"):
        import torch

        out += submitit_overrides(cfg, torch.cuda.device_count())
    return out
