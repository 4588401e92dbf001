"""M networks of one architecture as one module: parameters stacked along a leading model axis.

Any ``nn.Module`` is stacked with ``torch.func.stack_module_state`` and run with
``vmap(functional_call)``; a plain MLP (``Linear``/``ReLU``/``Dropout`` in a
``Sequential``) takes a faster path of batched matrix products (``baddbmm``) that skips
vmap's per-op dispatch. Both read the same stacked parameters, named as in the
single network's ``state_dict``, so :meth:`Stack.unstack` gives back ordinary modules.

Dropout: each model's masks come from a counter-based hash of its own seed and steps
(:class:`DropoutMasks`, drawn for the whole stack at once), so a model's result does
not depend on which other models share its stack (a design rule: a task's result never
depends on how many tasks share its process, stack or machine). ``nn.Dropout`` modules
of the template are swapped for :class:`MaskDropout`, which multiplies by a mask passed in;
each layer keeps each model's own rate (read from the networks, so a user's network
with several rates, or none named ``dropout``, is stacked as it would train alone).

Buffers (BatchNorm's running statistics) are stacked like the parameters: each model
updates its own, in place, through ``vmap``. A network ``vmap`` cannot run (random ops
other than ``nn.Dropout``, data-dependent control flow) trains as a stack of one
(``solo``), called directly.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from foldwise.engine import rng


class MaskDropout(nn.Module):
    """Dropout whose (already scaled) keep-mask is supplied as the ``mask`` buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask if self.training and self.mask.numel() else x


def _swap_dropout(module: nn.Module) -> list[str]:
    """Replace every ``nn.Dropout`` in ``module`` (in place); return their qualified names."""
    names = []
    for name, child in list(module.named_modules()):
        for cname, sub in list(child.named_children()):
            if isinstance(sub, nn.Dropout):
                setattr(child, cname, MaskDropout())
                names.append(f"{name}.{cname}" if name else cname)
    return names


def _is_plain_mlp(module: nn.Module) -> bool:
    """foldwise's own MLP only: a user's network that merely looks like one (a ``net``
    Sequential of Linear/ReLU/Dropout) may do more in its forward."""
    from foldwise.models import MLP

    seq = getattr(module, "net", None)
    return (
        type(module) is MLP
        and isinstance(seq, nn.Sequential)
        and list(module.children()) == [seq]
        and all(isinstance(m, nn.Linear | nn.ReLU | nn.Dropout) for m in seq)
    )


class Stack(nn.Module):
    """``len(modules)`` copies of one architecture, each keeping its own initial weights."""

    def __init__(self, modules: list[nn.Module], sample_shape: tuple, solo: bool = False):
        super().__init__()
        if len({type(m) for m in modules}) != 1:
            raise ValueError("a stack holds one architecture")
        if solo and len(modules) != 1:
            raise ValueError("a network vmap cannot run trains in a stack of one")
        self.solo = solo
        template = copy.deepcopy(modules[0])
        self.fast = _is_plain_mlp(template) and not solo
        self.dropout_names = [] if solo else _swap_dropout(template)
        self.n_models = len(modules)
        params, buffers = stack_module_state(modules)
        self.names = list(params)
        self.weights = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in params])
        self.buffer_values = {n: b.detach().clone() for n, b in buffers.items()}
        # BatchNorm's running statistics change in training: a model without rows on a
        # step must get its own back, and a best epoch must keep them (see loop.py).
        self.mutable = any(b.is_floating_point() for b in self.buffer_values.values())
        # Structure only, and not a submodule: .to(device) must not try to move it.
        object.__setattr__(self, "template", template.to("meta"))
        # each dropout layer's rate in each model
        self.p = {
            n: torch.tensor([float(m.get_submodule(n).p) for m in modules], dtype=torch.float64)
            for n in self.dropout_names
        }
        self.mask_shapes = {} if solo else self._mask_shapes(modules[0], sample_shape)

    def _mask_shapes(self, module: nn.Module, sample_shape: tuple) -> dict[str, tuple]:
        """Per-sample input shape of each dropout layer, from a dry run of one network."""
        probe = copy.deepcopy(module).cpu().float()
        shapes: dict[str, tuple] = {}
        hooks = [
            m.register_forward_pre_hook(
                lambda _m, args, n=name: shapes.__setitem__(n, tuple(args[0].shape[1:]))
            )
            for name, m in probe.named_modules()
            if isinstance(m, nn.Dropout)
        ]
        with torch.no_grad():
            probe.eval()(torch.zeros(1, *sample_shape))
        for h in hooks:
            h.remove()
        return shapes

    def params(self, models: Tensor | None = None) -> dict[str, Tensor]:
        if models is None:
            return dict(zip(self.names, self.weights, strict=True))
        return {n: w.index_select(0, models) for n, w in zip(self.names, self.weights, strict=True)}

    def state(self, models: Tensor | None = None) -> dict[str, Tensor]:
        """Parameters and buffers (detached) of ``models``, as :meth:`forward` takes them."""
        out = {n: w.detach() for n, w in self.params(models).items()}
        for n, b in self.buffer_values.items():
            out[n] = b if models is None else b.index_select(0, models)
        return out

    def forward(
        self,
        x: Tensor,
        masks: dict[str, Tensor] | None = None,
        params: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """``x`` [M, B, *sample] → logits [M, B, C]; ``masks`` only in training mode.

        ``params`` may hold buffers too (:meth:`state`); the stack's own are used for
        those it lacks, so a subset of models (``params`` of fewer models) must bring its
        buffers."""
        params = self.params() if params is None else params
        masks = masks if self.training else None
        if self.fast:
            return self._forward_mlp(x, params, masks or {})
        self.template.train(self.training)
        weights = {n: params[n] for n in self.names}
        buffers = {n: params.get(n, b) for n, b in self.buffer_values.items()}
        if self.solo:  # called directly: its own random ops, its own buffers updated
            one = lambda d: {n: t[0] for n, t in d.items()}  # noqa: E731
            return functional_call(self.template, (one(weights), one(buffers)), (x[0],))[None]
        for name, mask in (masks or {}).items():
            buffers[f"{name}.mask"] = mask
        call = lambda p, b, xi: functional_call(self.template, (p, b), (xi,))  # noqa: E731
        return vmap(call)(weights, buffers, x)

    def _forward_mlp(self, x: Tensor, params: dict[str, Tensor], masks: dict[str, Tensor]):
        h = x
        for i, layer in enumerate(self.template.net):
            name = f"net.{i}"
            if isinstance(layer, nn.Linear):
                w, b = params[f"{name}.weight"], params[f"{name}.bias"]
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h)
            elif name in masks:
                h = h * masks[name]
        return h

    def unstack(self, i: int, into: nn.Module, params: dict[str, Tensor] | None = None):
        """Load model ``i``'s weights into ``into`` (a fresh network of the same architecture)."""
        params = self.params() if params is None else params
        state = {n: b[i].detach().clone().cpu() for n, b in self.buffer_values.items()}
        state |= {n: t[i].detach().clone().cpu() for n, t in params.items()}
        into.load_state_dict(state)
        return into


