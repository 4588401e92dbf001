"""A user's own network, side by side (issue 18). Prints a table, asserts nothing.

    make bench-own-model
    .venv/bin/python benchmarks/bench_own_model.py [--reps 3] [--epochs 20]

The example CNN with BatchNorm (examples/own_model/mynets/nets.py: SmallCNN, width 8,
dropout 0.1) on digits, 3 learning rates x 5 stratified folds = 15 models, fixed epochs
(no early stopping), batch 64, features standardised on each fold's training rows, on
the same folds and in the same process (torch's threads: foldwise.threads):

  stacked         foldwise's engine, the 15 models in one stack (torch.func)
  one-at-a-time   foldwise's engine, stacks of one (engine=one_at_a_time)
  foldwise+Lit    the same network as a LightningModule that trains itself
                  (examples/own_model/mynets/lit.py: LitCNN, its own SGD + StepLR and
                  label smoothing), through foldwise: a Trainer per task, foldwise's
                  per-epoch scores of the training and validation rows
  lightning loop  LitCNN in a hand-written k-fold loop as the Lightning docs' example
                  writes it: one pl.Trainer per (configuration, fold), a shuffled
                  DataLoader, nothing scored until the end

Training only: data loading and imports are outside the timings. Runners alternate
within each repetition; medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples/own_model"))

from mynets.lit import LitCNN  # noqa: E402

from foldwise import engine, threads  # noqa: E402
from foldwise.data import Meta  # noqa: E402

LRS = [0.001, 0.003, 0.01]  # Adam's (SmallCNN); LitCNN's SGD takes 10x these
MODEL = {"_target_": "mynets.nets.SmallCNN", "width": 8, "dropout": 0.1}
LIT = {"_target_": "mynets.lit.LitCNN", "width": 8}
BATCH = 64


def data():
    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    meta = Meta("digits", len(y), 64, [str(i) for i in range(10)],
                [f"x{i}" for i in range(64)], [1, 8, 8])  # fmt: skip
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y))
    return x, y, meta, folds


def foldwise_runner(
    x, y, meta, folds, epochs: int, max_models: int | None, model: dict = MODEL
) -> tuple[float, float]:
    tasks = []
    for i, lr in enumerate(LRS):
        for k, (tr, va) in enumerate(folds):
            tasks.append(engine.Task(
                key=f"lr{lr}-f{k}", model={**model, "lr": 10 * lr} if "lit" in model["_target_"]
                else model,
                hyper=engine.Hyper(lr, 0.0, 0.1, epochs, False, 0.2, epochs),
                batch_size=BATCH, seed=1000 * i + k, train=tr, evals={"val": va},
            ))  # fmt: skip
    t = time.perf_counter()
    out = engine.train(tasks, x, y, meta, accelerator="cpu", max_models=max_models)
    wall = time.perf_counter() - t
    assert all(o.status == "ok" for o in out), [o.error for o in out if o.error]
    return wall, float(np.mean([o.metrics["val_acc"] for o in out]))


def lightning_loop(x, y, folds, epochs: int) -> tuple[float, float]:
    t = time.perf_counter()
    accs = []
    for i, lr in enumerate(LRS):
        for k, (tr, va) in enumerate(folds):
            scaler = StandardScaler().fit(x[tr])
            xt = torch.from_numpy(scaler.transform(x[tr]).astype(np.float32))
            xv = torch.from_numpy(scaler.transform(x[va]).astype(np.float32))
            pl.seed_everything(1000 * i + k, verbose=False)
            model = LitCNN((1, 8, 8), 10, width=8, lr=10 * lr)
            loader = DataLoader(TensorDataset(xt, torch.from_numpy(y[tr])), batch_size=BATCH,
                                shuffle=True)  # fmt: skip
            trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False)  # fmt: skip
            trainer.fit(model, loader)
            with torch.no_grad():
                pred = model.eval()(xv).argmax(1).numpy()
            accs.append(float((pred == y[va]).mean()))
    return time.perf_counter() - t, float(np.mean(accs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    import logging
    import warnings

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads.cores())  # what foldwise's training takes when alone
    x, y, meta, folds = data()
    runners = {
        "stacked": lambda: foldwise_runner(x, y, meta, folds, args.epochs, None),
        "one-at-a-time": lambda: foldwise_runner(x, y, meta, folds, args.epochs, 1),
        "foldwise+Lit": lambda: foldwise_runner(x, y, meta, folds, args.epochs, 1, LIT),
        "lightning loop": lambda: lightning_loop(x, y, folds, args.epochs),
    }
    rows: dict[str, list[tuple[float, float]]] = {r: [] for r in runners}
    for rep in range(args.reps):
        for name, run in runners.items():
            rows[name].append(run())
            print(f"  rep {rep + 1}/{args.reps} {name}: {rows[name][-1][0]:.1f} s", flush=True)
    med = {n: statistics.median(w for w, _ in rs) for n, rs in rows.items()}
    n = len(LRS) * len(folds)
    print(f"\nSmallCNN + BatchNorm on digits, {len(LRS)} configs x {len(folds)} folds = {n} "
          f"models, {args.epochs} epochs, medians of {args.reps}, {torch.get_num_threads()} "
          "threads")  # fmt: skip
    head = f"{'runner':<16}{'wall s':>8}{'models/s':>10}{'÷one-at-a-time':>16}{'÷lightning':>12}"
    print(head + f"{'mean val acc':>14}\n" + "-" * (len(head) + 14))
    for name, rs in rows.items():
        w = med[name]
        acc = statistics.median(a for _, a in rs)
        print(f"{name:<16}{w:>8.1f}{n / w:>10.2f}{med['one-at-a-time'] / w:>16.2f}"
              f"{med['lightning loop'] / w:>12.2f}{acc:>14.3f}")  # fmt: skip
    print("÷one-at-a-time, ÷lightning: how many times faster than that runner (>1: faster).")


if __name__ == "__main__":
    main()
