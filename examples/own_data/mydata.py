"""A user's own torch Dataset, as foldwise reads it (docs/data.md, "Your `Dataset`").

Copy it beside dvc.yaml, then:

    dvc exp run -S data=dataset -S data._target_=mydata.make_dataset -S +data.n=300
    dvc exp run -S data=dataset -S data._target_=mydata.make_dataset \\
      -S data.group_column=groups -S split=group_kfold
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset


class Digits(Dataset):
    """scikit-learn's digits as 8×8 image tensors (items ``(x, y)``), with torchvision's
    ``targets`` and ``classes``, and ``groups`` (a writer id) for the grouped schemes."""

    def __init__(self, n: int = 300, writers: int = 10):
        d = load_digits()
        self.images = torch.tensor(d.images[:n], dtype=torch.float32) / 16.0
        self.targets = [int(t) for t in d.target[:n]]
        self.classes = [f"digit{k}" for k in range(10)]
        self.groups = [f"w{i % writers}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], torch.tensor(self.targets[i])


def make_dataset(n: int = 300, writers: int = 10) -> Digits:
    """What ``data._target_`` names: every other ``data.*`` key is an argument."""
    return Digits(n, writers)
