"""The sweep's launchers: submitit settings and their checks, worker threads, GPU placement."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf

from conftest import tiny_params
from foldwise import params
from foldwise.errors import FoldwiseError
from foldwise.params import validate
from foldwise.sweep import launch, plan, workers


def test_gpu_for_gives_parallel_workers_distinct_devices_then_wraps():
    assert [workers.gpu_for(slot, 4) for slot in range(6)] == [0, 1, 2, 3, 0, 1]
    assert [workers.gpu_for(slot, 1) for slot in range(3)] == [0, 0, 0]
    assert workers.gpu_for(0, 0) is None


def test_worker_threads_follow_the_launcher():
    joblib = OmegaConf.create({"n_jobs": 4})
    assert workers.worker_threads("joblib", joblib, 16) == 4
    assert workers.worker_threads("joblib", OmegaConf.create({"n_jobs": 32}), 16) == 1
    assert workers.worker_threads("joblib", OmegaConf.create({"n_jobs": 1}), 16) is None
    slurm = OmegaConf.create({"cpus_per_task": 6})
    assert workers.worker_threads("submitit_slurm", slurm, 64) == 6
    assert workers.worker_threads("submitit_local", slurm, 2) == 6  # what the job asked for
    assert workers.worker_threads("submitit_slurm", OmegaConf.create({}), 8) is None
    assert workers.worker_threads("basic", OmegaConf.create({}), 8) is None


def test_slots_are_distinct_across_live_processes_and_freed_when_one_exits(tmp_path):
    """Two workers at once get slots 0 and 1 (so GPUs 0 and 1); a later one reuses a
    slot whose process has exited."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from foldwise.sweep.workers import claim_slot
        print(claim_slot(Path({str(tmp_path)!r})), flush=True)
        print(claim_slot(Path({str(tmp_path)!r})), flush=True)  # cached: the same slot
        sys.stdin.readline()  # hold the slot until told to exit
    """)
    start = lambda: subprocess.Popen(  # noqa: E731
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    a, b = start(), start()
    got = {
        "a": [a.stdout.readline().strip(), a.stdout.readline().strip()],
        "b": [b.stdout.readline().strip(), b.stdout.readline().strip()],
    }
    assert sorted(v[0] for v in got.values()) == ["0", "1"]
    assert all(v[0] == v[1] for v in got.values())
    held_by_a = got["a"][0]
    a.communicate("\n")
    c = start()
    assert c.stdout.readline().strip() == held_by_a  # a's slot is free again
    b.communicate("\n")
    c.communicate("\n")


def test_place_on_gpu_sets_a_distinct_device_per_worker(tmp_path, monkeypatch):
    """With 4 CUDA devices (mocked), two workers of one sweep take devices 0 and 1."""
    cfg = tiny_params(["trainer.accelerator=gpu"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    # two processes' claims, as the lock files see them: the cache is per process
    monkeypatch.setattr(workers, "claim_slot", workers.claim_slot.__wrapped__)
    assert workers.place_on_gpu(cfg, "joblib", tmp_path) == 0
    assert workers.place_on_gpu(cfg, "submitit_local", tmp_path) == 1
    assert chosen == [0, 1]
    assert workers.place_on_gpu(cfg, "submitit_slurm", tmp_path) is None  # SLURM places it
    assert workers.place_on_gpu(cfg, "basic", tmp_path) is None
    cpu = tiny_params(["trainer.accelerator=cpu"])
    assert workers.place_on_gpu(cpu, "joblib", tmp_path) is None
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert workers.place_on_gpu(cfg, "joblib", tmp_path) is None  # one GPU: nothing to choose
    assert chosen == [0, 1]


def test_launch_overrides_pass_the_submitit_settings(monkeypatch):
    monkeypatch.setattr(params, "accelerator_available", lambda _: True)  # a GPU machine
    slurm = tiny_params([
        "sweep.launcher=submitit_slurm", "sweep.submitit.partition=gpu",
        "sweep.submitit.gpus_per_task=1", "sweep.submitit.cpus_per_task=4",
        "sweep.submitit.mem_gb=16", "sweep.submitit.timeout_min=90",
        "sweep.submitit.array_parallelism=8", "trainer.accelerator=gpu",
    ])  # fmt: skip
    validate(slurm)
    assert plan.launch_overrides(slurm, 3) == [
        "+stack=0,1,2",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.timeout_min=90",
        "hydra.launcher.cpus_per_task=4",
        "hydra.launcher.mem_gb=16",
        "hydra.launcher.array_parallelism=8",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_task=1",
    ]
    local = tiny_params(["sweep.launcher=submitit_local"])  # defaults: no partition, no GPU
    assert launch.submitit_overrides(local, 0) == [
        "hydra.launcher.timeout_min=60",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.gpus_per_node=0",
    ]
    # submitit's local jobs see the GPUs only when asked to: all of them, for trainer=gpu
    on_gpu = tiny_params(["sweep.launcher=submitit_local", "trainer.accelerator=gpu"])
    assert launch.submitit_overrides(on_gpu, 4)[-1] == "hydra.launcher.gpus_per_node=4"


def test_the_parallel_launchers_plan_a_stack_per_worker():
    for launcher, n in (("basic", 1), ("joblib", 3), ("submitit_local", 3), ("submitit_slurm", 3)):
        cfg = tiny_params([f"sweep.launcher={launcher}", "sweep.n_jobs=3"])
        assert launch.parallel_workers(cfg) == n


@pytest.mark.parametrize(
    "override, message",
    [
        ("sweep.launcher=slurm", "unknown sweep.launcher 'slurm'"),
        ("sweep.n_jobs=0", "sweep.n_jobs must be a positive integer"),
        ("sweep.submitit.cpus_per_task=0", "sweep.submitit.cpus_per_task must be a positive"),
        ("sweep.submitit.gpus_per_task=-1", "sweep.submitit.gpus_per_task must be an integer >= 0"),
        ("sweep.submitit.timeout_min=1.5", "sweep.submitit.timeout_min must be a whole number"),
        ("sweep.submitit.array_parallelism=0", "array_parallelism must be a positive integer"),
        ("sweep.submitit.mem_gb=0.5", "sweep.submitit.mem_gb must be a whole number of GB"),
        ("sweep.submitit.partition=''", "sweep.submitit.partition must be a SLURM partition"),
    ],
)
def test_bad_launcher_settings_are_refused_with_the_fix(override, message):
    with pytest.raises(FoldwiseError, match=message.replace("(", r"\(")):
        validate(tiny_params([override]))


def test_trainer_gpu_on_slurm_needs_gpus_per_task(monkeypatch):
    monkeypatch.setattr(params, "accelerator_available", lambda _: True)
    cfg = tiny_params(["sweep.launcher=submitit_slurm", "trainer.accelerator=gpu"])
    with pytest.raises(FoldwiseError, match="gpus_per_task is 0") as err:
        validate(cfg)
    assert "-S sweep.submitit.gpus_per_task=1" in err.value.fix


def test_submitit_defaults_are_conf_s():
    """What an older params.yaml without sweep.submitit gets is conf/sweep/grid.yaml's."""
    cfg = tiny_params()
    assert OmegaConf.to_container(cfg.sweep.submitit) == launch.SUBMITIT_DEFAULTS
    del cfg.sweep["submitit"]
    cfg.sweep.launcher = "submitit_slurm"
    assert launch.submitit_overrides(cfg, 0) == [
        "hydra.launcher.timeout_min=60",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.array_parallelism=256",
    ]
