"""One Lightning training loop for a whole stack of models.

:class:`StackTrainer` is a ``LightningModule`` with manual optimisation: each step
gathers every model's own mini-batch (its own rows, its own order, padded to the batch
size and masked), runs the stacked network once, backpropagates the *sum* of the
per-model mean losses (so each model's gradient is exactly its own), and moves the
models that had rows on this step with :class:`~foldwise.engine.optim.BatchedAdam`.

At the end of every epoch each still-training model is scored on its inner
early-stopping rows and its evaluation rows (eval mode), and then, per model:
a non-finite loss marks it failed; an inner loss that has not improved for
``patience`` epochs, or its own ``max_epochs``, finishes it. A finished model is frozen
(no more rows, no optimizer steps), rolled back to its best inner epoch, scored, and
handed to ``on_done`` at once, while the rest of the stack trains on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.nn import functional as F

from foldwise import faults, threads, transforms
from foldwise.engine import optim, rng
from foldwise.engine.feed import Streamed
from foldwise.engine.metrics import Classifier, Head, Regressor
from foldwise.engine.stack import DropoutMasks, Stack
from foldwise.engine.task import Outcome, Prepared, Task, cycles_momentum

COMPACT = 0.75  # below this share of models with rows on a step, compute only those


def _pad(rows: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Ragged row lists → ``idx`` [M, L] (0-padded) and weights ``w`` [M, L]."""
    width = max((len(r) for r in rows), default=0) or 1
    idx = np.zeros((len(rows), width), dtype=np.int64)
    w = np.zeros((len(rows), width), dtype=np.float32)
    for m, r in enumerate(rows):
        idx[m, : len(r)] = r
        w[m, : len(r)] = 1
    return torch.from_numpy(idx), torch.from_numpy(w)


@dataclass
class EpochInfo:
    """What the progress line shows after each stack epoch."""

    epoch: int
    max_epochs: int
    active: int
    finished: int
    n_models: int
    seconds: float  # wall time of this epoch
    work_epochs: int  # models that trained in this epoch
    remaining: int  # model-epochs left at most (every training model to its max_epochs)


@dataclass(frozen=True)
class _Step:
    """What the host knows of a step of the epoch before it runs, so that the step reads
    no device value: the models with rows on it (``moving``, for the optimizer too) and
    whether to compute only those (``compact``: most of the stack has no rows)."""

    moving: optim.Moving
    compact: bool


class _Batches:
    """The epoch's mini-batches for every still-training model of the stack.

    Model ``m`` walks its fit rows in its own random order for the epoch (the stable
    argsort of counter-based bits of its seed, the epoch and its row positions:
    :func:`foldwise.engine.rng.orders`) in steps of ``batch``; a model with fewer rows
    runs out of steps earlier and is inactive on the remaining ones. The whole stack's
    orders and batches are a few tensor ops, on the stack's device. Each item is
    ``(idx [M, B], w [M, B], active)``, and with streamed rows also ``(local, block)``:
    the step's union of rows, loaded ahead.

    Which models have rows on which step is known on the host (a model's step count,
    :meth:`StackTrainer._steps_per_epoch`), so each step's :class:`_Step` is made here,
    once per epoch (``owner.plan``, by step), with its device indices copied in one go.
    """

    def __init__(self, owner: StackTrainer) -> None:
        self.owner = owner

    def __iter__(self):
        o = self.owner
        b = o.batch
        fit, _ = o.sets["fit"]  # [M, N] each model's fit rows, 0-padded
        dev = fit.device
        training = o.state == "training"
        steps = int(o.steps_per[training].max(initial=0))
        # [steps, M] who has rows on each step: a model's rows fill its steps_per steps
        # (BatchNorm drops a partial last batch), none for a model that no longer trains
        on = training & (np.arange(steps)[:, None] < o.steps_per)
        o.plan = self._plan(on, dev)
        order = rng.orders(o.seed_words, int(o.current_epoch), o.n_fit, o.fit_width)
        rows = fit.gather(1, order)
        width = steps * b
        rows = F.pad(rows, (0, max(0, width - rows.shape[1])))[:, :width]
        # each model's rows this epoch: its steps' worth, none for a model that no
        # longer trains
        limit = torch.minimum(o.n_fit, torch.from_numpy(o.steps_per * b).to(dev))
        limit = limit * torch.from_numpy(training).to(dev)
        take = torch.arange(width, device=dev) < limit.view(-1, 1)
        idx = (rows * take).view(o.n_models, steps, b).transpose(0, 1)
        w = take.to(torch.float32).view(o.n_models, steps, b).transpose(0, 1)
        active = torch.from_numpy(on).to(dev)
        if o.feed is None:
            for s in range(steps):
                yield idx[s], w[s], active[s]
            return
        blocks = o.feed.blocks([idx[s] for s in range(steps)])
        for s, (local, block) in enumerate(blocks):
            yield idx[s], w[s], active[s], local, block

    def _plan(self, on: np.ndarray, dev: torch.device) -> list[_Step]:
        """Each step's :class:`_Step` from ``on`` [steps, M]. A model's steps come first
        in the epoch, so the steps share a few sets of models: one device index each."""
        o = self.owner
        sets: dict[bytes, int] = {}
        for row in on:
            if not row.all():
                sets.setdefault(row.tobytes(), len(sets))
        models = [np.flatnonzero(np.frombuffer(k, dtype=bool)) for k in sets]
        index = (
            torch.from_numpy(np.concatenate(models)).to(dev).split([len(m) for m in models])
            if models
            else ()
        )
        plan = []
        for row in on:
            k = None if row.all() else sets[row.tobytes()]
            moving = optim.Moving(np.flatnonzero(row), None if k is None else index[k])
            # most of the stack without rows: compute only the models with rows
            compact = not o.stack.mutable and row.sum() < COMPACT * len(row)
            plan.append(_Step(moving, bool(compact)))
        return plan


