"""Counter-based random numbers for a whole stack at once: a hash of (model seed, what is
drawn, epoch, step, element) → 32 random bits, in torch integer ops over every model.

Why counter-based: a stateful generator per model (NumPy's, or ``torch.Generator``) is one
call per model per draw — thousands of small launches per step at thousands of models.
A hash needs no state, so one set of tensor ops draws every model's dropout masks (or
every model's batch order), and model ``m``'s bits are a function of its own seed and
its own counters only: never of its stack's size, its position, or its stack-mates
(the design rule the stack property tests check). The same bits come out on any device.

The construction (the Philox/Threefry idea — a keyed bijection of a counter — with
cheap rounds; tests/reference.py reimplements it in NumPy, and tests/test_random.py
checks uniformity and independence):

* ``mix`` is a 32-bit multiply–xorshift finaliser, a bijection of [0, 2**32):
  ``x ^= x >> 16; x *= A; x ^= x >> 15; x *= B; x ^= x >> 16`` (mod 2**32). The
  multipliers are odd and below 2**31 so that a product of a 32-bit lane by one stays
  below 2**63: lanes are held in int64 (torch's unsigned 32-bit dtype lacks shifts and
  comparisons) and no operation ever overflows, on any backend.
* A draw's key is a 64-bit sponge over its words ``(seed low 32 bits, seed high 32 bits,
  stream, epoch, step, layer)``: two lanes, ``h1 = mix(h1 ^ w)``, ``h2 = mix(h2 + h1)``
  (mod 2**32) per word, so two different word lists share a key with chance ~2**-64,
  not the 2**-32 of one lane. It gives ``a = (h1 | 1) & 0x7FFFFFFF`` (odd) and ``b = h2``.
* Element ``c`` (< 2**31) of a draw gets ``mix((c * a + b) mod 2**32)``. Two keys map the
  same counter through different affine maps, so two draws share values only where
  independent uniform draws would (about n**2 / 2**32 coincidences in n values).

Uses: dropout keeps a unit when its bits are below ``round((1 - p) * 2**32)`` (exact to
2**-32; p = 0 keeps every unit), and a model's batch order in an epoch is the stable
argsort of the bits of its row positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK = 0xFFFFFFFF
A, B = 0x7FEB352D, 0x21F0AAAD  # odd, < 2**31: see the module docstring
# Initial lanes and per-stream words (arbitrary distinct constants: fractional digits of
# the golden ratio and of sqrt(2), sqrt(3)).
H1, H2 = 0x9E3779B9, 0x6A09E667
DROPOUT, ORDER = 0xBB67AE85, 0x3C6EF372
SPAN = 2**32


def mix(x: Tensor) -> Tensor:
    """The 32-bit finaliser, in place on an int64 tensor of values in [0, 2**32)."""
    x.bitwise_xor_(x >> 16).mul_(A).bitwise_and_(MASK)
    x.bitwise_xor_(x >> 15).mul_(B).bitwise_and_(MASK)
    return x.bitwise_xor_(x >> 16)


def split_seeds(seeds: list[int], device=None) -> tuple[Tensor, Tensor]:
    """Each model's seed as two 32-bit words (low, high) [M] (int64): any Python int,
    taken mod 2**64."""
    s = [int(v) % 2**64 for v in seeds]
    lo = torch.tensor([v & MASK for v in s], dtype=torch.int64, device=device)
    hi = torch.tensor([v >> 32 for v in s], dtype=torch.int64, device=device)
    return lo, hi


def keys(seed_words: tuple[Tensor, Tensor], *words: int | Tensor) -> tuple[Tensor, Tensor]:
    """The draw keys ``(a, b)`` of every model for ``words`` (stream, epoch, step, ...).

    ``seed_words``: :func:`split_seeds` [M]. A word may be a tensor that broadcasts
    against [M, 1, ..., 1] (leading model axis), e.g. every step of an epoch at once:
    the keys then have the broadcast shape."""
    lo, hi = seed_words
    extra = max((w.dim() for w in words if isinstance(w, Tensor)), default=1)
    view = (-1,) + (1,) * (extra - 1)
    h1 = torch.full_like(lo, H1).view(view)
    h2 = torch.full_like(lo, H2).view(view)
    for w in (lo.view(view), hi.view(view), *words):
        h1 = mix(h1 ^ w)
        h2 = mix((h2 + h1).bitwise_and_(MASK))
    return (h1 | 1) & 0x7FFFFFFF, h2


def bits(a: Tensor, b: Tensor, counters: Tensor, out: Tensor | None = None) -> Tensor:
    """32 random bits (int64 in [0, 2**32)) per ``counters`` element for each key:
    ``a``, ``b`` [M, 1...] broadcast against ``counters`` (values < 2**31)."""
    out = torch.mul(counters, a, out=out) if out is not None else counters * a
    return mix(out.add_(b).bitwise_and_(MASK))


def uniform(a: Tensor, b: Tensor, counters: Tensor, dtype=torch.float64) -> Tensor:
    """Uniforms on [0, 1) from :func:`bits` (float32: their top 24 bits, exact)."""
    x = bits(a, b, counters)
    if dtype == torch.float64:
        return x.to(dtype) / SPAN
    return (x >> 8).to(dtype) / 2**24


def threshold(p: Tensor) -> Tensor:
    """Dropout's keep threshold for rates ``p`` (float64): a unit is kept when its bits
    are below it, with probability ``1 - p`` to 2**-32; p = 0 keeps every unit."""
    return torch.round((1 - p.double()) * SPAN).to(torch.int64)


def orders(seed_words: tuple[Tensor, Tensor], epoch: int, lengths: Tensor) -> Tensor:
    """Each model's own random order of its ``lengths[m]`` rows in ``epoch``: positions
    [M, max(lengths)], a permutation of ``0 .. lengths[m] - 1`` first in each row (the
    padding positions after it). The stable argsort of the bits of the positions, so a
    model's order depends on its seed, the epoch and its row count only."""
    width = int(lengths.max()) if lengths.numel() else 0
    a, b = keys(seed_words, ORDER, epoch)
    pos = torch.arange(width, device=lengths.device)
    x = bits(a.view(-1, 1), b.view(-1, 1), pos)
    x.masked_fill_(pos >= lengths.view(-1, 1), SPAN)  # padding sorts last
    return x.argsort(dim=1, stable=True)
