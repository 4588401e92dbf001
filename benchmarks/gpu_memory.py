"""The plan's memory model against a GPU's measured peak, per stack size; and the spread
of stacks over several GPUs (``engine.devices``) against one.

    python benchmarks/gpu_memory.py [--models 1 8 64 512] [--hidden 128] [--epochs 2]

For each stack size N: the planner's prediction (``Footprint.bytes`` × N, what
``engine.memory_mb`` is compared with) beside ``torch.cuda.max_memory_allocated()``
measured over one engine call that trains those N models as one stack (the data's copy
on the device is counted apart, once, as the engine keeps it). ratio > 1: the model
over-estimates (stacks smaller than they could be); < 1: it under-estimates (a stack
planned to fit may run out of memory, then it is split and retried).

With two or more visible GPUs it then trains the same tasks on one device and spread
over all of them (``devices="auto"``), prints both times, and checks every model's
metrics are identical. Prints tables; asserts nothing. Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from gpu_check import tasks_for  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from foldwise import engine  # noqa: E402
from foldwise.data import Meta  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, nargs="+", default=[1, 8, 64, 512])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--precision", type=int, default=32, choices=[32, 64])
    ap.add_argument("--spread-models", type=int, default=640)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    d = load_digits()
    x, y = d.data.astype(np.float64), d.target.astype(np.int64)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=42).split(x, y))
    meta = Meta("digits", len(y), 64, [str(i) for i in range(10)],
                [f"x{i}" for i in range(64)], [1, 8, 8])  # fmt: skip
    dtype = engine.DTYPES[args.precision]

    def tasks(n: int) -> list[engine.Task]:
        ts = tasks_for(n, folds, args.epochs)
        for t in ts:
            t.model = {**t.model, "hidden": args.hidden}
        return ts

    print(f"torch {torch.__version__} · {torch.cuda.get_device_name(0)} · "
          f"{torch.cuda.device_count()} device(s) · float{args.precision}")  # fmt: skip
    engine.train(tasks(2), x, y, meta, accelerator="gpu", precision=args.precision)  # warm-up
    data = x.size * dtype.itemsize + y.size * 8  # the rows on the device, kept per process
    size = engine.footprints(tasks(1), meta)[tasks(1)[0].arch()]
    per_model = size.bytes(64, dtype.itemsize)
    print(f"per model: {size.params} parameters, {size.activations} activation values per "
          f"row → planned {per_model / 2**20:.3f} MiB at batch 64")  # fmt: skip
    print(f"{'models':>7} {'planned MiB':>12} {'measured MiB':>13} {'planned/measured':>17}")
    for n in args.models:
        ts = tasks(n)
        torch.cuda.synchronize()
        engine._DATA.clear()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        engine.train(ts, x, y, meta, accelerator="gpu", precision=args.precision,
                     stacks=[list(range(n))])  # fmt: skip
        peak = torch.cuda.max_memory_allocated() - base - data
        planned = per_model * n
        print(f"{n:7d} {planned / 2**20:12.2f} {peak / 2**20:13.2f} {planned / peak:17.2f}")
    if torch.cuda.device_count() < 2:
        print("one device: no spread to measure")
        return
    ts = tasks(args.spread_models)
    stacks = engine.plan(ts, meta, max_models=max(1, len(ts) // (2 * torch.cuda.device_count())))
    times, outs = {}, {}
    for devices in (None, "auto"):
        t = time.perf_counter()
        outs[devices] = engine.train(ts, x, y, meta, accelerator="gpu", stacks=stacks,
                                     precision=args.precision, devices=devices)  # fmt: skip
        times[devices] = time.perf_counter() - t
    same = all(a.metrics == b.metrics for a, b in zip(outs[None], outs["auto"], strict=True))
    print(f"{len(ts)} models in {len(stacks)} stacks: one device {times[None]:.1f} s, "
          f"{torch.cuda.device_count()} devices {times['auto']:.1f} s "
          f"({times[None] / times['auto']:.2f}x) · identical metrics: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
