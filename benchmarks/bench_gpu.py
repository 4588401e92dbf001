"""Models per second on a GPU against the CPU: the sweep's training through the engine.

    .venv/bin/python benchmarks/bench_gpu.py                       # every accelerator present
    python benchmarks/bench_gpu.py --accelerators gpu cpu --json out.json

Workloads (digits, the default split: 20 % lockbox, stratified 5-fold over the dev rows):
  default  the default sweep: hidden [32, 128] × lr [0.001, 0.01] × 5 folds = 20 models,
           trainer defaults (early stopping, up to 40 epochs, batch 64)
  w320     64 configurations (8 lr × 8 weight decay, hidden 128) × 5 folds = 320 models,
           30 fixed epochs (bench_engine.py's W320)
Only training is timed (the engine's call: planning, stacking, every epoch, scoring), after
one warm-up call per accelerator (CUDA context, kernels); data preparation, imports,
MLflow and DVC are not. Each workload's models are planned and stacked exactly as the
sweep stage stacks them (``engine_settings``). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from foldwise import engine  # noqa: E402
from foldwise.compose import compose_params  # noqa: E402
from foldwise.data import prepare  # noqa: E402
from foldwise.fitting.configs import apply, engine_settings, expand_grid  # noqa: E402
from foldwise.fitting.train import arrays, make_task  # noqa: E402
from foldwise.split import split  # noqa: E402

WORKLOADS = {
    "default": [],
    "w320": [
        "trainer.max_epochs=30",
        "trainer.early_stopping.enabled=false",
        "sweep.grid.model.hidden=[128]",
        "sweep.grid.optim.lr=[0.0003,0.0006,0.001,0.002,0.004,0.008,0.016,0.032]",
        "+sweep.grid.optim.weight_decay=[0.0,1e-06,1e-05,3e-05,0.0001,0.0003,0.001,0.003]",
    ],
}


def tasks_for(overrides: list[str]):
    cfg = compose_params(overrides, root=ROOT)
    table, meta = prepare(cfg)
    res = split(table, cfg, meta.classes)
    dev = res.dev.sort_values("row_id").reset_index(drop=True)
    ids = dev["row_id"].to_numpy()
    pos = lambda r: np.searchsorted(ids, np.asarray(r))  # noqa: E731
    folds = [r for r in res.folds if r.role == "resample"]
    tasks = []
    for i, overrides_i in enumerate(expand_grid(cfg)):
        full = apply(cfg, overrides_i)
        for f in folds:
            tasks.append(make_task(full, f"c{i}-f{f.index}", pos(f.train), {"val": pos(f.val)}))
    x, y = arrays(dev)
    return cfg, tasks, x, y, meta


def timed(cfg, tasks, x, y, meta, accelerator: str) -> tuple[float, list]:
    settings = engine_settings(apply(cfg, {"trainer.accelerator": accelerator}))
    precision = settings.pop("precision")
    if accelerator == "gpu":
        import torch

        torch.cuda.synchronize()
    t0 = time.perf_counter()
    outs = engine.train(tasks, x, y, meta, accelerator=accelerator, precision=precision,
                        **settings)  # fmt: skip
    return time.perf_counter() - t0, outs


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    have_gpu = torch.cuda.is_available()
    ap.add_argument("--accelerators", nargs="+", default=["gpu", "cpu"] if have_gpu else ["cpu"])
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = {
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if have_gpu else None,
        "results": {},
    }
    print(f"torch {out['torch']} · {out['cpu_threads']} CPU threads · GPU: {out['gpu']}")
    for name in args.workloads:
        cfg, tasks, x, y, meta = tasks_for(WORKLOADS[name])
        for acc in args.accelerators:
            timed(cfg, tasks[:2], x, y, meta, acc)  # warm-up: CUDA context, kernels, threads
            secs, outs = [], []
            for _ in range(args.reps):
                s, outs = timed(cfg, tasks, x, y, meta, acc)
                secs.append(s)
            ok = [o for o in outs if o.status == "ok"]
            best = min(secs)
            row = {
                "models": len(tasks),
                "ok": len(ok),
                "seconds": secs,
                "models_per_s": len(tasks) / best,
                "epochs": int(sum(o.epochs_trained for o in ok)),
                "val_f1_mean": statistics.fmean(o.metrics["val_f1"] for o in ok),
            }
            out["results"][f"{name}/{acc}"] = row
            print(f"{name:8s} {acc:4s} {len(tasks):4d} models in {best:7.2f} s "
                  f"(reps {', '.join(f'{s:.2f}' for s in secs)}): {row['models_per_s']:7.2f} "
                  f"models/s, {row['epochs']} model-epochs, mean val_f1 "
                  f"{row['val_f1_mean']:.4f}", flush=True)  # fmt: skip
        if {"gpu", "cpu"} <= set(args.accelerators):
            g, c = out["results"][f"{name}/gpu"], out["results"][f"{name}/cpu"]
            print(f"{name:8s} GPU / CPU = {g['models_per_s'] / c['models_per_s']:.2f}×")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
