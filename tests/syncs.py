"""Counting host synchronisations on any machine, CUDA or not.

On a GPU, ``torch.cuda.set_sync_debug_mode`` reports every point where the host waits
for the device; on a CPU there is nothing to wait for, so a sync-free loop cannot be
checked there that way. :class:`HostSyncs` is a ``TorchFunctionMode`` that records the
Python-level tensor calls that *would* make the host wait on a CUDA device, whatever
device they run on:

* a device value read on the host: ``item``, ``tolist``, ``numpy``, ``cpu``,
  ``bool(t)`` / ``int(t)`` / ``float(t)`` / ``t`` as an index (``__bool__``,
  ``__int__``, ``__float__``, ``__index__``), printing a tensor;
* an output whose size depends on the values: ``nonzero``, ``argwhere``,
  ``torch.where(cond)``, ``unique``, ``masked_select``, ``bincount``,
  ``repeat_interleave`` without ``output_size``, ``one_hot`` without ``num_classes``,
  reading ``t[mask]`` with a boolean mask, or writing ``t[mask] = v`` with ``v`` a tensor
  of values (``t[mask] = scalar`` is ``masked_fill_``: no sync);
* a comparison answered on the host: ``equal``, ``allclose``, ``is_nonzero``;
* host data placed on a device: ``torch.tensor`` / ``torch.as_tensor`` with a
  ``device`` (a blocking copy), and ``.to("cpu")``.

Calls the C++ side makes internally (a CPU kernel's own checks) are not seen: only what
the Python code asks for, which is what a CUDA run would pay for.
"""

from __future__ import annotations

import linecache
import sys
from pathlib import Path

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

# always a sync: a value read on the host, or a result whose size depends on the values
ALWAYS = {
    "item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__",
    "__complex__", "__repr__", "__format__", "__contains__", "nonzero", "argwhere",
    "unique", "unique_consecutive", "masked_select", "bincount", "equal", "allclose",
    "is_nonzero",
}  # fmt: skip


def _masks(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, Tensor) and i.dtype in (torch.bool, torch.uint8) for i in items)


def syncs(func, args, kwargs) -> bool:
    """Whether ``func(*args, **kwargs)`` makes the host wait for a CUDA device."""
    name = getattr(func, "__name__", None)
    if name in ALWAYS:
        return True
    if name == "__getitem__":
        return _masks(args[1])
    if name == "__setitem__":
        value = args[2]
        return _masks(args[1]) and isinstance(value, Tensor) and value.numel() != 1
    if name == "where":
        return len(args) + len(kwargs) == 1
    if name == "repeat_interleave":
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        return isinstance(repeats, Tensor) and kwargs.get("output_size") is None
    if name == "one_hot":
        classes = args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
        return classes == -1
    if name in ("tensor", "as_tensor"):
        return kwargs.get("device") is not None
    if name == "to":
        return "cpu" in args[1:] or kwargs.get("device") == "cpu"
    return False


class HostSyncs(TorchFunctionMode):
    """Records, while entered, the calls that would sync with a CUDA device:
    ``calls`` holds ``(name, where it was called from)``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if syncs(func, args, kwargs):
            frame = sys._getframe(1)  # the caller's line (cheap: no whole-stack walk)
            while frame is not None and frame.f_code.co_filename == __file__:
                frame = frame.f_back
            where = "?"
            if frame is not None:
                path, line = frame.f_code.co_filename, frame.f_lineno
                where = f"{Path(path).name}:{line} {linecache.getline(path, line).strip()}"
            self.calls.append((getattr(func, "__name__", repr(func)), where))
        return func(*args, **kwargs)
