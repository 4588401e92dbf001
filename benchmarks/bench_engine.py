"""foldwise's sweep beside the baselines, and the fixed costs. Prints tables, asserts nothing.

    make bench                                   # W16 x3, W320 x1, fixed costs
    .venv/bin/python benchmarks/bench_engine.py --reps 3 --w320-reps 1 [--no-w320] [--no-server]

Workloads (issue #5): digits, the default split (20 % lockbox, 5 stratified folds over
the dev rows), 30 fixed epochs, batch 64, hidden 128, CPU.
  W16:  16 configurations (4 learning rates × 4 weight decays) × 5 folds =  80 models
  W320: 64 configurations (8 × 8)                             × 5 folds = 320 models

Runners, alternated within each repetition, whole processes timed (imports included):
  stacked        `python pipelines/sweep.py` as `dvc repro` runs it, fresh SQLite MLflow
  stacked+server the same against a gunicorn `mlflow server` on 127.0.0.1
  one-at-a-time  the same stage with `engine=one_at_a_time` (stacks of one)
  plain loop     benchmarks/baselines.py plain: models one after another, tensor slicing
  sklearn        benchmarks/baselines.py sklearn: GridSearchCV(scaler + MLPClassifier), n_jobs=2

Every foldwise repetition starts from nothing: no results, no job cache, a new MLflow store.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "tests"))

from conftest import git_env, make_project  # noqa: E402
from foldwise.compose import compose_params  # noqa: E402
from foldwise.tracking import local_server  # noqa: E402

BIN = Path(sys.executable).parent
BASE = [
    "trainer.max_epochs=30",
    "trainer.early_stopping.enabled=false",
    "trainer.batch_size=64",
    "trainer.accelerator=cpu",
    "model.hidden=128",
]
WORKLOADS = {
    "W16": {"lr": [0.001, 0.003, 0.01, 0.03], "weight_decay": [0.0, 1e-05, 0.0001, 0.001]},
    "W320": {
        "lr": [0.0003, 0.0006, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032],
        "weight_decay": [0.0, 1e-06, 1e-05, 3e-05, 0.0001, 0.0003, 0.001, 0.003],
    },
}

# Runs a command and reports its wall time and the peak RSS of its largest process.
LAUNCH = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)
print("MEASURE " + json.dumps({"wall": wall, "rss_mb": rss, "rc": p.returncode}))
"""


