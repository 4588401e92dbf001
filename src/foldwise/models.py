"""Networks by Hydra ``_target_``: foldwise's own two and any ``nn.Module`` of the user's.

    model:                              model:
      name: mlp                           _target_: mypkg.nets.SmallResNet
      hidden: 64                          width: 32      # every other key is a kwarg
      depth: 1
      dropout: 0.1

``model.name`` picks a built-in (:data:`BUILTINS`, which are just two targets); with
``_target_`` every other key is a keyword argument of the class or factory it names.
Either way one function builds the network (:func:`build_backbone`), and the keywords
the data implies (:data:`DATA_KWARGS`) are passed when the constructor takes them and
the config does not set them. The engine (:mod:`foldwise.engine`) stacks whatever comes
out; nothing here knows about stacking.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from foldwise import resolvers  # registers ${foldwise:...}: a saved config holds them
from foldwise.data import Meta
from foldwise.errors import FoldwiseError
from foldwise.files import sha256_files
from foldwise.targets import accepts, refuse_argument, resolve


class MLP(nn.Module):
    def __init__(
        self, in_features: int, out_features: int, hidden: int = 64, depth: int = 1,
        dropout: float = 0.0,
    ):  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """``depth`` 3x3 conv blocks (channels hidden, 2*hidden, ...) then a dense head."""

    def __init__(
        self, in_shape: tuple[int, ...], out_features: int, hidden: int = 32, depth: int = 2,
        dropout: float = 0.0,
    ):  # fmt: skip
        super().__init__()
        self.image_shape = tuple(in_shape)
        channels, height, width = self.image_shape
        blocks: list[nn.Module] = []
        for i in range(depth):
            out = hidden * 2**i
            blocks += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
            if min(height, width) >= 4:  # pool while the map is big enough to halve
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * height * width, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, *self.image_shape)))


# model.name -> the target it stands for.
BUILTINS = {"mlp": "foldwise.models.MLP", "cnn": "foldwise.models.CNN"}

# Keyword arguments the data implies, passed when the constructor takes them by these
# names and the config does not set them. A network always receives a batch of rows as
# the data gives them: [B, n_features] (images flattened; view them as in_shape).
DATA_KWARGS = {
    "in_features": "the feature count (flattened pixels for images)",
    "in_shape": "(channels, height, width) for images, (n_features,) for tables",
    "out_features": "classes (one logit each), or 1 for regression",
}


# The constructor arguments the data fills in when the config leaves them out.
FILLED = ("in_features", "in_shape", "out_features")


def with_data(kwargs: Mapping[str, Any], meta: Meta) -> dict[str, Any]:
    """``kwargs`` with every ``${foldwise:<name>}`` value (kept as written until the data
    is known: :mod:`foldwise.resolvers`) replaced by what the data says."""
    implied = meta.implied()
    out = {}
    for key, value in kwargs.items():
        found = resolvers.PLACEHOLDER.match(value) if isinstance(value, str) else None
        out[key] = value if found is None else implied[found[1]]
    return out


def target_of(model: Mapping[str, Any]) -> str:
    """The dotted path ``model`` builds: its ``_target_``, or the built-in ``name``."""
    target = model.get("_target_")
    if target:
        return str(target)
    name = str(model.get("name"))
    if name not in BUILTINS:
        raise FoldwiseError(
            f"params: unknown model.name {name!r}.",
            f"use one of: {', '.join(BUILTINS)}, or name your own network with "
            "-S model=module -S model._target_=<package.module.Class>.",
        )
    return BUILTINS[name]


def kwargs_of(model: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``model`` gives its constructor."""
    skip = ("_target_",) if model.get("_target_") else ("name",)
    return {str(k): v for k, v in model.items() if k not in skip}


def is_builtin(model: Mapping[str, Any]) -> bool:
    return not model.get("_target_")


def check_kwargs(model: Mapping[str, Any]) -> None:
    """Refuse a key under ``model`` that the constructor does not take (it would fail, or
    for a built-in be silently ignored), and a constructor argument without a value."""
    target = target_of(model)
    fn = resolve(target)
    names, any_kw = accepts(fn)
    given = kwargs_of(model)
    where = "the -S override that added it, or the conf/model/*.yaml file that sets it"
    for key in given:
        if key not in names and not any_kw:
            if key in ("name", "hidden", "depth") and "name" in given:
                raise FoldwiseError(
                    f"params: model._target_={target} was added on top of model="
                    f"{given['name']}, whose keys ({', '.join(given)}) {target} does not take.",
                    "select your network with -S model=module -S model._target_="
                    f"{target} (conf/model/module.yaml has no built-in keys), and add its "
                    "arguments with -S +model.<name>=<value>.",
                )
            refuse_argument("model", key, target, names, where)
    params = inspect.signature(fn).parameters.values()
    needed = [
        p.name for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in given and p.name not in DATA_KWARGS
    ]  # fmt: skip
    if needed:
        raise FoldwiseError(
            f"params: {target} needs {', '.join(needed)}, and the config gives no value.",
            " ".join(f"-S +model.{n}=<value>" for n in needed)
            + f" (or give them defaults). The data passes {', '.join(DATA_KWARGS)} itself.",
        )


