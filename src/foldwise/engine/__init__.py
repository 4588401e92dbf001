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
import queue
import threading
import traceback
import warnings
from collections.abc import Callable

import numpy as np
import torch

from foldwise import transforms
from foldwise.engine.feed import Streamed
from foldwise.engine.loop import EpochInfo, StackTrainer, fit_stack
from foldwise.engine.plan import Footprint, footprint, plan_stacks, spread, stack_cost
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
    "VERSION", "EpochInfo", "Hyper", "Outcome", "Streamed", "Task", "device_for", "plan",
    "resolve_devices", "train",
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


def resolve_devices(devices, accelerator: str = "auto") -> list[int] | None:
    """The CUDA devices (indices among those ``CUDA_VISIBLE_DEVICES`` shows) that
    :func:`train` spreads its stacks over, from ``engine.devices``: ``auto`` (every
    visible device when there are several), ``N`` (the first N) or a list of indices.
    None (the default when called directly): the process's current device only (a CPU,
    one GPU, a sweep worker's own GPU).
    A setting the machine cannot honour is refused here, before any work."""
    from foldwise.errors import FoldwiseError

    if devices is None:
        return None
    if devices == "auto":
        if device_for(accelerator) != "gpu":
            return None
        count = torch.cuda.device_count()
        return list(range(count)) if count > 1 else None
    if isinstance(devices, str | bool) or not isinstance(devices, int | list | tuple):
        raise FoldwiseError(
            f"engine.devices must be auto, a number of devices or a list of device "
            f"indices, got {devices!r}.",
            "-S engine.devices=auto (every visible GPU), engine.devices=2 or engine.devices=[0,2].",
        )
    wanted = list(range(devices)) if isinstance(devices, int) else list(devices)
    if isinstance(devices, int) and devices < 1:
        raise FoldwiseError(
            f"engine.devices={devices}: at least one device.", "-S engine.devices=auto."
        )
    if not wanted or any(isinstance(i, bool) or not isinstance(i, int) for i in wanted):
        raise FoldwiseError(
            f"engine.devices={devices!r}: a list of CUDA device indices (0, 1, ...) is needed.",
            "-S engine.devices=[0,1], or engine.devices=auto.",
        )
    if len(set(wanted)) != len(wanted):
        raise FoldwiseError(
            f"engine.devices={devices!r} names a device twice.",
            "list each device once, e.g. -S engine.devices=[0,1].",
        )
    if device_for(accelerator) != "gpu":
        if wanted == [0]:  # one device on a CPU: the CPU
            return None
        raise FoldwiseError(
            f"engine.devices={devices!r} names CUDA devices, but the trainer runs on "
            f"{device_for(accelerator)} (trainer.accelerator={accelerator}"
            f"{', and CUDA is not available' if not torch.cuda.is_available() else ''}).",
            "-S engine.devices=auto, or trainer.accelerator=gpu on a machine with GPUs.",
        )
    count = torch.cuda.device_count()
    bad = [i for i in wanted if not 0 <= i < count]
    if bad:
        import os

        shown = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise FoldwiseError(
            f"engine.devices={devices!r}: device(s) {bad} do not exist; {count} CUDA "
            f"device(s) are visible (indices 0 to {count - 1}"
            f"{f', CUDA_VISIBLE_DEVICES={shown}' if shown is not None else ''}).",
            "-S engine.devices=auto, or name indices below "
            f"{count} (they count the devices CUDA_VISIBLE_DEVICES shows, from 0).",
        )
    return wanted


def _placement(index: int | None, accelerator: str) -> tuple[torch.device, str]:
    """Where a device worker trains: (torch device, Lightning accelerator) of CUDA
    device ``index``, made the calling thread's current device (Lightning's Trainer and
    ``torch.cuda.empty_cache`` follow it). The one seam between a worker and a real GPU:
    the tests map it to the CPU."""
    if index is None:
        return torch.device("cuda" if accelerator == "gpu" else accelerator), accelerator
    torch.cuda.set_device(index)
    return torch.device("cuda", index), "gpu"


# Device workers (threads) take it for a network's build (torch's global generators, the
# CPU's and every CUDA device's, seeded by the task), and for the whole fit of a stack that
# does not run on the batched-matrix path (foldwise's MLP): a stack of one drawing from the
# global generators, and any network run through vmap. Two vmap stacks (a user's network
# with BatchNorm, say) training at once in two threads were seen to give different numbers
# (tests/test_devices.py found it), so they take turns; the fast path runs concurrently.
_RNG = threading.RLock()


def _build(task: Task, meta) -> torch.nn.Module:
    from omegaconf import OmegaConf

    from foldwise.models import build_backbone

    with _RNG:
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
    devices=None,
    accelerator: str = "auto",
) -> list[list[int]]:
    """Stacks (lists of task indices) that :func:`train` would run; with several
    ``devices``, at least one per device."""
    ids = resolve_devices(devices, accelerator)
    min_stacks = max(min_stacks, len(ids) if ids else 1)
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
_DATA_LOCK = threading.Lock()


