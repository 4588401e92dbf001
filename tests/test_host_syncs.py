"""A training step never makes the host wait for the device (issue 20): no ``.item()``,
``.tolist()``, ``bool(tensor)``, ``nonzero``, boolean-mask read or other host
synchronisation in the stack's ``training_step`` or its optimizer's step. Which models
have rows on a step, and whether to compute only those, is known on the host when the
epoch's batches are built (engine/loop.py, ``_Step``).

Checked on any machine, CUDA or not, by counting the calls that would sync on CUDA
(tests/syncs.py), over the stack property's random heterogeneous stacks and over stacks
made to compact (most models stopped), with BatchNorm, a user's transform, SGD with
momentum and a per-step learning-rate schedule. Epoch-end bookkeeping (scores, early
stopping) reads the device once per epoch, outside the step. Streamed rows
(engine/feed.py) keep their per-step transfer of the step's block of rows.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from syncs import HostSyncs
from test_stack_property import DATA, stacks

from foldwise import engine
from foldwise.engine import Hyper, Task
from foldwise.engine import loop as loop_module
from foldwise.engine.stack import Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples/own_data"))


def _train_counting(tasks, kind: str, **kw) -> tuple[list[engine.Outcome], Counter, Counter]:
    """Train ``tasks``; returns the outcomes, the syncs (by call and line) made from each
    epoch's start to its end (building its batches, Lightning's loop, the training steps
    and their optimizer steps; not the epoch-end scoring), and what the steps did
    (``steps``; ``compact``: steps run on a subset of the stack)."""
    found: Counter = Counter()
    seen: Counter = Counter()
    trainer = loop_module.StackTrainer
    start, end, step, params = (trainer.on_train_epoch_start, trainer.on_train_epoch_end,
                                trainer.training_step, Stack.params)  # fmt: skip
    watch = HostSyncs()

    def started(self):
        start(self)
        watch.__enter__()
        seen["watching"] = 1

    def ended(self):
        if seen.pop("watching", 0):
            watch.__exit__(None, None, None)
        end(self)

    def counted(self, batch, batch_idx):
        seen["steps"] += 1
        with mock.patch.object(Stack, "params", spied):
            return step(self, batch, batch_idx)

    def spied(self, models=None):
        seen["compact"] += models is not None
        return params(self, models)

    x, y, meta = DATA[kind]
    with (
        mock.patch.object(trainer, "on_train_epoch_start", started),
        mock.patch.object(trainer, "on_train_epoch_end", ended),
        mock.patch.object(trainer, "training_step", counted),
    ):
        try:
            outcomes = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64, **kw)
        finally:  # an epoch that raised (a stack retried in halves) never reached its end
            if seen.pop("watching", 0):
                watch.__exit__(None, None, None)
    found.update(watch.calls)
    return outcomes, found, seen


CALLS = {  # what the call does: whether it waits for a CUDA device
    "item": (lambda t, m: t.sum().item(), True),
    "tolist": (lambda t, m: t.tolist(), True),
    "bool": (lambda t, m: bool(m.any()), True),
    "int": (lambda t, m: int(t[0]), True),
    "float": (lambda t, m: float(t[0]), True),
    "index": (lambda t, m: [0, 1, 2][t.long()[1]], True),
    "nonzero": (lambda t, m: m.nonzero(), True),
    "where(cond)": (lambda t, m: torch.where(m), True),
    "unique": (lambda t, m: torch.unique(t), True),
    "mask read": (lambda t, m: t[m], True),
    "masked_select": (lambda t, m: t.masked_select(m), True),
    "mask write of values": (lambda t, m: t.__setitem__(m, torch.tensor([5.0, 6.0])), True),
    "numpy": (lambda t, m: t.numpy(), True),
    "cpu": (lambda t, m: t.cpu(), True),
    "to cpu": (lambda t, m: t.to("cpu"), True),
    "host data to a device": (lambda t, m: torch.tensor([1, 2], device=t.device), True),
    "one_hot unsized": (lambda t, m: torch.nn.functional.one_hot(t.long()), True),
    "repeat_interleave unsized": (lambda t, m: t.repeat_interleave(t.long()), True),
    "equal": (lambda t, m: t.equal(t), True),
    "format": (lambda t, m: f"{t}", True),
    # device work that never waits for the device
    "arithmetic": (lambda t, m: t * 2 + t.sum(), False),
    "integer index": (lambda t, m: t[torch.tensor([0, 2])], False),  # a gather
    "index_select": (lambda t, m: t.index_select(0, torch.tensor([1])), False),
    "mask fill": (lambda t, m: t.__setitem__(m, 0.0), False),  # masked_fill_
    "where(cond, a, b)": (lambda t, m: torch.where(m, t, 0.0), False),
    "all": (lambda t, m: m.all(), False),  # the result stays a tensor
    "dtype": (lambda t, m: t.to(torch.float64), False),
    "one_hot sized": (lambda t, m: torch.nn.functional.one_hot(t.long(), 4), False),
    "slice": (lambda t, m: t[1:], False),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_the_counter_sees_every_call_that_waits_for_a_device_and_nothing_else(name):
    call, syncs = CALLS[name]
    t, m = torch.tensor([1.0, 0.0, 3.0]), torch.tensor([True, False, True])
    with HostSyncs() as h:
        call(t.clone(), m)
    assert bool(h.calls) == syncs, h.calls


@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(drawn=stacks())
def test_no_training_step_of_a_random_stack_syncs(drawn):
    kind, tasks = drawn
    _, found, seen = _train_counting(tasks, kind)
    assert seen["steps"] > 0
    assert not found, f"host syncs in an epoch's steps: {dict(found)}"


def _compacting(model: dict, optim: dict, scheduler: dict, normalize) -> list[Task]:
    """Six digits tasks that stop at different epochs (1 to 5; early stopping with
    patience 1 on half of them) on folds of 12 to 110 rows (so short folds run out of
    steps within an epoch), with dropout 0 beside dropout > 0 and a bootstrap fold: late
    in an epoch, and in the late epochs, fewer than 3 in 4 of the stack have rows."""
    rng = np.random.default_rng(5)
    n = len(DATA["classification"][1])
    tasks = []
    for i, (size, epochs, early, p) in enumerate(
        [(110, 5, False, 0.0), (60, 4, True, 0.2), (12, 1, False, 0.5),
         (30, 2, True, 0.0), (110, 3, True, 0.5), (60, 5, False, 0.2)]
    ):  # fmt: skip
        rows = np.sort(rng.choice(n, size, replace=False))
        train = rng.choice(rows, size, replace=True) if i == 4 else rows
        own = "_target_" in model
        tasks.append(
            Task(
                key=f"t{i}",
                model=model if own else {**model, "dropout": p},
                hyper=Hyper(
                    0.01 * (i + 1), 1e-3 * (i % 2), 0.0 if own else p, epochs, early, 0.25, 1
                ),
                batch_size=8,
                seed=100 + i,
                train=train,
                evals={"val": np.setdiff1d(np.arange(n), rows)[:20]},
                optim=optim,
                scheduler=scheduler,
                normalize=normalize if i % 2 else "feature",
            )
        )
    return tasks


STEP_LR = {"_target_": "torch.optim.lr_scheduler.ExponentialLR", "gamma": 0.9,
           "interval": "step"}  # fmt: skip
ROBUST = {"_target_": "mytransforms.RobustScale", "low": 0.2, "high": 0.8}
SMALL_CNN = {"_target_": "mynets.nets.SmallCNN", "width": 4, "blocks": 1, "dropout": 0.2}


@pytest.mark.parametrize(
    ("model", "optim", "scheduler", "normalize"),
    [
        ({"name": "mlp", "hidden": 8, "depth": 2}, {}, STEP_LR, ROBUST),
        ({"name": "cnn", "hidden": 4, "depth": 1}, {"name": "sgd", "momentum": 0.9}, {}, "none"),
        (SMALL_CNN, {}, {}, "channel"),  # BatchNorm: partial steps keep their statistics
    ],
    ids=["mlp-adam-step-lr-user-transform", "cnn-sgd-momentum", "batchnorm"],
)
def test_no_training_step_of_a_compacting_stack_syncs(model, optim, scheduler, normalize):
    tasks = _compacting(model, optim, scheduler, normalize)
    outcomes, found, seen = _train_counting(tasks, "classification", max_models=len(tasks))
    assert not found, f"host syncs in an epoch's steps: {dict(found)}"
    assert all(o.status == "ok" for o in outcomes), [o.error for o in outcomes]
    assert len({o.epochs_trained for o in outcomes}) >= 3  # they stop at different epochs
    # BatchNorm's stacks run whole (their statistics); the others compute a subset
    assert (seen["compact"] > 0) == ("_target_" not in model), seen
