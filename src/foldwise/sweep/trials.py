"""Bayesian search (``sweep=optuna``): Optuna's ask-and-tell loop over the sweep's machinery.

The grid sweep (:mod:`foldwise.sweep.plan`) knows its configurations before it starts; a
search asks them one batch at a time. Hydra's sweeper plugin
(``hydra_plugins/foldwise_optuna_sweeper``) drives :func:`drive`: ask a batch of trials
(``sweep.space`` as Optuna distributions), add each as a configuration of the session
file with its MLflow run under the sweep run, launch one job per trial (``+trial=N``)
through the configured launcher, tell Optuna each trial's outcome. A trial's job
(:func:`run_trial`) trains its folds in order, ``sweep.optuna.folds_per_step`` at a time,
each a stack of :func:`foldwise.sweep.jobs.run_stack` (so result files, job keys and MLflow
fold runs are the grid's), reports each fold's score, and stops when the pruner says the
configuration is clearly worse than the best one (:class:`optuna.pruners.WilcoxonPruner`:
a one-sided signed-rank test of the paired fold scores).

A pruned trial's configuration is *incomplete* (its later folds are never trained): the
session file says ``pruned_after`` (folds run), the aggregate lists it as pruned and never
selects it, and its MLflow configuration run ends KILLED with the tag ``foldwise.pruned``.

The study lives in an RDB storage (``sweep.optuna.storage``: SQLite under ``.foldwise/``
by default, outside DVC's outputs; a ``postgresql://`` URI to share one study between
machines). Its name is derived from the sweep's identity (data, split, base
hyperparameters, code, search space, metric), so re-running the stage continues the same
study up to ``n_trials`` in all: finished trials are kept (and their result files reused),
and a trial a killed process left RUNNING on this checkout is failed and asked again.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, open_dict

from foldwise import params as P
from foldwise.config.space import distributions
from foldwise.files import read_json, write_json
from foldwise.results import parse_task_name, task_name
from foldwise.sweep import jobs, plan
from foldwise.sweep.study import (
    CHECKOUT,
    INTERRUPTED,
    OWNER,
    checkout_id,
    metric,
    open_study,
    ordered,
)


# ---------------------------------------------------------------------------- drive
def _alive(owner: str) -> bool:
    host, _, pid = owner.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's: only it knows
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_stale(study, me: str) -> int:
    """Trials this checkout left RUNNING in a process that is gone (a kill): failed, and
    their configurations queued to be asked again first."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get(CHECKOUT) == me and not _alive(t.user_attrs.get(OWNER, "")):
            _interrupted(study, t)
            n += 1
    return n


def _interrupted(study, t) -> None:
    from optuna.trial import TrialState

    study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
    study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    # Not skip_if_exists: the failed trial itself has these params. Once only, though.
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if t.params and all(w.system_attrs.get("fixed_params") != t.params for w in waiting):
        study.enqueue_trial(t.params)


