"""How long a plan will take, from throughput measured on this machine before training.

A *probe* builds a real stack of planned tasks (the whole stack, up to ``PROBE_MODELS``)
and trains it for a few epochs in the engine's own Lightning loop, with its epoch end
(scoring, early stopping, curves) and its share of the CPU threads
(:mod:`foldwise.threads`); the first epoch is warm-up, the fastest of the next ones is
the epoch time. It then does the same for a stack of one of those tasks. (An earlier
probe timed a few bare steps on torch's default threads, not the training's share: on a
busy machine its estimates read 3-7× the measured time, issue 22.)

The two sizes split a step's cost into a part per step, whatever the stack's size
(Python, Lightning, the optimizer's kernel launches), and a part per model in it. Small
models are dominated by the first (10 digits MLPs: 1.6 ms a step, one alone: 1.1 ms), so
a stack costs nearly as much with one model left as with all of them: models that stop
early leave the stack (compaction), but the stack trains until its *last* model stops.
Hence, for models that train ``e_i`` epochs of ``s`` steps each::

    fit + n × set-up + s × (per_step × max e_i + per_model_step × Σ e_i)
        + per_end × max e_i + per_model_end × Σ e_i

(An earlier model charged the whole stack's step to its mean epochs, which missed the
stack's longest model: 0.55-0.8× the measured time on 5-fold digits.) Beyond
``PROBE_MODELS`` (GPU stacks) the per-model part is extrapolated linearly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch

from foldwise.engine.feed import Streamed
from foldwise.engine.task import Task


@dataclass(frozen=True)
class Timing:
    """One probed stack size: its step and epoch end at the fastest steady epoch's pace,
    its set-up per model, and what a fit costs outside its epochs."""

    models: int
    step_seconds: float
    epoch_end_seconds: float
    setup_seconds: float
    fit_seconds: float


@dataclass(frozen=True)
class Probe:
    full: Timing  # the planned stack (up to PROBE_MODELS)
    one: Timing  # a stack of one of its tasks (the same as ``full`` for a stack of one)

    @property
    def models(self) -> int:
        return self.full.models

    def scaled(self, factor: float) -> Probe:
        """Every time × ``factor`` (so :meth:`stack_seconds` is × ``factor``)."""

        def one(t: Timing) -> Timing:
            return Timing(t.models, t.step_seconds * factor, t.epoch_end_seconds * factor,
                          t.setup_seconds * factor, t.fit_seconds * factor)  # fmt: skip

        return Probe(one(self.full), one(self.one))

    def _split(self, full: float, one: float) -> tuple[float, float]:
        """(per stack, per model) parts of a cost measured at both sizes. A burst of
        someone else's work can cover either probe: the stack of one reading slower
        than the whole stack gives no per-model part (never below zero), and the whole
        stack reading slower than its models one at a time (stacking's floor; seen:
        100× a stack of one's step for 10 digits MLPs, an estimate 19× the measured
        time) is read as that."""
        if self.full.models <= 1:
            return full, 0.0
        full = min(full, self.full.models * one)
        per_model = max(0.0, (full - one) / (self.full.models - 1))
        return max(0.0, full - per_model * self.full.models), per_model

    def stack_seconds(self, epochs: Sequence[float], steps: float, longest: float) -> float:
        """A stack of ``len(epochs)`` models training ``epochs[i]`` epochs of ``steps``
        steps each; it trains until its longest model stops, ``longest`` epochs."""
        step, step_model = self._split(self.full.step_seconds, self.one.step_seconds)
        end, end_model = self._split(self.full.epoch_end_seconds, self.one.epoch_end_seconds)
        total = float(sum(epochs))
        return (
            self.full.fit_seconds
            + len(epochs) * self.full.setup_seconds
            + steps * (step * longest + step_model * total)
            + end * longest
            + end_model * total
        )


def probe(
    tasks: list[Task],
    x: np.ndarray | Streamed,
    y: np.ndarray,
    meta,
    *,
    accelerator: str = "cpu",
    precision: int = 32,
    epochs: int = 12,
    budget: float = 0.6,
    max_steps: int = 24,
) -> Probe:
    """Time a stack of ``tasks``, then (more than one) a stack of its first task, in the
    engine's own loop and threads (:func:`time_stack`)."""
    from foldwise import engine

    accelerator = engine.device_for(accelerator)
    device = torch.device("cuda" if accelerator == "gpu" else accelerator)
    dtype = engine.DTYPES[precision]
    if not isinstance(x, engine.Streamed):  # the data's move is once per process, not set-up
        engine._on_device(x, y, device, dtype)
    steps = min(max_steps, min(steps_per_epoch(t) for t in tasks))
    kw = dict(accelerator=accelerator, device=device, dtype=dtype, epochs=epochs,
              budget=budget, steps=steps)  # fmt: skip
    full = time_stack(tasks, x, y, meta, **kw)
    return Probe(full, time_stack(tasks[:1], x, y, meta, **kw) if len(tasks) > 1 else full)


