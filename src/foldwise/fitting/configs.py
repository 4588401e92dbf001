"""What one fit is: a configuration's hyperparameters, hash, label and overrides, and the
keys a fit's result depends on (split, sweep base). Pure functions of the config, shared
by the sweep, nested CV, the curves and the refit.
"""

from __future__ import annotations

import itertools
from typing import Any

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
    norm = str(cfg.data.get("normalize") or "feature") if "data" in cfg else "feature"
    if norm != "feature":  # the default: the hash stays as before
        out["normalize"] = norm
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


def config_label(cfg: DictConfig, overrides: dict[str, Any]) -> str:
    """``mlp hidden=32 lr=0.001``: the model, then the swept values (last key part)."""
    name = str(cfg.model.get("_target_") or cfg.model.name).rsplit(".", 1)[-1]  # class name
    parts = [] if "model.name" in overrides else [name]
    short = lambda k: "ensemble" if k == "ensemble.name" else k.rsplit(".", 1)[-1]  # noqa: E731
    return " ".join(parts + [f"{short(k)}={v}" for k, v in overrides.items()])


def split_key(manifest: dict) -> str:
    """What a fold result depends on from the split: the dev rows and the folds."""
    return sha256_json({"dev": manifest["dev_sha256"], "folds": manifest["folds_sha256"]})[:16]


def base_key(cfg: DictConfig) -> str:
    """The sweep's identity apart from the grid: extending the grid keeps the parent run."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    keys = ["data", "split", *HYPER_KEYS]
    if (tree.get("scheduler") or {}).get("_target_"):  # absent: the key stays as before
        keys.append("scheduler")
    return sha256_json({k: tree.get(k) for k in keys})[:16]


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