def _counted(study, me: str) -> int:
    """Trials that count towards ``n_trials``: finished ones (all machines'), and running
    ones of other processes; not those failed by an interruption (asked again)."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False):
        finished = t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED)
        )
        if finished or (t.state == TrialState.RUNNING and t.user_attrs.get(OWNER) != _owner()):
            n += 1
    return n


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _batch_size(cfg: DictConfig) -> int:
    """Trials asked at once: one per parallel worker (joblib, submitit: a SLURM array)."""
    from foldwise.sweep.launch import parallel_workers

    return parallel_workers(cfg)


def drive(cfg: DictConfig, layout: P.Layout, launch: Callable[[list[list[str]]], list]) -> None:
    """The ask-and-tell loop (the sweeper's ``sweep()``): first the stacks
    :func:`foldwise.sweep.plan.begin` planned (missing folds of known trials), then batches of
    new trials, one job each, until the study has ``n_trials``. ``launch`` runs a list of
    jobs' overrides and returns their results (Hydra's ``JobReturn`` or plain values)."""
    from foldwise.results import Session

    path = layout.sweep_dir / "session.json"
    session = Session(read_json(path))
    if session.doc["stacks"]:
        for ret in launch([[f"+stack={i}"] for i in range(len(session.doc["stacks"]))]):
            _value(ret)  # a stack's error stops the sweep (finish.train reports it)
    study = open_study(cfg, layout)
    me = checkout_id(layout)
    if _fail_stale(study, me):
        print("[foldwise] optuna: trials a killed sweep left running are asked again", flush=True)
    dists = distributions(cfg)
    n_trials = int(cfg.sweep.optuna.n_trials)
    if str(cfg.sweep.optuna.get("sampler")) == "grid":
        n_trials = min(n_trials, math.prod(len(d.choices) for d in dists.values()))
    saved = 0
    while (left := n_trials - _counted(study, me)) > 0:
        asked, jobs, told = [], [], []
        try:
            for _ in range(min(_batch_size(cfg), left)):
                trial = study.ask(dists)
                trial.set_user_attr(CHECKOUT, me)
                trial.set_user_attr(OWNER, _owner())
                asked.append(trial)
                conf = _add_trial(cfg, layout, session, trial)
                if conf.get("trial") == trial.number:
                    jobs.append(trial)
            write_json(path, session.doc)
            results = launch([[f"+trial={t.number}"] for t in jobs]) if jobs else []
            outcome = {t.number: _value(r) for t, r in zip(jobs, results, strict=True)}
            for trial in asked:
                conf = _conf_of(session, trial)
                out = outcome.get(conf["trial"]) or _outcome(session, layout, conf, cfg)
                conf.update(_tell(study, trial, conf, out))
                told.append(trial)
                saved += _report(session, conf, trial, out)
            write_json(path, session.doc)
        except BaseException:  # Ctrl-C, a stack's error: the batch's trials are asked again
            for trial in asked:
                if trial not in told:
                    with contextlib.suppress(Exception):
                        _interrupted(study, study.get_trials(deepcopy=False)[trial.number])
            raise
    _summary(cfg, study, me, session, saved)


def _value(ret: Any) -> Any:
    return ret.return_value if hasattr(ret, "return_value") else ret


def _conf_of(session, trial) -> dict:
    return next(c for c in session.configs if c.get("hash") == trial.user_attrs["config_hash"])


def _add_trial(cfg: DictConfig, layout: P.Layout, session, trial) -> dict:
    """The trial's configuration in the session: a new one (its MLflow run opened, its
    folds planned as stacks of ``folds_per_step``), or the one an earlier trial ran."""
    from foldwise import tracking

    overrides = ordered(cfg, trial.params)
    conf, hyper = plan.new_config(
        cfg, layout, overrides, {"trial": trial.number, "trial_id": trial._trial_id},
        taken=[c["label"] for c in session.configs],  # a repeat is dropped below: no matter
    )  # fmt: skip
    trial.set_user_attr("config_hash", conf["hash"])
    old = session.config(conf["hash"])
    if old is not None:  # the sampler proposed a configuration again: its outcome stands
        trial.set_user_attr("same_as_trial", old.get("trial"))
        return old
    c = tracking.client(cfg)
    d = session.doc
    conf["run_id"] = plan.open_config_run(
        c, d["experiment_id"], d["sweep_run_id"], d["common_tags"], d["dataset"], conf, hyper
    )
    tracking.log(
        c,
        conf["run_id"],
        tags={
            f"{tracking.TAG}trial": trial.number,
            f"{tracking.TAG}optuna_study": d["study"]["name"],
        },
    )
    step = int(cfg.sweep.optuna.get("folds_per_step", 1))
    folds = list(range(d["n_folds"]))
    conf["stacks"] = []
    for i in range(0, len(folds), step):
        names = [task_name(conf["hash"], f) for f in folds[i : i + step]]
        conf["stacks"].append(len(d["stacks"]))
        d["stacks"].append(names)
    from foldwise.results import Session, is_done, read_result

    key = Session(d).job_key

    d["pending"] += [
        task_name(conf["hash"], f)
        for f in folds
        if not is_done(read_result(layout.sweep_dir, conf["hash"], f), key(conf["hash"], f))
    ]
    session.configs.append(conf)
    return conf


def _fold_scores(session, layout: P.Layout, conf: dict, cfg: DictConfig, folds) -> list:
    from foldwise.results import read_result

    out = []
    for f in folds:
        r = read_result(layout.sweep_dir, conf["hash"], f)
        out.append(None if not r or r.get("status") != "ok" else r["metrics"].get(metric(cfg)))
    return out


def _outcome(session, layout: P.Layout, conf: dict, cfg: DictConfig) -> dict[str, Any]:
    """What an earlier trial of the same configuration got (a proposal made again)."""
    n = conf.get("pruned_after", session.doc["n_folds"])
    steps = _scored(session, n)
    scores = _fold_scores(session, layout, conf, cfg, steps)
    state = "pruned" if "pruned_after" in conf else "complete"
    if any(s is None or not math.isfinite(s) for s in scores):
        state = "fail"
    return {"state": state, "folds_run": n, "scores": scores, "steps": steps}


def _scored(session, n: int) -> list[int]:
    """The first ``n`` resamples, less the bootstrap's all-rows fit (scored on its own
    training rows)."""
    apparent = session.doc.get("apparent")
    return [f for f in range(n) if f != apparent]


def _tell(study, trial, conf: dict, out: dict[str, Any]) -> dict[str, Any]:
    from optuna.trial import TrialState

    trial.set_user_attr("folds_run", int(out["folds_run"]))
    scores = [s for s in out["scores"] if s is not None]
    if conf.get("trial") != trial.number and out["state"] != "fail":
        # A repeat: its fold scores too, so that the pruner can compare against it.
        for f, v in zip(out["steps"], out["scores"], strict=True):
            trial.report(float(v), f)
    if out["state"] == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        return {"pruned_after": int(out["folds_run"])}
    if out["state"] == "fail" or not scores:
        study.tell(trial, state=TrialState.FAIL)
        return {}
    study.tell(trial, float(sum(scores) / len(scores)))
    return {}


def mean_text(scores: Sequence[float], mean: float | None = None) -> str:
    """A trial's mean fold score (``mean``, else the mean of ``scores``) at the precision
    its standard error over the folds supports (four decimals from one fold); "–" from
    none."""
    from foldwise import headline

    if not scores:
        return "–" if mean is None else headline.fixed(mean)
    mean = sum(scores) / len(scores) if mean is None else mean
    se = statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else None
    return headline.fixed(mean, se)


def _report(session, conf: dict, trial, out: dict[str, Any]) -> int:
    """One line per trial; returns the fold jobs pruning spared it."""
    n = session.doc["n_folds"]
    scores = [s for s in out["scores"] if s is not None]
    mean = mean_text(scores)
    repeat = conf.get("trial") != trial.number
    what = {
        "complete": f"{n} folds, mean {mean}",
        "pruned": f"pruned after {out['folds_run']} of {n} folds (mean so far {mean})",
        "fail": "failed (a fold did not train)",
    }[out["state"]]
    again = f" (as trial {conf.get('trial')}: not trained again)" if repeat else ""
    print(f"[foldwise] optuna trial {trial.number}: {conf['label']}: {what}{again}", flush=True)
    return n - int(out["folds_run"]) if out["state"] == "pruned" and not repeat else 0


def _summary(cfg: DictConfig, study, me: str, session, saved: int) -> None:
    from optuna.trial import TrialState

    from foldwise import tracking

    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(CHECKOUT) == me]
    states = [t.state for t in mine]
    pruned = [c for c in session.configs if "pruned_after" in c]
    n = session.doc["n_folds"]
    spared = sum(n - c["pruned_after"] for c in pruned)
    line = (
        f"[foldwise] optuna study {study.study_name}: {len(study.trials)} trial(s) in all, "
        f"{len(mine)} here ({states.count(TrialState.COMPLETE)} complete, "
        f"{states.count(TrialState.PRUNED)} pruned, {states.count(TrialState.FAIL)} failed); "
        f"pruning spared {spared} of {len(session.configs) * n} fold jobs"
        f"{f' ({saved} in this run)' if saved else ''}"
    )
    with contextlib.suppress(ValueError):
        best = study.best_trial
        folds = list(best.intermediate_values.values())  # its fold scores (trial.report)
        line += f"; best trial {best.number}: {mean_text(folds, best.value)}"
    print(line, flush=True)
    c = tracking.client(cfg)
    with contextlib.suppress(Exception):
        tracking.log(
            c,
            session.doc["sweep_run_id"],
            metrics={"optuna_trials": len(mine), "folds_pruned": spared},
            tags={f"{tracking.TAG}optuna_study": study.study_name},
        )


# ---------------------------------------------------------------------------- job
def run_trial(cfg: DictConfig, layout: P.Layout) -> dict[str, Any]:
    """One trial's job: its folds in order, a stack of ``folds_per_step`` at a time (see
    :func:`foldwise.sweep.jobs.run_stack`), each fold's score reported to the trial; stops
    when the pruner prunes. Returns the outcome the sweeper tells Optuna."""
    import optuna

    from foldwise.results import Session

    session = Session(read_json(layout.sweep_dir / "session.json"))
    number = int(cfg.trial)
    conf = next(c for c in session.configs if c.get("trial") == number)
    study = open_study(cfg, layout, with_sampler=False)
    trial = optuna.trial.Trial(study, int(conf["trial_id"]))
    n, ran, scores, steps, failed = session.doc["n_folds"], 0, [], [], False
    for i, stack in enumerate(conf["stacks"]):
        names = session.doc["stacks"][stack]
        one = cfg.copy()
        with open_dict(one):
            one.stack = stack
        jobs.run_stack(one, layout)
        folds = [parse_task_name(name)[1] for name in names]
        ran = folds[-1] + 1
        scored = [f for f in folds if f in _scored(session, n)]
        values = _fold_scores(session, layout, conf, cfg, scored)
        scores += values
        steps += scored
        for f, v in zip(scored, values, strict=True):
            if v is None or not math.isfinite(v):
                failed = True  # its configuration is incomplete; the other folds still train
            elif not failed:
                trial.report(float(v), f)
        if not failed and i < len(conf["stacks"]) - 1 and trial.should_prune():
            return {"state": "pruned", "folds_run": ran, "scores": scores, "steps": steps}
    state = "fail" if failed else "complete"
    return {"state": state, "folds_run": ran, "scores": scores, "steps": steps}


def job_main(cfg: DictConfig, layout: P.Layout) -> Any:
    """What a sweep job runs: a trial (``+trial=N``) or a planned stack (``+stack=i``)."""
    if "trial" in cfg:
        return run_trial(cfg, layout)

    jobs.run_stack(cfg, layout)
    return None


def launch_jobs(launcher: Any, start: list[int]) -> Callable[[Sequence[Sequence[str]]], list]:
    """``launch`` for :func:`drive` over a Hydra launcher, numbering jobs on."""

    def launch(overrides: Sequence[Sequence[str]]) -> list:
        out = list(launcher.launch(list(overrides), initial_job_idx=start[0]))
        start[0] += len(overrides)
        return out

    return launch
