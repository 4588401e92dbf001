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
    """Mean epochs trained per configuration hash, from earlier sweeps on this checkout."""
    from foldwise.files import shared_root

    return shared_root(root) / ".foldwise" / "epochs.json"


def estimate_seconds(
    cfg: DictConfig,
    layout: P.Layout,
    stacks: list[list[str]],
    tasks: dict[str, Any],
    fold_runs: bool = True,
) -> dict[str, Any]:
    """Training time of the plan from a probe of each architecture on this machine.

    See :mod:`foldwise.engine.estimate`. Epochs per model: the mean of earlier fits of
    the same configuration (early stopping), else ``max_epochs`` (an upper bound). With
    ``fold_runs``, each model's MLflow requests too, at the pace the store answered the
    sweep's own requests so far.
    """
    from foldwise import tracking
    from foldwise.engine.estimate import probe, steps_per_epoch

    inputs = dev_inputs(str(layout.root), rows_spec(cfg, layout))
    known = read_json(epochs_index(layout.root)) if epochs_index(layout.root).is_file() else {}
    probes, total, measured, models = {}, 0.0, 0, 0
    for names in stacks:
        ts = [t for n in names for t in tasks[n]]
        arch = ts[0].arch()
        if arch not in probes:
            probes[arch] = probe(
                ts[:PROBE_MODELS], inputs.x, inputs.y, inputs.meta,
                accelerator=str(cfg.trainer.accelerator), precision=int(cfg.trainer.precision),
            )  # fmt: skip
        epochs = []
        for t in ts:
            h = parse_task_name(t.group or t.key)[0]
            if h in known and t.hyper.early_stopping:
                epochs.append(known[h]["mean"])
                measured += 1
            else:
                epochs.append(t.hyper.max_epochs)
        steps = float(np.mean([steps_per_epoch(t) for t in ts]))
        total += probes[arch].stack_seconds(len(ts), steps, float(np.mean(epochs)))
        models += len(ts)
    per_call = tracking.call_seconds() if fold_runs else None
    tracked = models * FOLD_RUN_CALLS * per_call if per_call else 0.0
    return {
        "seconds": total + tracked,
        "tracking_seconds": tracked,
        "models": models,
        "epochs_from_history": measured,
        "probes": [
            {
                "models": p.models,
                "step_seconds": p.step_seconds,
                "epoch_end_seconds": p.epoch_end_seconds,
                "setup_seconds": p.setup_seconds,
            }
            for p in probes.values()
        ],
    }


def record_epochs(layout: P.Layout, results: dict[str, list[dict | None]]) -> None:
    """Remember each configuration's mean epochs trained, for the next plan's estimate."""
    path = epochs_index(layout.root)
    known = read_json(path) if path.is_file() else {}
    for h, rows in results.items():
        e = [r["epochs_trained"] for r in rows if r and r.get("status") == "ok"]
        if e:
            known[h] = {"mean": float(np.mean(e)), "n": len(e)}
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
