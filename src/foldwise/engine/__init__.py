"""The many-models engine: train a list of tasks, stacking those that share an architecture.

    outcomes = engine.train(tasks, x, y, meta)        # one Outcome per Task, in order

Tasks (:mod:`~foldwise.engine.task`) say what each model trains and is scored on;
:mod:`~foldwise.engine.plan` groups them into stacks; each stack is one network with
parameters stacked along a model axis (:mod:`~foldwise.engine.stack`), trained in one
Lightning loop (:mod:`~foldwise.engine.loop`). One-at-a-time training is the same code
with stacks of one (``max_models=1``).
"""

from __future__ import annotations

import logging
import traceback
import warnings
from collections.abc import Callable

import numpy as np
import torch

from foldwise import transforms
from foldwise.engine.feed import Streamed
from foldwise.engine.loop import EpochInfo, StackTrainer, fit_stack
from foldwise.engine.plan import Footprint, footprint, plan_stacks
from foldwise.engine.stack import Stack
from foldwise.engine.task import Hyper, Outcome, Task, cycles_momentum, prepare

# Bumped whenever a fix changes what the engine computes for some model. Job keys include
# it, so results cached by an engine with a bug are never reused; result files record it.
#   2: a dropout = 0 model stacked beside dropout > 0 models trained as if dropped out
#      (garbage masks), and a diverged model's train_loss could read NaN (issue 16).
#   3: batch orders and dropout masks come from a counter-based hash of the task seed
#      (engine/rng.py), not from per-model generators: every trained number moves
#      (issue 20).
VERSION = 3

__all__ = [
    "VERSION", "EpochInfo", "Hyper", "Outcome", "Streamed", "Task", "device_for", "plan", "train",
]  # fmt: skip

