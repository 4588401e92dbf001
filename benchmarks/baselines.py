"""The two baselines foldwise's sweep is measured against, each run as its own process.

    python benchmarks/baselines.py plain   WORKDIR GRID.json   # plain PyTorch loop
    python benchmarks/baselines.py sklearn WORKDIR GRID.json   # GridSearchCV(MLPClassifier)

Both read the same dev rows and folds the foldwise split stage wrote under
``WORKDIR/data/split/``, train every (configuration, fold) of ``GRID.json`` (learning
rates × weight decays, hidden width, epochs, batch size), and print one JSON line:
best mean CV accuracy and steady-state seconds per model.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def load(workdir: Path) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    dev = pd.read_parquet(workdir / "data/split/dev.parquet")
    folds_doc = json.loads((workdir / "data/split/folds.json").read_text())
    pos = pd.Index(dev["row_id"])
    # folds.json omits a fold's train rows when they are the other dev rows
    folds = [
        (
            pos.get_indexer(f["train"] if "train" in f else sorted(set(pos) - set(f["val"]))),
            pos.get_indexer(f["val"]),
        )
        for f in folds_doc["folds"]
    ]
    x = dev[[c for c in dev.columns if c.startswith("x")]].to_numpy(np.float32)
    return x, dev["target"].to_numpy(np.int64), folds


def plain(workdir: Path, grid: dict) -> dict:
    """Models one after another in one process, batches by tensor slicing."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    x, y, folds = load(workdir)
    n_classes = int(y.max()) + 1
    times, scores = [], {}
    for lr in grid["lr"]:
        for wd in grid["weight_decay"]:
            accs = []
            for tr, va in folds:
                t = time.perf_counter()
                mean, std = x[tr].mean(0), x[tr].std(0)
                std[std == 0] = 1
                xt = torch.from_numpy((x[tr] - mean) / std)
                xv = torch.from_numpy((x[va] - mean) / std)
                yt, yv = torch.from_numpy(y[tr]), torch.from_numpy(y[va])
                net = nn.Sequential(
                    nn.Linear(x.shape[1], grid["hidden"]),
                    nn.ReLU(),
                    nn.Dropout(grid["dropout"]),
                    nn.Linear(grid["hidden"], n_classes),
                )
                opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
                bs = grid["batch_size"]
                for _ in range(grid["epochs"]):
                    net.train()
                    perm = torch.randperm(len(yt))
                    for i in range(0, len(yt), bs):
                        b = perm[i : i + bs]
                        loss = nn.functional.cross_entropy(net(xt[b]), yt[b])
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                net.eval()
                with torch.no_grad():
                    accs.append(float((net(xv).argmax(1) == yv).float().mean()))
                times.append(time.perf_counter() - t)
            scores[(lr, wd)] = float(np.mean(accs))
    steady = times[1:] or times
    return {"best_acc": max(scores.values()), "per_model_s": float(np.mean(steady))}


def sklearn(workdir: Path, grid: dict) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    x, y, folds = load(workdir)
    mlp = MLPClassifier(
        hidden_layer_sizes=(grid["hidden"],),
        batch_size=grid["batch_size"],
        max_iter=grid["epochs"],
        n_iter_no_change=10**6,  # exactly `epochs` passes, as the others
        tol=0.0,
        random_state=0,
    )
    search = GridSearchCV(
        make_pipeline(StandardScaler(), mlp),
        {
            "mlpclassifier__learning_rate_init": grid["lr"],
            "mlpclassifier__alpha": grid["weight_decay"],
        },
        cv=folds,  # the same folds as foldwise (StratifiedKFold(5) on the dev rows)
        n_jobs=2,
        scoring="accuracy",
    )
    search.fit(x, y)
    return {
        "best_acc": float(search.best_score_),
        "per_model_s": float(np.mean(search.cv_results_["mean_fit_time"])),
    }


if __name__ == "__main__":
    kind, workdir, grid_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    grid = json.loads(grid_file.read_text())
    out = {"plain": plain, "sklearn": sklearn}[kind](workdir, grid)
    print("RESULT " + json.dumps(out), flush=True)
