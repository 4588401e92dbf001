"""Coverage of the naive CV interval and of the nested-CV interval (Bates, Hastie &
Tibshirani 2023; :mod:`foldwise.methods.ncv`) on OLS fits of a Gaussian linear model,
over settings of n, p, K and the number of partitions: the simulation of
``tests/test_ncv.py`` (which asserts one setting) across a grid.

Coverage is of Err_XY, the error of the model fit on all n rows. 95 % intervals;
with D simulated data sets a coverage's standard error is about √(c(1−c)/D).

    python benchmarks/ncv_coverage.py            # D = 500 (~2 min on one core)
    python benchmarks/ncv_coverage.py --datasets 200
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_ncv import ols_coverage

SETTINGS = [  # (n, p, K, partitions)
    (100, 10, 10, 5),
    (100, 20, 10, 5),
    (100, 40, 10, 1),
    (100, 40, 10, 5),
    (100, 60, 10, 5),
    (100, 20, 5, 5),
    (100, 40, 5, 5),
    (200, 80, 10, 3),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    d = args.datasets
    print(f"{'n':>4} {'p':>3} {'K':>3} {'R':>2}  naive  NCV   (95 % intervals, {d} data sets, "
          f"a coverage of 0.90 has se {math.sqrt(0.9 * 0.1 / d):.3f})")  # fmt: skip
    for n, p, k, reps in SETTINGS:
        t = time.perf_counter()
        naive, nested = ols_coverage(d, n, p, k, reps, args.seed)
        print(f"{n:>4} {p:>3} {k:>3} {reps:>2}  {naive:.2f}   {nested:.2f}  "
              f"({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
