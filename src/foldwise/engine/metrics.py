"""Per-model scores for many models at once, from padded, masked batches.

:class:`Head` says what a network's outputs mean: :class:`Classifier` (logits; loss,
accuracy, macro-F1 from :class:`Counts`) or :class:`Regressor` (one standardised value;
loss = MSE, MAE, R² from :class:`SquaredCounts`). Every tensor has a leading model axis
M. Per-class counts come from torchmetrics' ``multiclass_stat_scores`` (samplewise over
the model axis); they are accumulated as sums (float64) so a whole epoch's batches, or
an evaluation set read in chunks, add up before the ratio is taken. Macro-F1 averages
over the classes present in the labels or the predictions, as scikit-learn's
``f1_score(average="macro")`` does (checked against it in the tests).
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


def _weighted_sum(values: Tensor, w: Tensor) -> Tensor:
    """Σ ``values`` · ``w`` over the batch axis, where rows of weight 0 count as 0 even when
    their value is not finite: a diverged model's NaN loss on a padded slot, or on a step
    where it has no rows, must not turn its running sum (train_loss) into NaN."""
    return torch.where(w > 0, values * w, torch.zeros((), dtype=values.dtype)).sum(1)


def _accumulate(counts: object, parts: dict[str, Tensor], models: Tensor | None) -> None:
    """Add a batch's per-model sums to ``counts``' running totals (by attribute name);
    ``models`` names the batch's models when it is not the whole stack."""
    for name, value in parts.items():
        total = getattr(counts, name)
        if models is None:
            total += value
        else:
            total.index_add_(0, models, value)


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
            "loss": _weighted_sum(losses.detach().to(torch.float64), w),
            "n": w.sum(1),
            "correct": tp.sum(-1),
            "pred": tp + fp,
            "true": support,
            "tp": tp,
        }
        _accumulate(self, parts, models)

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


@dataclass
class SquaredCounts:
    """Running sums per model for regression: squared and absolute errors, rows, and the
    target's sum and sum of squares (R²'s total sum of squares of the scored rows)."""

    loss: Tensor  # [M] Σ squared error
    n: Tensor
    abs: Tensor
    sy: Tensor
    syy: Tensor

    @classmethod
    def zeros(cls, n_models: int, device: torch.device) -> SquaredCounts:
        return cls(*(torch.zeros(n_models, dtype=torch.float64, device=device) for _ in "lnasy"))

    def add(
        self, losses: Tensor, pred: Tensor, y: Tensor, w: Tensor, models: Tensor | None = None
    ) -> None:
        w = w.to(torch.float64)
        y64 = y.detach().to(torch.float64)
        parts = {
            "loss": _weighted_sum(losses.detach().to(torch.float64), w),
            "n": w.sum(1),
            "abs": _weighted_sum((pred.detach().to(torch.float64) - y64).abs(), w),
            "sy": (y64 * w).sum(1),
            "syy": (y64 * y64 * w).sum(1),
        }
        _accumulate(self, parts, models)

    def compute(self) -> dict[str, np.ndarray]:
        """``{"loss", "mse", "mae", "r2"}`` per model (NaN with no rows). R² is
        ``1 − SSE/SST`` over the scored rows, as scikit-learn's ``r2_score``, which gives
        1 (perfect) or 0 when the rows' target is constant."""
        n = self.n.clamp(min=1)
        sst = self.syy - self.sy * self.sy / n
        sse = self.loss
        flat = sst <= 1e-12 * self.syy.clamp(min=1)
        r2 = torch.where(flat, (sse <= 1e-12).to(sse.dtype), 1 - sse / sst.clamp(min=1e-300))
        mse = sse / n
        out = {"loss": mse, "mse": mse, "mae": self.abs / n, "r2": r2}
        empty = (self.n == 0).cpu().numpy()
        res = {k: v.cpu().numpy().astype(np.float64) for k, v in out.items()}
        for k, v in res.items():
            v[empty] = np.nan
            if k == "r2":
                v[(self.n < 2).cpu().numpy()] = np.nan  # undefined on one row
        return res


class Head:
    """What a stack's outputs mean: how they become predictions, losses and scores."""

    scores: tuple[str, ...]

    def to(self, device: torch.device) -> Head:
        return self

    def outputs(self, out: Tensor, models: Tensor | None) -> Tensor:
        """Network outputs [m, B, k] → what is scored ([m, B, C] logits or [m, B] values)."""
        return out

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-row loss [m, B] in the reported units."""
        raise NotImplementedError

    def objective(self, per_model: Tensor, models: Tensor | None) -> Tensor:
        """Each model's mean loss → the quantity its optimizer minimises."""
        return per_model

    def counts(self, n_models: int, device: torch.device):
        raise NotImplementedError

    def decide(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        """Per-row prediction and, for two classes, P(class 1)."""
        raise NotImplementedError


class Classifier(Head):
    scores = ("loss", "acc", "f1")

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return per_sample_loss(out, y)

    def counts(self, n_models: int, device: torch.device) -> Counts:
        return Counts.zeros(n_models, self.n_classes, device)

    def decide(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        prob = out.softmax(-1)[..., 1] if self.n_classes == 2 else None
        return out.argmax(-1), prob


class Regressor(Head):
    """One output per row, trained on the target standardised with each model's own
    training-row mean and scale (fit like the feature scaler, on the rows it fits on), so
    lr and weight decay mean the same as for classification. Predictions and every
    reported score are in the target's units; the objective is the MSE of the
    standardised target (the reported MSE over scale²: the same minimiser)."""

    scores = ("loss", "mse", "mae", "r2")

    def __init__(self, y_mean: Tensor, y_scale: Tensor) -> None:
        self.y_mean, self.y_scale = y_mean, y_scale  # [M]

    def to(self, device: torch.device) -> Regressor:
        return Regressor(self.y_mean.to(device), self.y_scale.to(device))

    def _sel(self, v: Tensor, models: Tensor | None) -> Tensor:
        return (v if models is None else v.index_select(0, models)).unsqueeze(1)

    def outputs(self, out: Tensor, models: Tensor | None) -> Tensor:
        return out[..., 0] * self._sel(self.y_scale, models) + self._sel(self.y_mean, models)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return (out - y.to(out.dtype)) ** 2

    def objective(self, per_model: Tensor, models: Tensor | None) -> Tensor:
        return per_model / self._sel(self.y_scale, models)[:, 0] ** 2

    def counts(self, n_models: int, device: torch.device) -> SquaredCounts:
        return SquaredCounts.zeros(n_models, device)

    def decide(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        return out, None
