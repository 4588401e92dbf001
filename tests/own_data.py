"""Dataset factories for tests/test_sources.py: what a user passes as data._target_, and
the ways users break them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

# the example a user copies (docs/data.md): its Digits, and the broken variants below
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples/own_data"))
from mydata import Digits


def make_digits(n: int = 200, writers: int = 10) -> Digits:
    return Digits(n, writers)


def make_vectors(n: int = 120, scale: float = 1.0):
    """A TensorDataset of feature vectors with a regression target."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=gen) * scale
    return torch.utils.data.TensorDataset(x, x @ torch.arange(1.0, 6.0))


def raises(n: int = 10):
    raise RuntimeError("the data server is down")


class _WrongTargets(Digits):
    def __init__(self):
        super().__init__(30)
        self.targets = self.targets[:-1]


def wrong_targets():
    return _WrongTargets()


class _Ragged(Digits):
    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        return (x[:4] if i == 7 else x), y


def ragged():
    return _Ragged(20)


def not_pairs():
    return [np.zeros(3) for _ in range(5)]