def build_backbone(model: Mapping[str, Any], meta: Meta) -> nn.Module:
    """The network ``model`` describes, for ``meta``'s data."""
    fn = resolve(target_of(model))
    kwargs = with_data(kwargs_of(model), meta)
    names, _ = accepts(fn)
    implied = meta.implied()
    for key in FILLED:
        if key in names and key not in kwargs:
            kwargs[key] = implied[key]
    net = fn(**kwargs)
    if not isinstance(net, nn.Module):
        raise FoldwiseError(
            f"{target_of(model)} returned a {type(net).__name__}, not a torch nn.Module.",
            "return an nn.Module (a pl.LightningModule is one too).",
        )
    return net


def source_files(model: Mapping[str, Any]) -> tuple[Path, list[Path]] | None:
    """Where the user's network is defined: the folder to put on ``sys.path`` and the
    ``.py`` files under it that hold its package (or its one module); ``None`` for the
    built-ins."""
    if is_builtin(model):
        return None
    fn = resolve(target_of(model))
    if fn.__module__.split(".")[0] == "foldwise":  # foldwise's own, by _target_
        return None
    top = importlib.import_module(fn.__module__.split(".")[0])
    if getattr(top, "__path__", None):  # a package: every .py file in it
        pkg = Path(next(iter(top.__path__))).resolve()
        return pkg.parent, sorted(pkg.rglob("*.py"))
    path = Path(inspect.getfile(importlib.import_module(fn.__module__))).resolve()
    return path.parent, [path]


def carry_code(model: Mapping[str, Any]) -> dict[str, str] | None:
    """The user's source as ``{relative path: text}``, for a saved model to carry: it
    loads in another directory or environment with the code it was trained with."""
    found = source_files(model)
    if found is None:
        return None
    root, files = found
    return {str(f.relative_to(root)): f.read_text() for f in files}


def use_carried_code(files: Mapping[str, str]) -> None:
    """Make carried source importable (written once to a folder named by its hash, put
    first on ``sys.path``), unless its package is already imported."""
    import hashlib
    import tempfile

    tops = {Path(rel).parts[0].removesuffix(".py") for rel in files}
    if all(t in sys.modules for t in tops):
        return
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"foldwise-code-{digest}"
    if not folder.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=".foldwise-code-"))
        for rel, text in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_text(text)
        with contextlib.suppress(OSError):  # another process wrote it first: the same files
            staging.rename(folder)
    sys.path.insert(0, str(folder))
    resolve.cache_clear()


def source_hash(model: Mapping[str, Any]) -> str | None:
    """Hash of the source the user's network comes from (its package, or its module
    file), so editing it re-trains and nothing else does; ``None`` for the built-ins
    (foldwise's own code is in every job key already)."""
    found = source_files(model)
    if found is None:
        return None
    root, files = found
    return sha256_files(files, root)[:16]


def dry_run(model: Mapping[str, Any], meta: Meta) -> int:
    """Build ``model`` and run it on two rows of zeros, in training and in eval mode, before
    any work starts; returns its parameter count. A constructor or forward that raises,
    or an output of the wrong shape, is a :class:`FoldwiseError` naming the fix."""
    target = target_of(model)
    try:
        net = build_backbone(model, meta)
    except FoldwiseError:
        raise
    except Exception as err:
        raise FoldwiseError(
            f"model: building {target}({_shown(kwargs_of(model))}) raised "
            f"{type(err).__name__}: {err}",
            "fix the constructor or the model.* values it was given.",
        ) from err
    import pytorch_lightning as pl

    if isinstance(net, pl.LightningModule):  # it trains itself: it must be able to
        for hook in ("training_step", "configure_optimizers"):
            if getattr(type(net), hook) is getattr(pl.LightningModule, hook):
                raise FoldwiseError(
                    f"model: {target} is a LightningModule without {hook}, so it cannot "
                    "train itself.",
                    f"define {hook} (batches are (x, y) tuples), or make it a plain "
                    "nn.Module and foldwise trains it with its own loss and optimizer.",
                )
    want = (2, meta.n_outputs)
    x = torch.zeros(2, int(meta.n_features))
    for mode in ("train", "eval"):
        net.train(mode == "train")
        try:
            with torch.no_grad():
                out = net(x)
        except Exception as err:
            raise FoldwiseError(
                f"model: {target}.forward raised {type(err).__name__} on a batch of 2 rows "
                f"(shape {list(x.shape)}, {mode} mode): {err}",
                "the network gets a batch [B, n_features] as the data gives it (images "
                "flattened: view them as in_shape); fix forward for that input.",
            ) from err
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            what = "one logit per class" if not meta.regression else "one value per row"
            raise FoldwiseError(
                f"model: {target}.forward returned {got} for a batch of 2 rows; foldwise "
                f"needs {list(want)} ({what}).",
                "return a [B, out_features] tensor (take the out_features argument: the "
                "data passes it).",
            )
    return int(sum(p.numel() for p in net.parameters()))


def _shown(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


# scheduler.* keys foldwise reads itself; every other key is an argument of the scheduler.
SCHEDULE_KEYS = ("_target_", "interval", "monitor")
# Arguments the training implies when the config leaves them out: the model's number of
# scheduler steps (its max_epochs, or max_epochs × its steps per epoch with interval=step).
LENGTH_ARGS = ("T_max", "total_steps")


def schedule_kwargs(spec: dict, length: int) -> dict:
    """The scheduler's constructor arguments: the config's, and :data:`LENGTH_ARGS`
    filled with ``length`` where the scheduler takes one and the config leaves it out."""
    cls = resolve(str(spec["_target_"]), "scheduler._target_")
    names, _ = accepts(cls)
    kw = {k: v for k, v in spec.items() if k not in SCHEDULE_KEYS}
    kw |= {k: length for k in LENGTH_ARGS if k in names and k not in kw}
    return kw
