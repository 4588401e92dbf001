"""Models per second on an accelerator: stacked vs one-at-a-time, at 80 and 1,280 models.

    python benchmarks/gpu_check.py [--accelerator gpu] [--models 80 1280] [--epochs 30]

The W16 model (digits, MLP hidden 128, dropout 0.1, batch 64, fixed epochs) over the
5 stratified folds of the dev rows, with learning rates spread so that every model
differs. Stacked: all N models through the engine's planner (stacks bounded by
``--memory-mb``). One-at-a-time: the same engine with stacks of one, timed on the first
``--single`` models (a per-model time; running 1,280 fits one by one would take an
hour). Also checks that a repeated stacked run gives identical metrics.

Needs torch, pytorch-lightning, scikit-learn, pandas and omegaconf only (no MLflow,
DVC or Hydra), so it runs from a bare GPU image with the repo's ``src/`` on the path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import StratifiedKFold, train_test_split  # noqa: E402

from foldwise import engine  # noqa: E402
from foldwise.data import Meta  # noqa: E402


def tasks_for(n: int, folds, epochs: int) -> list[engine.Task]:
    lrs = np.geomspace(3e-4, 3e-2, max(1, n // len(folds)))
    out = []
    for i in range(n):
        lr, (tr, va) = float(lrs[i // len(folds) % len(lrs)]), folds[i % len(folds)]
        out.append(
            engine.Task(
                key=f"m{i}",
                model={"name": "mlp", "hidden": 128, "depth": 1, "dropout": 0.1},
                hyper=engine.Hyper(lr, 0.0, 0.1, epochs, False, 0.15, 5),
                batch_size=64,
                seed=42,
                train=tr,
                evals={"val": va},
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--models", type=int, nargs="+", default=[80, 1280])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--single", type=int, default=16)
    ap.add_argument("--memory-mb", type=float, default=16384)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    accel = engine.device_for(args.accelerator)
    name = torch.cuda.get_device_name(0) if accel == "gpu" else "CPU"
    print(f"torch {torch.__version__} · {accel} · {name} · threads {torch.get_num_threads()}")
    d = load_digits()
    x_all, y_all = d.data.astype(np.float64), d.target.astype(np.int64)
    dev, _ = train_test_split(np.arange(len(y_all)), test_size=0.2, stratify=y_all,
                              random_state=42)  # fmt: skip
    x, y = x_all[dev], y_all[dev]
    folds = list(StratifiedKFold(5, shuffle=True, random_state=42).split(x, y))
    meta = Meta("digits", len(y), 64, [str(i) for i in range(10)],
                [f"x{i}" for i in range(64)], [1, 8, 8])  # fmt: skip
    run = lambda ts, **kw: engine.train(ts, x, y, meta, accelerator=accel, **kw)  # noqa: E731
    run(tasks_for(2, folds, 1))  # warm-up: CUDA context, kernels, data on the device
    report = {"device": name, "torch": torch.__version__, "epochs": args.epochs, "rows": []}
    single_tasks = tasks_for(args.single, folds, args.epochs)
    t = time.perf_counter()
    run(single_tasks, max_models=1)
    single = (time.perf_counter() - t) / len(single_tasks)
    print(f"one-at-a-time: {single:.3f} s/model ({1 / single:.2f} models/s, {args.single} models)")
    for n in args.models:
        tasks = tasks_for(n, folds, args.epochs)
        stacks = engine.plan(tasks, meta, memory_mb=args.memory_mb)
        t = time.perf_counter()
        outs = run(tasks, stacks=stacks)
        secs = time.perf_counter() - t
        again = run(tasks[:8], stacks=[list(range(8))])
        same = all(a.metrics == b.metrics for a, b in zip(outs[:8], again, strict=True))
        per = secs / n
        acc = np.mean([o.metrics["val_acc"] for o in outs])
        print(
            f"stacked N={n:5d} in {len(stacks)} stack(s): {secs:.1f} s, {n / secs:.1f} models/s, "
            f"{single / per:.0f}x one-at-a-time · mean val_acc {acc:.4f} · repeatable: {same}"
        )
        report["rows"].append(
            {
                "models": n,
                "stacks": len(stacks),
                "seconds": secs,
                "models_per_s": n / secs,
                "speedup": single / per,
                "repeatable": same,
            }
        )
    report["single_s_per_model"] = single
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
