"""``sweep.grid``: its grids (one, or a list of grids), each key's values (Hydra's
override grammar: lists, ``range(...)``, ``choice(...)``), and the check that every value
is valid in a configuration of the grid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from foldwise.config.rules import need
from foldwise.errors import FoldwiseError
from foldwise.files import flatten


def grids(cfg: DictConfig) -> list[dict[str, object]]:
    """``sweep.grid`` as sub-grids, each dotted keys → values. A mapping is one grid; a
    list of mappings is the union of their grids (scikit-learn's ``ParameterGrid``), for
    search spaces that are not one product — e.g. single MLPs, bagged MLPs and boosted
    weak learners in one sweep (``conf/sweep/ensembles.yaml``)."""
    grid = cfg.sweep.get("grid")
    if grid is None and (cfg.sweep.get("search") or "grid") != "grid":
        return []  # sweep=optuna searches sweep.space instead (foldwise.sweep.trials)
    if grid is None:
        raise FoldwiseError(
            "params: sweep.grid was removed (~sweep.grid) and no grid replaces it, so there "
            "is nothing to sweep.",
            "replace it in one go: -S '~sweep.grid' -S '+sweep.grid={model: {hidden: [16, "
            "64]}}'; or drop single keys: -S '~sweep.grid.model.hidden'.",
        )
    subs = list(grid) if OmegaConf.is_list(grid) or isinstance(grid, list | tuple) else [grid]
    out = []
    for i, sub in enumerate(subs):
        if not (OmegaConf.is_dict(sub) or isinstance(sub, dict)):
            raise FoldwiseError(
                f"params: sweep.grid[{i}] is {sub!r}, not a mapping of keys to value lists.",
                "write each grid of the list as keys with lists of values, e.g. "
                "{model: {hidden: [32, 64]}}.",
            )
        out.append({
            k: list(v) if OmegaConf.is_list(v) or isinstance(v, list | tuple) else v
            for k, v in flatten(sub).items()
        })  # fmt: skip
    return out


def grid_leaves(cfg: DictConfig) -> dict[str, object]:
    """The sweep's search space as dotted keys, in declaration order; for a list of
    grids, every key with every value any of them gives it."""
    subs = grids(cfg)
    if len(subs) == 1 and not OmegaConf.is_list(cfg.sweep.grid):
        return subs[0]
    out: dict[str, list] = {}
    for sub in subs:
        for k, v in sub.items():
            values = out.setdefault(k, [])
            values += [x for x in axis_values(k, v) if x not in values]
    return out


def axis_values(key: str, values: Any) -> list[Any]:
    """One ``sweep.grid`` entry's values: a list, or Hydra sweep syntax in a string
    (``range(16,129,16)``, ``choice(a,b)``, ``a,b``) expanded by Hydra's own parser."""
    if isinstance(values, str):
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        try:
            override = OverridesParser.create().parse_override(f"{key}={values}")
            if override.is_sweep_override():
                return list(override.sweep_iterator())
            return [override.value()]
        except HydraException as err:
            raise FoldwiseError(
                f"params: sweep.grid.{key}={values!r} is neither a list nor Hydra sweep syntax "
                f"({str(err).splitlines()[0]}).",
                f"give a list, e.g. sweep.grid.{key}=[1,2], or e.g. 'range(16,129,16)'.",
            ) from None
    if not isinstance(values, list | tuple):
        raise FoldwiseError(
            f"params: sweep.grid.{key} must be a list of values, got {values!r}.",
            f"write it as a list, e.g. -S 'sweep.grid.{key}=[{values}]' (or set {key} "
            "outside the grid if it is not swept).",
        )
    return list(values)


def check_grid(cfg: DictConfig, check_point: Callable[[DictConfig], None]) -> None:
    """Every value of every ``sweep.grid`` key, each checked in a configuration of the
    grid: that value, and the first value of every other swept key (per grid of a list).
    ``check_point``: the value checks of one whole configuration."""
    need(cfg, "sweep.grid", "declare a search space under sweep.grid")
    subs = grids(cfg)
    if not subs:
        raise FoldwiseError(
            "params: sweep.grid is an empty list.",
            "give at least one grid, e.g. -S 'sweep.grid.model.hidden=[32,64]'.",
        )
    for leaves in subs:
        _check_one_grid(cfg, leaves, check_point)


def _check_one_grid(
    cfg: DictConfig, leaves: dict[str, object], check_point: Callable[[DictConfig], None]
) -> None:
    if not leaves:
        raise FoldwiseError(
            "params: sweep.grid is empty.",
            "declare at least one hyperparameter, e.g. -S 'sweep.grid.model.hidden=[32,64]'.",
        )
    axes = {}
    for key, values in leaves.items():
        values = OmegaConf.to_container(values) if OmegaConf.is_config(values) else values
        axes[key] = axis_values(key, values)
        if not axes[key]:
            raise FoldwiseError(
                f"params: sweep.grid.{key} has no values: the search space has no points.",
                f"give it at least one value, e.g. -S 'sweep.grid.{key}="
                f"[{OmegaConf.select(cfg, key)}]', or remove it from sweep.grid.",
            )
    first = {k: v[0] for k, v in axes.items()}
    base = OmegaConf.to_container(cfg, resolve=True)

    def point(overrides: dict[str, Any]) -> DictConfig:
        out = OmegaConf.create(base)
        for k, v in overrides.items():
            OmegaConf.update(out, k, v, force_add=False)
        return out

    for key, values in axes.items():
        for value in values:
            try:  # the value alone, so that an error names the key it comes from
                check_point(point({key: value}))
            except FoldwiseError:
                try:  # a point of the grid: refused only if the grid really has it
                    check_point(point({**first, key: value}))
                except FoldwiseError as err:
                    problem = err.problem.removeprefix("params: ")
                    raise FoldwiseError(
                        f"params: sweep.grid.{key} value {value!r}: {problem}",
                        err.fix or f"remove {value!r} from sweep.grid.{key}.",
                    ) from None
