"""Two trainings at once (queued DVC experiments, a second sweep): shared threads vs torch's.

    .venv/bin/python benchmarks/bench_threads.py [--repeat 2]

Each worker process trains the default sweep's 20 models (digits, 5 folds) through the
engine, as the sweep stage stacks them. Timed: each worker's training call, after the
workers have imported and prepared (they wait on a barrier file, so they train at the same
time). Cases: one worker alone; two at once sharing the cores (foldwise.threads); two at
once with every worker taking all cores (``FOLDWISE_THREADS=<cores>``: torch's default,
what queued experiments did before). Prints a table with ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(barrier: Path, n_workers: int) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from bench_gpu import WORKLOADS, tasks_for, timed

    cfg, tasks, x, y, meta = tasks_for(WORKLOADS["default"])
    (barrier / f"ready-{os.getpid()}").touch()
    while len(list(barrier.glob("ready-*"))) < n_workers:  # train at the same time
        time.sleep(0.01)
    seconds, _ = timed(cfg, tasks, x, y, meta, "cpu")
    print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))


def case(n_workers: int, env: dict[str, str]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as barrier:
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", barrier, str(n_workers)],
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(n_workers)
        ]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return max(o["seconds"] for o in outs), outs[0]["threads"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), int(args.worker[1]))
        return
    from foldwise.threads import cores

    n = cores()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FOLDWISE_THREADS")}
    os.environ.clear()
    os.environ.update(env)
    cases = {
        "one alone": (1, {}),
        "two at once, shared cores": (2, {}),
        "two at once, each all cores": (2, {"FOLDWISE_THREADS": str(n)}),
    }
    print(f"foldwise thread sharing · {n} cores · default sweep (20 models) per worker")
    times: dict[str, float] = {}
    for name, (workers, extra) in cases.items():
        runs = [case(workers, extra) for _ in range(args.repeat)]
        times[name] = statistics.median(s for s, _ in runs)
        print(f"  {name:<30} {times[name]:6.1f} s  ({runs[0][1]} thread(s) per worker)")
    alone = times["one alone"]
    for name in list(cases)[1:]:
        print(f"  {name:<30} {times[name] / alone:5.2f}× one alone (2.00× = no slowdown "
              "beyond running twice the work)")  # fmt: skip


if __name__ == "__main__":
    main()
