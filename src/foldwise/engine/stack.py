"""M networks of one architecture as one module: parameters stacked along a leading model axis.

Any ``nn.Module`` is stacked with ``torch.func.stack_module_state`` and run with
``vmap(functional_call)``; a plain MLP (``Linear``/``ReLU``/``Dropout`` in a
``Sequential``) takes a faster path of batched matrix products (``baddbmm``) that skips
vmap's per-op dispatch. Both read the same stacked parameters, named as in the
single network's ``state_dict``, so :meth:`Stack.unstack` gives back ordinary modules.

Dropout: each model draws its masks from its own generator, so a model's result does
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
    """Per-model dropout masks from per-model generators, drawn only on a model's own steps.

    Uniforms are drawn model by model into one preallocated buffer (no stacking copy);
    thresholding and the ``1 / (1 - p)`` scale are then one operation over the stack.
    On the CPU the generators are NumPy's PCG64 (about twice as fast as torch's CPU
    generator for this); on a GPU, one ``torch.Generator`` per model on the device.
    """

    def __init__(self, stack: Stack, seeds: list[int], batch: int, device, dtype) -> None:
        shapes = stack.mask_shapes
        self.enabled = any(bool((p > 0).any()) for p in stack.p.values()) and bool(shapes)
        # per layer, the models that draw (rate > 0)
        self.uses = {n: [m for m, v in enumerate(p.tolist()) if v > 0] for n, p in stack.p.items()}
        self.cpu = torch.device(device).type == "cpu"
        if self.cpu:
            self.gens = [np.random.Generator(np.random.PCG64(s)) for s in seeds]
        else:
            self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        m = stack.n_models
        # A model with p = 0 never writes its rows of these buffers, so they must never be
        # read for it: its keep-mask is all ones by construction (``keep_all``), not by
        # whatever the buffer holds. (They were once torch.empty and read as `u >= 0`:
        # garbage or NaN dropped a p = 0 model's units when it shared a stack with p > 0.)
        self.buffers = {
            name: torch.ones((m, batch, *shape), device=device) for name, shape in shapes.items()
        }
        self.arrays = {n: b.numpy() for n, b in self.buffers.items()} if self.cpu else {}
        view = lambda t, n: t.view(-1, *([1] * (n + 1)))  # noqa: E731
        p = {n: stack.p[n].to(device) for n in shapes}
        self.p_view = {n: view(p[n].float(), len(s)) for n, s in shapes.items()}
        self.keep_all = {n: view(p[n] == 0, len(s)) for n, s in shapes.items()}
        self.scale = {n: view((1 / (1 - p[n])).to(dtype), len(s)) for n, s in shapes.items()}
        self.zero = torch.zeros((), device=device, dtype=dtype)

    def draw(self, active: list[bool]) -> dict[str, Tensor] | None:
        if not self.enabled:
            return None
        out = {}
        for name, u in self.buffers.items():
            for m in self.uses[name]:
                if not active[m]:
                    continue
                if self.cpu:
                    self.gens[m].random(out=self.arrays[name][m], dtype=np.float32)
                else:
                    torch.rand(u.shape[1:], generator=self.gens[m], device=u.device, out=u[m])
            # A model off this step (inactive) gets a stale mask: its loss weight is 0 and
            # BatchedAdam skips it, so nothing reads it.
            keep = (u >= self.p_view[name]) | self.keep_all[name]
            out[name] = torch.where(keep, self.scale[name], self.zero)
        return out
