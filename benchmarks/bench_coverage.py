"""How often does each interval foldwise prints cover what it claims? (issue 21, item 1)

Synthetic problems with a known generating process, so every target is measurable:

- **classification**: x ~ N(0, I₁₀), P(y = 1 | x) = sigmoid(w·x + sin(2·x₀)), fixed w;
- **regression**: y = w·x + sin(2·x₀) + N(0, 1).

Each replication draws a fresh dev set (``--n`` rows) and lockbox (200 rows), and runs
what the pipeline runs for one configuration (an MLP, hidden 16, Adam, 30 epochs):
K-fold CV on the dev rows, the refit on all of them, the lockbox's scores, and the
K(K−1)/2 pair-of-folds models of the nested-CV interval. Every model of every
replication trains in two engine calls (stacked: 100 replications × 15 CV models,
then the 100 refits), and each refit model is scored on a pool of 50,000 fresh rows
from the same generator: its true score.

Targets (what each interval's wording promises):
- **Err_XY**: the true score of *this* refit model (pool score);
- **Err**: the expected true score of a model trained this way on n rows (the mean of
  Err_XY over the replications, whose own Monte-Carlo error is printed).

The intervals: the naive Student-t over folds (``split=kfold``'s printed interval),
the Nadeau–Bengio corrected t (the repeated schemes'), the per-row z interval over the
pooled CV losses (what many tools print; Bates et al.'s "naive"), the nested-CV interval
(``selection.interval=ncv``, Bates, Hastie & Tibshirani 2023), and the lockbox's BCa
interval over its rows (the test stage's). Coverage comes with its own 95 % binomial
(Clopper–Pearson) interval; width is the mean full width; bias is the mean of estimate
− target. Scores: accuracy (classification), MSE (regression). One configuration, so
nothing is selected: the nested-CV *selection* estimate (``nested.enabled``) and the
winner's optimism are not part of this study.

    python benchmarks/bench_coverage.py              # R = 100 replications per setting
    python benchmarks/bench_coverage.py --reps 20    # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from foldwise import engine
from foldwise.data import Meta
from foldwise.methods import ncv
from foldwise.methods.resampling import bootstrap_scores, corrected_t_summary, t_summary
from foldwise.report.trust import coverage_text  # the report's rule for a share

D = 10
POOL = 50_000
TEST = 200
HYPER = engine.Hyper(lr=0.01, weight_decay=0.0, dropout=0.0, max_epochs=30,
                     early_stopping=False, inner_fraction=0.2, patience=5)  # fmt: skip
MODEL = {"name": "mlp", "hidden": 16, "depth": 1, "dropout": 0.0}


def generate(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    w = np.random.default_rng(12345).normal(0, 0.6, D)  # the fixed truth
    x = rng.normal(size=(n, D))
    f = x @ w + np.sin(2 * x[:, 0])
    if kind == "classification":
        return x, (rng.random(n) < 1 / (1 + np.exp(-f))).astype(np.int64)
    return x, f + rng.normal(size=n)


@dataclass
class Rep:
    dev: np.ndarray  # positions in the engine's arrays
    test: np.ndarray
    folds: list[np.ndarray]  # validation positions of each fold
    keys: dict[str, str] = field(default_factory=dict)


def plan(kind: str, reps: int, n: int, k: int, seed: int):
    """Every replication's rows (after the shared pool) and every model as a task."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    px, py = generate(kind, POOL, rng)
    xs.append(px)
    ys.append(py)
    at = POOL
    tasks, out = [], []
    for r in range(reps):
        x, y = generate(kind, n + TEST, rng)
        xs.append(x)
        ys.append(y)
        dev, test = np.arange(at, at + n), np.arange(at + n, at + n + TEST)
        at += n + TEST
        splitter = StratifiedKFold if kind == "classification" else KFold
        split = splitter(k, shuffle=True, random_state=r)
        folds = [dev[v] for _, v in split.split(dev, y[:n])]
        rep = Rep(dev, test, folds)

        def task(key, train, finals, rep=rep, r=r):
            rep.keys[key] = f"r{r}:{key}"
            task_seed = zlib.crc32(f"{seed}:{r}:{key}".encode())  # fixed across processes
            return engine.Task(
                rep.keys[key],
                dict(MODEL),
                HYPER,
                32,
                task_seed,
                train,
                finals=finals,
                predict=tuple(finals),
            )

        for f in range(k):
            tasks.append(task(f"fold{f}", np.setdiff1d(dev, folds[f]), {"val": folds[f]}))
        tasks.append(task("refit", dev, {"pool": np.arange(POOL), "test": test}))
        for a in range(k):
            for b in range(a + 1, k):
                train = np.setdiff1d(dev, np.concatenate([folds[a], folds[b]]))
                tasks.append(task(f"pair{a}-{b}", train, {"a": folds[a], "b": folds[b]}))
        out.append(rep)
    return np.concatenate(xs), np.concatenate(ys), tasks, out


