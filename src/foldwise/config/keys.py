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
from foldwise.config.grid import axis_values
from foldwise.errors import FoldwiseError
from foldwise.files import flatten

# What the model builder (foldwise.models.build_backbone) reads under ``model``, for
# every built-in network (the schema's Model).
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(schema.Model) if f.name != "_target_")


def check_model_keys(model: Any) -> None:
    """Refuse any key under ``model`` that the model builder does not read.

    With ``_target_`` (the user's own network) every other key is a keyword argument of
    what it names: the target must import and take each of them. A built-in reads the
    schema's Model keys only."""
    given = [str(k) for k in model]  # a DictConfig or a dict
    if "_target_" in given:
        from foldwise import models  # torch: only for a network of the user's

        models.check_kwargs(model)
        return
    extra = [k for k in given if k not in MODEL_KEYS]
    if not extra:
        return
    name = model.get("name")
    reads = ", ".join(f"model.{k}" for k in MODEL_KEYS)
    where = "the -S override that added it, or the conf/model/*.yaml file that sets it"
    close = difflib.get_close_matches(extra[0], MODEL_KEYS, n=1, cutoff=0.7)
    raise FoldwiseError(
        f"params: model.{extra[0]} is not read by model={name} (it reads {reads}), so it "
        "would be silently ignored.",
        (f"did you mean model.{close[0]}? " if close else "")
        + f"Remove model.{extra[0]} ({where}), or to train a network of your own, select "
        "it by model._target_ (-S model=module -S model._target_=<package.module.Class>).",
    )


def _takes_every(section: str, keys: Iterable[Any], target: str, fn: Any, skip=()) -> None:
    """Refuse the first of ``keys`` that ``fn`` (``<section>._target_``) does not take;
    ``skip``: parameters foldwise passes itself (the optimizer's params, ...)."""
    from foldwise import targets

    names, any_kw = targets.accepts(fn)
    names -= set(skip)
    for key in keys:
        if not any_kw and key not in names:
            targets.refuse_argument(section, str(key), target, names, "the -S override that set it")


def check_dataset_kwargs(data: Any) -> None:
    """``data._target_`` names a function that takes every data.* key foldwise does not
    read itself (:data:`foldwise.sources.DATASET_KEYS`)."""
    from foldwise import targets
    from foldwise.sources import DATASET_KEYS

    target = str(data["_target_"])
    if target == "???":
        raise FoldwiseError(
            "params: data=dataset needs data._target_, a function returning your Dataset.",
            "add -S data._target_=<package.module.function> (its arguments: -S +data.<name>=...).",
        )
    fn = targets.resolve(target, "data._target_")
    _takes_every("data", [k for k in data if k not in DATASET_KEYS], target, fn)


def check_optim_kwargs(optim: Any) -> None:
    """``optim._target_`` names a torch optimizer class, and takes every other key."""
    import inspect

    import torch

    from foldwise import models

    target = str(optim["_target_"])
    if target == "???":
        raise FoldwiseError(
            "params: optim=torch needs optim._target_, the optimizer class.",
            "e.g. -S optim._target_=torch.optim.AdamW.",
        )
    cls = models.resolve(target, "optim._target_")
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise FoldwiseError(
            f"params: optim._target_={target} is not a torch.optim.Optimizer class.",
            "name one, e.g. torch.optim.AdamW, or your own subclass of torch.optim.Optimizer.",
        )
    passed = [
        k
        for k in optim
        if k not in ("_target_", "name") and not (k == "weight_decay" and not optim[k])
    ]  # fmt: skip  (0 is not passed)
    _takes_every("optim", passed, target, cls, skip=("params",))
    if "name" in optim:
        raise FoldwiseError(
            f"params: optim._target_={target} was added on top of optim={optim['name']}.",
            f"select it with -S optim=torch -S optim._target_={target}.",
        )


SCHEDULE_MONITORS = ("inner_loss", "train_loss")


