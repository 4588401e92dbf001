"""User code by dotted path (Hydra's ``_target_`` convention): import what a setting
names from the project directory or ``PYTHONPATH``, and say what it takes. Shared by
the networks (:mod:`foldwise.models`), optimizers and schedulers (:mod:`foldwise.config`)
and datasets (:mod:`foldwise.data`); it imports nothing heavy, so a light stage can
check a setting without torch.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from foldwise.errors import FoldwiseError


@functools.lru_cache(maxsize=64)
def resolve(target: str, key: str = "model._target_") -> Callable[..., Any]:
    """The class or function ``target`` (the value of setting ``key``) names, imported from
    the project directory or ``PYTHONPATH``; an error names the closest existing names."""
    module_name, _, attr = target.rpartition(".")
    if target == "???" and key == "model._target_":  # conf/model/module.yaml, not yet told
        raise FoldwiseError(
            "params: model=module needs model._target_, the network to train.",
            "add -S model._target_=<package.module.Class> (an nn.Module class or a function "
            "returning one, importable from the project directory).",
        )
    if not module_name:
        raise FoldwiseError(
            f"params: {key}={target!r} is not a dotted path.",
            f"name the class with its module, e.g. {key}=mypkg.nets.SmallResNet.",
        )
    here = str(Path.cwd())  # the project directory: a stage runs as pipelines/<stage>.py
    if here not in sys.path:
        sys.path.append(here)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        missing = getattr(err, "name", None) or module_name
        near = _near_modules(module_name)
        raise FoldwiseError(
            f"params: {key}={target!r}: module {missing!r} does not import "
            f"({type(err).__name__}: {err}).",
            (f"did you mean {' or '.join(near)}? " if near else "")
            + "Run from the project directory (the one holding your package) or add its "
            "folder to PYTHONPATH, and check the spelling.",
        ) from None
    found = getattr(module, attr, None)
    if found is None:
        names = [n for n in dir(module) if not n.startswith("_")]
        near = difflib.get_close_matches(attr, names, n=3, cutoff=0.5)
        raise FoldwiseError(
            f"params: {key}={target!r}: module {module_name} has no {attr!r}.",
            f"did you mean {', '.join(f'{module_name}.{n}' for n in near)}?"
            if near
            else f"name a class or function defined in {module_name}.",
        )
    if not callable(found):
        raise FoldwiseError(
            f"params: {key}={target!r} is not a class or function.",
            "name a class, or a function that returns the object.",
        )
    return found


def _near_modules(name: str) -> list[str]:
    top, _, rest = name.partition(".")
    try:
        parent = importlib.import_module(top) if rest else None
    except ImportError:
        parent = None
    if parent is not None and hasattr(parent, "__path__"):
        pool = [f"{top}.{m.name}" for m in pkgutil.iter_modules(parent.__path__)]
    else:
        pool = [m.name for m in pkgutil.iter_modules()]
    return difflib.get_close_matches(name, pool, n=2, cutoff=0.6)


def accepts(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """The keyword names ``fn`` takes, and whether it takes any (``**kwargs``)."""
    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def refuse_argument(section: str, key: str, target: str, names: set[str], where: str) -> None:
    """Raise: ``<section>.<key>`` is not an argument of ``target`` (which takes ``names``),
    naming the closest one."""
    near = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
    takes = ", ".join(sorted(names)) or "no keyword arguments"
    raise FoldwiseError(
        f"params: {section}.{key} is not an argument of {target} (it takes {takes}), so it "
        "cannot be passed to it.",
        (f"did you mean {section}.{near[0]}? " if near else "")
        + f"Remove {section}.{key} ({where}).",
    )
