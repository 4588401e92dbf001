"""Bayesian search (``sweep=optuna``): Optuna's ask-and-tell loop over the sweep's machinery.

The grid sweep (:mod:`foldwise.sweep`) knows its configurations before it starts; a
search asks them one batch at a time. Hydra's sweeper plugin
(``hydra_plugins/foldwise_optuna_sweeper``) drives :func:`drive`: ask a batch of trials
(``sweep.space`` as Optuna distributions), add each as a configuration of the session
file with its MLflow run under the sweep run, launch one job per trial (``+trial=N``)
through the configured launcher, tell Optuna each trial's outcome. A trial's job
(:func:`run_trial`) trains its folds in order, ``sweep.optuna.folds_per_step`` at a time,
each a stack of :func:`foldwise.sweep.run_stack` (so result files, job keys and MLflow
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
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from foldwise import params as P
from foldwise.errors import FoldwiseError
from foldwise.files import read_json, sha256_json, shared_root, write_json

SEARCHES = ("grid", "optuna")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("wilcoxon", "none")
STORAGE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql")
DIM_KEYS = {"type", "low", "high", "log", "step", "choices"}
# Trial user attributes: which checkout and process ran it, and an interrupted one.
CHECKOUT, OWNER, INTERRUPTED = "foldwise_checkout", "foldwise_owner", "foldwise_interrupted"


def enabled(cfg: DictConfig) -> bool:
    return str(cfg.sweep.get("search") or "grid") == "optuna"


# --------------------------------------------------------------------------- space
def space(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """``sweep.space`` as dotted key → dimension (``{type: float|int, low, high, log,
    step}`` or ``{choices: [...]}``), checked; raises :class:`FoldwiseError`."""
    tree = cfg.sweep.get("space")
    tree = OmegaConf.to_container(tree, resolve=True) if OmegaConf.is_config(tree) else tree
    if not isinstance(tree, dict) or not tree:
        raise FoldwiseError(
            "params: sweep.space is empty: sweep=optuna has nothing to search.",
            "declare at least one dimension, e.g. "
            "-S 'sweep.space.optim.lr={type: float, low: 0.0001, high: 0.1, log: true}'.",
        )
    out: dict[str, dict[str, Any]] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and ("type" in node or "choices" in node):
            out[prefix] = _dimension(prefix, node)
        elif isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            raise FoldwiseError(
                f"params: sweep.space.{prefix} is {node!r}, not a dimension.",
                f"give it {{type: float, low: ..., high: ...}}, {{type: int, low: ..., "
                f"high: ...}} or {{choices: [...]}}, e.g. sweep.space.{prefix}.choices=[1,2].",
            )

    walk(tree, "")
    _check_keys(list(out))
    return out


def _dimension(key: str, d: dict[str, Any]) -> dict[str, Any]:
    where = f"params: sweep.space.{key}"
    extra = set(d) - DIM_KEYS
    if extra:
        raise FoldwiseError(
            f"{where} has unknown field(s) {sorted(extra)}.",
            f"use only {sorted(DIM_KEYS)}.",
        )
    if "choices" in d:
        choices = d["choices"]
        if set(d) - {"choices", "type"} or d.get("type", "categorical") != "categorical":
            raise FoldwiseError(
                f"{where} mixes choices with a range.",
                "give either choices or type/low/high, not both.",
            )
        if not isinstance(choices, list) or not choices:
            raise FoldwiseError(
                f"{where}.choices is empty: the dimension has no values.",
                f"give at least one value, e.g. {where[8:]}.choices=[8,16].",
            )
        if any(not (c is None or isinstance(c, bool | int | float | str)) for c in choices):
            raise FoldwiseError(
                f"{where}.choices holds a list or mapping ({choices!r}).",
                "Optuna's choices are numbers, strings, booleans or null.",
            )
        if len({repr(c) for c in choices}) != len(choices):
            raise FoldwiseError(f"{where}.choices lists a value twice.", "remove the duplicate.")
        return {"type": "categorical", "choices": choices}
    kind = d.get("type")
    if kind not in ("float", "int"):
        raise FoldwiseError(
            f"{where}.type is {kind!r}.",
            "use float or int (or choices: [...] for a set of values).",
        )
    low, high = d.get("low"), d.get("high")
    num = (int,) if kind == "int" else (int, float)
    if any(isinstance(v, bool) or not isinstance(v, num) for v in (low, high)):
        raise FoldwiseError(
            f"{where} needs numeric low and high ({kind}), got {low!r}, {high!r}.",
            f"e.g. {{type: {kind}, low: 1, high: 10}}.",
        )
    if not low < high:
        raise FoldwiseError(
            f"{where}: low ({low}) must be below high ({high}).",
            "swap them, or use choices: [value] for a fixed value.",
        )
    log, step = bool(d.get("log", False)), d.get("step")
    if log and low <= 0:
        raise FoldwiseError(
            f"{where}: a log scale needs low > 0, got {low}.",
            "raise low above 0, or drop log: true.",
        )
    if log and step is not None:
        raise FoldwiseError(f"{where}: log and step exclude each other.", "drop one of them.")
    if step is not None and (isinstance(step, bool) or not isinstance(step, num) or step <= 0):
        raise FoldwiseError(
            f"{where}.step must be a positive {kind}, got {step!r}.", "e.g. step: 8, or drop step."
        )
    return {"type": kind, "low": low, "high": high, "log": log, "step": step}


def _check_keys(keys: list[str]) -> None:
    """Space keys are swept keys: the ones ``sweep.grid`` could sweep (params.check_keys)."""
    from foldwise.files import repo_root

    known = P.known_keys((repo_root() / "conf").resolve())
    if known is None:
        return
    sweepable = {k for k in known.leaves if k.startswith(P.SWEEPABLE)}
    for key in keys:
        if key in sweepable:
            continue
        if key in known.leaves:
            raise FoldwiseError(
                f"params: sweep.space searches {key}, but {key.split('.', 1)[0]} settings are "
                "the same for every configuration of a sweep (model.*, optim.*, trainer.*, "
                "ensemble.*, seed vary).",
                f"set {key} outside the space (-S {key}=...).",
            )
        P._unknown(key, known, "sweep.space.", sweepable)


def distributions(cfg: DictConfig) -> dict[str, Any]:
    """``sweep.space`` as Optuna distributions, by dotted key."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for key, d in space(cfg).items():
        if d["type"] == "categorical":
            out[key] = CategoricalDistribution(d["choices"])
        elif d["type"] == "float":
            out[key] = FloatDistribution(d["low"], d["high"], log=d["log"], step=d["step"])
        else:
            out[key] = IntDistribution(d["low"], d["high"], log=d["log"], step=d["step"] or 1)
    return out


