"""``sweep=optuna``'s search space and settings, as configuration: ``sweep.space`` parsed
into dimensions and checked with ``sweep.optuna`` (by :func:`foldwise.params.validate`,
before any work). The study itself lives in :mod:`foldwise.sweep.study`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from foldwise.config.keys import SWEEPABLE, known_keys, unknown
from foldwise.config.rules import one_of
from foldwise.errors import FoldwiseError

SEARCHES = ("grid", "optuna")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("wilcoxon", "none")
STORAGE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql")
DIM_KEYS = {"type", "low", "high", "log", "step", "choices"}


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
    known = known_keys()
    sweepable = {k for k in known.leaves if k.startswith(SWEEPABLE)}
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
        unknown(key, known, "sweep.space.", sweepable)


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


def check(cfg: DictConfig, check_point: Callable[[DictConfig], None]) -> None:
    """``sweep.optuna`` and ``sweep.space`` (called by :func:`foldwise.params.validate`):
    every setting, and both ends / every choice of each dimension in a configuration
    (``check_point``: the value checks of one whole configuration)."""
    o = cfg.sweep.get("optuna") or {}
    n = o.get("n_trials")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FoldwiseError(
            f"params: sweep.optuna.n_trials must be an integer >= 1, got {n!r}.",
            "e.g. -S sweep.optuna.n_trials=30.",
        )
    one_of(str(o.get("sampler", "tpe")), SAMPLERS, "sweep.optuna.sampler")
    one_of(str(o.get("pruner", "wilcoxon")), PRUNERS, "sweep.optuna.pruner")
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
                check_point(point)
            except FoldwiseError as err:
                raise FoldwiseError(
                    f"params: sweep.space.{key} value {value!r}: "
                    f"{err.problem.removeprefix('params: ')}",
                    err.fix or f"change sweep.space.{key}.",
                ) from None
