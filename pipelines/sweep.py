"""DVC stage `sweep`: one Hydra multirun job per (configuration, fold) → results/sweep/.

    python pipelines/sweep.py                          # what `dvc repro` runs
    python pipelines/sweep.py hydra/launcher=joblib    # extra Hydra/launcher overrides only

The search space comes from params.yaml (sweep.grid), so DVC tracks it; this script
turns it into Hydra sweep overrides, lets Hydra's sweeper and launcher run the
jobs, then closes the sweep.
"""

import os
import sys
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig

from foldwise import params, sweep
from foldwise.errors import FoldwiseError, run_stage

LAYOUT = params.Layout(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="..", config_name="params")
def job(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs and n_jobs > 1:  # parallel workers: don't let each use every core
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))
    sweep.run_job(cfg, LAYOUT)


def main() -> int:
    extra = sys.argv[1:]
    bad = [a for a in extra if not a.lstrip("+~").startswith("hydra")]
    if bad:
        raise FoldwiseError(
            f"sweep.py takes only Hydra/launcher overrides, got {bad}.",
            "change hyperparameters and the search space in params.yaml or with "
            "`dvc exp run -S ...`, so DVC tracks them.",
        )
    cfg = params.load(LAYOUT.root / "params.yaml")
    session = sweep.begin(cfg, LAYOUT)
    launcher = [f"hydra/launcher={cfg.sweep.launcher}"]
    if cfg.sweep.launcher == "joblib":
        launcher.append(f"hydra.launcher.n_jobs={int(cfg.sweep.n_jobs)}")
    todo = len(session.doc["pending"])
    print(
        f"[foldwise] sweep: {len(session.configs)} configurations × {session.doc['n_folds']} "
        f"folds = {session.n_jobs} jobs ({session.n_jobs - todo} already done) · "
        f"MLflow run {session.doc['sweep_run_id']} at {session.doc['tracking_uri']}",
        flush=True,
    )
    sys.argv = [
        sys.argv[0],
        "--multirun",
        *sweep.hydra_overrides(cfg, session.doc["n_folds"]),
        *launcher,
        f"hydra.sweep.dir=outputs/sweep/{datetime.now():%Y-%m-%d_%H-%M-%S}",
        *extra,
    ]
    job()
    counts = sweep.finish(cfg, LAYOUT)
    print(
        f"[foldwise] sweep done: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['missing']} missing of {counts['total']} jobs",
        flush=True,
    )
    bad_jobs = counts["failed"] + counts["missing"]
    if bad_jobs > int(cfg.sweep.max_failures):
        print(
            f"[foldwise] {bad_jobs} jobs did not finish (sweep.max_failures="
            f"{cfg.sweep.max_failures}); re-run to retry only those.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    run_stage(main)
