"""Time estimates: a probe before training and per-configuration epoch counts of earlier
fits (``.foldwise/epochs.json``), and the model-epochs left for the ETA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from foldwise import params as P
from foldwise.files import (
    read_json,
    write_json,
)
from foldwise.fitting.train import dev_inputs, rows_spec
from foldwise.results import (
    Session,
    parse_task_name,
)
from foldwise.sweep.launch import parallel_workers

# Plans with at least this many models to train get a time estimate before training
# (the default 4 × 5-fold grid does; the probe costs about a second per architecture).
ESTIMATE_FROM = 20
PROBE_MODELS = 1024
# MLflow requests per fold run (create, dataset, results, close). Sent on a background
# thread, but on a few busy cores they still cost the training about their time: on 2
# cores a 5-fold digits sweep spent a third of its time on them.
FOLD_RUN_CALLS = 4


def epochs_index(root: Path) -> Path:
    """Epochs trained per (dev rows, configuration), from earlier sweeps on this checkout."""
    from foldwise.files import shared_root

    return shared_root(root) / ".foldwise" / "epochs.json"


def epochs_key(data: str, cfg_hash: str) -> str:
    """A configuration stops at a different epoch on other rows (iris's history says
    little about digits): ``data`` is the dev rows' digest."""
    return f"{data}:{cfg_hash}"


def estimate_seconds(
    cfg: DictConfig,
    layout: P.Layout,
    stacks: list[list[str]],
    tasks: dict[str, Any],
    fold_runs: bool = True,
    data: str = "",
    prepare_seconds: float = 0.0,
) -> dict[str, Any]:
    """Training time of the plan from a probe of each architecture on this machine.

    See :mod:`foldwise.engine.estimate`. Epochs per model: the mean of earlier fits of
    the same configuration on the same dev rows (``data``, their digest), and the stack
    trains until the most any of them took; else ``max_epochs``, which makes the estimate
    an upper bound (``upper_bound``). With ``fold_runs``, each model's MLflow requests too,
    at the pace the store answered the sweep's own requests so far. ``prepare_seconds``:
    what planning took to read the rows and make the tasks, which the jobs do again.
    """
    from foldwise import tracking
    from foldwise.engine.estimate import probe, steps_per_epoch

    inputs = dev_inputs(str(layout.root), rows_spec(cfg, layout))
    path = epochs_index(layout.root)
    known = read_json(path) if path.is_file() else {}
    probes, total, measured, models, bound = {}, 0.0, 0, 0, False
    for names in stacks:
        ts = [t for n in names for t in tasks[n]]
        arch = ts[0].arch()
        if arch not in probes:
            probes[arch] = probe(
                ts[:PROBE_MODELS], inputs.x, inputs.y, inputs.meta,
                accelerator=str(cfg.trainer.accelerator), precision=int(cfg.trainer.precision),
            )  # fmt: skip
        epochs, longest, seen, capped = stack_epochs(ts, known, data)
        measured, bound = measured + seen, bound or capped
        steps = float(np.mean([steps_per_epoch(t) for t in ts]))
        total += probes[arch].stack_seconds(epochs, steps, longest)
        models += len(ts)
    per_call = tracking.call_seconds() if fold_runs else None
    tracked = models * FOLD_RUN_CALLS * per_call if per_call else 0.0
    return {
        "seconds": total + tracked + prepare_seconds,
        "tracking_seconds": tracked,
        "prepare_seconds": prepare_seconds,
        "models": models,
        "epochs_from_history": measured,
        "upper_bound": bound,
        "probes": [
            {
                size: {
                    "models": t.models,
                    "step_seconds": t.step_seconds,
                    "epoch_end_seconds": t.epoch_end_seconds,
                    "setup_seconds": t.setup_seconds,
                    "fit_seconds": t.fit_seconds,
                }
                for size, t in (("stack", p.full), ("one", p.one))
            }
            for p in probes.values()
        ],
    }


def stack_epochs(
    tasks: list[Any], known: dict[str, dict], data: str
) -> tuple[list[float], float, int, bool]:
    """Epochs each task of a stack will train and the most any will (the stack trains
    until then): a configuration's mean and most on these rows (``known``, by
    :func:`epochs_key`), else ``max_epochs``. Also how many came from earlier fits, and
    whether ``max_epochs`` stood in for a model that may stop early (an upper bound)."""
    epochs, longest, seen, bound = [], 0.0, 0, False
    for t in tasks:
        fits = known.get(epochs_key(data, parse_task_name(t.group or t.key)[0]))
        if fits and t.hyper.early_stopping:
            epochs.append(fits["mean"])
            longest = max(longest, fits.get("max", fits["mean"]))
            seen += 1
        else:  # exact without early stopping; else the most it can train
            epochs.append(t.hyper.max_epochs)
            longest = max(longest, t.hyper.max_epochs)
            bound = bound or t.hyper.early_stopping
    return epochs, longest, seen, bound


def record_epochs(layout: P.Layout, results: dict[str, list[dict | None]], data: str) -> None:
    """Remember each configuration's mean and most epochs trained on these dev rows
    (``data``, their digest), for the next plan's estimate."""
    path = epochs_index(layout.root)
    known = read_json(path) if path.is_file() else {}
    for h, rows in results.items():
        e = [r["epochs_trained"] for r in rows if r and r.get("status") == "ok"]
        if e:
            known[epochs_key(data, h)] = {"mean": float(np.mean(e)), "max": max(e), "n": len(e)}
    write_json(path, known)


def models_per_task(full: DictConfig) -> int:
    """Models one (configuration, resample) trains: 1, or an ensemble's members."""
    from foldwise.ensemble import spec

    ens = spec(full)
    return int(ens.get("n_estimators", 1)) if ens else 1


def pending_epochs(cfg: DictConfig, session: Session, number: int) -> int:
    """Model-epochs of the stacks after ``number``, at most (each model to its own
    configuration's ``max_epochs``, an ensemble's members each): the rest of the ETA.
    Parallel workers share them."""
    later = [
        conf["max_epochs"] * conf.get("models", 1)
        for stack in session.doc["stacks"][number + 1 :]
        for conf in (session.config(parse_task_name(name)[0]) for name in stack)
    ]
    workers = parallel_workers(cfg)
    return int(sum(later) / max(1, workers))
