"""One job: train a stack of (configuration, fold) tasks in the engine, restore cached
results, and record each model (MLflow fold run, then its result file and cache entry).
"""

from __future__ import annotations

import os
import time
from typing import Any

from omegaconf import DictConfig

from foldwise import params as P
from foldwise.errors import FoldwiseError
from foldwise.files import (
    read_json,
    write_json,
)
from foldwise.fitting.configs import apply, config_hash, engine_settings
from foldwise.fitting.train import dev_inputs, rows_spec
from foldwise.progress import Progress, process_seconds
from foldwise.redact import redact
from foldwise.results import (
    OUTCOME,
    Session,
    is_done,
    job_cache,
    job_path,
    parse_task_name,
    read_result,
    task_name,
)
from foldwise.sweep.estimate import pending_epochs
from foldwise.sweep.launch import parallel_workers

# Every model keeps its validation rows' predictions: exhaustive, holdout and bootstrap
# summaries pool them, and the aggregate derives precision, recall, ROC-AUC (two
# classes) and the pooled confusion matrix from them.
PREDICT = ("val",)


def plan_stacks(
    cfg: DictConfig, layout: P.Layout, configs: list[dict], pending: list[tuple[str, int]]
) -> tuple[list[list[str]], dict[str, Any]]:
    """Group the pending tasks into stacks (see :func:`foldwise.engine.plan`); returns
    the stacks (task names) and, by task name, the engine tasks that train it (itself,
    or an ensemble's members: planned as the models they are, always in one stack)."""
    from foldwise import engine
    from foldwise.ensemble import expand
    from foldwise.fitting.train import make_task

    inputs = dev_inputs(str(layout.root), rows_spec(cfg, layout))
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
    # engine.devices: each parallel worker takes one device (foldwise.sweep.workers)
    settings = {k: v for k, v in engine_settings(cfg).items() if k != "devices"}
    stacks = engine.plan(tasks, inputs.meta, min_stacks=min(workers, len(tasks)), **settings)
    by_parent: dict[str, list[Any]] = {}
    for t in tasks:
        by_parent.setdefault(t.group or t.key, []).append(t)
    parent = lambda t: t.group or t.key  # noqa: E731
    return [list(dict.fromkeys(parent(tasks[i]) for i in s)) for s in stacks], by_parent


_progress: Progress | None = None
# Seconds from this process's start to its first training step (imports, MLflow store,
# planning, Lightning's set-up), measured in its first stack's first epoch and logged
# (``startup_seconds``) with that stack's statistics.
_startup: list[float | None] = []  # [seconds] once measured; [] again once logged
_startup_measured = False


