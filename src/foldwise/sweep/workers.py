"""The sweep's Hydra jobs in their processes: launcher settings, threads, GPU placement.

Each launcher runs :func:`run` once per stack (``+stack=N``): the basic launcher in the
sweep process itself; joblib in a pool of worker processes on this machine;
``submitit_local`` one process per stack on this machine; ``submitit_slurm`` one SLURM
array task per stack. submitit pickles the Hydra task function and the launcher, so a
SLURM job on another node needs the same checkout at the same path (a shared file
system), the same Python environment, and an MLflow store it can reach (a server URI).

GPU placement: parallel workers on one machine with several CUDA devices take distinct
ones (those of ``engine.devices``: every visible one by default). A worker claims the
lowest free *slot* (a lock file in the Hydra sweep folder, held for the life of its
process, so a joblib worker that runs several stacks keeps its GPU) and uses the listed
device ``slot % len(devices)`` (:func:`gpu_for`). A SLURM job uses the GPU(s)
SLURM gave it (``CUDA_VISIBLE_DEVICES``, ``sweep.submitit.gpus_per_task``).
"""

from __future__ import annotations

import fcntl
import functools
import os
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig

from foldwise import params as P
from foldwise.sweep.launch import PARALLEL, devices_setting, wants_gpu


# ---------------------------------------------------------------------- in a job
def worker_threads(launcher: str, settings: Any, cpu_count: int) -> int | None:
    """torch threads for a job of ``launcher`` (its Hydra ``hydra.launcher`` settings);
    None: leave torch's default (the basic launcher has the machine to itself)."""
    if launcher == "joblib":
        n = int(settings.get("n_jobs") or 1)
        return max(1, cpu_count // n) if n > 1 else None
    if launcher in ("submitit_local", "submitit_slurm"):
        cpus = settings.get("cpus_per_task")
        return max(1, int(cpus)) if cpus else None
    return None


def gpu_for(slot: int, device_count: int) -> int | None:
    """The CUDA device of worker ``slot`` (0, 1, ...): distinct devices for the first
    ``device_count`` workers, then round robin; None without a device."""
    if device_count <= 0:
        return None
    return slot % device_count


_held: list[IO[str]] = []  # the slot locks this process holds (released at its exit)


@functools.cache
def claim_slot(folder: Path) -> int:
    """The lowest worker slot no other live process holds (an ``flock`` on
    ``folder/slot-N.lock``); this process keeps it until it exits."""
    folder.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        f = open(folder / f"slot-{slot}.lock", "a")  # noqa: SIM115 (held open on purpose)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            slot += 1
            continue
        _held.append(f)
        return slot


def place_on_gpu(cfg: DictConfig, launcher: str, sweep_dir: Path) -> int | None:
    """Make this worker's CUDA device its own (``torch.cuda.set_device``); the engine's
    ``torch.device("cuda")`` is then that device. Returns it (None: nothing to choose)."""
    if launcher not in ("joblib", "submitit_local") or not wants_gpu(cfg):
        return None
    import torch

    from foldwise.engine import resolve_devices

    ids = resolve_devices(devices_setting(cfg), str(cfg.trainer.accelerator))
    if not ids or (len(ids) == 1 and ids == [torch.cuda.current_device()]):
        return None
    device = ids[gpu_for(claim_slot(sweep_dir / ".gpu-slots"), len(ids))]
    torch.cuda.set_device(device)
    return device


def run(cfg: DictConfig, layout: P.Layout) -> Any:
    """One Hydra job: train stack ``cfg.stack`` (:func:`foldwise.sweep.jobs.run_stack`), or
    Optuna trial ``cfg.trial`` (:func:`foldwise.sweep.trials.job_main`)."""
    from hydra.core.hydra_config import HydraConfig

    from foldwise import redact, threads
    from foldwise.errors import handle_sigterm
    from foldwise.sweep import jobs, trials

    hydra = HydraConfig.get()
    launcher = hydra.runtime.choices.get("hydra/launcher", "basic")
    # joblib with one worker runs the jobs in the sweep process itself
    own_process = launcher != "joblib" or int(hydra.launcher.get("n_jobs") or 1) > 1
    if launcher in PARALLEL and own_process:
        # parallel workers: none uses more than its share (foldwise.threads also divides
        # the cores among every training process alive on this machine)
        threads.cap(worker_threads(launcher, hydra.launcher, os.cpu_count() or 1))
        # A worker process: SIGTERM (scancel, a timeout, a stopped sweep) closes its runs
        # like Ctrl-C, and nothing it prints names a password.
        handle_sigterm()
        redact.install()
        if launcher == "joblib":  # stop if the sweep process that started it dies
            jobs.watch_parent()
        place_on_gpu(cfg, launcher, Path(hydra.sweep.dir))
    try:
        return trials.job_main(cfg, layout)
    except KeyboardInterrupt as stop:  # its runs are closed as KILLED
        if not launcher.startswith("submitit"):
            raise
        # submitit hands an exception back to the sweep at once (a pickled error); after
        # an interrupt the sweep would learn of the job's end only from the scheduler.
        raise RuntimeError(
            f"stack {cfg.stack} was stopped by a signal (scancel, its time limit, Ctrl-C)"
        ) from stop