class DropoutMasks:
    """Every model's dropout masks for a step in one set of tensor ops, drawn with the
    counter-based hash of :mod:`foldwise.engine.rng`.

    Unit ``c`` of layer ``l``'s mask [B, *shape] of model ``m`` at step ``s`` of epoch
    ``e`` is kept when ``bits(key(seed_m, DROPOUT, e, s, l), c)`` is below ``1 - p`` of
    2**32 (:func:`~foldwise.engine.rng.threshold`), so a mask depends on the model's seed
    and its own epoch and step only, never on the stack. The keys of all of an epoch's
    steps are made at its start (:meth:`epoch`); a step is then a few in-place integer
    passes over preallocated buffers per layer, for the whole stack. A model whose rate
    is 0 keeps every unit, whatever the buffers held before.
    """

    def __init__(self, stack: Stack, seeds: list[int], batch: int, device, dtype) -> None:
        shapes = stack.mask_shapes
        self.enabled = any(bool((p > 0).any()) for p in stack.p.values()) and bool(shapes)
        self.seeds = rng.split_seeds(seeds, device)
        self.layers = list(shapes)
        m = stack.n_models
        view = lambda t, n: t.view(-1, *([1] * (n + 1)))  # noqa: E731
        # the counters of a model's mask (its flat unit positions) and one work buffer
        # per layer: every model's rows are rewritten on every draw
        self.counters = {
            n: torch.arange(batch * int(np.prod(s)), dtype=torch.int32, device=device).view(
                batch, *s
            )
            for n, s in shapes.items()
        }
        self.buffers = {
            n: torch.empty((m, batch, *s), dtype=torch.int32, device=device)
            for n, s in shapes.items()
        }
        self.tmp = {n: torch.empty_like(b) for n, b in self.buffers.items()}
        p = {n: stack.p[n].to(device) for n in shapes}
        self.threshold = {n: view(rng.threshold(p[n]), len(s)) for n, s in shapes.items()}
        self.scale = {n: view((1 / (1 - p[n])).to(dtype), len(s)) for n, s in shapes.items()}
        self.zero = torch.zeros((), device=device, dtype=dtype)
        self.ndim = {n: len(s) for n, s in shapes.items()}
        self.keys: tuple[Tensor, Tensor] | None = None

    def epoch(self, epoch: int, steps: int) -> None:
        """Make the keys of every step of ``epoch`` and every layer: [M, steps, layers]."""
        if not self.enabled:
            return
        dev = self.seeds[0].device
        step = torch.arange(steps, device=dev).view(1, -1, 1)
        layer = torch.arange(len(self.layers), device=dev).view(1, 1, -1)
        self.keys = rng.keys(self.seeds, rng.DROPOUT, epoch, step, layer)

    def draw(self, step: int) -> dict[str, Tensor] | None:
        """Every model's masks for ``step`` of the epoch (already scaled by 1 / (1 - p)).
        A model without rows on the step gets one too: nothing reads it (its loss weight
        is 0 and BatchedAdam skips it)."""
        if not self.enabled:
            return None
        a, b = self.keys
        out = {}
        for li, (name, buf) in enumerate(self.buffers.items()):
            shape = (-1,) + (1,) * (self.ndim[name] + 1)
            x = rng.bits(a[:, step, li].view(shape), b[:, step, li].view(shape),
                         self.counters[name], out=buf, tmp=self.tmp[name])  # fmt: skip
            keep = x.bitwise_xor_(rng.SIGN) <= self.threshold[name]
            out[name] = torch.where(keep, self.scale[name], self.zero)
        return out
