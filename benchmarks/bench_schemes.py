"""Resampling schemes on the default dataset and grid: cost and estimates. Asserts nothing.

    make bench-schemes                                # plain CV, nested, bootstrap, LOO (~20 min)
    .venv/bin/python benchmarks/bench_schemes.py [--no-loo] [--bootstrap 50]

One throw-away copy of the project (digits, the default 4-point grid, CPU), stages run
through `dvc repro` one after another, each timed as a whole process:

1. plain CV (split=stratified_kfold, 5 folds): `dvc repro sweep` then `aggregate`;
2. nested 5×5 CV of the same grid: `dvc repro nested` (goal: ≤ 2× the plain sweep);
3. bootstrap (split=bootstrap, B draws): the .632+ estimate beside the CV estimate;
4. leave-one-out (~1,437 dev rows × 4 configurations ≈ 5,700 models; goal ≤ 10 min), its
   planning estimate against the measured training time (goal: within 30 %).

Prints one table of numbers and ratios; `--out FILE` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_project  # noqa: E402
from foldwise.compose import compose_params  # noqa: E402


def timed(project, *args: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = project.run(str(Path(sys.executable).parent / "dvc"), *args, timeout=7200).stdout
    return time.perf_counter() - t, out


def read(project, rel: str) -> dict:
    return json.loads((project.path / rel).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-loo", action="store_true", help="skip leave-one-out (~10 min)")
    ap.add_argument("--no-nested", action="store_true")
    ap.add_argument("--bootstrap", type=int, default=50, help="B draws (0: skip)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="foldwise-bench-schemes-"))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    base = ["trainer.accelerator=cpu"]
    project = make_project(tmp, uri, compose_params(base, root=ROOT))
    rows: dict[str, object] = {}

    def use(*overrides: str) -> None:
        project.set_params(compose_params([*base, *overrides], root=ROOT))

    # 1. plain CV
    timed(project, "repro", "split")
    t_sweep, out = timed(project, "repro", "sweep")
    timed(project, "repro", "aggregate")
    cv = read(project, "results/cv_metrics.json")
    sel = cv["selected"]
    rows["plain_sweep_seconds"] = t_sweep
    rows["plain_selected"] = sel["label"]
    rows["plain_val_f1"] = sel["val_f1"]
    rows["plain_val_acc"] = sel["val_acc"]
    print(f"plain CV sweep: {t_sweep:.1f} s · selected {sel['label']} · val_f1 "
          f"{sel['val_f1']['mean']:.4f} [{sel['val_f1']['ci_low']:.4f}, "
          f"{sel['val_f1']['ci_high']:.4f}]", flush=True)  # fmt: skip

    # 2. nested
    if not args.no_nested:
        use("nested.enabled=true")
        t_nested, out = timed(project, "repro", "nested")
        nested = read(project, "results/nested.json")
        rows["nested_seconds"] = t_nested
        rows["nested_over_plain"] = t_nested / t_sweep
        rows["nested"] = {k: nested[k] for k in ("nested", "plain", "optimism", "winners")}
        rows["nested_outer"] = nested["outer"]
        print("\n".join(ln for ln in out.splitlines() if ln.startswith("[nested]")))
        print(f"nested 5×5: {t_nested:.1f} s = {t_nested / t_sweep:.2f}× the plain sweep",
              flush=True)  # fmt: skip
        use()

    # 3. bootstrap
    if args.bootstrap:
        use("split=bootstrap", f"split.n_resamples={args.bootstrap}", "selection.metric=val_acc")
        t_boot, out = timed(project, "repro", "aggregate")
        boot = read(project, "results/cv_metrics.json")
        b = boot["selected"]
        rows["bootstrap"] = {
            "B": args.bootstrap, "seconds": t_boot, "selected": b["label"],
            **{k: b[k] for k in ("err_632plus", "err_632", "err_loo_bootstrap", "err_apparent",
                                 "no_information_error", "relative_overfitting")},
            "acc_632plus": b["val_acc"]["mean"],
        }  # fmt: skip
        print(f"bootstrap B={args.bootstrap}: {t_boot:.1f} s · selected {b['label']} · "
              f"accuracy .632+ {b['val_acc']['mean']:.4f} (Err.632+ {b['err_632plus']:.4f}, "
              f".632 {b['err_632']:.4f}, LOO-boot {b['err_loo_bootstrap']:.4f}, apparent "
              f"{b['err_apparent']:.4f}) vs CV accuracy {sel['val_acc']['mean']:.4f}",
              flush=True)  # fmt: skip
        use()

    # 4. leave-one-out
    if not args.no_loo:
        use("split=leave_one_out")
        timed(project, "repro", "split")
        t_loo, out = timed(project, "repro", "sweep")
        session = read(project, "results/sweep/session.json")
        m = re.search(r"training (\S+)", out.split("sweep done")[-1])
        trained = _seconds(m.group(1)) if m else float("nan")
        est = session.get("estimate") or {}
        timed(project, "repro", "aggregate")
        loo = read(project, "results/cv_metrics.json")
        rows["loo"] = {
            "models": session["n_folds"] * len(session["configs"]),
            "sweep_stage_seconds": t_loo,
            "training_seconds": trained,
            "estimated_seconds": est.get("seconds"),
            "estimate_error": (est["seconds"] - trained) / trained if est else None,
            "selected": loo["selected"]["label"],
            "val_acc": loo["selected"]["val_acc"]["mean"],
            "val_f1": loo["selected"]["val_f1"]["mean"],
            "method": loo["method"],
        }
        print(f"leave-one-out: {rows['loo']['models']} models · sweep stage {t_loo:.0f} s · "
              f"training {trained:.0f} s, estimated {est.get('seconds', float('nan')):.0f} s "
              f"({rows['loo']['estimate_error']:+.0%}) · selected {loo['selected']['label']} "
              f"val_acc {rows['loo']['val_acc']:.4f} val_f1 {rows['loo']['val_f1']:.4f}",
              flush=True)  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2, default=str))


def _seconds(clock: str) -> float:
    parts = [int(p) for p in clock.split(":")]
    return float(sum(v * 60**i for i, v in enumerate(reversed(parts))))


if __name__ == "__main__":
    main()
