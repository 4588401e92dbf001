"""Counter-based random numbers for a whole stack at once: a hash of (model seed, what is
drawn, epoch, step, element) → 32 random bits, in torch integer ops over every model.

Why counter-based: a stateful generator per model (NumPy's, or ``torch.Generator``) is one
call per model per draw — thousands of small launches per step at thousands of models.
A hash needs no state, so one set of tensor ops draws every model's dropout masks (or
every model's batch order), and model ``m``'s bits are a function of its own seed and
its own counters only: never of its stack's size, its position, or its stack-mates
(the design rule the stack property tests check). The same bits come out on any device.

The construction (the Philox/Threefry idea — a keyed bijection of a counter — with
cheap rounds; tests/reference.py reimplements it in NumPy's uint32, and
tests/test_rng.py checks uniformity and independence). All arithmetic is on 32-bit
words, mod 2**32:

* ``mix`` is a multiply–xorshift finaliser (lowbias32), a bijection of the words:
  ``x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B; x ^= x >> 16``.
* A draw's key is a 64-bit sponge over its words ``(seed low 32 bits, seed high 32 bits,
  stream, epoch, step, layer)``: two lanes, ``h1 = mix(h1 ^ w)``, ``h2 = mix(h2 + h1)``
  per word, so two different word lists share a key with chance ~2**-64, not the 2**-32
  of one lane. It gives ``a = h1 | 1`` (odd) and ``b = h2``.
* Element ``c`` (< 2**31) of a draw gets ``mix(c * a + b)``. Two keys map the same
  counter through different affine maps, so two draws share values only where
  independent uniform draws would (about n**2 / 2**32 coincidences in n values).

The words are held in int32 tensors (torch's uint32 lacks shifts and comparisons): the
bit patterns are the same, a logical shift is an arithmetic one masked, and products
and sums wrap mod 2**32 (two's complement, on every backend torch has; the spec test
compares with NumPy's unsigned arithmetic). int32 rather than int64: the passes over a
step's masks are memory-bound, and half the bytes is about twice the speed on a CPU.

Uses: dropout keeps a unit when its bits are below ``round((1 - p) * 2**32)`` (exact to
2**-32; p = 0 keeps every unit), and a model's batch order in an epoch is the stable
argsort of the (unsigned) bits of its row positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

A, B = 0x7FEB352D, 0x846CA68B
# Initial lanes and per-stream words (arbitrary distinct constants: fractional digits of
# the golden ratio and of sqrt(2), sqrt(3)).
H1, H2 = 0x9E3779B9, 0x6A09E667
DROPOUT, ORDER = 0xBB67AE85, 0x3C6EF372
SIGN = -(2**31)  # the top bit: flipping it orders signed words as unsigned ones
SPAN = 2**32


def word(v: int) -> int:
    """A Python int as the int32 value of its low 32 bits (two's complement)."""
    v &= SPAN - 1
    return v - SPAN if v >= 2**31 else v


def mix(x: Tensor, tmp: Tensor | None = None) -> Tensor:
    """The finaliser, in place on an int32 tensor; ``tmp``: a work buffer like ``x``
    (saves an allocation per pass on large tensors)."""
    for shift, mul in ((16, word(A)), (15, word(B)), (16, None)):
        t = torch.bitwise_right_shift(x, shift, out=tmp) if tmp is not None else x >> shift
        x.bitwise_xor_(t.bitwise_and_((1 << (32 - shift)) - 1))
        if mul is not None:
            x.mul_(mul)
    return x


def split_seeds(seeds, device=None) -> tuple[Tensor, Tensor]:
    """Each model's seed as two 32-bit words (low, high) [M] (int32): any Python int,
    taken mod 2**64."""
    s = [int(v) % 2**64 for v in seeds]
    lo = torch.tensor([word(v) for v in s], dtype=torch.int32, device=device)
    hi = torch.tensor([word(v >> 32) for v in s], dtype=torch.int32, device=device)
    return lo, hi


def keys(seed_words: tuple[Tensor, Tensor], *words: int | Tensor) -> tuple[Tensor, Tensor]:
    """The draw keys ``(a, b)`` of every model for ``words`` (stream, epoch, step, ...).

    ``seed_words``: :func:`split_seeds` [M]. A word may be an integer tensor that
    broadcasts against [M, 1, ..., 1] (leading model axis), e.g. every step of an epoch
    at once: the keys then have the broadcast shape."""
    lo, hi = seed_words
    extra = max((w.dim() for w in words if isinstance(w, Tensor)), default=1)
    view = (-1,) + (1,) * (extra - 1)
    h1 = torch.full_like(lo, word(H1)).view(view)
    h2 = torch.full_like(lo, word(H2)).view(view)
    for w in (lo.view(view), hi.view(view), *words):
        w = w.to(torch.int32) if isinstance(w, Tensor) else word(w)
        h1 = mix(h1 ^ w)
        h2 = mix(h2 + h1)
    return h1 | 1, h2


def bits(
    a: Tensor, b: Tensor, counters: Tensor, out: Tensor | None = None, tmp: Tensor | None = None
) -> Tensor:
    """32 random bits (int32 words) per ``counters`` element (int32, < 2**31) for each
    key: ``a``, ``b`` [M, 1...] broadcast against ``counters``; ``out``, ``tmp``: work
    buffers of the result's shape."""
    out = torch.mul(counters, a, out=out) if out is not None else counters * a
    return mix(out.add_(b), tmp)


def unsigned(x: Tensor) -> Tensor:
    """Words as their unsigned values (int64)."""
    return x.to(torch.int64) & (SPAN - 1)


def uniform(a: Tensor, b: Tensor, counters: Tensor, dtype=torch.float64) -> Tensor:
    """Uniforms on [0, 1) from :func:`bits` (float32: their top 24 bits, exact)."""
    x = unsigned(bits(a, b, counters))
    if dtype == torch.float64:
        return x.to(dtype) / SPAN
    return (x >> 8).to(dtype) / 2**24


def threshold(p: Tensor) -> Tensor:
    """Dropout's keep test for rates ``p``: a unit is kept when its bits, sign-flipped
    (``x ^ SIGN``, so that signed order is unsigned order), are ``<=`` this (int32):
    ``round((1 - p) * 2**32) - 1 - 2**31``, probability ``1 - p`` to 2**-32; p = 0
    keeps every unit."""
    t = torch.round((1 - p.double()) * SPAN).to(torch.int64) - 1 - 2**31
    return t.clamp(-(2**31), 2**31 - 1).to(torch.int32)


def orders(
    seed_words: tuple[Tensor, Tensor], epoch: int, lengths: Tensor, width: int | None = None
) -> Tensor:
    """Each model's own random order of its ``lengths[m]`` rows in ``epoch``: positions
    [M, max(lengths)], a permutation of ``0 .. lengths[m] - 1`` first in each row (the
    padding positions after it). The stable argsort of the bits of the positions, so a
    model's order depends on its seed, the epoch and its row count only. ``width``:
    ``max(lengths)`` when the caller knows it (else read from the device: a sync)."""
    if width is None:
        width = int(lengths.max()) if lengths.numel() else 0
    a, b = keys(seed_words, ORDER, epoch)
    pos = torch.arange(width, dtype=torch.int32, device=lengths.device)
    x = bits(a.view(-1, 1), b.view(-1, 1), pos).bitwise_xor_(SIGN)
    # padding sorts last: the largest word, after any real position holding it too
    x.masked_fill_(pos >= lengths.view(-1, 1), 2**31 - 1)
    return x.argsort(dim=1, stable=True)
