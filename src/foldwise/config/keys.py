"""Which keys a configuration may hold: the schema's (:mod:`.schema`), which is what the
code reads, not what ``conf/`` happens to contain (the "did you mean" list), and under
``model`` the keys the model builder reads. A key no code reads is refused, never
silently ignored."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from foldwise.config import schema
from foldwise.errors import FoldwiseError
from foldwise.files import flatten

# What the model builder (foldwise.models.build_backbone) reads under ``model``, for
# every built-in network (the schema's Model).
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(schema.Model))


def check_model_keys(model: Any) -> None:
    """Refuse any key under ``model`` that the model builder does not read.

    ``_target_`` gets its own message: a user naming their own network must not get the
    built-in one trained and reported in its place."""
    given = [str(k) for k in model]  # a DictConfig or a dict
    extra = [k for k in given if k not in MODEL_KEYS]
    if not extra:
        return
    name = model.get("name")
    reads = ", ".join(f"model.{k}" for k in MODEL_KEYS)
    tunable = ", ".join(f"model.{k}" for k in MODEL_KEYS if k != "name")
    where = "the -S override that added it, or the conf/model/*.yaml file that sets it"
    if "_target_" in extra:
        others = ", ".join(f"model.{k}" for k in extra if k != "_target_")
        raise FoldwiseError(
            f"params: model._target_={model.get('_target_')!r} names a network of your own, "
            f"but foldwise builds only its own (model=mlp, model=cnn): the sweep would train "
            f"the built-in model={name} and report it as yours.",
            f"remove model._target_{f' and {others}' if others else ''} ({where}); cross-"
            f"validate a built-in network instead (-S model=mlp, tuning {tunable}).",
        )
    close = difflib.get_close_matches(extra[0], MODEL_KEYS, n=1, cutoff=0.7)
    raise FoldwiseError(
        f"params: model.{extra[0]} is not read by model={name} (it reads {reads}), so it "
        "would be silently ignored.",
        (f"did you mean model.{close[0]}? " if close else "")
        + f"Remove model.{extra[0]} ({where}).",
    )


# ------------------------------------------------------------------ which keys exist
# sweep.grid sweeps what defines one fit; the rest is fixed before (data, split) or
# after (selection, lockbox, ...) the sweep, or is how it runs (engine, sweep, tracking).
SWEEPABLE = ("model.", "optim.", "trainer.", "ensemble.", "seed")


@dataclass(frozen=True)
class Keys:
    """The settings ``conf/`` defines: leaf keys and the sections above them."""

    leaves: frozenset[str]
    sections: frozenset[str]

    def closest(self, key: str, among: Iterable[str] | None = None) -> str | None:
        pool = sorted(self.leaves if among is None else among)
        last = key.rsplit(".", 1)[-1]
        same_name = [k for k in pool if k.rsplit(".", 1)[-1] == last]  # model.lr -> optim.lr
        if len(same_name) == 1:
            return same_name[0]
        match = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
        return match[0] if match else None


@functools.lru_cache(maxsize=1)
def known_keys() -> Keys:
    """Every setting of the schema (:mod:`.schema`: every option of every config group),
    and the sections above them. ``nested.inner`` takes any split option; the search
    spaces (``sweep.grid``, ``sweep.space``) are checked on their own."""
    leaves = {o.key for o in schema.options()}
    leaves |= {f"nested.inner.{k.removeprefix('split.')}" for k in leaves if k.startswith("split.")}
    return Keys(frozenset(leaves), frozenset(schema.sections()))


def unknown(key: str, keys: Keys, where: str, among: Iterable[str] | None = None) -> None:
    close = keys.closest(key, among)
    steps = [f"did you mean {where}{close}?"] if close else []
    if not where:  # sweep.grid keys need '+': the grid of conf/ lacks them
        steps.append(
            f"Set existing keys without '+' (e.g. -S {close or 'model.hidden'}=...); '+' adds "
            "a key conf/ does not have."
        )
    steps.append(
        f"Remove {where}{key} from params.yaml (regenerate it: make params, or dvc exp run "
        "without that override)."
    )
    raise FoldwiseError(
        f"params: {where}{key} is not a foldwise setting: no code reads it, so it would be "
        "silently ignored.",
        " ".join(steps),
    )


def check_keys(cfg: DictConfig) -> None:
    """Refuse keys the schema does not hold, in the config and in ``sweep.grid``, naming
    the closest valid key (``+model.hiden=64`` would otherwise be kept silently)."""
    keys = known_keys()
    tree = OmegaConf.to_container(cfg, resolve=False)
    if "_target_" in (tree.get("model") or {}):  # a user's own network: its own message
        check_model_keys(tree["model"])
    for key in flatten(tree):
        if key.startswith(("sweep.grid.", "sweep.space.")) or key in keys.leaves:
            continue
        above = [p for p in _prefixes(key) if p in keys.leaves]
        if above:
            raise FoldwiseError(
                f"params: {above[0]} must be a single value, but params.yaml gives it "
                f"sub-keys ({key}).",
                f"set {above[0]} itself, e.g. -S {above[0]}=<value>.",
            )
        if key in keys.sections:
            raise FoldwiseError(
                f"params: {key} is a section of settings, but params.yaml gives it one value.",
                "set its keys instead: "
                + ", ".join(sorted(k for k in keys.leaves if k.startswith(f"{key}.")))
                + ".",
            )
        unknown(key, keys, "")
    grid = (tree.get("sweep") or {}).get("grid")
    subs = grid if isinstance(grid, list) else [grid]
    sweepable = {k for k in keys.leaves if k.startswith(SWEEPABLE)}
    for key in (k for sub in subs if isinstance(sub, dict) for k in flatten(sub)):
        if key in sweepable:
            continue
        if key in keys.leaves:
            section = key.split(".", 1)[0]
            raise FoldwiseError(
                f"params: sweep.grid sweeps {key}, but {section} settings are the same for "
                "every configuration of a sweep (each configuration is one fit: "
                "model.*, optim.*, trainer.*, ensemble.*, seed).",
                f"set {key} outside the grid (-S {key}=...) and compare runs with dvc exp.",
            )
        unknown(key, keys, "sweep.grid.", sweepable)


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]