# Lightning's start-up chatter ("GPU available: ...", tips) would repeat for every stack.
for _name in ("pytorch_lightning", "lightning.fabric", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
warnings.filterwarnings("ignore", ".*train_dataloader.*does not have.*")
# On a SLURM login node (or a machine with the client tools): foldwise launches through
# submitit, never through Lightning's `srun` integration.
warnings.filterwarnings("ignore", ".*The `srun` command is available on your system.*")

DTYPES = {32: torch.float32, 64: torch.float64}


def device_for(accelerator: str) -> str:
    """``auto`` → ``gpu`` when CUDA is available, else ``cpu``."""
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def _build(task: Task, meta) -> torch.nn.Module:
    from omegaconf import OmegaConf

    from foldwise.models import build_backbone

    torch.manual_seed(task.seed)  # the initial weights depend on the task's seed only
    return build_backbone(OmegaConf.create(task.model), meta)


def _sample_shape(meta) -> tuple[int, ...]:
    return (int(meta.n_features),)


def footprints(tasks: list[Task], meta) -> dict[tuple, Footprint]:
    out = {}
    for t in tasks:
        if t.arch() not in out:
            out[t.arch()] = footprint(_build(t, meta), _sample_shape(meta))
    return out


_PROBLEMS: dict[tuple, str | None] = {}


def stack_problem(task: Task, meta) -> str | None:
    """Why ``task``'s network cannot be stacked (``vmap`` cannot run it: random ops other
    than ``nn.Dropout``, in-place updates of undeclared state, data-dependent control
    flow), from one stacked training step of two copies; ``None`` when it can."""
    key = (task.arch(), meta.n_features, meta.n_outputs)
    if key not in _PROBLEMS:
        import copy

        net = _build(task, meta).double()
        shape = _sample_shape(meta)
        gen = torch.Generator().manual_seed(0)  # the global generator is left alone
        x = torch.randn(2, 3, *shape, generator=gen, dtype=torch.float64)
        try:
            stack = Stack([net, copy.deepcopy(net)], shape).train()
            stack(x).sum().backward()
            _PROBLEMS[key] = None
        except Exception as err:
            said = str(err).strip().splitlines()[0] if str(err).strip() else ""
            _PROBLEMS[key] = f"{type(err).__name__}: {said}"[:300]
    return _PROBLEMS[key]


_LIGHTNING: dict[tuple, bool] = {}


def lightning_archs(tasks: list[Task], meta) -> set[tuple]:
    """Architectures whose network is a ``pl.LightningModule``: each task trains with its
    own ``training_step`` and optimizer in a Trainer of its own (:mod:`.lightning`)."""
    from foldwise.engine.lightning import is_lightning

    out = set()
    for t in tasks:
        if "_target_" not in t.model:
            continue
        key = (t.arch(), meta.n_features, meta.n_outputs)
        if key not in _LIGHTNING:
            _LIGHTNING[key] = is_lightning(_build(t, meta))
        if _LIGHTNING[key]:
            out.add(t.arch())
    return out


def solo_reasons(tasks: list[Task], meta) -> dict[tuple, str]:
    """Architectures that train as stacks of one, and why (printed once per sweep)."""
    out: dict[tuple, str] = {}
    lightning = lightning_archs(tasks, meta)
    from foldwise.engine.optim import BATCHED, kind

    for t in tasks:
        arch = t.arch()
        if arch in out:
            continue
        name, _ = kind(t.optim)
        if name not in BATCHED:  # its state is per tensor: models' lr would be shared
            out[arch] = f"optimizer {name} is not stacked: it trains one model at a time"
            continue
        if cycles_momentum(t.scheduler):  # the momentum is per tensor, like the state above
            out[arch] = (
                f"scheduler {t.scheduler['_target_']} moves the momentum too: it trains one "
                "model at a time with torch's own optimizer (or set scheduler.cycle_momentum=false)"
            )
            continue
        if "_target_" not in t.model:  # foldwise's own two networks always stack
            continue
        if arch in lightning:
            out[arch] = "a LightningModule trains with its own training_step and optimizer"
            continue
        problem = stack_problem(t, meta)
        if problem:
            out[arch] = problem
    return out


def plan(
    tasks: list[Task],
    meta,
    *,
    precision: int = 32,
    max_models: int | None = None,
    memory_mb: float = 2048,
    min_stacks: int = 1,
    max_params: int | None = None,
) -> list[list[int]]:
    """Stacks (lists of task indices) that :func:`train` would run."""
    return plan_stacks(
        tasks,
        footprints(tasks, meta),
        itemsize=DTYPES[precision].itemsize,
        max_models=max_models,
        memory_mb=memory_mb,
        min_stacks=min_stacks,
        max_params=max_params,
        solo=set(solo_reasons(tasks, meta)),
    )


_DATA: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _on_device(x: np.ndarray, y: np.ndarray, device: torch.device, dtype) -> tuple:
    """The data arrays on ``device``, moved once per process (not per stack); class
    codes stay integers, a regression target takes the features' float type."""
    addr = lambda a: a.__array_interface__["data"][0]  # noqa: E731
    key = (addr(x), x.shape, addr(y), str(device), dtype)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = (
            torch.tensor(x, dtype=dtype, device=device),
            torch.tensor(y, dtype=dtype if y.dtype.kind == "f" else torch.int64, device=device),
        )
    return _DATA[key]


def build_stack(
    tasks: list[Task],
    x: np.ndarray | Streamed,
    y: np.ndarray,
    meta,
    device,
    dtype,
    **trainer_kw,
) -> StackTrainer:
    """One stack of ``tasks`` ready to fit: rows and scalers prepared, networks built and
    stacked on ``device``; ``trainer_kw`` go to :class:`StackTrainer`."""
    regression = getattr(meta, "regression", False)
    image_shape = getattr(meta, "image_shape", None)
    streamed = isinstance(x, Streamed)
    if streamed:
        xt = x
        yt = torch.tensor(y, dtype=dtype if y.dtype.kind == "f" else torch.int64, device=device)
    else:
        xt, yt = _on_device(x, y, device, dtype)
    rows = None
    if any(transforms.is_user(t.normalize) for t in tasks):  # what a user transform fits on
        shape = image_shape or (x.n_features if streamed else x.shape[1],)
        rows = transforms.Rows(x.flat() if streamed else x, y, shape)
    prepared = [
        prepare(t, None if streamed else x, y if t.targets is None else t.targets,
                regression=regression, image_shape=image_shape, items=rows)
        for t in tasks
    ]  # fmt: skip
    if streamed:  # one pass over the stack's fit rows per kind of standardisation
        for how in dict.fromkeys(t.normalize for t in tasks if isinstance(t.normalize, str)):
            ms = [m for m, t in enumerate(tasks) if t.normalize == how]
            stats = x.standardise([prepared[m].fit for m in ms], how, image_shape)
            for m, (mean, scale) in zip(ms, stats, strict=True):
                prepared[m].mean, prepared[m].scale = mean, scale
    modules = [_build(t, meta).to(dtype) for t in tasks]
    solo = "_target_" in tasks[0].model and stack_problem(tasks[0], meta) is not None
    if solo:  # its own random ops draw from the global generator: seed it by the task
        torch.manual_seed(tasks[0].seed ^ 0x5EED)
    stack = Stack(modules, _sample_shape(meta), solo=solo)
    return StackTrainer(
        tasks, prepared, stack.to(device), xt, yt, meta.n_classes, regression=regression,
        item_shape=image_shape, **trainer_kw,
    )  # fmt: skip


def _release(device: torch.device) -> None:
    """Give back what a failed stack held, so its halves can fit where it did not."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train(
    tasks: list[Task],
    x: np.ndarray,
    y: np.ndarray,
    meta,
    *,
    accelerator: str = "auto",
    precision: int = 32,
    stacks: list[list[int]] | None = None,
    max_models: int | None = None,
    memory_mb: float = 2048,
    max_params: int | None = None,
    keep_state: bool = False,
    on_done: Callable[[Task, Outcome], None] | None = None,
    on_epoch: Callable[[int, EpochInfo], None] | None = None,
) -> list[Outcome]:
    """Train every task; returns one :class:`Outcome` per task, in task order.

    ``x`` [N, F] holds the raw (unscaled) features of every row a task may name, ``y``
    [N] the class codes (or, for regression, the float target). ``on_done(task,
    outcome)`` is called as soon as a model is finished (early-stopped models finish
    before the rest of their stack).
    A stack that raises (out of memory, a bug in one configuration) is split in halves
    and retried, so one bad task fails alone.
    """
    accelerator = device_for(accelerator)
    device = torch.device("cuda" if accelerator == "gpu" else accelerator)
    dtype = DTYPES[precision]
    for t in tasks:
        if len(t.train) == 0:
            raise ValueError(f"task {t.key} has no training rows")
    sizes = footprints(tasks, meta)  # one dry run per architecture, for planning and scoring
    solo = solo_reasons(tasks, meta)
    lightning = lightning_archs(tasks, meta)
    if lightning and isinstance(x, Streamed):
        from foldwise.errors import FoldwiseError

        raise FoldwiseError(
            "engine.rows=stream: a LightningModule trains on its own DataLoader of rows in "
            "memory; streamed rows are for foldwise's stacked engine.",
            "-S engine.rows=memory, or give the network as a plain nn.Module.",
        )
    said = {}  # one line per network and reason, whatever its arguments
    for arch, reason in solo.items():
        model = next(t.model for t in tasks if t.arch() == arch)
        if reason.startswith(("optimizer ", "scheduler ")):
            said.setdefault(reason, "")
            continue
        why = reason if arch in lightning else f"vmap cannot stack it: {reason}"
        said.setdefault(f"{model['_target_']} trains one model at a time ({why})", "")
    for line in said:
        print(f"[foldwise] {line}", flush=True)
    if stacks is None:
        stacks = plan_stacks(
            tasks, sizes, itemsize=dtype.itemsize, max_models=max_models, memory_mb=memory_mb,
            max_params=max_params, solo=set(solo),
        )  # fmt: skip
    results: list[Outcome | None] = [None] * len(tasks)

    def deliver(i: int, outcome: Outcome) -> None:
        results[i] = outcome
        if on_done is not None:
            on_done(tasks[i], outcome)

    def run(group: list[int], number: int) -> None:
        group_tasks = [tasks[i] for i in group]
        if group_tasks[0].arch() in lightning:
            from foldwise.engine.lightning import fit_lightning

            for i in group:
                try:
                    out = fit_lightning(
                        tasks[i], x, y, meta, _build(tasks[i], meta), accelerator=accelerator,
                        dtype=dtype, keep_state=keep_state,
                    )  # fmt: skip
                except KeyboardInterrupt:
                    raise
                except Exception as err:  # one task's failure is its own
                    out = Outcome(status="failed", error=f"{type(err).__name__}: {err}\n"
                                  + traceback.format_exc()[-4000:])  # fmt: skip
                deliver(i, out)
            return
        try:
            module = build_stack(
                group_tasks,
                x,
                y,
                meta,
                device,
                dtype,
                keep_state=keep_state,
                on_done=lambda m, out: deliver(group[m], out),
                on_epoch=None if on_epoch is None else (lambda info: on_epoch(number, info)),
                act_width=sizes[group_tasks[0].arch()].activations,
            )
            fit_stack(module, accelerator)
            return
        except Exception as err:  # isolate: retry the unfinished tasks in halves
            error = f"{type(err).__name__}: {err}\n" + traceback.format_exc()[-4000:]
        module = None  # out of memory: free the failed stack before retrying its halves
        _release(device)
        left = [i for i in group if results[i] is None]
        if len(left) == 1:
            deliver(left[0], Outcome(status="failed", error=error))
        elif left:
            half = len(left) // 2
            run(left[:half], number)
            run(left[half:], number)

    for number, group in enumerate(stacks):
        run(group, number)
    return [r if r is not None else Outcome(status="failed", error="not trained") for r in results]
