"""Where a stack reads its rows' features: one tensor in memory, or a ``Dataset`` streamed
through a ``DataLoader``.

In memory (the default), the engine holds every row as one tensor ``x`` [N, F] and a
step gathers ``x[idx]``. :class:`Streamed` is for data that does not fit: the engine
never holds more than a few *blocks*. Every step, or every chunk of rows scored, loads
the **union** of the rows its models need (``torch.unique`` of ``idx`` [M, B]) through a
``DataLoader`` (worker processes, pinned memory, prefetch), and each model takes its own
rows from that block (``block[local]``, ``local`` being ``idx``'s positions in the
union). The per-model row order and a bootstrap row's multiplicity are ``idx``'s, as in
memory, so a model computes the same numbers from the same values: in float64 the two
paths agree to rounding (tests/test_feed.py).

Standardisation statistics, which in memory come from ``x[fit]``, are accumulated over
the union of the stack's fit rows in one streamed pass (:meth:`Streamed.standardise`).

Host synchronisation: in memory a training step never waits for the device (engine/loop.py).
Streamed, the epoch's unions are taken on the host at its start (``torch.unique`` of every
step's ``idx``), and each step copies its block of rows to the device (and its union, for
``local``): a transfer from host memory per step, which the DataLoader's prefetch overlaps
with loading but which a CUDA step waits for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


class _Flat(Dataset):
    """Item ``i`` of the user's dataset as a flat tensor: its features (the ``x`` of an
    ``(x, y)`` item); a float item keeps its precision unless ``float32``, anything else
    becomes float32."""

    def __init__(self, dataset: Any, float32: bool) -> None:
        self.dataset, self.float32 = dataset, float32

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Tensor:
        item = self.dataset[i]
        if isinstance(item, tuple | list):
            item = item[0]
        t = torch.as_tensor(np.asarray(item)).reshape(-1)
        return t if t.is_floating_point() and not self.float32 else t.float()


class _Lists(Sampler):
    """A batch sampler whose batches are swapped before each pass: one DataLoader (and
    its worker processes) serves every pass instead of starting processes per pass."""

    def __init__(self) -> None:
        self.lists: list[list[int]] = []

    def __iter__(self):
        return iter(self.lists)

    def __len__(self) -> int:
        return len(self.lists)


@dataclass
class Streamed:
    """Rows read on demand from a map-style ``dataset``: item ``i`` is row ``i`` (its
    features, or ``(features, label)``); the labels stay in memory, as ``y``.

    ``workers`` loader processes (0: in the training process), each ``prefetch`` blocks
    ahead; ``block_rows`` bounds a scoring or statistics block. ``float32``: values as
    the prepare stage's table holds them (float32), whatever the items' type.

    ``cache_mb``: rows once loaded are kept, first come first kept, up to this many MB
    (float32 rows; no eviction, so what a pass will find cached is known before it
    starts and the loader is asked, ahead, only for the rest). Data that fits is then
    read once; data that does not is read per step beyond the cache, and memory stays
    bounded by the cache and the prefetch, not by the data.
    """

    dataset: Any
    n_features: int
    workers: int = 0
    prefetch: int = 2
    block_rows: int = 4096
    pin_memory: bool = False
    float32: bool = False
    cache_mb: float = 0.0

    def __post_init__(self) -> None:
        self._flat = _Flat(self.dataset, self.float32)
        self._loaders: dict[str, tuple[DataLoader, _Lists]] = {}
        self._capacity = min(len(self.dataset), int(self.cache_mb * 2**20 // (4 * self.n_features)))
        self._slot = np.full(len(self.dataset), -1, dtype=np.int64)  # row -> cache slot
        self._store: Tensor | None = None  # [capacity, F], allocated on the first load
        self._filled = 0

    def flat(self) -> Dataset:
        """Item ``i``: row ``i``'s features as one flat tensor (what the loader reads)."""
        return self._flat

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.dataset), self.n_features)

    def load(self, unions: Sequence[Tensor], channel: str = "train") -> Iterator[Tensor]:
        """The features of each sorted row list in ``unions`` [u, F], in order,
        ``prefetch`` blocks ahead in ``workers`` processes. Each ``channel`` (training
        steps, scoring) keeps one DataLoader, whose workers live as long as the feed;
        a channel's pass must end before its next one starts."""
        if not unions:
            return iter(())
        # what the pass will find cached, step by step: the loader reads only the rest
        have = self._slot >= 0
        filled, misses = self._filled, []
        for u in unions:
            un = u.numpy()
            miss = un[~have[un]]
            take = miss[: max(0, self._capacity - filled)]
            have[take], filled = True, filled + len(take)
            misses.append(miss)
        loaded = self._loader(channel, [m.tolist() for m in misses if len(m)])
        return (self._assemble(u.numpy(), m, loaded) for u, m in zip(unions, misses, strict=True))

    def _assemble(self, u: np.ndarray, miss: np.ndarray, loaded: Iterator[Tensor]) -> Tensor:
        """The block of sorted rows ``u``: cached rows from the cache, ``miss`` (in ``u``'s
        order) from the loader; those loaded are cached while there is room."""
        got = next(loaded) if len(miss) else None
        if got is not None and self._capacity and self._store is None:
            self._store = torch.empty((self._capacity, got.shape[1]), dtype=got.dtype)
        if got is not None and self._filled < self._capacity:
            take = min(len(miss), self._capacity - self._filled)
            slots = np.arange(self._filled, self._filled + take)
            self._store[slots] = got[:take]
            self._slot[miss[:take]] = slots
            self._filled += take
        if got is not None and len(miss) == len(u):
            return got
        cached = np.isin(u, miss, invert=True)
        if (self._slot[u[cached]] < 0).any():  # never: one pass at a time fills the cache
            raise RuntimeError("streamed passes interleaved: a row planned as cached is not")
        out = torch.empty((len(u), self.n_features), dtype=self._store.dtype)
        out[torch.from_numpy(cached)] = self._store[torch.from_numpy(self._slot[u[cached]])]
        if got is not None:
            out[torch.from_numpy(~cached)] = got
        return out

    def _loader(self, channel: str, lists: list[list[int]]) -> Iterator[Tensor]:
        if not lists:
            return iter(())
        if channel not in self._loaders:
            sampler = _Lists()
            loader = DataLoader(
                self._flat,
                batch_sampler=sampler,
                num_workers=self.workers,
                pin_memory=self.pin_memory,
                prefetch_factor=self.prefetch if self.workers else None,
                persistent_workers=self.workers > 0,
            )
            self._loaders[channel] = (loader, sampler)
        loader, batches = self._loaders[channel]
        batches.lists = lists
        return iter(loader)

    def blocks(
        self, chunks: Sequence[Tensor], channel: str = "train"
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """For each ``chunk`` [m, L] of row positions: ``(local, block)``, with
        ``block[local]`` the chunk's features [m, L, F]."""
        chunks = [c.contiguous() for c in chunks]
        unions = [torch.unique(c.cpu()) for c in chunks]
        for c, u, block in zip(chunks, unions, self.load(unions, channel), strict=True):
            yield torch.searchsorted(u.to(c.device), c), block

    def __getstate__(self) -> dict:  # DataLoaders (and their processes) do not pickle
        return self.__dict__ | {"_loaders": {}}

    def standardise(
        self, fits: list[np.ndarray], how: str, image_shape=None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each task's ``(mean, scale)`` over its fit rows ``fits[m]`` (with
        multiplicity), as :func:`foldwise.transforms.standardise` computes them from
        ``x[fit]``, in one pass over the union of the fit rows.

        Sums are taken in float64 around a pilot mean (the first block's), so the
        one-pass variance does not cancel: it agrees with the two-pass one to rounding.
        """
        d = self.n_features
        if how == "none":
            return [(np.zeros(d), np.ones(d)) for _ in fits]
        if how == "channel":
            if not image_shape:
                raise ValueError("normalize=channel needs images (an image_shape)")
            c = int(image_shape[0])
        union = np.unique(np.concatenate(fits))
        pos = {m: np.searchsorted(union, f) for m, f in enumerate(fits)}
        counts = np.stack([np.bincount(p, minlength=len(union)) for p in pos.values()])
        width = c if how == "channel" else d
        s1 = np.zeros((len(fits), width))
        s2 = np.zeros((len(fits), width))
        pilot = None
        starts = range(0, len(union), self.block_rows)
        pieces = [torch.from_numpy(union[a : a + self.block_rows]) for a in starts]
        for a, block in zip(starts, self.load(pieces, "score"), strict=True):
            xb = block.double().numpy()
            if how == "feature":  # the in-memory scaler reads float32 values
                xb = xb.astype(np.float32).astype(np.float64)
            if how == "channel":
                xb = xb.reshape(len(xb), c, -1)
            if pilot is None:
                pilot = xb.mean(0) if how != "channel" else xb.mean((0, 2))
            cb = counts[:, a : a + len(xb)].astype(np.float64)
            if how == "channel":
                dev = xb - pilot[None, :, None]
                s1 += cb @ dev.sum(2)
                s2 += cb @ (dev**2).sum(2)
            else:
                dev = xb - pilot
                s1 += cb @ dev
                s2 += cb @ dev**2
        n = counts.sum(1, keepdims=True).astype(np.float64)
        if how == "channel":
            n = n * (d // c)
        shift = s1 / n
        mean = pilot + shift
        var = np.maximum(s2 / n - shift**2, 0.0)
        eps = np.finfo(np.float64).eps
        # StandardScaler's rule: a (near-)constant feature is scaled by 1
        constant = var <= n * eps * var + (n * mean * eps) ** 2
        std = np.where(constant, 1.0, np.sqrt(var)) if how == "feature" else np.sqrt(var)
        out = []
        for m in range(len(fits)):
            if how == "channel":
                sd = np.where(std[m] == 0, 1.0, std[m])
                out.append((np.repeat(mean[m], d // c), np.repeat(sd, d // c)))
            else:
                out.append((mean[m], std[m]))
        return out
