"""A user's ``pl.LightningModule``, trained the way it trains itself: its own
``training_step``, ``configure_optimizers`` (optimizer, schedulers), loss and ``self.log``,
one ``pl.Trainer`` per task (a stack of one).

foldwise keeps its side of the contract with a callback (:class:`Watch`), so the outcome
means what a stacked model's means:
- batches are ``(x, y)`` tuples of the task's fit rows, shuffled by the task's seed, the
  features standardised on those rows (class codes, or the raw regression target);
- at each epoch end, in eval mode, ``forward(x)`` is scored on the training rows, the
  inner early-stopping rows and the evaluation rows with foldwise's own loss and scores
  (so ``train_*`` is the end-of-epoch score, where a stacked model's is the running mean
  over the epoch's batches); early stopping on the inner rows, and the best inner
  epoch's weights and buffers are restored;
- what the module logs (``self.log``) joins the history as ``user_<name>``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from foldwise import threads, transforms
from foldwise.engine.metrics import Classifier, Head, Regressor
from foldwise.engine.task import Outcome, Prepared, Task, prepare


def is_lightning(module: torch.nn.Module) -> bool:
    return isinstance(module, pl.LightningModule)


class Watch(pl.Callback):
    """Scores, early stopping and the best epoch's state, from outside the user's module."""

    def __init__(self, task: Task, p: Prepared, x: Tensor, y: Tensor, head: Head) -> None:
        self.task, self.p, self.x, self.y, self.head = task, p, x, y, head
        self.history: dict[str, list[float]] = {}
        self.best_loss, self.best_epoch, self.wait = math.inf, 0, 0
        self.best_state: dict[str, Tensor] | None = None
        self.failed: str | None = None
        self.epochs = 0

    def score(self, module: torch.nn.Module, rows: np.ndarray) -> dict[str, float]:
        was = module.training
        module.eval()
        counts = self.head.counts(1, self.x.device)
        with torch.no_grad():
            for a in range(0, len(rows), 4096):
                idx = torch.as_tensor(rows[a : a + 4096], device=self.x.device)
                out = self.head.outputs(module(self.x[idx])[None], None)
                yi = self.y[idx][None]
                counts.add(self.head.loss(out, yi), out, yi, torch.ones_like(yi, dtype=out.dtype))
        module.train(was)
        return {k: float(v[0]) for k, v in counts.compute().items()}

    def sets(self) -> dict[str, np.ndarray]:
        out = {"train": self.p.fit}
        if self.p.inner is not None:
            out["inner"] = self.p.inner
        return out | {k: v for k, v in self.p.evals.items() if k in self.task.evals and len(v)}

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.epochs += 1
        hist = self.history
        hist.setdefault("epoch", []).append(self.epochs)
        scores = {name: self.score(module, rows) for name, rows in self.sets().items()}
        for name, sc in scores.items():
            for s, v in sc.items():
                hist.setdefault(f"{name}_{s}", []).append(v)
        for name, value in trainer.callback_metrics.items():  # the module's own self.log
            if isinstance(value, Tensor) and value.numel() == 1:
                hist.setdefault(f"user_{name}", []).append(float(value))
        if not all(math.isfinite(sc["loss"]) for sc in scores.values()):
            self.failed = f"loss became non-finite at epoch {self.epochs}"
            trainer.should_stop = True
            return
        if self.task.hyper.early_stopping and "inner" in scores:
            if scores["inner"]["loss"] < self.best_loss:
                self.best_loss, self.best_epoch, self.wait = scores["inner"]["loss"], self.epochs, 0
                self.best_state = copy.deepcopy(module.state_dict())
            else:
                self.wait += 1
                if self.wait >= self.task.hyper.patience:
                    trainer.should_stop = True


def fit_lightning(
    task: Task, x: np.ndarray, y: np.ndarray, meta, module: pl.LightningModule, *,
    accelerator: str, dtype: torch.dtype, keep_state: bool = False,
) -> Outcome:  # fmt: skip
    """Train ``module`` (built for ``task``, initial weights from its seed) on ``task``."""
    regression = bool(getattr(meta, "regression", False))
    if task.weights is not None or task.targets is not None:
        return Outcome(status="failed", error="boosting trains with foldwise's own loss "
                       "(per-row weights or residual targets); a LightningModule trains "
                       "with its own training_step: use ensemble=none or bagging")  # fmt: skip
    shape = getattr(meta, "image_shape", None)
    rows = (
        transforms.Rows(x, y, shape or (x.shape[1],))
        if transforms.is_user(task.normalize)
        else None
    )
    p = prepare(task, x, y, regression=regression, image_shape=shape, items=rows)
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    if p.transform is not None:  # the user's transform, fit on this task's fit rows
        x = transforms.apply(p.transform, torch.as_tensor(x, dtype=torch.float64),
                             shape or (x.shape[1],)).numpy()  # fmt: skip
    xs = torch.as_tensor((x - p.mean) / p.scale, dtype=dtype, device=device)
    yt = torch.as_tensor(y, dtype=dtype if regression else torch.int64, device=device)
    # raw targets and outputs: the module's own loss sees the target as the data has it
    head: Head = (
        Regressor(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
        if regression
        else Classifier(int(meta.n_classes))
    ).to(device)
    fit = torch.as_tensor(p.fit, device=device)
    loader = DataLoader(
        TensorDataset(xs[fit], yt[fit]), batch_size=task.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(task.seed),
    )  # fmt: skip
    watch = Watch(task, p, xs, yt, head)
    module = module.to(dtype)
    trainer = pl.Trainer(
        max_epochs=task.hyper.max_epochs, accelerator=accelerator,
        devices=[torch.cuda.current_device()] if accelerator == "gpu" else 1,
        logger=False, callbacks=[watch], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, deterministic=True if accelerator == "cpu" else "warn",
    )  # fmt: skip
    torch.manual_seed(task.seed ^ 0x5EED)  # the module's own random ops (dropout)
    try:
        with threads.training():
            trainer.fit(module, loader)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    n_val = len(p.evals.get("val", ()))
    if watch.failed:
        return Outcome(status="failed", error=watch.failed, history=watch.history,
                       epochs_trained=watch.epochs, n_train=len(p.fit), n_val=n_val)  # fmt: skip
    early = task.hyper.early_stopping and watch.best_state is not None
    if early:
        module.load_state_dict(watch.best_state)
    final = {name: watch.score(module, rows) for name, rows in watch.sets().items()}
    metrics = {f"{name}_{s}": v for name, sc in final.items() if name != "inner"
               for s, v in sc.items()}  # fmt: skip
    out = Outcome(
        status="ok", metrics=metrics, history=watch.history,
        best_epoch=watch.best_epoch if early else watch.epochs, epochs_trained=watch.epochs,
        n_train=len(p.fit), n_val=n_val,
        scaler={"mean": p.mean.tolist(), "scale": p.scale.tolist()}
        | ({"transform": p.transform} if p.transform is not None else {})
        | ({"y_mean": 0.0, "y_scale": 1.0} if regression else {}),
    )  # fmt: skip
    for name in task.predict:
        rows = p.evals.get(name)
        if rows is None or not len(rows):
            continue
        with torch.no_grad():
            module.eval()
            raw = head.outputs(module(xs[torch.as_tensor(rows, device=device)])[None], None)
            pred, prob = head.decide(raw)
            loss = head.loss(raw, yt[torch.as_tensor(rows, device=device)][None])
        rec = {
            "pred": [float(f"{v:.7g}") for v in pred[0].double().cpu().numpy()]
            if regression else pred[0].cpu().tolist(),
            "loss": [float(f"{v:.7g}") for v in loss[0].double().cpu().numpy()],
        }  # fmt: skip
        if prob is not None:
            rec["prob"] = [float(f"{v:.7g}") for v in prob[0].double().cpu().numpy()]
        if task.proba and not regression:
            rec["proba"] = raw[0].softmax(-1).double().cpu().numpy().tolist()
        out.predictions[name] = rec
    if keep_state:
        out.state_dict = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return out
