"""How long a plan will take, from throughput measured on this machine before training.

A *probe* builds a real stack of planned tasks (the whole stack, up to ``PROBE_MODELS``)
and trains it for a few epochs in the engine's own Lightning loop, with its epoch end
(scoring, early stopping, curves) and its share of the CPU threads
(:mod:`foldwise.threads`); the first epoch is warm-up, the fastest of the next ones is
the epoch time. (An earlier probe timed a few bare steps on torch's default threads, not
the training's share: on a busy machine its estimates read 3-7× the measured time,
issue 22.) Per-model cost depends on the stack size (a stack that
outgrows the CPU caches is slower per model), which is why the probe uses the planned
size; beyond ``PROBE_MODELS`` (GPU stacks) the time is scaled linearly. Models that stop
early leave the stack (compaction), so a stack's time is
``set-up + mean epochs × (steps per epoch × step time + epoch end)``. The mean epoch
count comes from earlier fits of the same configurations (early stopping), else it is
``max_epochs`` (an upper bound).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch

from foldwise.engine.feed import Streamed
from foldwise.engine.task import Task


@dataclass(frozen=True)
class Probe:
    models: int  # stack size probed
    step_seconds: float  # one training step of the whole probe stack, with its share of the loop
    epoch_end_seconds: float  # its end-of-epoch work: scoring, early stopping, curves
    setup_seconds: float  # per model: rows, scaler, network (before the stack trains)

    def stack_seconds(self, n_models: int, steps: float, epochs: float) -> float:
        scale = n_models / self.models
        per_epoch = steps * self.step_seconds + self.epoch_end_seconds
        return n_models * self.setup_seconds + epochs * scale * per_epoch


def probe(
    tasks: list[Task],
    x: np.ndarray | Streamed,
    y: np.ndarray,
    meta,
    *,
    accelerator: str = "cpu",
    precision: int = 32,
    epochs: int = 8,
    budget: float = 1.0,
    max_steps: int = 24,
) -> Probe:
    """Train a stack of ``tasks`` in the engine's own loop and threads for up to
    ``epochs`` epochs of at most ``max_steps`` steps, stopping once the epochs after the
    first (a process's first epoch pays warm-up) add up to ``budget`` seconds; time its
    set-up and the fastest of those epochs."""
    from foldwise import engine, threads

    accelerator = engine.device_for(accelerator)
    device = torch.device("cuda" if accelerator == "gpu" else accelerator)
    dtype = engine.DTYPES[precision]
    if not isinstance(x, engine.Streamed):  # the data's move is once per process, not set-up
        engine._on_device(x, y, device, dtype)
    t = time.perf_counter()
    module = engine.build_stack(
        tasks, x, y, meta, device, dtype,
        act_width=engine.footprints(tasks[:1], meta)[tasks[0].arch()].activations,
    )  # fmt: skip
    setup = (time.perf_counter() - t) / len(tasks)
    steps = min(max_steps, min(steps_per_epoch(t) for t in tasks))
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
    with threads.training():
        trainer.fit(module)
    # The fastest steady epoch: on a shared machine a probe's second or two can fall in
    # a burst of someone else's work and read 10-50× slow throughout (seen on 2 cores),
    # while the training's minutes average such bursts out.
    k = int(np.argmin(walls[1:])) + 1 if len(walls) > 1 else 0  # max_epochs 1: no warm-up
    return Probe(len(tasks), max(0.0, walls[k] - ends[k]) / steps, ends[k], setup)


def steps_per_epoch(task: Task) -> int:
    rows = len(task.train)
    if task.hyper.early_stopping:
        rows = rows - math.ceil(task.hyper.inner_fraction * len(set(task.train.tolist())))
    return max(1, math.ceil(rows / task.batch_size))
