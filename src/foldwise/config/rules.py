"""Small rules every configuration check shares: a key that must be set, a value that
must be one of a list (with the override that fixes it)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from foldwise.errors import FoldwiseError


def need(cfg: DictConfig, key: str, hint: str) -> object:
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        value = None
    if value is None:
        raise FoldwiseError(f"params: '{key}' is not set.", hint)
    return value


# Keys chosen through a Hydra config group: the fix is `-S data=digits`, not `data.name`.
GROUPS = {"data.name": "data", "split.scheme": "split", "model.name": "model",
          "selection.rule": "selection", "ensemble.name": "ensemble"}  # fmt: skip


def one_of(value: object, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        override = GROUPS.get(key, key)
        raise FoldwiseError(
            f"params: unknown {key} {value!r}.",
            f"use one of: {', '.join(allowed)} (e.g. dvc exp run -S {override}={allowed[0]}).",
        )
