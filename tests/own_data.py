"""Dataset factories for tests/test_sources.py: what a user passes as data._target_, and
the ways users break them."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset


class Digits(Dataset):
    """scikit-learn's digits as 8×8 image tensors, with torchvision's ``targets`` and
    ``classes``, and a ``groups`` attribute (a writer id) for the grouped schemes."""

    def __init__(self, n: int = 200, writers: int = 10):
        d = load_digits()
        self.images = torch.tensor(d.images[:n], dtype=torch.float32) / 16.0
        self.targets = [int(t) for t in d.target[:n]]
        self.classes = [f"digit{k}" for k in range(10)]
        self.groups = [f"w{i % writers}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], torch.tensor(self.targets[i])


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