def _on_device(x: np.ndarray, y: np.ndarray, device: torch.device, dtype) -> tuple:
    """The data arrays on ``device``, moved once per process and device (not per stack);
    class codes stay integers, a regression target takes the features' float type."""
    addr = lambda a: a.__array_interface__["data"][0]  # noqa: E731
    data = (addr(x), x.shape, addr(y), dtype)
    key = (*data, str(device))
    with _DATA_LOCK:  # device workers share it: one copy per device of the same arrays
        if any(k[:4] != data for k in _DATA):
            _DATA.clear()
        if key not in _DATA:
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
    devices=None,
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

    ``devices`` (``engine.devices``, :func:`resolve_devices`): with several CUDA devices
    the stacks are spread over them by the plan's cost (:func:`~.plan.spread`), one
    worker thread per device; ``memory_mb`` is then each device's budget (one stack at a
    time per device). ``on_done`` and ``on_epoch`` still run on the calling thread.
    """
    ids = resolve_devices(devices, accelerator)  # a device list the machine lacks: refused now
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
            max_params=max_params, solo=set(solo), min_stacks=len(ids) if ids else 1,
        )  # fmt: skip
    results: list[Outcome | None] = [None] * len(tasks)
    stopped = threading.Event()  # set by the calling thread: device workers stop

    def run(group, number, device, accelerator, deliver, epoch) -> None:
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
                    if stopped.is_set():
                        return
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
                on_epoch=None if epoch is None else (lambda info: epoch(number, info)),
                act_width=sizes[group_tasks[0].arch()].activations,
            )
            fit_stack(module, accelerator)
            return
        except Exception as err:  # isolate: retry the unfinished tasks in halves
            if stopped.is_set():  # the caller stopped the device workers: no retry
                return
            error = f"{type(err).__name__}: {err}\n" + traceback.format_exc()[-4000:]
        module = None  # out of memory: free the failed stack before retrying its halves
        _release(device)
        left = [i for i in group if results[i] is None]
        if len(left) == 1:
            deliver(left[0], Outcome(status="failed", error=error))
        elif left:
            half = len(left) // 2
            run(left[:half], number, device, accelerator, deliver, epoch)
            run(left[half:], number, device, accelerator, deliver, epoch)

    if ids is None:  # one device: everything on the calling thread, as always

        def deliver(i: int, outcome: Outcome) -> None:
            results[i] = outcome
            if on_done is not None:
                on_done(tasks[i], outcome)

        for number, group in enumerate(stacks):
            run(group, number, device, accelerator, deliver, on_epoch)
    else:
        # Only stacks on the batched-matrix path train concurrently on several devices;
        # the others hold _RNG for their fit (see there).
        from foldwise.engine.stack import _is_plain_mlp

        first = {t.arch(): t for t in reversed(tasks)}
        draws = {a for a, t in first.items() if a in solo or not _is_plain_mlp(_build(t, meta))}

        def work(number: int, device, accel: str, deliver, epoch) -> None:
            group = stacks[number]
            if tasks[group[0]].arch() in draws:
                with _RNG:
                    run(group, number, device, accel, deliver, epoch)
            else:
                run(group, number, device, accel, deliver, epoch)

        costs = [stack_cost([tasks[i] for i in s], sizes) for s in stacks]
        _on_devices(ids, stacks, costs, work, results, tasks, accelerator, stopped, on_done,
                    on_epoch)  # fmt: skip
    return [r if r is not None else Outcome(status="failed", error="not trained") for r in results]


class _Stopped(Exception):
    """Raised in a device worker's epoch end once the calling thread stopped them."""


def _on_devices(ids, stacks, costs, run, results, tasks, accelerator, stopped, on_done,
                on_epoch) -> None:  # fmt: skip
    """Train ``stacks`` over CUDA devices ``ids``, one worker thread per device, each its
    share (:func:`~.plan.spread` of ``costs``) in plan order.

    Threads, not processes: a model's result depends only on its task (initial weights
    from its seed under :data:`_RNG`, batch orders and dropout masks from the
    counter-based hash of its seed, on whichever device), so sharing a process changes
    no number, while the data, the tasks and the callbacks need no pickling and the
    device kernels run outside the GIL. ``on_done`` and ``on_epoch`` (MLflow records,
    progress) run here on the calling thread, from a queue the workers fill."""
    share = spread(costs, len(ids))
    total = sum(costs) or 1.0
    print(
        f"[foldwise] {len(stacks)} stack(s) over {len(ids)} CUDA devices: " + ", ".join(
            f"cuda:{i} {len(s)} ({sum(costs[k] for k in s) / total:.0%} of the cost)"
            for i, s in zip(ids, share, strict=True)),
        flush=True,
    )  # fmt: skip
    events: queue.Queue = queue.Queue()

    def worker(index: int, mine: list[int]) -> None:
        def put(i: int, outcome: Outcome) -> None:
            results[i] = outcome
            events.put(("done", i, outcome))

        def epoch(number: int, info: EpochInfo) -> None:
            if stopped.is_set():
                raise _Stopped("stopped by the calling thread")
            events.put(("epoch", number, info))

        try:
            device, accel = _placement(index, accelerator)
            for s in mine:
                if stopped.is_set():
                    break
                run(s, device, accel, put, epoch)
        except BaseException as err:  # a bug outside any stack's own isolation
            events.put(("error", err, None))
        finally:
            events.put(("end", index, None))

    workers = [
        threading.Thread(target=worker, args=(i, s), name=f"foldwise-cuda:{i}", daemon=True)
        for i, s in zip(ids, share, strict=True)
    ]
    for w in workers:
        w.start()
    ended, failure = 0, None
    try:
        while ended < len(workers):
            try:
                kind, a, b = events.get(timeout=0.5)  # a timeout: Ctrl-C is seen at once
            except queue.Empty:
                continue
            if kind == "end":
                ended += 1
            elif kind == "error":
                failure = failure or a
                stopped.set()
            elif kind == "done" and on_done is not None:
                on_done(tasks[a], b)
            elif kind == "epoch" and on_epoch is not None:
                on_epoch(a, b)
    except BaseException:  # Ctrl-C, or a callback raised: workers stop at their epoch end
        stopped.set()
        for w in workers:
            w.join()
        raise
    if failure is not None:
        raise failure
