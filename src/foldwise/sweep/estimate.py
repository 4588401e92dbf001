"""Time estimates: a probe before training, per-configuration epoch counts of earlier
fits (``.foldwise/epochs.json``), this machine's pace against the probe in earlier sweeps
(``.foldwise/pace.json``), and the model-epochs left for the ETA.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # torch and Lightning, imported only where a probe is made or read
    from foldwise.engine.estimate import Probe

# Plans with at least this many models to train get a time estimate before training
# (the default 4 × 5-fold grid does; the probe costs about a second per architecture).
ESTIMATE_FROM = 20
PROBE_MODELS = 1024
# MLflow requests per fold run (create, dataset, results, close). Sent on a background
# thread, but on a few busy cores they still cost the training about their time: on 2
# cores a 5-fold digits sweep spent a third of its time on them.
FOLD_RUN_CALLS = 4
# Earlier sweeps' paces the estimate is scaled by (their median), and the most it moves it.
PACE_SWEEPS = 5
PACE_RANGE = (0.5, 4.0)


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
    """Training time of the plan on this machine, per architecture: from what earlier
    sweeps of it on these rows measured (:func:`record_pace`), else from a probe.

    See :mod:`foldwise.engine.estimate`. Epochs per model: the mean of earlier fits of
    the same configuration on the same dev rows (``data``, their digest), and the stack
    trains until the most any of them took; else ``max_epochs``, which makes the estimate
    an upper bound (``upper_bound``). A probed architecture's time is scaled by this
    machine's pace in its last sweeps (measured over probed time). With ``fold_runs``,
    each model's MLflow requests too, at the pace the store answered the sweep's own
    requests so far. ``prepare_seconds``: what planning took to read the rows and make
    the tasks, which the jobs do again.
    """
    from foldwise import tracking
    from foldwise.engine import device_for
    from foldwise.engine.estimate import probe, steps_per_epoch  # torch: at estimate time

    accelerator = str(cfg.trainer.accelerator)
    inputs = dev_inputs(str(layout.root), rows_spec(cfg, layout))
    path = epochs_index(layout.root)
    known = read_json(path) if path.is_file() else {}
    paces = read_paces(layout.root, accelerator)
    pace = pace_of(paces["sweeps"])
    probes, keys, earlier = {}, {}, set()
    total, measured, models, bound = 0.0, 0, 0, False
    stack_probes, stack_steps, stack_members = [], [], []
    for names in stacks:
        ts = [t for n in names for t in tasks[n]]
        arch = ts[0].arch()
        if arch not in probes:
            keys[arch] = arch_key(data, arch)
            seen_before = paces["archs"].get(keys[arch])
            if seen_before:  # what it trained at here before: no probe needed
                probes[arch] = throughput_of(seen_before)
                earlier.add(arch)
            else:
                probes[arch] = probe(
                    ts[:PROBE_MODELS], inputs.x, inputs.y, inputs.meta,
                    accelerator=accelerator, precision=int(cfg.trainer.precision),
                )  # fmt: skip
        epochs, longest, seen, capped = stack_epochs(ts, known, data)
        measured, bound = measured + seen, bound or capped
        steps = float(np.mean([steps_per_epoch(t) for t in ts]))
        seconds = probes[arch].stack_seconds(epochs, steps, longest)
        total += seconds if arch in earlier else seconds * pace
        models += len(ts)
        stack_probes.append(list(probes).index(arch))
        stack_steps.append(steps)
        stack_members.append([len(tasks[n]) for n in names])
    per_call = tracking.call_seconds() if fold_runs else None
    tracked = models * FOLD_RUN_CALLS * per_call if per_call else 0.0
    return {
        "seconds": total + tracked + prepare_seconds,
        # the machine's load as it was estimated: the probe times its quiet pace, so a
        # busy CPU (other processes wanting more cores than there are) trains slower
        "load": os.getloadavg()[0] if device_for(accelerator) == "cpu" else None,
        "cores": len(os.sched_getaffinity(0)),
        # probed architectures: × this machine's pace in its last sweeps (1: none yet)
        "pace": pace if len(earlier) < len(probes) else 1.0,
        "pace_sweeps": len(paces["sweeps"]) if len(earlier) < len(probes) else 0,
        # architectures timed from earlier sweeps on these rows instead of a probe
        "archs_from_history": len(earlier),
        "archs": len(probes),
        "tracking_seconds": tracked,
        "prepare_seconds": prepare_seconds,
        "models": models,
        "epochs_from_history": measured,
        "upper_bound": bound,
        "probes": [probe_doc(p) for p in probes.values()],
        # what the hindsight of :func:`record_pace` recomputes with the epochs trained
        "probe_keys": list(keys.values()),
        "probe_paced": [a not in earlier for a in probes],
        "stack_probes": stack_probes,
        "stack_steps": stack_steps,
        "stack_members": stack_members,
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


def is_bound(est: dict[str, Any]) -> bool:
    """Whether the estimate is said to be an upper bound ("up to"): every model charged
    ``max_epochs`` (early stopping only shortens that), at a pace an earlier sweep here
    measured. A probe alone times the machine's quiet pace, and the first sweeps on a
    quiet machine took 1.0-1.6× its estimate (docs/schemes.md): no bound then."""
    corrected = est.get("pace_sweeps") or est.get("archs_from_history")
    return bool(est.get("upper_bound") and corrected)


def pace_index(root: Path) -> Path:
    """Per machine and accelerator: measured over probed training time of the last sweeps,
    and each architecture's measured throughput on each dev rows' digest."""
    from foldwise.files import shared_root

    return shared_root(root) / ".foldwise" / "pace.json"


def pace_key(accelerator: str) -> str:
    return f"{platform.node()}:{accelerator}"


def arch_key(data: str, arch: tuple) -> str:
    return f"{data}:{hashlib.sha256(repr(arch).encode()).hexdigest()[:16]}"


def read_paces(root: Path, accelerator: str) -> dict[str, Any]:
    path = pace_index(root)
    mine = (read_json(path) if path.is_file() else {}).get(pace_key(accelerator), {})
    return {"sweeps": mine.get("sweeps", []), "archs": mine.get("archs", {})}


def pace_of(paces: list[float]) -> float:
    """The factor on a probed estimate: the median of earlier sweeps' paces (one slow
    sweep among five moves it not at all), within ``PACE_RANGE``; 1 with none."""
    if not paces:
        return 1.0
    return min(max(statistics.median(paces), PACE_RANGE[0]), PACE_RANGE[1])


def probe_doc(p: Probe) -> dict[str, dict[str, float]]:
    return {size: dataclasses.asdict(t) for size, t in (("stack", p.full), ("one", p.one))}


def probe_of(doc: dict[str, dict[str, float]]) -> Probe:
    from foldwise.engine.estimate import Probe, Timing

    return Probe(Timing(**doc["stack"]), Timing(**doc["one"]))


def throughput_of(docs: list[dict]) -> Probe:
    """An architecture's throughput from its last sweeps (each a probe scaled to what the
    sweep measured): field by field, the median of those probing as many models as the
    latest did."""
    from foldwise.engine.estimate import Probe, Timing

    same = [probe_of(d) for d in docs if d["stack"]["models"] == docs[-1]["stack"]["models"]]

    def median(part: str) -> Timing:
        ts = [getattr(p, part) for p in same]
        return Timing(ts[-1].models, *(
            float(np.median([getattr(t, f) for t in ts]))
            for f in ("step_seconds", "epoch_end_seconds", "setup_seconds", "fit_seconds")
        ))  # fmt: skip

    return Probe(median("full"), median("one"))


def hindsight_seconds(estimate: dict[str, Any], epochs: list[list[float]]) -> float:
    """The stacks' part of the estimate again, unscaled, with each model's epochs as
    trained (``epochs``: per stack, per model): what the probes predicted once the epochs
    are known, so measured over it is the machine's pace alone, not the epochs' guess."""
    probes = [probe_of(p) for p in estimate["probes"]]
    total = 0.0
    for i, steps, e in zip(estimate["stack_probes"], estimate["stack_steps"], epochs, strict=True):
        total += probes[i].stack_seconds(e, steps, max(e))
    return total


def record_pace(
    layout: P.Layout,
    session: Session,
    results: dict[str, list[dict | None]],
    trained: float | None,
    accelerator: str,
) -> float | None:
    """After a sweep that trained every planned model: its pace, the measured training
    time (less the estimate's MLflow and set-up parts) over the stacks' estimate with the
    epochs as trained (:func:`hindsight_seconds`), and
    each architecture's throughput (its probe × the pace), kept for the next estimates
    on this machine (the last ``PACE_SWEEPS`` of each). The pace holds what a probe
    cannot see: Hydra's job launches, each job's set-up, MLflow's flushes, and the load
    of other work, which the probe's fastest epoch leaves out."""
    est = session.doc.get("estimate")
    if not est or trained is None or "probe_keys" not in est:
        return None
    epochs = []
    for names, members in zip(session.doc["stacks"], est["stack_members"], strict=True):
        e = []
        for name, k in zip(names, members, strict=True):
            h, fold = parse_task_name(name)
            row = results.get(h, [None] * (fold + 1))[fold]
            if not row or row.get("status") != "ok":
                return None  # failed or interrupted: its time says nothing of the pace
            e += [float(row["epochs_trained"])] * k
        epochs.append(e)
    # MLflow's requests and the jobs' reading of the rows are estimated as they are
    hindsight = hindsight_seconds(est, epochs)
    stacks = trained - est["tracking_seconds"] - est["prepare_seconds"]
    if hindsight <= 0 or stacks <= 0:
        return None
    pace = stacks / hindsight
    path = pace_index(layout.root)
    known = read_json(path) if path.is_file() else {}
    mine = known.setdefault(pace_key(accelerator), {})
    if all(est["probe_paced"]):  # a pace over probes only (not over earlier throughputs)
        mine["sweeps"] = [*mine.get("sweeps", []), pace][-PACE_SWEEPS:]
    archs = mine.setdefault("archs", {})
    for key, doc in zip(est["probe_keys"], est["probes"], strict=True):
        scaled = probe_of(doc).scaled(pace)
        archs[key] = [*archs.get(key, []), probe_doc(scaled)][-PACE_SWEEPS:]
    write_json(path, known)
    return pace


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