def check_scheduler(scheduler: Any) -> None:
    """``scheduler._target_`` names a torch lr scheduler that takes every other key and
    builds with them (tried on a stand-in optimizer, so a bad value fails here, before any
    training); without it no argument may be given (it would be ignored)."""
    target = scheduler.get("_target_")
    own = {f.name for f in dataclasses.fields(schema.Scheduler)}  # what foldwise reads
    args = [str(k) for k in scheduler if k not in own]
    if not target:
        if args:
            raise FoldwiseError(
                f"params: scheduler.{args[0]} is an argument of a scheduler, but none is "
                "selected (scheduler=none), so it would be silently ignored.",
                "select one: -S scheduler=cosine, step, plateau, or -S scheduler=torch -S "
                "scheduler._target_=torch.optim.lr_scheduler.<Class>.",
            )
        return
    if target == "???":
        raise FoldwiseError(
            "params: scheduler=torch needs scheduler._target_, the scheduler class.",
            "e.g. -S scheduler._target_=torch.optim.lr_scheduler.ExponentialLR "
            "-S +scheduler.gamma=0.95.",
        )
    import torch  # only for a scheduler: the light stages never import it

    from foldwise import models

    cls = models.resolve(str(target), "scheduler._target_")
    base = torch.optim.lr_scheduler.LRScheduler
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise FoldwiseError(
            f"params: scheduler._target_={target} is not a torch lr scheduler class.",
            "name one, e.g. torch.optim.lr_scheduler.CosineAnnealingLR, or your own "
            "subclass of torch.optim.lr_scheduler.LRScheduler.",
        )
    _takes_every("scheduler", args, str(target), cls, skip=("optimizer",))
    interval = scheduler.get("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise FoldwiseError(
            f"params: scheduler.interval must be epoch or step, got {interval!r}.",
            "-S scheduler.interval=epoch (once per epoch) or step (after every optimizer step).",
        )
    monitor = scheduler.get("monitor", "inner_loss")
    if monitor not in SCHEDULE_MONITORS:
        raise FoldwiseError(
            f"params: scheduler.monitor={monitor!r} is not a loss the scheduler may read "
            "(the validation fold must not steer training: its score would be optimistic).",
            "-S scheduler.monitor=inner_loss (the early-stopping rows) or train_loss.",
        )
    plateau = issubclass(cls, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and interval == "step":
        raise FoldwiseError(
            f"params: {target} reads an epoch's loss, so it cannot step every batch.",
            "-S scheduler.interval=epoch.",
        )
    # a trial on a stand-in optimizer: built and stepped a few times, it must give
    # learning rates (torch accepts e.g. StepLR(step_size=0) and fails only on a step)
    stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    fix = "fix the scheduler.* values (the -S overrides or conf/scheduler/*.yaml)."
    try:
        sched = cls(stand_in, **models.schedule_kwargs(dict(scheduler), 10))
        lrs = []
        for _ in range(3):
            stand_in.step()
            sched.step(1.0) if plateau else sched.step()
            lrs.append(stand_in.param_groups[0]["lr"])
    except Exception as err:  # a user's scheduler may raise anything
        given = ", ".join(f"scheduler.{k}={scheduler[k]!r}" for k in args) or "its defaults"
        raise FoldwiseError(
            f"params: {target} refuses its arguments ({given}): {type(err).__name__}: {err}",
            fix,
        ) from None
    bad = [lr for lr in lrs if not (isinstance(lr, float | int) and 0 <= lr < float("inf"))]
    if bad:
        raise FoldwiseError(
            f"params: {target} refuses its arguments: with them it sets the learning rate "
            f"to {bad[0]!r} within 3 steps (it must be a number >= 0).",
            fix,
        )


# ------------------------------------------------------------------ which keys exist
# sweep.grid sweeps what defines one fit; the rest is fixed before (data, split) or
# after (selection, lockbox, ...) the sweep, or is how it runs (engine, sweep, tracking).
SWEEPABLE = ("model.", "optim.", "scheduler.", "trainer.", "ensemble.", "seed")


# What users write for a setting foldwise names otherwise (PyTorch's, Lightning's and
# scikit-learn's words), for "did you mean".
SYNONYMS = {
    "learning_rate": "lr", "wd": "weight_decay", "l2": "weight_decay",
    "epochs": "max_epochs", "n_epochs": "max_epochs", "batch": "batch_size",
    "bs": "batch_size", "folds": "n_splits", "k": "n_splits", "width": "hidden",
    "layers": "depth", "n_layers": "depth", "p": "dropout",
}  # fmt: skip


@dataclass(frozen=True)
class Keys:
    """The settings ``conf/`` defines: leaf keys and the sections above them."""

    leaves: frozenset[str]
    sections: frozenset[str]

    def closest(self, key: str, among: Iterable[str] | None = None) -> str | None:
        """The key meant: a synonym's key in the same section first
        (``optim.learning_rate`` → ``optim.lr``, not ``ensemble.learning_rate``), then
        the same name in another section (``model.lr`` → ``optim.lr``), then spelling."""
        pool = sorted(self.leaves if among is None else among)
        section, _, rest = key.rpartition(".")
        last = SYNONYMS.get(rest, rest)
        if section and f"{section}.{last}" in pool:
            return f"{section}.{last}"
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
    own = "_target_" in (tree.get("model") or {})  # the user's network: its kwargs
    if own:
        check_model_keys(tree["model"])
    own_optim = "_target_" in (tree.get("optim") or {})
    if own_optim:
        check_optim_kwargs(tree["optim"])
    sched = tree.get("scheduler") or {}
    check_scheduler(sched)
    own_data = "_target_" in (tree.get("data") or {})  # the user's Dataset: its kwargs
    if own_data:
        check_dataset_kwargs(tree["data"])
    for key in flatten(tree):
        if key.startswith(("sweep.grid.", "sweep.space.")) or key in keys.leaves:
            continue
        if key.startswith("scheduler."):  # checked against the scheduler above
            continue
        if own_data and key.startswith("data."):  # checked against the factory above
            continue
        if own and key.startswith("model."):  # checked against the constructor above
            continue
        if own_optim and key.startswith("optim."):
            continue
        if key.startswith("data.normalize.") and isinstance(
            (tree.get("data") or {}).get("normalize"), dict
        ):  # the user's transform: its kwargs are checked when check_data builds it
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
    if own and sched.get("_target_") and _trains_itself(tree["model"]):
        raise FoldwiseError(
            f"params: scheduler._target_ is set, but {tree['model']['_target_']} is a "
            "LightningModule: its configure_optimizers returns its schedulers, so this one "
            "would be silently ignored.",
            "-S scheduler=none, and return the scheduler from configure_optimizers.",
        )
    pairs = [(k, v) for sub in subs if isinstance(sub, dict) for k, v in flatten(sub).items()]
    for key, values in pairs:
        if own and key.startswith("model."):  # a kwarg of the user's network
            _own_kwarg(tree["model"], key)
            continue
        if own_optim and key.startswith("optim."):  # an argument of the user's optimizer
            check_optim_kwargs({**tree["optim"], key.split(".", 1)[1]: 1})
            continue
        if own and key.startswith(("optim.", "scheduler.")) and _trains_itself(tree["model"]):
            raise FoldwiseError(
                f"params: sweep.grid sweeps {key}, but {tree['model']['_target_']} is a "
                "LightningModule: its configure_optimizers picks the optimizer, so every "
                "value would train the same model.",
                f"drop it (-S '~sweep.grid.{key}') and sweep the module's own argument, "
                "e.g. -S '+sweep.grid.model.lr=[0.01,0.1]'.",
            )
        if key.startswith("scheduler.") and key not in keys.leaves:
            arg = key.split(".", 1)[1]  # an argument of the scheduler: every value must build
            for value in axis_values(key, values):
                check_scheduler({**sched, arg: value})
            continue
        if key in sweepable:
            continue
        if key in keys.leaves:
            section = key.split(".", 1)[0]
            raise FoldwiseError(
                f"params: sweep.grid sweeps {key}, but {section} settings are the same for "
                "every configuration of a sweep (each configuration is one fit: "
                "model.*, optim.*, scheduler.*, trainer.*, ensemble.*, seed).",
                f"set {key} outside the grid (-S {key}=...) and compare runs with dvc exp.",
            )
        unknown(key, keys, "sweep.grid.", sweepable)


def _trains_itself(model: dict) -> bool:
    """Whether the user's ``_target_`` is a LightningModule class (it has its own
    optimizer; a factory function is only known once built)."""
    import inspect

    import pytorch_lightning as pl

    from foldwise import models

    fn = models.resolve(str(model["_target_"]))
    return inspect.isclass(fn) and issubclass(fn, pl.LightningModule)


def _own_kwarg(model: dict, key: str) -> None:
    """``sweep.grid.<key>`` must be an argument of the user's network; the default grid
    sweeps the built-ins' model.hidden, which it usually is not."""
    from foldwise import models

    name = key.split(".", 1)[1]
    names, any_kw = models.accepts(models.resolve(str(model["_target_"])))
    if name in names or any_kw:
        return
    takes = sorted(n for n in names if n not in models.DATA_KWARGS)
    raise FoldwiseError(
        f"params: sweep.grid.{key} sweeps an argument {model['_target_']} does not take "
        f"(it takes {', '.join(takes) or 'none'}).",
        f"drop it from the grid (-S '~sweep.grid.{key}') and sweep your own: -S "
        f"'+sweep.grid.model.{(takes or ['<argument>'])[0]}=[...]'.",
    )


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]