def measure(cmd: list[str], cwd: Path, env: dict) -> tuple[dict, str]:
    p = subprocess.run(
        [sys.executable, "-c", LAUNCH, *cmd], cwd=cwd, env=env, capture_output=True, text=True
    )
    line = next(ln for ln in p.stdout.splitlines()[::-1] if ln.startswith("MEASURE "))
    m = json.loads(line.removeprefix("MEASURE "))
    if m["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return m, p.stdout


def project(tmp: Path) -> Path:
    """A copy of the repository's tracked files in a fresh git repo (the tests' helper)."""
    return make_project(tmp, "sqlite:///unused.db", compose_params(BASE, root=ROOT)).path


def env_for(uri: str, repo: Path | None = None) -> dict:
    # The copy's own src/ first: the benchmark measures the tree as it was when it
    # started, even if the checkout (the editable install) changes meanwhile.
    path = {"PYTHONPATH": str(repo / "src")} if repo else {}
    return {
        **os.environ,
        **path,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": uri,
        "DVC_NO_ANALYTICS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def write_params(repo: Path, grid: dict, one_at_a_time: bool = False) -> None:
    extra = ["engine=one_at_a_time"] if one_at_a_time else []
    cfg = compose_params([*BASE, *extra], root=repo)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    cfg.sweep.grid = {"optim": {"lr": grid["lr"], "weight_decay": grid["weight_decay"]}}
    OmegaConf.save(cfg, repo / "params.yaml")


def foldwise_sweep(repo: Path, uri: str, grid: dict, one_at_a_time: bool) -> dict:
    for stale in ("results/sweep", ".foldwise", "outputs"):
        shutil.rmtree(repo / stale, ignore_errors=True)
    write_params(repo, grid, one_at_a_time)
    m, _ = measure([sys.executable, "pipelines/sweep.py"], repo, env_for(uri, repo))
    from mlflow import MlflowClient

    session = json.loads((repo / "results/sweep/session.json").read_text())
    c = MlflowClient(uri)
    run = c.get_run(session["sweep_run_id"])
    history = lambda k: sum(m.value for m in c.get_metric_history(run.info.run_id, k))  # noqa: E731
    # Training time only: the wait for MLflow at a stack's end is in the MLflow column.
    train_s = history("stack_seconds") - history("stack_tracking_wait_seconds")
    jobs = [json.loads(p.read_text()) for p in (repo / "results/sweep/jobs").glob("*.json")]
    by_cfg: dict[str, list[float]] = {}
    for j in jobs:
        by_cfg.setdefault(j["config_hash"], []).append(j["metrics"]["val_acc"])
    return {
        **m,
        "n_models": len(jobs),
        "per_model_s": train_s / history("stack_models"),
        "best_acc": max(statistics.mean(v) for v in by_cfg.values()),
        "mlflow_s": run.data.metrics["tracking_blocking_seconds"],
        "mlflow_busy_s": run.data.metrics["tracking_seconds"],
        # process start → first training step (imports, MLflow store, plan, Lightning)
        "startup_s": run.data.metrics.get("startup_seconds"),
        "end_wait_s": history("stack_tracking_wait_seconds"),
    }


def baseline(kind: str, repo: Path, grid: dict, n_models: int) -> dict:
    spec = {**grid, "hidden": 128, "dropout": 0.1, "epochs": 30, "batch_size": 64}
    grid_file = repo / f"grid-{kind}.json"
    grid_file.write_text(json.dumps(spec))
    cmd = [sys.executable, str(ROOT / "benchmarks/baselines.py"), kind, str(repo), str(grid_file)]
    m, out = measure(cmd, repo, env_for("sqlite:///unused.db", repo))
    res = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
    return {**m, **res, "n_models": n_models, "mlflow_s": None, "startup_s": None,
            "end_wait_s": None}  # fmt: skip


def table(name: str, rows: dict[str, list[dict]]) -> None:
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    ref_plain = med(rows["plain loop"], "wall") if "plain loop" in rows else None
    ref_sk = med(rows["sklearn"], "wall") if "sklearn" in rows else None
    print(f"\n{name} — medians of {len(next(iter(rows.values())))}, whole processes, 2 CPU cores")
    head = (f"{'runner':<15}{'wall s':>8}{'÷plain':>8}{'÷sklearn':>9}{'s/model':>9}"
            f"{'models/s':>10}{'RSS MB':>8}{'best acc':>10}{'MLflow':>8}{'1st step':>9}"
            f"{'end wait':>9}")  # fmt: skip
    print(head)
    print("-" * len(head))
    seconds = lambda rs, k: (  # noqa: E731
        f"{statistics.median(r[k] for r in rs):.1f}" if rs[0][k] is not None else "—"
    )
    for runner, rs in rows.items():
        wall = med(rs, "wall")
        mlf = [r["mlflow_s"] / r["wall"] for r in rs if r["mlflow_s"] is not None]
        print(
            f"{runner:<15}{wall:>8.1f}"
            f"{(wall / ref_plain if ref_plain else float('nan')):>8.2f}"
            f"{(wall / ref_sk if ref_sk else float('nan')):>9.2f}"
            f"{med(rs, 'per_model_s'):>9.3f}{rs[0]['n_models'] / wall:>10.2f}"
            f"{max(r['rss_mb'] for r in rs):>8.0f}{med(rs, 'best_acc'):>10.4f}"
            f"{(f'{statistics.median(mlf):.1%}' if mlf else '—'):>8}"
            f"{seconds(rs, 'startup_s'):>9}{seconds(rs, 'end_wait_s'):>9}"
        )
    print("s/model: training time per model once the process is up (foldwise: the stacks'")
    print("time without the wait for MLflow; sklearn: mean fit time; plain: per model).")
    print("MLflow: share of the wall time the stage waited for MLflow calls (store creation,")
    print("runs opened and closed, the queue left when training ended); calls on the tracking")
    print("thread while models train overlap training and are not counted.")
    print("1st step: seconds from the process's start to its first training step (imports,")
    print("the MLflow store, planning, the time estimate's probe, Lightning's set-up).")
    print("end wait: seconds the stack waited at its end for the fold runs' records.")


def workload(name: str, reps: int, runners: list[str], tmp: Path, server: str | None) -> None:
    grid = WORKLOADS[name]
    n_models = len(grid["lr"]) * len(grid["weight_decay"]) * 5
    repo = project(tmp / name)
    env = env_for(f"sqlite:///{tmp / name}/setup.db", repo)
    write_params(repo, grid)
    for stage in ("prepare", "split"):  # whole processes: imports included
        m, _ = measure([sys.executable, f"pipelines/{stage}.py"], repo, env)
        print(f"  {name} python pipelines/{stage}.py: {m['wall']:.1f} s", flush=True)
    rows: dict[str, list[dict]] = {r: [] for r in runners}
    for rep in range(reps):
        for runner in runners:
            db = f"sqlite:///{tmp / name}/{runner.replace(' ', '_')}-{rep}.db"
            if runner == "stacked":
                r = foldwise_sweep(repo, db, grid, one_at_a_time=False)
            elif runner == "stacked+server":
                r = foldwise_sweep(repo, server, grid, one_at_a_time=False)
            elif runner == "one-at-a-time":
                r = foldwise_sweep(repo, db, grid, one_at_a_time=True)
            elif runner == "plain loop":
                r = baseline("plain", repo, grid, n_models)
            else:
                r = baseline("sklearn", repo, grid, n_models)
            rows[runner].append(r)
            print(f"  {name} rep {rep + 1}/{reps} {runner}: {r['wall']:.1f} s", flush=True)
    table(name, rows)


def fixed_costs(tmp: Path) -> None:
    """The default pipeline as a user runs it: `dvc repro`, then stages that train nothing."""
    repo = project(tmp / "default")
    (repo / "params.yaml").unlink()
    subprocess.run([sys.executable, "-m", "foldwise.compose"], cwd=repo, check=True,
                   env=env_for("", repo), capture_output=True)  # the defaults  # fmt: skip
    env = {**env_for(f"sqlite:///{tmp}/default.db", repo), **git_env()}
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, env=env, check=True,  # noqa: E731
                                    capture_output=True)  # fmt: skip
    git("add", "-A")
    git("commit", "-qm", "default params")
    dvc = str(BIN / "dvc")
    rows = []
    m, _ = measure([dvc, "repro"], repo, env)
    rows.append(("dvc repro (default pipeline, first run)", m, "peak RSS ≤ 1500 MB"))
    git("add", "-A")
    git("commit", "-qm", "after repro")
    m, _ = measure([dvc, "repro"], repo, env)
    rows.append(("dvc repro (nothing changed)", m, "≤ 3 s"))
    m, _ = measure([sys.executable, "pipelines/aggregate.py"], repo, env)
    rows.append(("python pipelines/aggregate.py", m, "≤ 3 s"))
    m, _ = measure([sys.executable, "pipelines/test.py"], repo, env)
    rows.append(("python pipelines/test.py (no new look)", m, "≤ 3 s"))
    m, _ = measure([dvc, "exp", "run", "aggregate", "-S", "selection.metric=val_loss"], repo, env)
    rows.append(("dvc exp run aggregate -S selection.metric=val_loss", m, "≤ 10 s"))
    m, _ = measure([sys.executable, "pipelines/report.py"], repo, env)
    rows.append(("python pipelines/report.py", m, "≤ 3 s"))
    print("\nFixed costs (default pipeline: digits, 4 configurations × 5 folds)")
    for name, m, target in rows:
        print(f"  {name:<55}{m['wall']:>7.2f} s {m['rss_mb']:>7.0f} MB   target {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="W16 repetitions (medians)")
    ap.add_argument("--w320-reps", type=int, default=1)
    ap.add_argument("--no-w16", action="store_true")
    ap.add_argument("--no-w320", action="store_true")
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--no-fixed", action="store_true")
    args = ap.parse_args()
    print(f"foldwise benchmark · {os.cpu_count()} CPU cores · python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="foldwise-bench-") as t:
        tmp = Path(t)
        runners = ["stacked", "one-at-a-time", "plain loop", "sklearn"]
        if args.no_w16:
            pass
        elif args.no_server:
            workload("W16", args.reps, runners, tmp, None)
        else:
            with local_server(tmp / "server") as uri:
                workload("W16", args.reps, ["stacked", "stacked+server", *runners[1:]], tmp, uri)
        if not args.no_w320:
            workload("W320", args.w320_reps, ["stacked", "one-at-a-time"], tmp, None)
        if not args.no_fixed:
            fixed_costs(tmp)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(benchmark took {time.perf_counter() - t0:.0f} s)")
