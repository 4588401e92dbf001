"""How long a plan will take, from throughput measured on this machine before training.

A *probe* builds a real stack of planned tasks (the whole stack, up to ``PROBE_MODELS``)
and times its set-up, a few training steps through the same Lightning loop the engine
uses, and one end-of-epoch pass (scoring, early stopping, curves). Per-model cost
depends on the stack size (a stack that outgrows the CPU caches is slower per model),
which is why the probe uses the planned size; beyond ``PROBE_MODELS`` (GPU stacks) the
time is scaled linearly. Models that stop early leave the stack (compaction), so a
stack's time is ``set-up + mean epochs × (steps per epoch × step time + epoch end)``.
The mean epoch count comes from earlier fits of the same configurations (early stopping), else it is
``max_epochs`` (an upper bound).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch

from foldwise.engine.task import Task


@dataclass(frozen=True)
class Probe:
    models: int  # stack size probed
    step_seconds: float  # one training step of the whole probe stack
    epoch_end_seconds: float  # its end-of-epoch work: scoring, early stopping, curves
    setup_seconds: float  # per model: rows, scaler, network (before the stack trains)

    def stack_seconds(self, n_models: int, steps: float, epochs: float) -> float:
        scale = n_models / self.models
        per_epoch = steps * self.step_seconds + self.epoch_end_seconds
        return n_models * self.setup_seconds + epochs * scale * per_epoch


class _StepClock(pl.Callback):
    def __init__(self) -> None:
        self.spans: list[float] = []
        self._t = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.spans.append(time.perf_counter() - self._t)


def probe(
    tasks: list[Task],
    x: np.ndarray,
    y: np.ndarray,
    meta,
    *,
    accelerator: str = "cpu",
    precision: int = 32,
    steps: int = 6,
) -> Probe:
    """Time the set-up, ``steps`` training steps (after 2 warm-up steps) and one
    end-of-epoch pass of a stack of ``tasks``."""
    from foldwise import engine

    accelerator = engine.device_for(accelerator)
    device = torch.device("cuda" if accelerator == "gpu" else accelerator)
    dtype = engine.DTYPES[precision]
    engine._on_device(x, y, device, dtype)  # the data's move is once per process, not set-up
    t = time.perf_counter()
    module = engine.build_stack(tasks, x, y, meta, device, dtype)
    setup = (time.perf_counter() - t) / len(tasks)
    clock = _StepClock()
    per_epoch = min(steps_per_epoch(t) for t in tasks)
    trainer = pl.Trainer(
        max_epochs=math.ceil((steps + 2) / per_epoch), limit_train_batches=steps + 2,
        accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
        limit_val_batches=0, callbacks=[clock],
    )  # fmt: skip
    epoch_end = module.on_train_epoch_end
    module.on_train_epoch_end = lambda: None  # timed once, below
    trainer.fit(module)
    step = float(np.median(clock.spans[2:] or clock.spans))
    t = time.perf_counter()
    epoch_end()
    return Probe(len(tasks), step, time.perf_counter() - t, setup)


def steps_per_epoch(task: Task) -> int:
    rows = len(task.train)
    if task.hyper.early_stopping:
        rows = rows - math.ceil(task.hyper.inner_fraction * len(set(task.train.tolist())))
    return max(1, math.ceil(rows / task.batch_size))
