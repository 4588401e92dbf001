"""Loss, accuracy and macro-F1 for many models at once, from padded, masked batches.

Every tensor has a leading model axis M. Per-class counts come from torchmetrics'
``multiclass_stat_scores`` (samplewise over the model axis); they are accumulated as
sums (float64) so a whole epoch's batches, or an evaluation set read in chunks, add up
before the ratio is taken. Macro-F1 averages over the classes present in the labels or
the predictions, as scikit-learn's ``f1_score(average="macro")`` does (checked against
it in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_stat_scores


def per_sample_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` [M, B, C] against ``y`` [M, B] → [M, B]."""
    m, b, c = logits.shape
    return F.cross_entropy(logits.reshape(m * b, c), y.reshape(m * b), reduction="none").view(m, b)


@dataclass
class Counts:
    """Running sums per model: loss, rows, correct rows, and per-class tp / predicted / true."""

    loss: Tensor  # [M] float64
    n: Tensor  # [M]
    correct: Tensor  # [M]
    tp: Tensor  # [M, C]
    pred: Tensor  # [M, C]
    true: Tensor  # [M, C]

    @classmethod
    def zeros(cls, n_models: int, n_classes: int, device: torch.device) -> Counts:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(n_models), z(n_models), z(n_models), *(z(n_models, n_classes) for _ in "abc"))

    def add(
        self, losses: Tensor, logits: Tensor, y: Tensor, w: Tensor, models: Tensor | None = None
    ) -> None:
        """Add a batch: per-sample ``losses`` [m, B], ``logits`` [m, B, C], labels, weights;
        ``models`` names the m models of the batch when it is not the whole stack."""
        c = logits.shape[-1]
        hit = logits.detach().argmax(-1)
        # Per model ("samplewise" over the model axis) true/false positives and support per
        # class from torchmetrics; padded slots carry the ignored label -1.
        stat = multiclass_stat_scores(
            hit, torch.where(w > 0, y, -1), c, average=None,
            multidim_average="samplewise", ignore_index=-1, validate_args=False,
        ).to(torch.float64)  # fmt: skip
        tp, fp, support = stat[..., 0], stat[..., 1], stat[..., 4]
        w = w.to(torch.float64)
        parts = {
            "loss": (losses.detach().to(torch.float64) * w).sum(1),
            "n": w.sum(1),
            "correct": tp.sum(-1),
            "pred": tp + fp,
            "true": support,
            "tp": tp,
        }
        for name, value in parts.items():
            total = getattr(self, name)
            if models is None:
                total += value
            else:
                total.index_add_(0, models, value)

    def compute(self) -> dict[str, np.ndarray]:
        """``{"loss", "acc", "f1"}``, each an array of one value per model (NaN with no rows)."""
        n = self.n.clamp(min=1)
        support = self.pred + self.true
        present = support > 0
        f1_c = torch.where(present, 2 * self.tp / support.clamp(min=1), torch.zeros_like(support))
        f1 = f1_c.sum(1) / present.sum(1).clamp(min=1)
        out = {"loss": self.loss / n, "acc": self.correct / n, "f1": f1}
        empty = (self.n == 0).cpu().numpy()
        res = {k: v.cpu().numpy().astype(np.float64) for k, v in out.items()}
        for v in res.values():
            v[empty] = np.nan
        return res