def score(kind: str, y: np.ndarray, pred: np.ndarray) -> float:
    return (
        float((y == pred).mean()) if kind == "classification" else float(((y - pred) ** 2).mean())
    )


def loss(kind: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-row loss whose mean is the score's error: 0-1 loss, or squared error."""
    return (y != pred).astype(float) if kind == "classification" else (y - pred) ** 2


def run(kind: str, reps: int, n: int, k: int, seed: int) -> dict:
    x, y, tasks, plan_ = plan(kind, reps, n, k, seed)
    meta = Meta("coverage", len(y), D, ["0", "1"] if kind == "classification" else [],
                [f"x{i}" for i in range(D)], None, task=kind)  # fmt: skip
    t0 = time.perf_counter()
    # Two calls: the refits (scored on the 50,000-row pool) apart from the fold and pair
    # models, since a stack pads every model's scored rows to its longest set.
    by_key = {}
    for part in (False, True):
        some = [t for t in tasks if t.key.endswith(":refit") == part]
        outs = engine.train(some, x.astype(np.float32), y, meta, accelerator="cpu")
        by_key.update({t.key: o for t, o in zip(some, outs, strict=True)})
    outs = list(by_key.values())
    seconds = time.perf_counter() - t0
    failed = sum(o.status != "ok" for o in outs)
    if failed:
        raise SystemExit(f"{failed} of {len(outs)} models failed to train")
    bounds = (0.0, 1.0) if kind == "classification" else (0.0, math.inf)
    rows: dict[str, list] = {m: [] for m in ("naive", "corrected", "rows", "ncv", "lockbox")}
    truth = []
    for rep in plan_:

        def pred(key, name, rep=rep):
            return np.asarray(by_key[rep.keys[key]].predictions[name]["pred"])

        refit_true = score(kind, y[:POOL], pred("refit", "pool"))
        truth.append(refit_true)
        fold = [score(kind, y[f], pred(f"fold{i}", "val")) for i, f in enumerate(rep.folds)]
        naive = t_summary(fold, 0.95, bounds)
        n_val = n / k
        corr = corrected_t_summary(fold, n - n_val, n_val, 0.95, bounds)
        inner = {}
        for a in range(k):
            for b in range(a + 1, k):
                inner[(a, b)] = loss(kind, y[rep.folds[a]], pred(f"pair{a}-{b}", "a"))
                inner[(b, a)] = loss(kind, y[rep.folds[b]], pred(f"pair{a}-{b}", "b"))
        outer = [loss(kind, y[f], pred(f"fold{i}", "val")) for i, f in enumerate(rep.folds)]
        nc = ncv.interval([ncv.Repetition(outer, inner)])
        if kind == "classification":  # the interval is on the error: accuracy = 1 − error
            nc_est, nc_lo, nc_hi = 1 - nc.estimate, 1 - nc.ci_high, 1 - nc.ci_low
        else:
            nc_est, nc_lo, nc_hi = nc.estimate, nc.ci_low, nc.ci_high
        yt, pt = y[rep.test], pred("refit", "test")
        box = bootstrap_scores(
            yt, pt, loss(kind, yt, pt), resamples=999, confidence=0.95, seed=0, task=kind
        )
        box = box["acc" if kind == "classification" else "mse"]
        rows["naive"].append((naive["mean"], naive["ci_low"], naive["ci_high"]))
        rows["corrected"].append((corr["mean"], corr["ci_low"], corr["ci_high"]))
        # the per-row interval many tools print (and Bates et al.'s "naive"): the pooled
        # CV losses' mean ± z·sd/√n, as if the n rows' losses were independent
        m, lo, hi = ncv.naive(np.concatenate(outer))
        rows["rows"].append((1 - m, 1 - hi, 1 - lo) if kind == "classification" else (m, lo, hi))
        rows["ncv"].append((nc_est, nc_lo, nc_hi))
        rows["lockbox"].append((box["value"], box["ci_low"], box["ci_high"]))
    truth_arr = np.asarray(truth)
    expected = float(truth_arr.mean())
    table = {}
    for name, vals in rows.items():
        v = np.asarray(vals)
        est, lo, hi = v[:, 0], v[:, 1], v[:, 2]
        table[name] = {
            target: {
                "cover": int(((lo <= t) & (t <= hi)).sum()),
                "bias": float((est - t).mean()),
            }
            for target, t in (("xy", truth_arr), ("err", np.full(len(truth_arr), expected)))
        } | {"width": float((hi - lo).mean())}
    return {"table": table, "reps": reps, "expected": expected,
            "expected_se": float(truth_arr.std(ddof=1) / math.sqrt(reps)),
            "models": len(tasks), "seconds": seconds}  # fmt: skip


def _num(v: float, se_like: float) -> str:
    """v to the precision a quantity of spread ``se_like`` supports (2 significant
    digits of the spread)."""
    if not math.isfinite(se_like) or se_like <= 0:
        return f"{v:.3g}"
    digits = max(0, 1 - math.floor(math.log10(se_like)))
    return f"{v:.{digits}f}"


WORDS = {
    "naive": "naive t over folds (split=kfold)",
    "corrected": "Nadeau–Bengio corrected t",
    "rows": "z over the pooled rows' losses (not foldwise's)",
    "ncv": "nested CV (selection.interval=ncv)",
    "lockbox": "lockbox BCa (test stage)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here (the report reads "
                    "src/foldwise/report/coverage.json)")  # fmt: skip
    args = ap.parse_args()
    found = []
    settings = [("classification", 300, 5), ("regression", 300, 5), ("classification", 100, 10)]
    print(f"95 % intervals; R = {args.reps} replications per setting; coverage with its "
          "exact binomial 95 % interval\n")  # fmt: skip
    for kind, n, k in settings:
        res = run(kind, args.reps, n, k, args.seed)
        found.append({"task": kind, "n": n, "folds": k, **res})
        metric = "accuracy" if kind == "classification" else "MSE"
        se = res["expected_se"]
        print(f"### {kind}, n = {n}, K = {k} ({metric}; Err = {_num(res['expected'], se)} "
              f"± {se:.2g} MC; {res['models']} models in two engine calls, "
              f"{res['seconds']:.0f} s)\n")  # fmt: skip
        print("| interval | covers Err_XY | covers Err | mean width | bias vs Err_XY |")
        print("|---|---|---|---|---|")
        for name, row in res["table"].items():
            width, reps = row["width"], res["reps"]
            xy, err = (coverage_text(row[t]["cover"], reps) for t in ("xy", "err"))
            print(f"| {WORDS[name]} | {xy} | {err} | {_num(width, width / 10)} | "
                  f"{_num(row['xy']['bias'], width / 10)} |")  # fmt: skip
        print()
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "settings": found}, indent=1) + "\n")


if __name__ == "__main__":
    main()