def space_tag(cfg: DictConfig) -> dict[str, Any]:
    """The sweep run's ``foldwise.grid`` tag under a search: the space itself."""
    return {"optuna": space(cfg)}


def check(cfg: DictConfig) -> None:
    """``sweep.optuna`` and ``sweep.space`` (called by :func:`foldwise.params.validate`):
    every setting, and both ends / every choice of each dimension in a configuration."""
    o = cfg.sweep.get("optuna") or {}
    n = o.get("n_trials")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FoldwiseError(
            f"params: sweep.optuna.n_trials must be an integer >= 1, got {n!r}.",
            "e.g. -S sweep.optuna.n_trials=30.",
        )
    P._one_of(str(o.get("sampler", "tpe")), SAMPLERS, "sweep.optuna.sampler")
    P._one_of(str(o.get("pruner", "wilcoxon")), PRUNERS, "sweep.optuna.pruner")
    p = o.get("p_threshold", 0.1)
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p < 1:
        raise FoldwiseError(
            f"params: sweep.optuna.p_threshold must be in (0, 1), got {p!r}.",
            "e.g. 0.1 (prune when p < 0.1).",
        )
    for name in ("n_startup_steps", "folds_per_step", "n_startup_trials"):
        v = o.get(name, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if "startup" in name else 1):
            raise FoldwiseError(
                f"params: sweep.optuna.{name} must be a whole number, got {v!r}.",
                f"e.g. -S sweep.optuna.{name}=2.",
            )
    storage = o.get("storage")
    if storage is not None and (
        not isinstance(storage, str)
        or storage.split("://", 1)[0] not in STORAGE_SCHEMES
        or "://" not in storage
    ):
        from foldwise.redact import redact

        raise FoldwiseError(
            f"params: sweep.optuna.storage {redact(str(storage))!r} is not an RDB URL.",
            "leave it null (SQLite in .foldwise/) or give e.g. "
            "postgresql://user:password@host:5432/optuna.",
        )
    dims = space(cfg)
    if str(o.get("sampler", "tpe")) == "grid" and any(
        d["type"] != "categorical" for d in dims.values()
    ):
        raise FoldwiseError(
            "params: sweep.optuna.sampler=grid needs every dimension of sweep.space as choices.",
            "give each dimension choices: [...], or use sampler=tpe.",
        )
    base = OmegaConf.to_container(cfg, resolve=True)
    for key, d in dims.items():
        values = d["choices"] if d["type"] == "categorical" else [d["low"], d["high"]]
        for value in values:
            point = OmegaConf.create(base)
            OmegaConf.update(point, key, value, force_add=False)
            try:
                P._check_values(point)
            except FoldwiseError as err:
                raise FoldwiseError(
                    f"params: sweep.space.{key} value {value!r}: "
                    f"{err.problem.removeprefix('params: ')}",
                    err.fix or f"change sweep.space.{key}.",
                ) from None


