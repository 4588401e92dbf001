"""End to end: the sweep through Hydra's submitit launchers, on a real SLURM cluster.

scripts/slurm_cluster.py starts Debian's slurmctld, slurmd and munged for this machine in
a temporary folder (a network namespace of their own, with only a loopback interface);
`dvc repro sweep` with ``sweep.launcher=submitit_slurm`` submits one SLURM array task per
stack. One array task is cancelled mid-sweep (`scancel`), the next `dvc repro` trains
only its models, and the results and MLflow run tree equal those of the same sweep run
by the basic launcher in one process. ``submitit_local`` (a process per stack) too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, ROOT, run_tree, tiny_params
from faultkit import clone, jobs, stage

# one worker under `pytest -n` (--dist loadgroup): the module fixture is built once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm_e2e")]

spec = importlib.util.spec_from_file_location("slurm_cluster", ROOT / "scripts/slurm_cluster.py")
slurm_cluster = importlib.util.module_from_spec(spec)
spec.loader.exec_module(slurm_cluster)

# 2 configurations × 2 folds in 2 stacks (one per width); float64, so that a model's
# numbers do not depend on the process (or the threads) that trained it.
SWEEP = ["trainer.precision=64", "sweep.n_jobs=2"]
HANG = "hang:hidden=16"  # FOLDWISE_FAULT: the hidden=16 stack stops at its first epoch


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = slurm_cluster.missing_programs()
    if missing and os.environ.get("CI") is None:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)}; .ci/run installs it)")
    with slurm_cluster.cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fault_template) -> tuple[dict[str, dict], str]:
    """The same sweep by the basic launcher, in this process: results by job key, and
    its MLflow store."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('local-store') / 'mlflow.db'}"
    p = clone(fault_template, tmp_path_factory.mktemp("local") / "p", uri, tiny_params(SWEEP))
    ran = stage(p.path, "sweep", env={"MLFLOW_TRACKING_URI": uri})
    assert ran.code == 0, ran.err
    assert "4 to train in 2 stack(s) of 2" in ran.out
    return {r["job_key"]: r for r in jobs(p).values()}, uri


def same_results(p, reference: dict[str, dict]) -> None:
    results = {r["job_key"]: r for r in jobs(p).values()}
    assert results.keys() == reference.keys()
    for key, r in results.items():
        ref = reference[key]
        assert r["status"] == "ok" and r["label"] == ref["label"] and r["fold"] == ref["fold"]
        assert (r["best_epoch"], r["epochs_trained"]) == (ref["best_epoch"], ref["epochs_trained"])
        assert r["metrics"] == ref["metrics"], r["label"]


def finished_tree(uri: str) -> dict[str, list[tuple]]:
    """What a sweep's MLflow record says about its models, without run ids and times:
    per run type, (name, configuration, fold, status, metrics) of each finished run."""
    tree = run_tree(uri)
    hashes = {r.info.run_id: r.data.tags.get("foldwise.config_hash") for r in tree["config"]}
    out = {}
    for kind, rs in tree.items():
        rows = []
        for r in rs:
            if r.info.status == "KILLED":
                continue
            metrics = r.data.metrics if kind != "sweep" else {
                k: v for k, v in r.data.metrics.items() if k.startswith("jobs_")
            }  # fmt: skip
            rows.append((
                r.info.run_name if kind != "sweep" else "sweep",
                r.data.tags.get("foldwise.config_hash")
                or hashes.get(r.data.tags.get("mlflow.parentRunId")),
                r.data.tags.get("foldwise.fold"),
                r.info.status,
                sorted(metrics.items()),
            ))  # fmt: skip
        out[kind] = sorted(rows)
    return out


def squeue(cluster) -> list[str]:
    """The running array tasks (``<array job>_<task>``)."""
    return cluster.run(["squeue", "-h", "-r", "-t", "running", "-o", "%i"]).stdout.split()


def array_tasks(cluster, array_job: str) -> dict[int, str]:
    """Final state of each task of a SLURM array job (the job-completion log)."""
    return {
        int(row["ArrayTaskId"]): row["JobState"]
        for row in cluster.completed_jobs()
        if row.get("ArrayJobId") == array_job
    }


