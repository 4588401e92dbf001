"""Which tasks train together: stacks of one architecture, bounded by memory.

Tasks whose :meth:`~foldwise.engine.task.Task.arch` is equal (same network shape and
batch size) may share a stack; learning rate, weight decay, dropout, epochs, early
stopping and seed may differ inside one. A stack's size is bounded by
``max_models`` and by a memory estimate built from the network's *measured* parameter
count and per-row activation width (a dry run of one network with forward hooks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from foldwise.engine.task import Task


@dataclass(frozen=True)
class Footprint:
    """One model's size: parameters and activation values per input row (all layers)."""

    params: int
    activations: int

    def bytes(self, batch: int, itemsize: int) -> int:
        # weights, gradients, Adam's two moments, the best-epoch copy and one scratch copy,
        # plus activations kept for backward (x3: outputs, masks, gradients).
        return itemsize * (6 * self.params + 3 * batch * self.activations)


def footprint(module: nn.Module, sample_shape: tuple[int, ...]) -> Footprint:
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(out[0].numel()))
        for m in module.modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        was = module.training
        module.eval()(torch.zeros(1, *sample_shape))
        module.train(was)
    for h in hooks:
        h.remove()
    n_params = sum(p.numel() for p in module.parameters())
    return Footprint(n_params, int(math.prod(sample_shape)) + sum(sizes))


def plan_stacks(
    tasks: list[Task],
    sizes: dict[tuple, Footprint],
    *,
    itemsize: int = 4,
    max_models: int | None = None,
    memory_mb: float = 2048,
    min_stacks: int = 1,
    max_params: int | None = None,
    solo: set[tuple] | frozenset[tuple] = frozenset(),
) -> list[list[int]]:
    """Task indices grouped into stacks (order kept within an architecture).

    ``solo``: architectures ``vmap`` cannot run, one model per stack.

    ``max_params`` bounds the parameters of a whole stack (see ``engine.cpu_stack_params``).

    ``min_stacks`` splits the work so that that many parallel workers each get a stack.
    """
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tasks):
        groups.setdefault(t.arch(), []).append(i)
    per_group = {}
    for arch, members in groups.items():
        per_model = sizes[arch].bytes(tasks[members[0]].batch_size, itemsize)
        cap = max(1, int(memory_mb * 2**20 // per_model))
        if max_models:
            cap = min(cap, int(max_models))
        if max_params:
            cap = min(cap, max(1, int(max_params) // sizes[arch].params))
        per_group[arch] = 1 if arch in solo else cap
    n_stacks = sum(math.ceil(len(m) / per_group[a]) for a, m in groups.items())
    if n_stacks < min_stacks:  # spread over workers: shrink caps evenly
        total = sum(len(m) for m in groups.values())
        even = max(1, math.ceil(total / min_stacks))
        per_group = {a: min(c, even) for a, c in per_group.items()}
    stacks = []
    for arch, members in groups.items():
        n = math.ceil(len(members) / per_group[arch])
        size = math.ceil(len(members) / n)  # equal sizes, not one big and one tiny
        if arch in solo:  # ensemble members too: each trains alone
            stacks += [[i] for i in members]
            continue
        stacks += _pack(members, [tasks[i].group for i in members], size)
    return stacks


# A step's cost that does not grow with the stack (Python, Lightning, kernel launches), in
# the units of :func:`stack_cost` (parameter-rows): on 2 CPU cores a stack of one 10-digits
# MLP (9,610 parameters, batch 64) steps in 1.1 ms and each further model adds ~0.055 ms
# (engine/estimate.py), so the fixed part is ~20 models' worth: 20 × 9,610 × 64 ≈ 1.2e7.
STEP_OVERHEAD = 1.2e7


def stack_cost(tasks: list[Task], sizes: dict[tuple, Footprint]) -> float:
    """A stack's relative training cost, to balance stacks over devices (never a time):
    each model's parameter-rows per step (``params + activations`` per row × batch) over
    its steps to ``max_epochs``, plus the fixed part of every step until the stack's
    longest model ends. Early stopping is unknown before training: ``max_epochs`` counts."""
    steps = [max(1, math.ceil(len(t.train) / t.batch_size)) * t.hyper.max_epochs for t in tasks]
    work = sum(
        s * t.batch_size * (sizes[t.arch()].params + sizes[t.arch()].activations)
        for s, t in zip(steps, tasks, strict=True)
    )
    return float(work + STEP_OVERHEAD * max(steps))


def spread(costs: list[float], n_devices: int) -> list[list[int]]:
    """Stacks (by index) for each of ``n_devices`` devices: the costliest stack first, to
    the device with the least cost so far (ties: the lowest device), each device's
    stacks then in plan order. Every stack goes to exactly one device; deterministic, so
    a run's placement is the same every time (results never depend on it)."""
    load = [0.0] * n_devices
    out: list[list[int]] = [[] for _ in range(n_devices)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        d = min(range(n_devices), key=lambda d: (load[d], d))
        out[d].append(i)
        load[d] += costs[i]
    return [sorted(s) for s in out]


def _pack(members: list[int], groups: list[str], size: int) -> list[list[int]]:
    """Consecutive chunks of about ``size`` tasks that never split a group (the members
    of one ensemble are combined as they finish, so they must share a stack); a group
    larger than ``size`` gets a stack of its own."""
    units: list[list[int]] = []
    last = None
    for i, g in zip(members, groups, strict=True):
        if units and g and g == last:
            units[-1].append(i)
        else:
            units.append([i])
        last = g
    stacks: list[list[int]] = []
    for unit in units:
        if stacks and len(stacks[-1]) + len(unit) <= size:
            stacks[-1] += unit
        else:
            stacks.append(list(unit))
    return stacks
