"""An independent one-model training loop: the yardstick for the stacked engine's equivalence tests.

Plain PyTorch and scikit-learn, written from the engine's *contract*, not its code:
``torch.optim.Adam`` on an ordinary ``nn.Module``; each epoch's batch order the stable
argsort of the counter-based bits of the task seed, the epoch and the row positions
(the specification in ``foldwise.engine.rng``'s docstring, reimplemented here in NumPy
integers, not imported); the inner split from ``train_test_split``, standardisation
from ``StandardScaler``, metrics from scikit-learn, early stopping on the inner loss
with patience, best epoch restored. Dropout must be 0 (``nn.Dropout`` draws from the
global generator, the engine from each model's own counters). Regression
(``meta.regression``): no stratification; the network predicts the target standardised
with the fit rows' mean and (population) std, trained with ``F.mse_loss`` on that
scale; every reported score is in the target's units.
Boosting's per-row ``task.weights`` multiply each row's loss (normalised to mean 1 over
the fit rows; scores stay unweighted) and ``task.targets`` replace the target.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from omegaconf import OmegaConf
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch.nn import functional as F

from foldwise.engine import Outcome, Task
from foldwise.models import build_backbone


def _regression_scores(yt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    mse = mean_squared_error(yt, pred)
    return {"loss": mse, "mse": mse, "mae": mean_absolute_error(yt, pred), "r2": r2_score(yt, pred)}


def _scores(net, xs, ys, target=None) -> dict[str, float]:
    net.eval()
    with torch.no_grad():
        logits = net(xs)
    if target is not None:  # regression: (mean, scale) of the fit rows' target
        pred = (logits[:, 0] * target[1] + target[0]).numpy()
        return _regression_scores(ys.numpy(), pred)
    pred = logits.argmax(1).numpy()
    return {
        "loss": float(F.cross_entropy(logits, ys, reduction="mean")),
        "acc": accuracy_score(ys.numpy(), pred),
        "f1": f1_score(ys.numpy(), pred, average="macro"),
    }


_M32 = 0xFFFFFFFF


def _mix(x):
    """The specification's 32-bit finaliser (lowbias32) on Python ints or uint64 arrays
    holding 32-bit words (products stay below 2**64: a word times a 32-bit constant)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def spec_bits(seed: int, words: tuple[int, ...], counters: np.ndarray) -> np.ndarray:
    """The 32 bits (uint64 array) of ``counters`` for a model's ``seed`` and draw ``words``
    (stream, epoch, ...), from the spec: a two-lane sponge over the words, then
    ``mix(c * a + b)``."""
    seed %= 2**64
    h1, h2 = 0x9E3779B9, 0x6A09E667
    for word in (seed & _M32, seed >> 32, *words):
        h1 = _mix(h1 ^ word)
        h2 = _mix((h2 + h1) & _M32)
    a = np.uint64(h1 | 1)
    c = np.asarray(counters, dtype=np.uint64)
    return _mix((c * a + np.uint64(h2)) & np.uint64(_M32))


def batch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """A model's order of its ``n`` fit rows in ``epoch`` (0-based), from the spec."""
    return np.argsort(spec_bits(seed, (0x3C6EF372, epoch), np.arange(n)), kind="stable")


def reference_fit(task: Task, x: np.ndarray, y: np.ndarray, meta, dtype=torch.float64) -> Outcome:
    h = task.hyper
    assert h.dropout == 0 and task.model.get("dropout", 0) == 0
    rows = np.asarray(task.train)
    regression = getattr(meta, "regression", False)
    if task.targets is not None:
        y = np.asarray(task.targets)
    if h.early_stopping:
        yr = y[rows]
        n_inner = math.ceil(h.inner_fraction * len(rows))
        both_sides = min(n_inner, len(rows) - n_inner) >= len(np.unique(yr))
        strat = (
            yr
            if not regression and np.bincount(yr).min(initial=len(yr)) >= 2 and both_sides
            else None
        )
        fit, inner = train_test_split(
            rows, test_size=h.inner_fraction, stratify=strat, random_state=task.seed
        )
    else:
        fit, inner = rows, None
    scaler = StandardScaler().fit(x[fit].astype(np.float32))
    target = (float(y[fit].mean()), float(y[fit].std())) if regression else None
    weights = np.ones(len(y)) if task.weights is None else np.asarray(task.weights, dtype=float)
    wf = torch.tensor(weights[fit] / weights[fit].mean(), dtype=dtype)

    def t(r):
        xs = (x[r] - scaler.mean_) / scaler.scale_
        return torch.tensor(xs, dtype=dtype), torch.tensor(y[r])

    sets = {"inner": inner, **task.evals}
    sets = {k: t(v) for k, v in sets.items() if v is not None}
    xf, yf = t(fit)
    torch.manual_seed(task.seed)
    net = build_backbone(OmegaConf.create(task.model), meta).to(dtype)
    opt = torch.optim.Adam(net.parameters(), lr=h.lr, weight_decay=h.weight_decay)
    history: dict[str, list[float]] = {}
    best, best_epoch, wait, best_state = math.inf, 0, 0, None
    epoch = 0
    for epoch in range(1, h.max_epochs + 1):
        net.train()
        perm = torch.from_numpy(batch_order(task.seed, epoch - 1, len(yf)))
        loss_sum, preds, labels = 0.0, [], []
        for i in range(0, len(yf), task.batch_size):
            b = perm[i : i + task.batch_size]
            logits = net(xf[b])
            if target is not None:
                rows_loss = (logits[:, 0] - (yf[b] - target[0]) / target[1]) ** 2
                preds.append(logits[:, 0].detach() * target[1] + target[0])
            else:
                rows_loss = F.cross_entropy(logits, yf[b], reduction="none")
                preds.append(logits.argmax(1))
            loss = (rows_loss * wf[b]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(rows_loss.detach().sum())
            labels.append(yf[b])
        p, lab = torch.cat(preds).numpy(), torch.cat(labels).numpy()
        if target is not None:
            row = {f"train_{k}": v for k, v in _regression_scores(lab, p).items()}
        else:
            row = {
                "train_loss": loss_sum / len(yf),
                "train_acc": accuracy_score(lab, p),
                "train_f1": f1_score(lab, p, average="macro"),
            }
        for name, (xs, ys) in sets.items():
            row |= {f"{name}_{k}": v for k, v in _scores(net, xs, ys, target).items()}
        history.setdefault("epoch", []).append(epoch)
        for k, v in row.items():
            history.setdefault(k, []).append(v)
        if h.early_stopping:
            if row["inner_loss"] < best:
                best, best_epoch, wait = row["inner_loss"], epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                wait += 1
            if wait >= h.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    metrics = {f"train_{k}": v for k, v in _scores(net, xf, yf, target).items()}
    if "val" in sets:
        metrics |= {f"val_{k}": v for k, v in _scores(net, *sets["val"], target).items()}
    return Outcome(
        status="ok",
        metrics=metrics,
        history=history,
        best_epoch=best_epoch if h.early_stopping else epoch,
        epochs_trained=epoch,
        n_train=len(fit),
        n_val=len(task.evals.get("val", ())),
    )
