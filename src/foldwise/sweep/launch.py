"""The launcher's settings, from the config: how many stacks train at once, whether jobs
want a GPU, and the ``hydra.launcher.*`` overrides for submitit (local or SLURM).
"""

from __future__ import annotations

from omegaconf import DictConfig

PARALLEL = ("joblib", "submitit_local", "submitit_slurm")
# conf/sweep/grid.yaml's sweep.submitit
SUBMITIT_DEFAULTS = {"partition": None, "cpus_per_task": 1, "gpus_per_task": 0, "mem_gb": None,
                     "timeout_min": 60, "array_parallelism": 256}  # fmt: skip


def parallel_workers(cfg: DictConfig) -> int:
    """How many stacks may train at once: ``sweep.n_jobs`` for a parallel launcher (the
    plan makes at least that many stacks), else 1."""
    return int(cfg.sweep.n_jobs) if cfg.sweep.launcher in PARALLEL else 1


def wants_gpu(cfg: DictConfig) -> bool:
    """Whether the trainer will run on CUDA in this process (``auto`` with a GPU too)."""
    from foldwise.engine import device_for

    return device_for(str(cfg.trainer.accelerator)) in ("gpu", "cuda")


def devices_setting(cfg: DictConfig) -> object:
    """``engine.devices`` as the engine takes it (a list from the config as a list)."""
    from foldwise.fitting.configs import engine_settings

    return engine_settings(cfg)["devices"]


def submitit_overrides(cfg: DictConfig, cuda_devices: int) -> list[str]:
    """``hydra.launcher.*`` from ``sweep.submitit`` (submitit's folder is left where the
    launcher puts it: ``<hydra.sweep.dir>/.submitit/``, under ``outputs/``).

    submitit's local executor shows its jobs the first ``gpus_per_node`` GPUs (none by
    default): ``submitit_local`` shows them all (``cuda_devices``, the count in the sweep
    process) when the trainer uses CUDA, and each job takes its own (:func:`gpu_for`).
    """
    sub = {**SUBMITIT_DEFAULTS, **(cfg.sweep.get("submitit") or {})}  # an older params.yaml
    out = [
        f"hydra.launcher.timeout_min={int(sub['timeout_min'])}",
        f"hydra.launcher.cpus_per_task={int(sub['cpus_per_task'])}",
    ]
    if sub["mem_gb"] is not None:
        out.append(f"hydra.launcher.mem_gb={int(sub['mem_gb'])}")
    if cfg.sweep.launcher == "submitit_local":
        gpus = cuda_devices if wants_gpu(cfg) else 0
        return [*out, f"hydra.launcher.gpus_per_node={gpus}"]
    out.append(f"hydra.launcher.array_parallelism={int(sub['array_parallelism'])}")
    if sub["partition"]:
        out.append(f"hydra.launcher.partition={sub['partition']}")
    if int(sub["gpus_per_task"]):
        out.append(f"hydra.launcher.gpus_per_task={int(sub['gpus_per_task'])}")
    return out