def test_slurm_sweep_equals_the_local_one_and_resumes_after_scancel(
    tmp_path, cluster, reference, fault_template
):
    ref_results, ref_uri = reference
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = tiny_params([*SWEEP, "sweep.launcher=submitit_slurm"])
    p = clone(fault_template, tmp_path / "p", uri, params)
    p.dvc("commit", "-f", "prepare", "split")  # the data stages are done and recorded
    p.env.update(cluster.env)
    env = p.env
    repro = cluster.command([str(BIN / "dvc"), "repro", "sweep"])

    # 1. Submitted as an array of 2 tasks; the hidden=16 stack hangs, the other finishes.
    log = (tmp_path / "first.log").open("w+")
    first = subprocess.Popen(repro, cwd=p.path, env={**env, "FOLDWISE_FAULT": HANG},
                             stdout=log, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    folder = p.path / "results/sweep/jobs"
    deadline = time.monotonic() + 240
    while len(list(folder.glob("*.json"))) < 2:
        assert first.poll() is None, Path(log.name).read_text()
        assert time.monotonic() < deadline, Path(log.name).read_text()
        time.sleep(0.5)
    while len(running := squeue(cluster)) != 1:  # the finished task exits, one hangs on
        assert time.monotonic() < deadline, running
        time.sleep(0.5)
    array_job, hung = running[0].split("_")
    cancel = cluster.run(["scancel", running[0]])
    assert cancel.returncode == 0, cancel.stderr
    assert first.wait(timeout=180) != 0
    out = Path(log.name).read_text()
    assert "the sweep stopped" in out and "4 to train in 2 stack(s) of 2" in out
    assert f"stack {hung} was stopped by a signal" in out  # the job said so at once
    assert array_tasks(cluster, array_job) == {int(hung): "CANCELLED", 1 - int(hung): "COMPLETED"}
    done = sorted(jobs(p))
    assert all(r["label"] == "mlp hidden=8 lr=0.01" for r in jobs(p).values())

    # 2. The next `dvc repro` trains only the cancelled stack's models (a stack each for
    # the 2 workers of sweep.n_jobs: an array of 2 tasks).
    second = p.run(*repro, check=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "2 to train in 2 stack(s) of 1, 2 already done" in second.stdout  # 2 workers
    assert "4 ok, 0 failed, 0 missing of 4 models" in second.stdout
    arrays = sorted({r["ArrayJobId"] for r in cluster.completed_jobs()} - {array_job}, key=int)
    assert len(arrays) == 1 and array_tasks(cluster, arrays[0]) == {0: "COMPLETED", 1: "COMPLETED"}
    assert set(done) < set(jobs(p))  # the first run's results were kept, not retrained

    # 3. The same results and MLflow record as the local sweep; the cancelled stack's
    # fold runs, where they were opened, were closed as KILLED (by the job on SIGTERM, or
    # on resume), none left RUNNING. They are opened on the job's tracking thread while
    # the stack trains, and SLURM's KillWait (5 s here) can end a loaded job before
    # that thread reached MLflow (seen once in a full run: no run of it at all).
    same_results(p, ref_results)
    assert finished_tree(uri) == finished_tree(ref_uri)
    statuses = sorted(r.info.status for r in run_tree(uri)["fold"])
    assert statuses in (["FINISHED"] * 4 + ["KILLED"] * k for k in (0, 1, 2)), statuses
    # submitit's files (pickled job, logs) are under outputs/, which git and DVC ignore
    logs = sorted(p.path.glob("outputs/sweep/*/.submitit/*_*/*_log.out"))
    tasks = {f"{a}_{i}" for a in (array_job, arrays[0]) for i in (0, 1)}
    assert {f.parent.name for f in logs} == tasks
    assert not p.run("git", "status", "--porcelain", "--", "outputs").stdout


def test_submitit_local_runs_a_process_per_stack_with_the_same_results(
    tmp_path, reference, fault_template
):
    ref_results, _ = reference
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = tiny_params([*SWEEP, "sweep.launcher=submitit_local"])
    p = clone(fault_template, tmp_path / "p", uri, params)
    ran = stage(p.path, "sweep", env={"MLFLOW_TRACKING_URI": uri})
    assert ran.code == 0, ran.out + ran.err
    assert "Submitit 'local' sweep output dir" in ran.out + ran.err
    same_results(p, ref_results)
    # each stack ran in a process of its own (submitit's local job id is its pid)
    logs = sorted(p.path.glob("outputs/sweep/*/.submitit/*/*_log.out"))
    assert len(logs) == 2 and len({f.parent.name for f in logs}) == 2
    assert all("Job completed successfully" in f.read_text() for f in logs)
    assert os.getpid() not in {int(f.parent.name) for f in logs}
    assert json.loads((p.path / "results/sweep/session.json").read_text())["stacks"]
