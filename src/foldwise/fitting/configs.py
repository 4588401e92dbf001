"""What one fit is: a configuration's hyperparameters, hash, label and overrides, and the
keys a fit's result depends on (split, sweep base). Pure functions of the config, shared
by the sweep, nested CV, the curves and the refit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from foldwise import params as P
from foldwise.config.grid import axis_values, grids
from foldwise.data import Meta
from foldwise.files import (
    read_json,
    sha256_json,
)

# Keys whose values define a configuration (and so its hash). Data and split enter
# through the split key; sweep/selection/lockbox/tracking don't change a fit.
HYPER_KEYS = ("model", "optim", "trainer", "seed")


# --------------------------------------------------------------------------- plan
def expand_grid(cfg: DictConfig) -> list[dict[str, Any]]:
    """All configurations of ``sweep.grid``: the cartesian product of each grid (last key
    fastest), grid after grid for a list of grids (:func:`foldwise.config.grid.grids`)."""
    out = []
    for leaves in grids(cfg):
        axes = [(key, axis_values(key, values)) for key, values in leaves.items()]
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
    norm = cfg.data.get("normalize") if "data" in cfg else None
    norm = OmegaConf.to_container(norm) if isinstance(norm, DictConfig) else str(norm or "feature")
    if norm != "feature":  # the default: the hash stays as before
        out["normalize"] = norm
    if isinstance(norm, dict):  # the user's transform: editing its source re-trains
        from foldwise.models import source_hash

        out["normalize_source"] = source_hash(norm)
    sched = cfg.get("scheduler")
    if sched is not None and sched.get("_target_"):  # absent: the hash stays as before
        out["scheduler"] = OmegaConf.to_container(sched, resolve=True)
    if cfg.model.get("_target_"):  # the user's network: editing its source re-trains
        from foldwise.models import source_hash

        out["model_source"] = source_hash(cfg.model)
    return out


def config_hash(cfg: DictConfig) -> str:
    """Identity of a configuration: every hyperparameter that can change a fit."""
    return sha256_json(hyperparameters(cfg))[:12]


def n_params(cfg: DictConfig, layout: P.Layout) -> int:
    """The network's parameter count: the complexity order of ``selection=one_se``."""
    from foldwise.errors import FoldwiseError
    from foldwise.models import dry_run

    meta = Meta.from_dict(read_json(layout.meta))
    if cfg.data.get("normalize") == "channel" and not meta.image_shape:
        raise FoldwiseError(  # a Dataset's items are known only once prepared
            f"params: data.normalize=channel standardises image channels, but the items of "
            f"data={meta.dataset} are not images.",
            "-S data.normalize=feature.",
        )
    # a dry run on two rows: a user's network that cannot train fails here, before any work
    return dry_run(cfg.model, meta)


def config_label(cfg: DictConfig, overrides: dict[str, Any], digits: int = 3) -> str:
    """``mlp hidden=32 lr=0.001``: the model, its ensemble (``bagging×10``: also when set
    outside the grid, so a bagged configuration never reads as a plain one), then the
    swept values by the last part of their key, floats to ``digits`` significant digits
    (an Optuna trial's ``lr=0.006251373574521752`` reads ``lr=0.00625``)."""
    name = str(cfg.model.get("_target_") or cfg.model.name).rsplit(".", 1)[-1]  # class name
    parts = [] if "model.name" in overrides else [name]
    from foldwise.ensemble import spec

    ens = spec(cfg)
    if ens is not None:
        parts.append(f"{ens['name']}×{ens['n_estimators']}")
    shown = {k: v for k, v in overrides.items()
             if k not in ("ensemble.name", "ensemble.n_estimators")}  # fmt: skip
    short = lambda k: k.rsplit(".", 1)[-1]  # noqa: E731
    return " ".join(parts + [f"{short(k)}={_short_value(v, digits)}" for k, v in shown.items()])


def _short_value(value: Any, digits: int) -> str:
    if not isinstance(value, float) or not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e16:  # where Python's own repr turns to an exponent: 1e+38
        return f"{value:.{digits}g}"
    if abs(value) >= 1:  # 1234.5 → 1230, not 1.23e+03
        return np.format_float_positional(value, precision=digits, fractional=False, trim="0")
    # Past 3 digits, trailing zeros stay (0.006250): the digits say they were needed
    return f"{value:.{digits}g}" if digits <= 3 else f"{value:#.{digits}g}"


def unique_labels(
    points: list[tuple[DictConfig, dict[str, Any]]], taken: Collection[str] = ()
) -> list[str]:
    """:func:`config_label` of each (config, overrides), all with the fewest significant
    digits (3 or more) that tell them apart from each other and from ``taken`` (labels
    already given in the sweep): a label is a configuration's name in MLflow, the results
    and the report, so two distinct configurations never share one."""
    for digits in range(3, 18):
        out = [config_label(full, o, digits) for full, o in points]
        if len(set(out)) == len(out) and not set(out) & set(taken):
            return out
    return [config_label(full, o, 17) for full, o in points]  # equal up to repr: keep


def split_key(manifest: dict) -> str:
    """What a fold result depends on from the split: the dev rows and the folds."""
    return sha256_json({"dev": manifest["dev_sha256"], "folds": manifest["folds_sha256"]})[:16]


def base_key(cfg: DictConfig) -> str:
    """The sweep's identity apart from the grid: extending the grid keeps the parent run."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    keys = ["data", "split", *HYPER_KEYS]
    if (tree.get("scheduler") or {}).get("_target_"):  # absent: the key stays as before
        keys.append("scheduler")
    from foldwise.ensemble import spec

    out = {k: tree.get(k) for k in keys}
    if spec(cfg) is not None:  # a bagged sweep is its own MLflow run, never a plain one's
        out["ensemble"] = spec(cfg)
    return sha256_json(out)[:16]


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
        "devices": _plain(e.get("devices", "auto")),
    }


def _plain(value: Any) -> Any:
    """A list from the config as a Python list (``engine.devices``)."""
    from omegaconf import ListConfig, OmegaConf

    return OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
