"""The sweep stage's wall time through each tracking store: SQLite vs the shared server.

    .venv/bin/python benchmarks/bench_tracking.py [--repeat 2] [--grid default|wide]

A copy of the repository in a temporary folder; `prepare` and `split` run once; then the
`sweep` stage runs from scratch (results removed, a new MLflow experiment each time)
against (a) the local SQLite store and (b) `make mlflow-server`'s PostgreSQL + gunicorn
`mlflow server` on 127.0.0.1 (``foldwise.tracking.server.shared_server``; needs Debian's
postgresql). Timed: the whole stage process (imports, planning, training, every MLflow
call); also printed: the sweep run's own `tracking_seconds` (time in MLflow calls).
Workloads: ``default`` is the default sweep (4 configurations × 5 folds = 20 fold runs);
``wide`` is 16 configurations × 5 folds, 5 epochs each (80 fold runs: tracking-heavy).
Prints a table with ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GRIDS = {
    "default": [],
    "wide": [
        "trainer.max_epochs=5",
        "trainer.early_stopping.enabled=false",
        "sweep.grid.model.hidden=[16,32,64,128]",
        "sweep.grid.optim.lr=[0.0003,0.001,0.003,0.01]",
    ],
}


def project(dest: Path, overrides: list[str]) -> Path:
    from omegaconf import OmegaConf

    from foldwise.compose import compose_params

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    for rel in files:
        outputs = ("data/", "results/", "models/", "lockbox/")
        generated = rel == "dvc.lock" or rel.startswith(outputs)
        if generated and not rel.endswith(".gitignore") and not rel.startswith("data/raw/"):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    cfg = compose_params(["trainer.accelerator=cpu", *overrides], root=ROOT)
    OmegaConf.save(cfg, dest / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def stage(repo: Path, name: str, uri: str) -> float:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, f"pipelines/{name}.py"], cwd=repo, env=env, check=True,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - t0


def sweep_once(repo: Path, uri: str, i: int) -> tuple[float, float]:
    from mlflow import MlflowClient
    from omegaconf import OmegaConf

    shutil.rmtree(repo / "results" / "sweep", ignore_errors=True)
    shutil.rmtree(repo / ".foldwise", ignore_errors=True)  # no job cache, no sweep index
    cfg = OmegaConf.load(repo / "params.yaml")
    cfg.tracking.experiment = f"bench-{i}-{time.time_ns()}"
    OmegaConf.save(cfg, repo / "params.yaml")
    seconds = stage(repo, "sweep", uri)
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(cfg.tracking.experiment)
    (sweep,) = c.search_runs([exp.experiment_id], "tags.`foldwise.run_type` = 'sweep'")
    return seconds, float(sweep.data.metrics.get("tracking_seconds", float("nan")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--grid", choices=list(GRIDS), default="default")
    args = ap.parse_args()
    from foldwise.tracking.server import shared_server

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)  # PostgreSQL runs as the `postgres` user when we are root
        repo = project(tmp / "repo", GRIDS[args.grid])
        sqlite = f"sqlite:///{tmp / 'mlflow.db'}"
        for name in ("prepare", "split"):
            stage(repo, name, sqlite)
        results: dict[str, list[tuple[float, float]]] = {}
        results["SQLite"] = [sweep_once(repo, sqlite, i) for i in range(args.repeat)]
        with shared_server(tmp / "server") as server:
            results["PostgreSQL server"] = [
                sweep_once(repo, server.uri, i) for i in range(args.repeat)
            ]
    print(f"foldwise sweep stage by tracking store · {args.grid} grid · {os.cpu_count()} cores")
    base = statistics.median(s for s, _ in results["SQLite"])
    for name, runs in results.items():
        wall = statistics.median(s for s, _ in runs)
        calls = statistics.median(t for _, t in runs)
        print(f"  {name:<18} {wall:6.1f} s wall ({wall / base:4.2f}× SQLite) · "
              f"{calls:5.1f} s in MLflow calls")  # fmt: skip


if __name__ == "__main__":
    main()