def time_stack(
    tasks: list[Task],
    x: np.ndarray | Streamed,
    y: np.ndarray,
    meta,
    *,
    accelerator: str,
    device: torch.device,
    dtype: torch.dtype,
    epochs: int,
    budget: float,
    steps: int,
) -> Timing:
    """Train a stack of ``tasks`` for up to ``epochs`` epochs of ``steps`` steps, stopping
    once the epochs after the first (a process's first epoch pays warm-up) add up to
    ``budget`` seconds; time its set-up, the fastest of those epochs, and the rest of the
    fit."""
    from foldwise import engine, threads

    t = time.perf_counter()
    module = engine.build_stack(
        tasks, x, y, meta, device, dtype,
        act_width=engine.footprints(tasks[:1], meta)[tasks[0].arch()].activations,
    )  # fmt: skip
    setup = (time.perf_counter() - t) / len(tasks)
    walls, ends = [], []
    start, end = module.on_train_epoch_start, module.on_train_epoch_end

    def timed_start() -> None:
        walls.append(time.perf_counter())
        start()

    def timed_end() -> None:
        t = time.perf_counter()
        end()
        ends.append(time.perf_counter() - t)
        walls[-1] = time.perf_counter() - walls[-1]
        if len(walls) > 2 and sum(walls[1:]) >= budget:
            module.trainer.should_stop = True

    module.on_train_epoch_start, module.on_train_epoch_end = timed_start, timed_end
    trainer = pl.Trainer(
        max_epochs=epochs, limit_train_batches=steps, accelerator=accelerator, devices=1,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    t = time.perf_counter()
    with threads.training():
        trainer.fit(module)
    fit = time.perf_counter() - t
    # The fastest steady epoch: this machine's pace when nobody else is busy. On a shared
    # machine some epochs fall in a burst of someone else's work and take 10-100× longer
    # (seen on 2 cores), often for the whole of a probe's second: the median then read
    # up to 7× the measured time, the mean up to 4.5×. Under sustained load the training
    # is slower than this pace (docs/schemes.md).
    k = int(np.argmin(walls[1:])) + 1 if len(walls) > 1 else 0  # max_epochs 1: no warm-up
    return Timing(
        len(tasks),
        max(0.0, walls[k] - ends[k]) / steps,
        ends[k],
        setup,
        # outside the epochs: the trainer's start and end (not the first epoch's warm-up:
        # the probe, the process's first training, pays it for the stacks after it)
        max(0.0, fit - sum(walls)),
    )


def steps_per_epoch(task: Task) -> int:
    rows = len(task.train)
    if task.hyper.early_stopping:
        rows = rows - math.ceil(task.hyper.inner_fraction * len(set(task.train.tolist())))
    return max(1, math.ceil(rows / task.batch_size))
