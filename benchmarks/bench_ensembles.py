"""Bagging and boosting on the default dataset (digits): cost, CV scores, bias–variance.
Asserts nothing; prints numbers and ratios.

    make bench-ensembles                               # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_ensembles.py [--members 10] [--draws 10] [--out F]

Everything goes through foldwise's engine and ensemble code on the dev rows of the
default split (the lockbox rows are never read):

1. **Cost of stacked bagging** — one fold, the default MLP (hidden 64, 40 epochs with
   early stopping): one model alone; B bagged members in one stack (goal: ≤ 2.5× one
   model); the same B members one after another (stacks of one).
2. **CV, side by side** — 5 stratified folds: the single MLP, its bagged version (B
   members) and AdaBoost (SAMME) of weak MLPs (hidden 4, 10 epochs, up to B rounds):
   mean validation macro-F1 ± Student-t interval.
3. **Why they help** — bias–variance (Domingos 0-1) on a fixed 30 % evaluation part of
   the dev rows, over ``--draws`` bootstrap draws of the other 70 %: the single MLP vs
   its bagged version (variance should drop), and AdaBoost after 1, 2, 5 and B rounds
   (bias should drop).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from foldwise import engine, ensemble  # noqa: E402
from foldwise.compose import compose_params  # noqa: E402
from foldwise.data import prepare  # noqa: E402
from foldwise.ensemble import boosting  # noqa: E402
from foldwise.fitting.configs import apply  # noqa: E402
from foldwise.fitting.train import arrays, make_task  # noqa: E402
from foldwise.methods import bias_variance  # noqa: E402
from foldwise.methods.resampling import t_summary  # noqa: E402
from foldwise.split import split  # noqa: E402

KW = dict(accelerator="cpu", precision=32)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    b_members = args.members

    cfg = compose_params(["trainer.accelerator=cpu"], root=ROOT)
    table, meta = prepare(cfg)
    res = split(table, cfg, class_names=meta.classes)
    dev = res.dev.reset_index(drop=True)
    x, y = arrays(dev)
    pos = {rid: i for i, rid in enumerate(dev["row_id"])}
    folds = [(np.array([pos[r] for r in f.train]), np.array([pos[r] for r in f.val]))
             for f in res.folds]  # fmt: skip
    single = apply(cfg, {})
    bagged = apply(cfg, {"ensemble.name": "bagging", "ensemble.n_estimators": b_members})
    weak = apply(cfg, {"ensemble.name": "adaboost", "ensemble.n_estimators": b_members,
                       "model.hidden": 4, "trainer.max_epochs": 10, "optim.lr": 0.01})  # fmt: skip
    out: dict[str, object] = {"members": b_members, "draws": args.draws}

    # 1. cost: one fold
    tr, va = folds[0]
    one = make_task(single, "one", tr, {"val": va})
    bag = make_task(bagged, "bag", tr, {"val": va})
    ensemble.train([one], x, y, meta, **KW)  # warm-up: imports, first allocations
    t_one, _ = timed(lambda: ensemble.train([one], x, y, meta, **KW))
    t_bag, _ = timed(lambda: ensemble.train([bag], x, y, meta, **KW))
    members = ensemble.expand(bag)
    t_sep, _ = timed(lambda: engine.train(members, x, y, meta, max_models=1, **KW))
    out["cost"] = {
        "one_model_s": t_one, "bagged_stacked_s": t_bag, "bagged_separate_s": t_sep,
        "stacked_over_one": t_bag / t_one, "separate_over_stacked": t_sep / t_bag,
    }  # fmt: skip

    # 2. CV side by side
    cv = {}
    for name, c in (("single", single), ("bagging", bagged), ("adaboost", weak)):
        parents = [make_task(c, f"{name}-{k}", t, {"val": v}) for k, (t, v) in enumerate(folds)]
        secs, outs = timed(lambda ps=parents: ensemble.train(ps, x, y, meta, **KW))
        st = t_summary([o.metrics["val_f1"] for o in outs])
        oob = float(np.mean([o.metrics.get("oob_f1", np.nan) for o in outs]))
        cv[name] = {"val_f1": st["mean"], "ci_low": st["ci_low"], "ci_high": st["ci_high"],
                    "seconds": secs, "oob_f1": oob}  # fmt: skip
    out["cv"] = cv

    # 3. bias–variance: single vs bagged; AdaBoost by rounds
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    n_eval = int(0.3 * len(y))
    ev, part = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
    draws = [np.random.default_rng([42, d]).choice(part, len(part)) for d in range(args.draws)]

    def preds(c, tag):
        ps = [dataclasses.replace(make_task(c, f"{tag}-{d}", dr, {"val": ev}), predict=("val",))
              for d, dr in enumerate(draws)]  # fmt: skip
        return np.array([o.predictions["val"]["pred"] for o in ensemble.train(ps, x, y, meta,
                                                                               **KW)])  # fmt: skip

    bv = {"single": bias_variance.zero_one(preds(single, "bv1"), y[ev]).to_dict(),
          "bagging": bias_variance.zero_one(preds(bagged, "bvb"), y[ev]).to_dict()}  # fmt: skip
    parents = [make_task(weak, f"bvw-{d}", dr, {"val": ev}) for d, dr in enumerate(draws)]
    boosted = ensemble.boost(parents, x, y, meta, **KW)
    for m in sorted({1, 2, 5, b_members}):
        staged = []
        for b in boosted:
            k = min(m, len(b.val))
            staged.append(boosting.samme_proba(b.val[:k], b.alphas[:k], meta.n_classes).argmax(1))
        bv[f"adaboost_{m}"] = bias_variance.zero_one(np.array(staged), y[ev]).to_dict()
    out["bias_variance"] = bv

    c = out["cost"]
    print(f"\n1. one fold ({len(tr)} training rows), B = {b_members}:")
    print(f"   one model {c['one_model_s']:.1f} s · {b_members} bagged in one stack "
          f"{c['bagged_stacked_s']:.1f} s ({c['stacked_over_one']:.2f}× one model) · "
          f"one at a time {c['bagged_separate_s']:.1f} s ({c['separate_over_stacked']:.2f}× "
          "the stack)")  # fmt: skip
    print("\n2. 5-fold CV, val macro-F1 (95 % t interval):")
    for name, r in cv.items():
        oob = f" · OOB {r['oob_f1']:.4f}" if r["oob_f1"] == r["oob_f1"] else ""
        print(f"   {name:9s} {r['val_f1']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]{oob} "
              f"({r['seconds']:.1f} s)")  # fmt: skip
    print(f"\n3. bias–variance (0-1, {args.draws} draws, {len(ev)} evaluation rows):")
    for name, d in bv.items():
        print(f"   {name:12s} loss {d['expected_loss']:.4f} · bias {d['bias']:.4f} · "
              f"variance {d['variance']:.4f} · net variance {d['net_variance']:.4f}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
