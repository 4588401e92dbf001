"""DVC stage `sweep`: every (configuration, fold) trained in stacks, one Hydra job per stack.

    python pipelines/sweep.py                          # what `dvc repro` runs
    python pipelines/sweep.py hydra.launcher.qos=high  # extra Hydra/launcher overrides only

The search space comes from params.yaml (sweep.grid), so DVC tracks it; this script
plans the sweep (configurations × folds, grouped into stacks), lets Hydra's launcher
run one job per stack (``+stack=0,1,...``), then closes the sweep. With sweep=optuna
(sweep.space), foldwise's Optuna sweeper asks the configurations and launches one job
per trial (``+trial=N``) instead (see foldwise.sweep.trials).
"""

import sys
import time
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig

from foldwise import params, tracking
from foldwise.config import space as search_space
from foldwise.errors import FoldwiseError, run_stage

LAYOUT = params.Layout(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="..", config_name="params")
def job(cfg: DictConfig) -> object:
    # a stack (+stack=i) or an Optuna trial (+trial=N), in the process its launcher gives it
    from foldwise.sweep import workers

    return workers.run(cfg, LAYOUT)


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
    store = tracking.require_soon(cfg)  # MLflow's store opens while the engine is imported
    from foldwise.sweep import finish, plan, study  # torch, Lightning: seconds

    store()  # an unreachable tracking server: exit 2 here, before any work
    session = plan.begin(cfg, LAYOUT)  # closes what it opened if interrupted itself
    print(plan.describe(session), flush=True)
    if search_space.enabled(cfg):
        print(study.describe(cfg, session), flush=True)
    started = time.perf_counter()

    def launch() -> None:  # Hydra's multirun: one job per stack
        sys.argv = [
            sys.argv[0],
            "--multirun",
            *plan.launch_overrides(cfg, len(session.doc["stacks"])),
            f"hydra.sweep.dir=outputs/sweep/{datetime.now():%Y-%m-%d_%H-%M-%S}",
            *extra,
        ]
        job()

    if not finish.train(cfg, LAYOUT, session, launch):
        return 1  # stopped on an error, said why; finished models are kept
    return finish.wrap_up(cfg, LAYOUT, session, time.perf_counter() - started)


if __name__ == "__main__":
    run_stage(main)
