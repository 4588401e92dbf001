"""How long a plan will take, from throughput measured on this machine before training.

A *probe* builds a real stack (the first ``probe_models`` tasks of a planned stack) and
times a few training steps through the same Lightning loop the engine uses, then one
scoring pass of each per-epoch evaluation set. Stacked training on a CPU or GPU is
throughput-bound, so a stack of M models costs about M/m times a probe of m models per
step; models that stop early leave the stack (compaction), so a stack's time is
``mean epochs × (steps per epoch × step time + evaluation time)``. The mean epoch count
comes from earlier fits of the same configurations (early stopping), else it is
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
    eval_seconds: float  # one epoch-end scoring of its per-epoch evaluation sets

    def stack_seconds(self, n_models: int, steps: int, epochs: float) -> float:
        scale = n_models / self.models
        return epochs * scale * (steps * self.step_seconds + self.eval_seconds)


class _StepClock(pl.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())


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
    """Time ``steps`` training steps and one evaluation of a stack of ``tasks``."""
    from foldwise import engine
    from foldwise.engine.loop import StackTrainer
    from foldwise.engine.stack import Stack

    accelerator = engine.device_for(accelerator)
    device = torch.device("cuda" if accelerator == "gpu" else accelerator)
    dtype = engine.DTYPES[precision]
    xt, yt = engine._on_device(x, y, device, dtype)
    prepared = [engine.prepare(t, x, y) for t in tasks]
    modules = [engine._build(t, meta).to(dtype) for t in tasks]
    stack = Stack(modules, [t.hyper.dropout for t in tasks], engine._sample_shape(meta))
    module = StackTrainer(tasks, prepared, stack.to(device), xt, yt, meta.n_classes)
    clock = _StepClock()
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=steps + 2, accelerator=accelerator, devices=1,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[clock],
    )  # fmt: skip
    module.on_train_epoch_end = lambda: None  # time the scoring separately, below
    trainer.fit(module)
    gaps = np.diff(clock.starts)[1:]  # the first step pays warm-up
    step = float(np.median(gaps)) if len(gaps) else math.nan
    sel = torch.arange(len(tasks), device=device)
    t = time.perf_counter()
    for name in module.set_names:
        if name in module.sets:
            module.score(name, sel)
    return Probe(len(tasks), step, time.perf_counter() - t)


def steps_per_epoch(task: Task) -> int:
    rows = len(task.train)
    if task.hyper.early_stopping:
        rows = rows - math.ceil(task.hyper.inner_fraction * len(set(task.train.tolist())))
    return max(1, math.ceil(rows / task.batch_size))
