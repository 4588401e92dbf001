"""``sweep=optuna``'s Optuna study: its storage and name (from the sweep's identity), the
sampler and pruner, and what earlier trials of this checkout already asked.
"""

from __future__ import annotations

import socket
import warnings
from typing import Any

from omegaconf import DictConfig

from foldwise import params as P
from foldwise.config.space import enabled, space
from foldwise.errors import FoldwiseError
from foldwise.files import read_json, sha256_json, shared_root

# Trial user attributes: which checkout and process ran it, and an interrupted one.
CHECKOUT, OWNER, INTERRUPTED = "foldwise_checkout", "foldwise_owner", "foldwise_interrupted"


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
    from foldwise.fitting.configs import base_key, split_key

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


def ordered(cfg: DictConfig, params: dict[str, Any]) -> dict[str, Any]:
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
        overrides = ordered(cfg, t.params)
        key = sha256_json(overrides)
        if key in seen:
            continue
        seen.add(key)
        extra: dict[str, Any] = {"trial": t.number, "trial_id": t._trial_id}
        if t.state == TrialState.PRUNED:
            extra["pruned_after"] = int(t.user_attrs.get("folds_run", len(t.intermediate_values)))
        out.append((overrides, extra))
    return out
