"""What the scikit-learn baselines add to a pipeline: their fit time against the sweep's.

    .venv/bin/python benchmarks/bench_baselines.py [--data digits breast_cancer]

Per dataset (the default configuration otherwise: its grid, folds and epochs): the
sweep's training — every (configuration, fold) model through the engine on the CPU, as
the sweep stage trains them, without MLflow — then each baseline of
:mod:`foldwise.methods.baselines` on the same folds, fresh (the aggregate stage caches
them, so only the first run pays). Prints seconds and the ratio baselines / sweep;
asserts nothing. One run each: on a shared machine, compare the ratios, not the seconds.
Classification tables only (bench_gpu's split helper stratifies the lockbox by class).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gpu import tasks_for, timed  # noqa: E402

from foldwise.methods import baselines  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", default=["digits", "breast_cancer"])
    args = ap.parse_args()
    print(f"{'data':14} {'sweep models':>12} {'sweep s':>8} " + " ".join(
        f"{n + ' s':>9}" for n in baselines.NAMES) + f" {'baselines/sweep':>16}")  # fmt: skip
    for name in args.data:
        cfg, tasks, x, y, meta = tasks_for([f"data={name}"])
        sweep, _ = timed(cfg, tasks, x, y, meta, "cpu")
        folds = {t.key.split("-f")[1]: (t.train, t.evals["val"]) for t in tasks}
        task = "regression" if meta.regression else "classification"
        secs = []
        for b in baselines.NAMES:
            t0 = time.perf_counter()
            baselines.score_all(b, task, x, y, list(folds.values()),
                                n_classes=0 if meta.regression else meta.n_classes)  # fmt: skip
            secs.append(time.perf_counter() - t0)
        print(f"{name:14} {len(tasks):12d} {sweep:8.1f} " + " ".join(f"{s:9.2f}" for s in secs)
              + f" {sum(secs) / sweep:16.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
