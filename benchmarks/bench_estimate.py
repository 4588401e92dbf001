"""The sweep's time estimate against its measured training time, per scheme. Asserts nothing.

    make bench-estimate                       # every scheme, cold and with history (~15 min)
    .venv/bin/python benchmarks/bench_estimate.py --schemes stratified_kfold bootstrap

Each scheme runs on the default data (digits, the default 4-point grid, CPU) with its
default options; schemes that need groups or times run on the iris table of the tests
(8 sites, a day column), and leave-p-out samples 200 of its C(n, 2) splits. For each
scheme, `python pipelines/sweep.py` runs twice in a throw-away project, each time with a
fresh MLflow store and no trained models: first with no earlier fits ("cold": the
epochs come from the probe's prior), then with the first run's epoch counts
(``.foldwise/epochs.json``, "history") and the first run's pace (measured over probed
time, ``.foldwise/pace.json``), which scales the second estimate. Prints estimate,
measured training time (the sweep's ``training_seconds``), their ratio, and the pace
factor applied, per scheme and run; ``--out FILE`` writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import iris_csv, make_project  # noqa: E402
from foldwise.compose import compose_params  # noqa: E402

BASE = ["trainer.accelerator=cpu"]
IRIS = ["data=csv", "data.path=data/raw/iris.csv", "data.target=species",
        "data.group_column=site", "data.time_column=day"]  # fmt: skip
SCHEMES: dict[str, list[str]] = {
    "stratified_kfold": [],
    "kfold": ["split=kfold"],
    "repeated_kfold": ["split=repeated_kfold"],
    "repeated_stratified_kfold": ["split=repeated_stratified_kfold"],
    "shuffle_split": ["split=shuffle_split"],
    "stratified_shuffle_split": ["split=stratified_shuffle_split"],
    "holdout": ["split=holdout"],
    "bootstrap": ["split=bootstrap", "selection.metric=val_acc"],
    "leave_p_out": ["split=leave_p_out", "split.sample=200"],
    "leave_one_out": ["split=leave_one_out"],
    "group_kfold (iris)": [*IRIS, "split=group_kfold"],
    "stratified_group_kfold (iris)": [*IRIS, "split=stratified_group_kfold"],
    "leave_one_group_out (iris)": [*IRIS, "split=leave_one_group_out"],
    "leave_p_groups_out (iris)": [*IRIS, "split=leave_p_groups_out"],
    "time_series (iris)": [*IRIS, "split=time_series"],
    "leave_one_out (iris)": [*IRIS, "split=leave_one_out"],
}


def sweep_once(project, uri: str) -> dict:
    """Run the sweep stage from scratch (no result files, no cached jobs, a new MLflow
    store; ``.foldwise/epochs.json`` is kept) and read its estimate and training time."""
    from mlflow import MlflowClient

    for rel in ("results/sweep", ".foldwise/jobs", ".foldwise/sweeps.json"):
        p = project.path / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    project.env["MLFLOW_TRACKING_URI"] = uri
    t = time.perf_counter()
    out = project.stage("sweep").stdout
    wall = time.perf_counter() - t
    session = json.loads((project.path / "results/sweep/session.json").read_text())
    c = MlflowClient(uri)
    run = session["sweep_run_id"]
    metrics = c.get_run(run).data.metrics
    stacks = c.get_metric_history(run, "stack_seconds")
    tracked = c.get_metric_history(run, "stack_tracking_seconds")
    est = session.get("estimate") or {}
    return {
        "models": sum(len(s) for s in session["stacks"]),
        "stacks": len(session["stacks"]),
        "estimate": est.get("seconds"),
        "probed": est.get("probed_seconds"),
        "pace": est.get("pace"),
        "from_history": est.get("epochs_from_history"),
        "trained": metrics["training_seconds"],
        "stack_seconds": sum(m.value for m in stacks),
        "stack_tracking_seconds": sum(m.value for m in tracked),
        "wall": wall,
        "probes": est.get("probes"),
        "epochs": json.loads((project.path / ".foldwise/epochs.json").read_text()),
        "load": __import__("os").getloadavg()[0],
        "line": next((ln for ln in out.splitlines() if "estimated training time" in ln), ""),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schemes", nargs="*", default=list(SCHEMES), help="names as in SCHEMES")
    ap.add_argument("--no-history", action="store_true", help="only the cold run")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    print(f"{'scheme':32} {'run':8} {'models':>6} {'estimate':>9} {'measured':>9} {'ratio':>6} "
          f"{'pace':>5} {'load':>5}")  # fmt: skip
    for name in args.schemes:
        tmp = Path(tempfile.mkdtemp(prefix="foldwise-bench-estimate-"))
        overrides = [*BASE, *SCHEMES[name]]
        uri = f"sqlite:///{tmp / 'mlflow-cold.db'}"
        project = make_project(tmp, uri, compose_params(overrides, root=ROOT))
        if "iris" in name:
            iris_csv().to_csv(project.path / "data/raw/iris.csv", index=False)
            project.commit("iris")
        project.stage("prepare")
        project.stage("split")
        for run in ("cold",) if args.no_history else ("cold", "history"):
            r = {"scheme": name, "run": run, **sweep_once(project, f"sqlite:///{tmp}/{run}.db")}
            rows.append(r)
            ratio = r["estimate"] / r["trained"] if r["estimate"] else None
            pace = "" if r["pace"] is None else f"{r['pace']:.2f}"
            print(f"{name:32} {run:8} {r['models']:>6} "
                  f"{r['estimate'] or float('nan'):>8.1f}s {r['trained']:>8.1f}s "
                  f"{'' if ratio is None else f'{ratio:.2f}':>6} "
                  f"{pace:>5} {r['load']:>5.1f}",
                  flush=True)  # fmt: skip
            if args.out:
                args.out.write_text(json.dumps(rows, indent=1))
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [r["estimate"] / r["trained"] for r in rows if r["estimate"]]
    if ratios:
        inside = sum(0.7 <= x <= 1.3 for x in ratios)
        print(
            f"estimate / measured: {min(ratios):.2f}-{max(ratios):.2f}; "
            f"{inside} of {len(ratios)} within ±30 %"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
