"""DVC stage `sweep`: every (configuration, fold) trained in stacks, one Hydra job per stack.

    python pipelines/sweep.py                          # what `dvc repro` runs
    python pipelines/sweep.py hydra/launcher=joblib    # extra Hydra/launcher overrides only

The search space comes from params.yaml (sweep.grid), so DVC tracks it; this script
plans the sweep (configurations × folds, grouped into stacks), lets Hydra's launcher
run one job per stack (``+stack=0,1,...``), then closes the sweep.
"""

import os
import sys
import time
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig

from foldwise import params, sweep
from foldwise.errors import FoldwiseError, run_stage
from foldwise.progress import clock

LAYOUT = params.Layout(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="..", config_name="params")
def job(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs and n_jobs > 1:  # parallel workers: don't let each use every core
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))
    sweep.run_stack(cfg, LAYOUT)


def main() -> int:
    extra = sys.argv[1:]
    bad = [a for a in extra if not a.lstrip("+~").startswith("hydra")]
    if bad:
        raise FoldwiseError(
            f"sweep.py takes only Hydra/launcher overrides, got {bad}.",
            "change hyperparameters and the search space in params.yaml or with "
            "`dvc exp run -S ...`, so DVC tracks them.",
        )
    cfg, _ = params.start("sweep", LAYOUT.root)
    session = sweep.begin(cfg, LAYOUT)
    print(sweep.describe(session), flush=True)
    sweep.restore_cached(cfg, LAYOUT)
    started = time.perf_counter()
    if session.doc["stacks"]:
        sys.argv = [
            sys.argv[0],
            "--multirun",
            *sweep.launch_overrides(cfg, len(session.doc["stacks"])),
            f"hydra.sweep.dir=outputs/sweep/{datetime.now():%Y-%m-%d_%H-%M-%S}",
            *extra,
        ]
        try:
            job()
        except KeyboardInterrupt:
            sweep.abort(cfg, LAYOUT)
            raise
    trained = time.perf_counter() - started
    counts = sweep.finish(cfg, LAYOUT, trained)
    print(
        f"[foldwise] sweep done: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['missing']} missing of {counts['total']} models · training "
        f"{clock(trained)}{sweep.estimate_note(session)}",
        flush=True,
    )
    bad_jobs = counts["failed"] + counts["missing"]
    if bad_jobs > int(cfg.sweep.max_failures):
        print(
            f"[foldwise] {bad_jobs} models did not finish (sweep.max_failures="
            f"{cfg.sweep.max_failures}); re-run to retry only those.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    run_stage(main)
