"""Adam for stacked parameters (leading model axis), one learning rate and weight decay per model.

``torch.optim.Adam`` has one ``lr`` per parameter *tensor*; a stack keeps M models in
one tensor, so the per-model hyperparameters need an update that broadcasts them along
the model axis. The arithmetic is ``torch.optim.Adam``'s (L2 weight decay added to the
gradient, bias-corrected moments, ``eps`` outside the square root), model by model;
the equivalence tests compare it with ``torch.optim.Adam`` on single models.

:class:`BatchedAdam` runs each pass of the update over every parameter tensor as one
``torch._foreach_*`` op on CUDA, where each op is a kernel launch, and one op per tensor
on the CPU, where ``_foreach`` is a loop in C++ and was no faster (0.76–1.0× at 80–1,280
models, ``benchmarks/bench_stack_step.py`` [3]): torch.optim.Adam's own default rule.
The two give the same numbers, bit for bit.

A step reads no device value: which models move comes as a :class:`Moving`, known on the
host before the step (the training loop builds them once per epoch), so a CUDA step never
waits for the device (``tests/test_host_syncs.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Moving:
    """The models one optimizer step moves: their positions on the host (``models``) and
    on the device (``index``; ``None`` when every model of the stack moves)."""

    models: np.ndarray
    index: Tensor | None

    @classmethod
    def of(cls, active: Tensor | Moving | None, n_models: int) -> Moving:
        """From a device mask [M] (read on the host: a sync, for callers outside a
        training loop), or every model (``None``)."""
        if isinstance(active, Moving):
            return active
        if active is None:
            return cls(np.arange(n_models), None)
        on = active.cpu().numpy().astype(bool)
        index = None if on.all() else torch.from_numpy(np.flatnonzero(on)).to(active.device)
        return cls(np.flatnonzero(on), index)


def _each(foreach: bool, name: str, first: list[Tensor], *args, **kw) -> list[Tensor]:
    """``torch._foreach_<name>`` over the lists, or ``Tensor.<name>`` tensor by tensor;
    a non-list argument is shared by every tensor."""
    if foreach:
        return getattr(torch, f"_foreach_{name}")(first, *args, **kw)
    cols = [a if isinstance(a, list) else [a] * len(first) for a in args]
    return [getattr(t, name)(*row, **kw) for t, *row in zip(first, *cols, strict=True)]


class BatchedAdam(torch.optim.Optimizer):
    """Adam over stacked parameters (dim 0 = model); ``step(moving)`` moves only those
    models (a :class:`Moving`, or a device mask: a sync).

    A model that is inactive on a step — stopped early, failed, or out of mini-batches for
    this epoch — keeps its parameters, moments and step count untouched, exactly as if it
    were trained alone.
    """

    def __init__(
        self,
        params: list[Tensor],
        lr: Sequence[float],
        weight_decay: Sequence[float],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(params, {"betas": betas, "eps": eps})
        device = params[0].device
        self.foreach = device.type == "cuda" if foreach is None else foreach
        # float64 from Python floats: a float32 lr would be off by ~1e-8 relative.
        self.lr = torch.tensor(list(lr), dtype=torch.float64, device=device)
        self.weight_decay = torch.tensor(list(weight_decay), dtype=torch.float64, device=device)
        self.decays = np.asarray(list(weight_decay)) != 0  # which models decay, on the host
        self.steps = torch.zeros_like(self.lr)
        self.n_models = len(self.lr)

    @torch.no_grad()
    def step(self, active: Moving | Tensor | None = None, closure=None):  # type: ignore[override]
        if closure is not None:
            raise ValueError("BatchedAdam takes no closure; call backward() first.")
        moving = Moving.of(active, self.n_models)
        idx = moving.index
        if not len(moving.models):
            return None
        b1, b2 = self.defaults["betas"]
        eps = self.defaults["eps"]
        sel = (lambda t: t) if idx is None else (lambda t: t.index_select(0, idx))
        steps = sel(self.steps) + 1
        lr, wd = sel(self.lr), sel(self.weight_decay)
        params = [p for p in self.param_groups[0]["params"] if p.grad is not None]
        if not params:
            return None
        dtype = params[0].dtype
        step_size = (lr / (1 - b1**steps)).to(dtype)
        bc2_sqrt = (1 - b2**steps).sqrt().to(dtype)
        any_wd = bool(self.decays[moving.models].any())  # the moving models', on the host
        wd = wd.to(dtype)
        for p in params:
            if not self.state[p]:
                self.state[p]["exp_avg"] = torch.zeros_like(p)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p)
        # one model axis per tensor: each per-model scalar viewed to broadcast against it
        views = lambda t: [t.view((-1,) + (1,) * (p.dim() - 1)) for p in params]  # noqa: E731
        exp_avg = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
        ps, gs = [sel(p) for p in params], [sel(p.grad) for p in params]
        ms, vs = [sel(m) for m in exp_avg], [sel(v) for v in exp_avg_sq]
        # torch.optim.Adam's arithmetic in its order, each pass over every tensor at once
        each = lambda name, *a, **k: _each(self.foreach, name, *a, **k)  # noqa: E731
        if any_wd:
            gs = each("addcmul", gs, views(wd), ps)
        each("lerp_", ms, gs, 1 - b1)
        each("mul_", vs, b2)
        each("addcmul_", vs, gs, gs, value=1 - b2)
        denom = each("sqrt", vs)
        each("div_", denom, views(bc2_sqrt))
        each("add_", denom, eps)
        each("addcdiv_", ps, each("mul", ms, views(step_size)), denom, value=-1.0)
        if idx is not None:  # index_select copied: write the moved models back
            for group in ((params, ps), (exp_avg, ms), (exp_avg_sq, vs)):
                for full, part in zip(*group, strict=True):
                    full.index_copy_(0, idx, part)
            self.steps.index_copy_(0, idx, steps)
        else:
            self.steps += 1
        return None


class BatchedSGD(torch.optim.Optimizer):
    """SGD over stacked parameters (dim 0 = model), one learning rate and weight decay per
    model: ``torch.optim.SGD``'s arithmetic (L2 weight decay added to the gradient; the
    momentum buffer starts as a model's first gradient; dampening; Nesterov), model by
    model. ``step(moving)`` moves only those models, as :class:`BatchedAdam`."""

    def __init__(
        self,
        params: list[Tensor],
        lr: Sequence[float],
        weight_decay: Sequence[float],
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, {"momentum": momentum, "dampening": dampening})
        device = params[0].device
        self.lr = torch.tensor(list(lr), dtype=torch.float64, device=device)
        self.weight_decay = torch.tensor(list(weight_decay), dtype=torch.float64, device=device)
        self.decays = np.asarray(list(weight_decay)) != 0  # which models decay, on the host
        self.steps = torch.zeros_like(self.lr)
        self.nesterov = nesterov
        self.n_models = len(self.lr)

    @torch.no_grad()
    def step(self, active: Moving | Tensor | None = None, closure=None):  # type: ignore[override]
        if closure is not None:
            raise ValueError("BatchedSGD takes no closure; call backward() first.")
        moving = Moving.of(active, self.n_models)
        idx = moving.index
        if not len(moving.models):
            return None
        mom, damp = self.defaults["momentum"], self.defaults["dampening"]
        sel = (lambda t: t) if idx is None else (lambda t: t.index_select(0, idx))
        dtype = self.param_groups[0]["params"][0].dtype
        lr, wd = sel(self.lr).to(dtype), sel(self.weight_decay).to(dtype)
        first = sel(self.steps) == 0
        any_wd = bool(self.decays[moving.models].any())  # the moving models', on the host
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            param, grad = sel(p), sel(p.grad)
            if any_wd:
                grad = grad.addcmul(wd.view(shape), param)
            if mom:
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = sel(state["momentum_buffer"])
                buf = torch.where(first.view(shape), grad, buf * mom + grad * (1 - damp))
                grad = grad + buf * mom if self.nesterov else buf
                if idx is None:
                    state["momentum_buffer"].copy_(buf)
                else:
                    state["momentum_buffer"].index_copy_(0, idx, buf)
            param.sub_(grad * lr.view(shape))
            if idx is not None:
                p.index_copy_(0, idx, param)
        if idx is None:
            self.steps += 1
        else:
            self.steps.index_copy_(0, idx, sel(self.steps) + 1)
        return None


class OneModel:
    """A torch optimizer for a stack of one (any optimizer, its own arithmetic), with the
    batched optimizers' ``step(moving)``: no step on a step without rows."""

    def __init__(self, inner: torch.optim.Optimizer) -> None:
        self.inner = inner

    def zero_grad(self) -> None:
        self.inner.zero_grad()

    def step(self, active: Moving | Tensor | None = None) -> None:
        if len(Moving.of(active, 1).models):
            self.inner.step()