# --------------------------------------------------------------------------- study
def metric(cfg: DictConfig) -> str:
    from foldwise import scores

    return scores.selection_metric(cfg)


def direction(cfg: DictConfig) -> str:
    from foldwise import scores

    return "maximize" if scores.higher_is_better(metric(cfg)) else "minimize"


def storage_url(cfg: DictConfig, layout: P.Layout) -> str:
    """``sweep.optuna.storage``, or SQLite in ``.foldwise/`` (git-ignored, never a DVC
    output, shared with ``dvc exp``'s temporary copies)."""
    url = (cfg.sweep.get("optuna") or {}).get("storage")
    if url:
        return str(url)
    path = shared_root(layout.root) / ".foldwise" / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def study_name(cfg: DictConfig, layout: P.Layout) -> str:
    """``sweep.optuna.study_name``, or one derived from what the trials' scores depend on:
    the same data, split, fixed hyperparameters, code, space and metric → the same study."""
    given = (cfg.sweep.get("optuna") or {}).get("study_name")
    if given:
        return str(given)
    from foldwise.files import code_version
    from foldwise.sweep import base_key, split_key

    manifest = read_json(layout.dev_manifest)
    key = sha256_json(
        {
            "base": base_key(cfg),
            "split": split_key(manifest),
            "code": code_version(),
            "space": space(cfg),
            "metric": metric(cfg),
        }
    )
    return f"foldwise-{key[:16]}"


def _storage(url: str):
    import optuna

    # Several joblib workers write one SQLite file: wait for its lock instead of failing.
    kw = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kw)


def _pruner(cfg: DictConfig):
    import optuna

    o = cfg.sweep.optuna
    if str(o.get("pruner", "wilcoxon")) == "none":
        return optuna.pruners.NopPruner()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.WilcoxonPruner(
            p_threshold=float(o.get("p_threshold", 0.1)),
            n_startup_steps=int(o.get("n_startup_steps", 2)),
        )


def _sampler(cfg: DictConfig, offset: int):
    """Seeded by ``seed`` plus the trials the study already has: a resumed study does not
    replay the first run's random start."""
    import optuna

    o, seed = cfg.sweep.optuna, int(cfg.seed) + offset
    kind = str(o.get("sampler", "tpe"))
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        grid = {k: d["choices"] for k, d in space(cfg).items()}
        return _GridSampler(grid, seed=int(cfg.seed))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(o.get("n_startup_trials", 5)))


def _grid_sampler_class():
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's, less its ``study.stop()`` once the grid is done: that works only
        inside ``study.optimize``; :func:`drive` stops at the grid's size itself."""

        def after_trial(self, study, trial, state, values) -> None:
            return None

    return GridSampler


def _GridSampler(grid: dict, seed: int):
    return _grid_sampler_class()(grid, seed=seed)


def open_study(cfg: DictConfig, layout: P.Layout, *, with_sampler: bool = True):
    """The sweep's study (created on first use), with its sampler and pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, name = storage_url(cfg, layout), study_name(cfg, layout)
    storage = _storage(url)
    try:
        n = len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
    except KeyError:
        n = 0
    try:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            direction=direction(cfg),
            load_if_exists=True,
            sampler=_sampler(cfg, n) if with_sampler else None,
            pruner=_pruner(cfg),
        )
    except Exception as err:  # unreachable database, bad credentials
        from foldwise.redact import redact

        if isinstance(err, FoldwiseError | KeyboardInterrupt):
            raise
        raise FoldwiseError(
            f"the Optuna storage {redact(url)} could not be opened ({type(err).__name__}: "
            f"{redact(str(err).splitlines()[0] if str(err) else '')}).",
            "check sweep.optuna.storage (is the database server up, the database created, "
            "the password right?), or leave it null for SQLite in .foldwise/.",
        ) from None


def checkout_id(layout: P.Layout) -> str:
    """This machine and checkout: whose trials the session lists and who may fail them."""
    return sha256_json([socket.gethostname(), str(shared_root(layout.root))])[:16]


def session_head(cfg: DictConfig, layout: P.Layout) -> dict[str, Any]:
    """What the session file says about the search (nothing for a grid)."""
    if not enabled(cfg):
        return {}
    from foldwise.redact import redact

    return {
        "search": "optuna",
        "study": {
            "name": study_name(cfg, layout),
            "storage": redact(storage_url(cfg, layout)),
            "direction": direction(cfg),
            "metric": metric(cfg),
        },
    }


def describe(cfg: DictConfig, session) -> str:
    """The line a search starts with, after :func:`foldwise.sweep.describe`'s."""
    o, study = cfg.sweep.optuna, session.doc["study"]
    pruner = (
        f"wilcoxon p < {o.get('p_threshold', 0.1)}" if o.get("pruner", "wilcoxon") != "none"
        else "no pruning"
    )  # fmt: skip
    return (
        f"[foldwise] optuna: study {study['name']} at {study['storage']}: "
        f"{len(session.configs)} configuration(s) from earlier trials here; up to "
        f"{o.n_trials} trials in all ({o.get('sampler', 'tpe')} sampler, {study['direction']} "
        f"{study['metric']}; folds in order, {pruner})"
    )


