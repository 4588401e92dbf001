"""Wall time of the sweep stage: the basic launcher vs submitit_local vs a real SLURM cluster.

    python benchmarks/bench_slurm.py            # tiny sweep (tests' TINY: 4 models)
    python benchmarks/bench_slurm.py --default  # and the default sweep (digits, 20 models)

As root with Debian's slurm-wlm and munge installed: scripts/slurm_cluster.py starts a
one-node cluster in a temporary folder. For each sweep, one prepared project copy per
launcher runs `python pipelines/sweep.py` (what `dvc repro` runs) from scratch, in turns
(basic, submitit_local, submitit_slurm, then again) so that a busy machine slows each
alike. Prints the wall time of each run and each launcher's median. Never asserts.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_project, tiny_params  # noqa: E402

spec = importlib.util.spec_from_file_location("slurm_cluster", ROOT / "scripts/slurm_cluster.py")
slurm_cluster = importlib.util.module_from_spec(spec)
spec.loader.exec_module(slurm_cluster)

LAUNCHERS = ("basic", "submitit_local", "submitit_slurm")


def sweep_seconds(project, cluster, launcher: str) -> float:
    """One sweep from scratch (no results, no job cache, a fresh MLflow store)."""
    for sub in ("results/sweep", ".foldwise", "outputs"):
        shutil.rmtree(project.path / sub, ignore_errors=True)
    db = project.path / "mlflow.db"
    db.unlink(missing_ok=True)
    env = {**project.env, **cluster.env, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    cmd = [sys.executable, "pipelines/sweep.py"]
    started = time.perf_counter()
    done = subprocess.run(cluster.command(cmd), cwd=project.path, env=env,
                          capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - started
    if done.returncode != 0 or " ok, 0 failed, 0 missing" not in done.stdout:
        raise RuntimeError(f"{launcher}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--default", action="store_true", help="also the default 20-model sweep")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    sweeps = {"tiny (4 models, TINY)": []}
    if args.default:
        sweeps["default (20 models, digits)"] = ["trainer.accelerator=cpu"]
    tmp = Path(tempfile.mkdtemp(prefix="foldwise-bench-slurm-"))
    with slurm_cluster.cluster(tmp / "cluster") as cluster:
        for name, overrides in sweeps.items():
            projects = {}
            for launcher in LAUNCHERS:
                cfg = (tiny_params if name.startswith("tiny") else _plain)(
                    [*overrides, f"sweep.launcher={launcher}"]
                )
                p = make_project(tmp / f"{name[:4]}-{launcher}", "sqlite:///unused", cfg)
                for stage in ("prepare", "split"):
                    p.stage(stage)
                projects[launcher] = p
            times: dict[str, list[float]] = {k: [] for k in LAUNCHERS}
            for _ in range(args.rounds):
                for launcher in LAUNCHERS:
                    times[launcher].append(sweep_seconds(projects[launcher], cluster, launcher))
                    print(f"{name:30s} {launcher:15s} {times[launcher][-1]:6.1f} s", flush=True)
            base = statistics.median(times["basic"])
            print(f"\n{name}: median wall time of `python pipelines/sweep.py`")
            for launcher in LAUNCHERS:
                m = statistics.median(times[launcher])
                print(f"  {launcher:15s} {m:6.1f} s  ({m / base:.2f}× basic)")
            print()
    shutil.rmtree(tmp, ignore_errors=True)


def _plain(extra: list[str]):
    """The default params.yaml (conf/'s defaults) with ``extra`` set."""
    from omegaconf import OmegaConf

    from foldwise.compose import compose_params

    return OmegaConf.create(OmegaConf.to_container(compose_params(extra, root=ROOT)))


if __name__ == "__main__":
    main()