def reset_progress() -> None:
    global _progress
    _progress = None


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
    durable = durable_client(cfg, layout)
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
    from foldwise.fitting.train import make_task

    number = int(cfg.stack)
    session = Session(read_json(layout.sweep_dir / "session.json"))
    names = session.doc["stacks"][number]
    progress = _progress_for(session)
    durable = durable_client(cfg, layout)
    inputs = dev_inputs(str(layout.root), rows_spec(cfg, layout))
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
    opened: set[str] = set()  # ...and those whose tags and params went with it
    recorded: set[str] = set()
    with tracking.Background() as background:

        def open_runs() -> None:  # on the tracking thread, while the stack trains
            if not session.doc.get("fold_runs", True):
                return  # many resamples: one table artifact per configuration at the end
            for t in todo:
                conf, fold, key = where[t.key]
                run, complete = _open_fold_run(durable, session, conf, fold, key, started)
                if run is None:  # MLflow is away: the run is created with its record
                    return
                runs[t.key] = run
                if complete:
                    opened.add(t.key)

        def record(name: str, conf: dict, fold: int, key: str, result: dict) -> None:
            run, early = runs.get(name), name in opened
            results.append(
                _record(durable, session, layout, conf, fold, key, result, run=run, opened=early)
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
            global _startup_measured
            if info.epoch == 1 and not _startup_measured:
                _startup_measured = True
                age = process_seconds()  # the epoch began at the first step
                _startup.append(None if age is None else age - info.seconds)
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
    if _startup and (seconds := _startup.pop()) is not None:
        stats["startup_seconds"] = seconds
    durable.log(session.doc["sweep_run_id"], metrics=stats, step=number)
    return results


_parent: int | None = None  # set in joblib workers: the sweep process they work for


def watch_parent() -> None:
    """In a worker process: stop training if the sweep process that started it dies."""
    global _parent
    _parent = os.getppid()


def durable_client(cfg: DictConfig, layout: P.Layout):
    """The sweep's tracking calls: retried, then queued for later if MLflow is away."""
    from foldwise import tracking
    from foldwise.tracking import pending

    return pending.Durable(tracking.client(cfg), tracking.tracking_uri(cfg), layout.root)


def _score(result: dict) -> str:
    from foldwise.fitting.train import headline

    return headline(result.get("metrics", {})) or result.get("status", "?")


def _fold_tags(session: Session, conf: dict, fold: int, key: str) -> dict[str, Any]:
    from foldwise import tracking

    return {
        **session.doc["common_tags"],
        f"{tracking.TAG}config_hash": conf["hash"],
        f"{tracking.TAG}fold": fold,
        f"{tracking.TAG}job_key": key,
    }


def fold_run_name(conf: dict, fold: int) -> str:
    """``mlp hidden=32 lr=0.001 · fold 3``: a fold run found by search, or shown out of its
    tree (MLflow's compare view, a run page), still says what it trained."""
    return f"{conf['label']} · fold {fold}"


def _fold_params(conf: dict, fold: int) -> dict[str, Any]:
    return {"fold": fold, **conf["overrides"]}


def _open_fold_run(
    durable, session: Session, conf: dict, fold: int, key: str, started: float | None = None
) -> tuple[str | None, bool]:
    """The fold run, opened as its stack starts with everything known before training
    (tags, params, dataset), so that its record at the end is small: in a stack whose
    models all finish at the last epoch, the end of training waits for every record."""
    return durable.open_run(
        session.doc["experiment_id"], fold_run_name(conf, fold), "fold",
        _fold_tags(session, conf, fold, key), conf["run_id"], started,
        session.doc.get("dataset"), _fold_params(conf, fold),
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
    opened: bool = False,
) -> dict:
    """Log a finished model to its MLflow fold run (created here unless ``run`` is given;
    ``opened``: ``run`` already has its fold tags and params, which are not sent again),
    close the run (FINISHED, or FAILED with the error as a tag and in full, traceback and
    all, as the artifact ``error.txt``), then write the result file.

    The result file is written last, so it exists only for a fold whose tracking is
    complete — or queued in ``.foldwise/pending/`` when MLflow is unreachable (see
    :class:`foldwise.tracking.pending.Durable`). A fold run a killed process left open is closed
    as KILLED when the sweep resumes (:func:`foldwise.tracking.kill_orphans`).
    """
    from foldwise import tracking

    if not session.doc.get("fold_runs", True):
        return _write_result(session, layout, conf, fold, key, outcome, None, reused)
    ok = outcome["status"] == "ok"
    known = _fold_tags(session, conf, fold, key)
    tags = dict(known)
    if reused:
        tags[f"{tracking.TAG}reused_from"] = outcome.get("fold_run_id", "")
    error = redact(str(outcome.get("error", "")))
    if not ok:
        tags[f"{tracking.TAG}error"] = (error.splitlines() or ["failed"])[0][:500]
    entry = {
        "experiment_id": session.doc["experiment_id"],
        "parent": conf["run_id"],
        "run_id": run,
        "name": fold_run_name(conf, fold),
        # Each of params, metrics and tags is a transaction of its own in MLflow's SQL store.
        "tags": {k: v for k, v in tags.items() if k not in known} if opened else tags,
        "params": {} if opened else _fold_params(conf, fold),
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
