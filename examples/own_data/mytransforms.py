"""A user's own preprocessing, fit on each model's training rows only (docs/data.md,
"Preprocessing fit on the training rows").

Copy it beside dvc.yaml, then:

    dvc exp run -S 'data.normalize={_target_: mytransforms.RobustScale}'
    dvc exp run -S 'data.normalize={_target_: mytransforms.RobustScale, low: 0.1, high: 0.9}'

foldwise builds one per model, calls ``fit(dataset, train_indices)`` with the rows that
model fits on (never its early-stopping, validation or lockbox rows), applies it to every
batch the model sees, and saves it, fitted, with the refit model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class RobustScale:
    """Each feature (pixel) centred on its training median and divided by its
    inter-quantile range (``low`` to ``high``): scikit-learn's RobustScaler, in torch."""

    def __init__(self, low: float = 0.25, high: float = 0.75) -> None:
        if not 0 <= low < high <= 1:
            raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
        self.low, self.high = low, high

    def fit(self, dataset, train_indices: Sequence[int]) -> RobustScale:
        # items are (x, y), x a tensor of the item's shape
        x = torch.stack([dataset[int(i)][0] for i in train_indices]).double()
        x = x.reshape(len(x), -1)
        q = torch.quantile(x, torch.tensor([self.low, 0.5, self.high], dtype=x.dtype), dim=0)
        spread = q[2] - q[0]
        self.centre_, self.spread_ = q[1], torch.where(spread > 0, spread, 1.0)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1)
        out = (flat - self.centre_.to(x)) / self.spread_.to(x)
        return out.reshape(x.shape)