# Optimizers a stack updates model by model: optim.name, or the _target_ they stand for.
BATCHED = {"adam": BatchedAdam, "sgd": BatchedSGD}
TORCH = {"adam": "torch.optim.Adam", "sgd": "torch.optim.SGD"}  # their torch originals
TARGETS = {"torch.optim.Adam": "adam", "torch.optim.SGD": "sgd"}
# what each reads besides lr and weight_decay
EXTRA = {"adam": ("betas", "eps"), "sgd": ("momentum", "dampening", "nesterov")}


def kind(optim: dict) -> tuple[str, dict]:
    """``("adam" | "sgd" | <dotted target>, extra kwargs)`` of an ``optim`` config: the
    built-ins and torch's Adam and SGD (without options the batched ones lack) are
    stacked; any other optimizer trains one model at a time."""
    extra = {k: v for k, v in optim.items() if k not in ("name", "_target_", "lr", "weight_decay")}
    target = optim.get("_target_")
    name = TARGETS.get(str(target)) if target else str(optim.get("name", "adam"))
    if name in BATCHED and set(extra) <= set(EXTRA[name]):
        if name == "adam":
            extra = {k: tuple(v) if k == "betas" else v for k, v in extra.items()}
        return name, extra
    return str(target), extra


# ------------------------------------------------------------------ learning-rate schedules
class Schedules:
    """Each model's own learning-rate scheduler (``scheduler._target_``: any of torch's),
    stepped by that model's own epochs (or its own optimizer steps), never its stack's.

    A stack keeps one lr per model in a tensor, and torch's schedulers move an optimizer's
    ``param_groups``; so each stacked model's scheduler drives a stand-in optimizer (one
    scalar parameter, the model's lr) and the model's entry of ``lr`` is copied from it
    after every scheduler step: torch's own schedule arithmetic, model by model. A stack
    of one with torch's own optimizer (``real``) gets the scheduler attached to it.
    """

    def __init__(
        self,
        specs: list[dict],
        base_lrs: list[float],
        lengths: list[int],
        lr: Tensor | None = None,
        real: torch.optim.Optimizer | None = None,
    ) -> None:
        from foldwise.models import resolve, schedule_kwargs

        self.lr = lr  # the stacked optimizer's per-model lr (None: ``real``)
        self.items: dict[int, tuple] = {}  # model -> (scheduler, its optimizer, spec)
        for m, (spec, base, n) in enumerate(zip(specs, base_lrs, lengths, strict=True)):
            if not spec.get("_target_"):
                continue
            opt = real or torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
            cls = resolve(str(spec["_target_"]), "scheduler._target_")
            self.items[m] = (cls(opt, **schedule_kwargs(spec, n)), opt, spec)
            self._copy(m)

    def __bool__(self) -> bool:
        return bool(self.items)

    def _copy(self, m: int) -> None:
        if self.lr is not None:
            self.lr[m] = self.items[m][1].param_groups[0]["lr"]

    def step(self, models: list[int], interval: str, monitored: dict[int, float]) -> None:
        """Step the schedulers of ``models`` whose interval is ``interval``; a
        ReduceLROnPlateau reads the model's ``monitored`` loss."""
        for m in models:
            if m not in self.items or self.items[m][2].get("interval", "epoch") != interval:
                continue
            sched, opt, _ = self.items[m]
            if self.lr is not None:
                opt.step()  # the stand-in has no gradient: a no-op torch counts as a step
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(monitored[m])
            else:
                sched.step()
            self._copy(m)

    def current(self, m: int) -> float | None:
        return self.items[m][1].param_groups[0]["lr"] if m in self.items else None