def _ordered(cfg: DictConfig, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's values in the space's order (the label's order)."""
    return {k: params[k] for k in space(cfg) if k in params}


def known_points(cfg: DictConfig, layout: P.Layout) -> list[tuple[dict, dict]]:
    """The configurations this checkout's finished trials ran, oldest first (one per
    configuration): the session lists them, so a re-run keeps (and reuses) them."""
    from optuna.trial import TrialState

    study = open_study(cfg, layout, with_sampler=False)
    me, out, seen = checkout_id(layout), [], set()
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(CHECKOUT) != me or t.user_attrs.get(INTERRUPTED):
            continue
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            continue
        overrides = _ordered(cfg, t.params)
        key = sha256_json(overrides)
        if key in seen:
            continue
        seen.add(key)
        extra: dict[str, Any] = {"trial": t.number, "trial_id": t._trial_id}
        if t.state == TrialState.PRUNED:
            extra["pruned_after"] = int(t.user_attrs.get("folds_run", len(t.intermediate_values)))
        out.append((overrides, extra))
    return out


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
    from foldwise.workers import parallel_workers

    return parallel_workers(cfg)


def drive(cfg: DictConfig, layout: P.Layout, launch: Callable[[list[list[str]]], list]) -> None:
    """The ask-and-tell loop (the sweeper's ``sweep()``): first the stacks
    :func:`foldwise.sweep.begin` planned (missing folds of known trials), then batches of
    new trials, one job each, until the study has ``n_trials``. ``launch`` runs a list of
    jobs' overrides and returns their results (Hydra's ``JobReturn`` or plain values)."""
    from foldwise.results import Session

    path = layout.sweep_dir / "session.json"
    session = Session(read_json(path))
    if session.doc["stacks"]:
        for ret in launch([[f"+stack={i}"] for i in range(len(session.doc["stacks"]))]):
            _value(ret)  # a stack's error stops the sweep (sweep.train reports it)
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
    from foldwise import sweep, tracking

    overrides = _ordered(cfg, trial.params)
    conf, hyper = sweep.new_config(
        cfg, layout, overrides, {"trial": trial.number, "trial_id": trial._trial_id}
    )
    trial.set_user_attr("config_hash", conf["hash"])
    old = session.config(conf["hash"])
    if old is not None:  # the sampler proposed a configuration again: its outcome stands
        trial.set_user_attr("same_as_trial", old.get("trial"))
        return old
    c = tracking.client(cfg)
    d = session.doc
    conf["run_id"] = sweep.open_config_run(
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
        names = [sweep.task_name(conf["hash"], f) for f in folds[i : i + step]]
        conf["stacks"].append(len(d["stacks"]))
        d["stacks"].append(names)
    from foldwise.results import Session, is_done, read_result

    key = Session(d).job_key

    d["pending"] += [
        sweep.task_name(conf["hash"], f)
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


def _report(session, conf: dict, trial, out: dict[str, Any]) -> int:
    """One line per trial; returns the fold jobs pruning spared it."""
    n = session.doc["n_folds"]
    scores = [s for s in out["scores"] if s is not None]
    mean = f"{sum(scores) / len(scores):.4f}" if scores else "–"
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
        line += f"; best trial {best.number}: {best.value:.4f}"
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
    :func:`foldwise.sweep.run_stack`), each fold's score reported to the trial; stops
    when the pruner prunes. Returns the outcome the sweeper tells Optuna."""
    import optuna

    from foldwise import sweep
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
        sweep.run_stack(one, layout)
        folds = [sweep.parse_task_name(name)[1] for name in names]
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
    from foldwise import sweep

    sweep.run_stack(cfg, layout)
    return None


def launch_jobs(launcher: Any, start: list[int]) -> Callable[[Sequence[Sequence[str]]], list]:
    """``launch`` for :func:`drive` over a Hydra launcher, numbering jobs on."""

    def launch(overrides: Sequence[Sequence[str]]) -> list:
        out = list(launcher.launch(list(overrides), initial_job_idx=start[0]))
        start[0] += len(overrides)
        return out

    return launch
