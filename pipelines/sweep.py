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
import traceback
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig

from foldwise import params, redact, sweep
from foldwise.errors import DISK_ERRORS, FoldwiseError, handle_sigterm, run_stage
from foldwise.progress import clock

LAYOUT = params.Layout(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="..", config_name="params")
def job(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs and n_jobs > 1:  # parallel workers: don't let each use every core
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))
        # A worker process: SIGTERM closes its runs like Ctrl-C, nothing it prints names
        # a password, and it stops if the sweep process dies.
        handle_sigterm()
        redact.install()
        sweep.watch_parent()
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
    cfg = params.load(LAYOUT.root / "params.yaml")
    session = sweep.begin(cfg, LAYOUT)  # closes what it opened if interrupted itself
    print(sweep.describe(session), flush=True)
    started = time.perf_counter()
    # A stack's error reaches us as itself (not as Hydra's exit 1), to be reported below.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        sweep.restore_cached(cfg, LAYOUT)
        if session.doc["stacks"]:
            sys.argv = [
                sys.argv[0],
                "--multirun",
                *sweep.launch_overrides(cfg, len(session.doc["stacks"])),
                f"hydra.sweep.dir=outputs/sweep/{datetime.now():%Y-%m-%d_%H-%M-%S}",
                *extra,
            ]
            job()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: finished models are kept
        sweep.abort(cfg, LAYOUT, "KILLED")
        raise
    except Exception as err:  # a stack failed as a whole, or a worker process died
        sweep.abort(cfg, LAYOUT, "FAILED")
        if isinstance(err, OSError) and err.errno in DISK_ERRORS:
            raise  # run_stage says what could not be written
        traceback.print_exc()
        print(
            f"foldwise: the sweep stopped: {type(err).__name__}: {err}\n  Finished models "
            "are kept (results/sweep/jobs); re-run to train only the others.",
            file=sys.stderr,
        )
        return 1
    trained = time.perf_counter() - started
    counts = sweep.finish(cfg, LAYOUT, trained)
    print(
        f"[foldwise] sweep done: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['missing']} missing of {counts['total']} models · training "
        f"{clock(trained)}{sweep.estimate_note(session)}",
        flush=True,
    )
    note = sweep.pending_note(counts, session.doc["tracking_uri"])
    if note:
        print(note, file=sys.stderr, flush=True)
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