class StackTrainer(pl.LightningModule):
    """Trains the tasks of one stack; see the module docstring for the per-epoch rules."""

    def __init__(
        self,
        tasks: list[Task],
        prepared: list[Prepared],
        stack: Stack,
        x: Tensor | Streamed,
        y: Tensor,
        n_classes: int,
        *,
        regression: bool = False,
        keep_state: bool = False,
        on_done: Callable[[int, Outcome], None] | None = None,
        on_epoch: Callable[[EpochInfo], None] | None = None,
        eval_budget: int = 2**24,
        act_width: int | None = None,
        item_shape=None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.tasks, self.prepared, self.stack = tasks, prepared, stack
        self.n_models, self.n_classes = len(tasks), n_classes
        self.head: Head = (
            Regressor(
                torch.tensor([p.y_mean for p in prepared], dtype=torch.float64),
                torch.tensor([p.y_scale for p in prepared], dtype=torch.float64),
            )
            if regression
            else Classifier(n_classes)
        )
        self.scores = self.head.scores
        self.batch = tasks[0].batch_size
        self.keep_state, self.on_done, self.on_epoch = keep_state, on_done, on_epoch
        self.eval_budget = eval_budget
        self.act_width = act_width or 4 * int(x.shape[1])  # activations per row, all layers
        dtype = stack.weights[0].dtype
        # Streamed rows (engine/feed.py): ``x`` is then empty, and steps and scoring read
        # blocks of rows through the feed's DataLoader.
        self.feed = x if isinstance(x, Streamed) else None
        if self.feed is not None:
            x = torch.zeros((0, self.feed.n_features), device=y.device)
        self.register_buffer("x", x.to(dtype), persistent=False)
        self.register_buffer("y", y, persistent=False)
        mean = np.stack([p.mean for p in prepared])
        scale = np.stack([p.scale for p in prepared])
        self.register_buffer("mean", torch.from_numpy(mean).to(dtype), persistent=False)
        self.register_buffer("scale", torch.from_numpy(scale).to(dtype), persistent=False)
        # users' transforms (foldwise.transforms), each fit on its own model's fit rows;
        # applied model by model (their code is Python), before the (identity) scaling
        self.transforms = [p.transform for p in prepared]
        self.custom = any(t is not None for t in self.transforms)
        self.item_shape = tuple(item_shape or (int(x.shape[1]),))
        # Boosting's per-model rows: loss weights (mean 1 over each model's fit rows, so a
        # batch's weighted mean loss estimates the weighted objective without bias) and
        # targets. Absent (None) for ordinary tasks: no [M, N] tensors then.
        row_w = row_y = None
        if any(t.weights is not None for t in tasks):
            rw = np.ones((len(tasks), len(y)))
            for m, (t, p) in enumerate(zip(tasks, prepared, strict=True)):
                if t.weights is not None:
                    rw[m] = np.asarray(t.weights, dtype=float) / np.mean(t.weights[p.fit])
            row_w = torch.from_numpy(rw).to(dtype)
        if any(t.targets is not None for t in tasks):
            ry = np.stack([y.cpu().numpy() if t.targets is None else t.targets for t in tasks])
            row_y = torch.from_numpy(ry).to(y.dtype)
        self.register_buffer("row_w", row_w, persistent=False)
        self.register_buffer("row_y", row_y, persistent=False)
        # Padded row sets scored at each epoch end ("inner", eval sets) and at the end ("fit").
        self.sets: dict[str, tuple[Tensor, Tensor]] = {}
        names = ["fit", "inner", *dict.fromkeys(k for t in tasks for k in t.evals)]
        self.set_names = [n for n in names if n != "fit"]  # scored every epoch
        names += [k for k in dict.fromkeys(k for t in tasks for k in t.finals) if k not in names]
        for name in names:
            rows = [self._rows(m, name) for m in range(self.n_models)]
            if name == "fit" or any(len(r) for r in rows):
                self.sets[name] = _pad(rows)
        h = [t.hyper for t in tasks]
        self.es = np.array([x.early_stopping for x in h])
        self.max_epochs = np.array([x.max_epochs for x in h])
        self.patience = np.array([x.patience for x in h])
        self.steps_per = np.array([self._steps_per_epoch(m) for m in range(self.n_models)])
        self.state = np.array(["training"] * self.n_models, dtype=object)
        self.epochs = np.zeros(self.n_models, dtype=int)
        self.best_loss = np.full(self.n_models, math.inf)
        self.best_epoch = np.zeros(self.n_models, dtype=int)
        self.wait = np.zeros(self.n_models, dtype=int)
        self.history: list[dict[str, list[float]]] = [{} for _ in tasks]
        self.outcomes: list[Outcome | None] = [None] * self.n_models
        self.plan: list[_Step] = []  # the epoch's steps, as the host knows them (_Batches)
        self._t0 = 0.0

    def _rows(self, m: int, name: str) -> np.ndarray:
        p = self.prepared[m]
        if name == "fit":
            return p.fit
        if name == "inner":
            return p.inner if p.inner is not None else np.zeros(0, dtype=np.int64)
        return p.evals.get(name, np.zeros(0, dtype=np.int64))

    def training_models(self) -> list[int]:
        return [m for m in range(self.n_models) if self.state[m] == "training"]

    # ------------------------------------------------------------------ Lightning hooks
    def configure_optimizers(self):
        h = [t.hyper for t in self.tasks]
        name, extra = optim.kind(self.tasks[0].optim)
        weights = list(self.stack.weights)
        specs = [t.scheduler for t in self.tasks]
        lengths = [
            x.max_epochs * (self._steps_per_epoch(m) if s.get("interval") == "step" else 1)
            for m, (x, s) in enumerate(zip(h, specs, strict=True))
        ]
        if name in optim.BATCHED and not any(map(cycles_momentum, specs)):
            # per-model lr and weight decay, one update for the stack
            self.adam = optim.BATCHED[name](
                weights, lr=[x.lr for x in h], weight_decay=[x.weight_decay for x in h], **extra
            )
            self.schedules = optim.Schedules(specs, [x.lr for x in h], lengths, lr=self.adam.lr)
            return self.adam
        # torch's own optimizer on a stack of one (planned so): any other optimizer, or a
        # scheduler that moves the momentum too
        from foldwise.models import resolve

        if len(h) != 1:
            raise ValueError(f"optimizer {name} trains one model at a time")
        wd = {"weight_decay": h[0].weight_decay} if h[0].weight_decay else {}
        target = optim.TORCH.get(name, name)
        inner = resolve(target, "optim._target_")(weights, lr=h[0].lr, **wd, **extra)
        self.adam = optim.OneModel(inner)
        self.schedules = optim.Schedules(specs, [h[0].lr], lengths, real=inner)
        return inner

    def _steps_per_epoch(self, m: int) -> int:
        """Model ``m``'s optimizer steps per epoch. With BatchNorm the last partial batch
        is dropped (DataLoader's drop_last): its padding rows would enter the batch
        statistics. A fold smaller than a batch keeps one."""
        n = len(self.prepared[m].fit)
        return max(1, n // self.batch) if self.stack.mutable else math.ceil(n / self.batch)

    def on_fit_start(self) -> None:
        dev = self.x.device
        self.stack.buffer_values = {k: v.to(dev) for k, v in self.stack.buffer_values.items()}
        self.sets = {k: (i.to(dev), w.to(dev)) for k, (i, w) in self.sets.items()}
        self.head = self.head.to(dev)
        # batch orders and dropout masks: counter-based draws keyed by each task's seed
        seeds = [t.seed for t in self.tasks]
        self.seed_words = rng.split_seeds(seeds, dev)
        self.n_fit = torch.tensor([len(p.fit) for p in self.prepared], device=dev)
        self.fit_width = max(len(p.fit) for p in self.prepared)  # max(n_fit), on the host
        self.dropout = DropoutMasks(self.stack, seeds, self.batch, dev, self.x.dtype)
        self.best = [w.detach().clone() for w in self.stack.weights] if self.es.any() else None
        # BatchNorm's running statistics at each model's best epoch (restored with it)
        self.best_buffers = (
            {n: b.clone() for n, b in self.stack.buffer_values.items()}
            if self.es.any() and self.stack.mutable
            else None
        )

    def on_train_epoch_start(self) -> None:
        if self.x.device.type == "cpu":
            threads.rebalance()  # another training process may have started or ended
        self._t0 = time.perf_counter()
        self.counts = self.head.counts(self.n_models, self.x.device)
        self._epoch_lr = {m: self.schedules.current(m) for m in self.schedules.items}
        self.dropout.epoch(int(self.current_epoch), int(self.steps_per.max()))
        self.stack.train()

    def _inputs(self, idx: Tensor, models: Tensor | None = None, block=None, which=None) -> Tensor:
        """Standardised features of each model's rows ``idx`` [m, B]; ``block``: a
        streamed ``(local, rows)`` pair holding them (``rows[local]``, local [m, B]);
        ``which``: ``models`` on the host, for users' transforms (read from ``models``, a
        sync, when not given)."""
        mean = self.mean if models is None else self.mean.index_select(0, models)
        scale = self.scale if models is None else self.scale.index_select(0, models)
        x = self.x[idx] if block is None else block[1].to(self.x.dtype)[block[0]]
        if self.custom:
            if which is None:
                which = range(len(x)) if models is None else models.tolist()
            ts = [self.transforms[k] for k in which]
            x = torch.stack([xm if t is None else transforms.apply(t, xm, self.item_shape)
                             for t, xm in zip(ts, x, strict=True)])  # fmt: skip
        return (x - mean.unsqueeze(1)) / scale.unsqueeze(1)

    def _chunks(self, idx: Tensor, chunk: int):
        """``idx`` [m, L] in column chunks, each with its streamed block (None in memory)."""
        parts = [idx[:, a : a + chunk] for a in range(0, idx.shape[1], chunk)]
        if self.feed is None:
            yield from ((a * chunk, i, None) for a, i in enumerate(parts))
            return
        blocks = self.feed.blocks(parts, "score")
        for a, (i, (local, rows)) in enumerate(zip(parts, blocks, strict=True)):
            yield a * chunk, i, (local, rows.to(self.x.device))

    @staticmethod
    def _rows_of(table: Tensor, idx: Tensor, models: Tensor | None) -> Tensor:
        """``table`` [M, N] at each model's rows ``idx`` [m, B]."""
        t = table if models is None else table.index_select(0, models)
        return t.gather(1, idx)

    def _targets(self, idx: Tensor, models: Tensor | None) -> Tensor:
        return self.y[idx] if self.row_y is None else self._rows_of(self.row_y, idx, models)

    def training_step(self, batch, batch_idx):
        # No device value is read here (a CUDA step never waits for the device): which
        # models have rows, and whether to compact, come from the epoch's plan.
        idx, w, active, *block = batch
        block = tuple(block) or None
        step = self.plan[batch_idx]
        moving = step.moving
        masks = self.dropout.draw(batch_idx)
        sub = which = None
        mutable = self.stack.mutable
        every = moving.index is None
        if mutable and not every:  # running statistics of models without rows stay
            kept = {n: b.clone() for n, b in self.stack.buffer_values.items()}
        if step.compact:
            # Most of the stack has stopped (early stopping, failures, shorter folds): run
            # only the models with rows on this step. Gradients reach the full parameters
            # through index_select; the others' are zero and BatchedAdam skips them.
            sub, which = moving.index, moving.models
            idx, w = idx.index_select(0, sub), w.index_select(0, sub)
            masks = masks and {k: m.index_select(0, sub) for k, m in masks.items()}
        params = None if sub is None else self.stack.params(sub)
        if block is not None and sub is not None:
            block = (block[0].index_select(0, sub), block[1])
        out = self.head.outputs(
            self.stack(self._inputs(idx, sub, block, which), masks, params=params), sub
        )
        y = self._targets(idx, sub)
        losses = self.head.loss(out, y)
        weighted = (
            losses * w if self.row_w is None else losses * w * self._rows_of(self.row_w, idx, sub)
        )
        per_model = weighted.sum(1) / w.sum(1).clamp(min=1)
        self.adam.zero_grad()
        self.manual_backward(self.head.objective(per_model, sub).sum())
        self.adam.step(moving)
        if self.schedules:
            self.schedules.step(moving.models.tolist(), "step", {})
        if mutable and not every:  # after backward: it reads the buffers' versions
            for n, b in self.stack.buffer_values.items():
                off = ~active.to(b.device).view(-1, *([1] * (b.dim() - 1)))
                b.copy_(torch.where(off, kept[n], b))
        self.counts.add(losses, out, y, w, models=sub)

    def train_dataloader(self):
        return _Batches(self)

    def on_train_epoch_end(self) -> None:
        models = self.training_models()
        worked = len(models)
        if not models:
            self.trainer.should_stop = True
            return
        faults.inject(self.tasks, int(self.current_epoch) + 1, models)  # test-only; no-op
        train = self.counts.compute()
        sel = torch.tensor(models, device=self.x.device)
        scores = {n: self.score(n, sel) for n in self.set_names if n in self.sets}
        finished = []
        for k, m in enumerate(models):
            self.epochs[m] += 1
            e = int(self.epochs[m])
            hist = self.history[m]
            hist.setdefault("epoch", []).append(e)
            for s in self.scores:
                hist.setdefault(f"train_{s}", []).append(float(train[s][m]))
            for name, sc in scores.items():
                if len(self._rows(m, name)):
                    for s in self.scores:
                        hist.setdefault(f"{name}_{s}", []).append(float(sc[s][k]))
            if m in self._epoch_lr:  # the lr at the epoch's start
                hist.setdefault("lr", []).append(self._epoch_lr[m])
            checks = [train["loss"][m]]
            checks += [sc["loss"][k] for n, sc in scores.items() if len(self._rows(m, n))]
            if not all(math.isfinite(v) for v in checks):
                self._fail(m, f"loss became non-finite at epoch {e}")
                continue
            if self.es[m]:
                inner = float(scores["inner"]["loss"][k])
                if inner < self.best_loss[m]:
                    self.best_loss[m], self.best_epoch[m], self.wait[m] = inner, e, 0
                    self._remember(m)
                else:
                    self.wait[m] += 1
                if self.wait[m] >= self.patience[m]:
                    finished.append(m)
                    continue
            if e >= self.max_epochs[m]:
                finished.append(m)
        if finished:
            self._finish(finished)
        if self.schedules:  # the models that train on: the next epoch's lr
            monitored = {
                m: float(scores["inner"]["loss"][k])
                if self.tasks[m].scheduler.get("monitor", "inner_loss") == "inner_loss"
                and "inner" in scores
                and len(self._rows(m, "inner"))
                else float(train["loss"][m])
                for k, m in enumerate(models)
            }
            self.schedules.step(self.training_models(), "epoch", monitored)
        if self.on_epoch is not None:
            self.on_epoch(
                EpochInfo(
                    epoch=int(self.current_epoch) + 1,
                    max_epochs=int(self.max_epochs.max()),
                    active=len(self.training_models()),
                    finished=int((self.state != "training").sum()),
                    n_models=self.n_models,
                    seconds=time.perf_counter() - self._t0,
                    work_epochs=worked,
                    remaining=int(
                        sum(self.max_epochs[m] - self.epochs[m] for m in self.training_models())
                    ),
                )
            )
        if not self.training_models():
            self.trainer.should_stop = True

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score(
        self, name: str, models: Tensor, params: dict[str, Tensor] | None = None
    ) -> dict[str, np.ndarray]:
        """The head's scores of ``models`` on row set ``name``, in eval mode, in chunks."""
        was_training = self.stack.training
        self.stack.eval()
        idx_all, w_all = self.sets[name]
        idx, w = idx_all.index_select(0, models), w_all.index_select(0, models)
        params = self.stack.state(models) if params is None else params
        counts = self.head.counts(len(models), self.x.device)
        chunk = max(64, self.eval_budget // max(1, len(models) * self.act_width))
        for a, i, block in self._chunks(idx, chunk):
            ww = w[:, a : a + chunk]
            out = self.head.outputs(
                self.stack(self._inputs(i, models, block), params=params), models
            )
            yi = self._targets(i, models)
            counts.add(self.head.loss(out, yi), out, yi, ww)
        self.stack.train(was_training)
        return counts.compute()

    @torch.no_grad()
    def predict_rows(
        self, name: str, models: Tensor, params: dict[str, Tensor], proba: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Per-row prediction (class or value), loss, — for two classes — probability of
        class 1, and with ``proba`` every class's probability, of ``models`` on row set
        ``name`` ([m, L(, C)], padded like the set; callers cut each model's row count)."""
        was_training = self.stack.training
        self.stack.eval()
        idx_all, _ = self.sets[name]
        idx = idx_all.index_select(0, models)
        chunk = max(64, self.eval_budget // max(1, len(models) * self.act_width))
        preds, losses, probs, full = [], [], [], []
        proba = proba and isinstance(self.head, Classifier)
        for _, i, block in self._chunks(idx, chunk):
            out = self.head.outputs(
                self.stack(self._inputs(i, models, block), params=params), models
            )
            pred, prob = self.head.decide(out)
            preds.append(pred)
            losses.append(self.head.loss(out, self._targets(i, models)))
            if prob is not None:
                probs.append(prob)
            if proba:
                full.append(out.softmax(-1))
        self.stack.train(was_training)
        prob = torch.cat(probs, 1).double().cpu().numpy() if probs else None
        pred = torch.cat(preds, 1)
        return (
            pred.double().cpu().numpy() if pred.is_floating_point() else pred.cpu().numpy(),
            torch.cat(losses, 1).double().cpu().numpy(),
            prob,
            torch.cat(full, 1).double().cpu().numpy() if full else None,
        )

    def _remember(self, m: int) -> None:
        if self.best is not None:
            for b, w in zip(self.best, self.stack.weights, strict=True):
                b[m].copy_(w.detach()[m])
        if self.best_buffers is not None:
            for n, b in self.best_buffers.items():
                b[m].copy_(self.stack.buffer_values[n][m])

    def _final_params(self, models: list[int]) -> dict[str, Tensor]:
        """Each model's weights and buffers at its best inner epoch (early stopping), or
        as they are now."""
        sel = torch.tensor(models, device=self.x.device)
        best = [bool(self.es[m]) and self.best_epoch[m] > 0 for m in models]
        now = self.stack.state()
        then = dict(zip(self.stack.names, self.best or self.stack.weights, strict=True))
        then |= self.best_buffers or self.stack.buffer_values
        out = {}
        for n, t in now.items():
            use_best = torch.tensor(best, device=t.device).view(-1, *([1] * (t.dim() - 1)))
            out[n] = torch.where(use_best, then[n].index_select(0, sel), t.index_select(0, sel))
        return out

    def _finish(self, models: list[int]) -> None:
        sel = torch.tensor(models, device=self.x.device)
        params = self._final_params(models)
        final = {"train": self.score("fit", sel, params)}
        for name in self.set_names:
            if name != "inner" and name in self.sets:
                final[name] = self.score(name, sel, params)
        wanted = [n for n in dict.fromkeys(p for m in models for p in self.tasks[m].predict)
                  if n in self.sets]  # fmt: skip
        proba = any(self.tasks[m].proba for m in models)
        predicted = {n: self.predict_rows(n, sel, params, proba) for n in wanted}
        for k, m in enumerate(models):
            self.state[m] = "done"
            metrics = {
                f"{prefix}_{s}": float(sc[s][k])
                for prefix, sc in final.items()
                if prefix == "train" or len(self._rows(m, prefix))
                for s in self.scores
            }
            p = self.prepared[m]
            out = Outcome(
                status="ok",
                metrics=metrics,
                history=self.history[m],
                best_epoch=int(self.best_epoch[m]) if self.es[m] else int(self.epochs[m]),
                epochs_trained=int(self.epochs[m]),
                n_train=len(p.fit),
                n_val=len(p.evals.get("val", ())),
                scaler=self._scaler(p),
            )
            for n, (pred, loss, prob, full) in predicted.items():
                if n in self.tasks[m].predict:
                    r = len(self._rows(m, n))
                    out.predictions[n] = {
                        "pred": [float(f"{v:.7g}") for v in pred[k, :r]]
                        if pred.dtype.kind == "f"
                        else pred[k, :r].tolist(),
                        # 7 significant digits: float32's precision, half the JSON
                        "loss": [float(f"{v:.7g}") for v in loss[k, :r]],
                    }
                    if prob is not None:  # binary: P(class 1), for ROC-AUC
                        out.predictions[n]["prob"] = [float(f"{v:.7g}") for v in prob[k, :r]]
                    if full is not None and self.tasks[m].proba:  # ensembles average these
                        out.predictions[n]["proba"] = full[k, :r].tolist()
            if self.keep_state:
                out.state_dict = {n: t[k].detach().cpu().clone() for n, t in params.items()}
            self._deliver(m, out)

    def _scaler(self, p: Prepared) -> dict:
        out = {"mean": p.mean.tolist(), "scale": p.scale.tolist()}
        if p.transform is not None:
            out["transform"] = p.transform
        if isinstance(self.head, Regressor):  # the refit saves it: predictions un-standardise
            out.update(y_mean=p.y_mean, y_scale=p.y_scale)
        return out

    def _fail(self, m: int, error: str) -> None:
        self.state[m] = "failed"
        p = self.prepared[m]
        self._deliver(
            m,
            Outcome(
                status="failed",
                error=error,
                history=self.history[m],
                epochs_trained=int(self.epochs[m]),
                n_train=len(p.fit),
                n_val=len(p.evals.get("val", ())),
            ),
        )

    def _deliver(self, m: int, outcome: Outcome) -> None:
        self.outcomes[m] = outcome
        if self.on_done is not None:
            self.on_done(m, outcome)


def fit_stack(module: StackTrainer, accelerator: str = "cpu") -> list[Outcome]:
    """Train one stack to the end; returns one :class:`Outcome` per task, in task order."""
    trainer = pl.Trainer(
        max_epochs=int(module.max_epochs.max()),
        accelerator=accelerator,
        # the current CUDA device (a parallel worker's own, foldwise.sweep.workers), not cuda:0
        devices=[torch.cuda.current_device()] if accelerator == "gpu" else 1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=True if accelerator == "cpu" else "warn",
    )
    try:
        with threads.training():
            trainer.fit(module)
    except SystemExit:
        # Lightning turns Ctrl-C into a "graceful shutdown" and exit(1); give the caller
        # the interrupt back, so it can close what is open and say how to resume.
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    for m in module.training_models():  # the loop ended (max_epochs) with models still open
        module._finish([m])
    return [o for o in module.outcomes if o is not None]
