"""Faults that need processes of their own: kill -9 of a sweep (basic launcher, joblib
workers, one worker only), Ctrl-C inside `dvc exp run`, two `dvc repro` in one repo, two
sweeps writing to one MLflow server at once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from mlflow import MlflowClient

from conftest import BIN, TINY, tiny_params
from faultkit import clone, jobs, runs, stage

# one worker under `pytest -n` (--dist loadgroup): the module fixture is built once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("faults_e2e")]

# 8 models in 4 stacks of 2, 12 epochs each, float64 (results do not depend on the stack)
KILL = [
    "sweep.grid.model.hidden=[8,16]",
    "sweep.grid.optim.lr=[0.01,0.03]",
    "trainer.max_epochs=12",
    "trainer.early_stopping.enabled=false",
    "trainer.precision=64",
    "engine.max_models=2",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fault_template, fault_store) -> dict[str, dict]:
    """The uninterrupted sweep's results, by job key (in-process)."""
    p = clone(fault_template, tmp_path_factory.mktemp("ref") / "p", fault_store,
              tiny_params([*KILL, "tracking.experiment=reference"]))  # fmt: skip
    ran = stage(p.path, "sweep", env={"MLFLOW_TRACKING_URI": fault_store})
    assert ran.code == 0, ran.err
    return {r["job_key"]: r for r in jobs(p).values()}


class Sweep:
    """``python pipelines/sweep.py`` in its own process group, output read as it comes."""

    def __init__(self, p, *args: str) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "pipelines/sweep.py", *args], cwd=p.path, env=p.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout))
        self.reader.start()

    def wait_for(self, text: str, timeout: float = 180) -> float:
        """Seconds since the start when a line with ``text`` appeared."""
        deadline = time.monotonic() + timeout
        while not any(text in ln for ln in list(self.lines)):
            assert self.proc.poll() is None, f"exited before {text!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} in time:\n{self.output}"
            time.sleep(0.05)
        return time.monotonic() - self.started

    def kill_group(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)

    def workers(self) -> list[psutil.Process]:
        return [
            c for c in psutil.Process(self.proc.pid).children(recursive=True)
            if "loky" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())
        ]  # fmt: skip

    def finish(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)


def check_resumed(p, uri: str, experiment: str, reference: dict, kept: list[dict]) -> None:
    """After kills and a resume: every result whole, as uninterrupted, none lost or
    rewritten; MLflow has one sweep, one run per configuration and one finished fold run
    per model, and nothing RUNNING."""
    results = jobs(p)  # each parses: no half-written file
    folder = p.path / "results/sweep/jobs"
    assert not [f.name for f in folder.parent.rglob(".*.tmp")]
    for snapshot in kept:  # results present at a kill are byte-for-byte what they were
        for name, text in snapshot.items():
            assert (folder / name).read_text() == text, name
    assert sorted(r["job_key"] for r in results.values()) == sorted(reference)
    for r in results.values():
        ref = reference[r["job_key"]]
        assert r["status"] == "ok" and r["epochs_trained"] == ref["epochs_trained"]
        for k, v in ref["metrics"].items():
            assert r["metrics"][k] == pytest.approx(v, abs=1e-6), (r["label"], k)
    tree = runs(uri, experiment)
    assert "RUNNING" not in {r.info.status for rs in tree.values() for r in rs}
    assert [r.info.status for r in tree["sweep"]] == ["FINISHED"]
    hashes = [r.data.tags["foldwise.config_hash"] for r in tree["config"]]
    assert len(hashes) == len(set(hashes)) == 4
    finished = [r for r in tree["fold"] if r.info.status == "FINISHED"]
    assert sorted(r.info.run_id for r in finished) == sorted(
        r["fold_run_id"] for r in results.values()
    )


def snapshot(p) -> dict[str, str]:
    folder = p.path / "results/sweep/jobs"
    out = {f.name: f.read_text() for f in folder.glob("*.json")} if folder.is_dir() else {}
    for text in out.values():
        assert json.loads(text)["status"] == "ok"  # whole, never half-written
    return out


def test_kill_9_of_a_basic_sweep_at_random_points_then_resume(
    tmp_path, fault_template, fault_store, reference
):
    rng = random.Random(10)
    p = clone(
        fault_template,
        tmp_path / "p",
        fault_store,
        tiny_params([*KILL, "tracking.experiment=kill"]),
    )
    p.env["MLFLOW_TRACKING_URI"] = fault_store
    kept = []
    first = Sweep(p)
    begun = first.wait_for("[foldwise] sweep:")  # the plan is made, the runs are open
    first.wait_for("stack 2/4 · epoch 1/")  # 2 models recorded, 2 training
    time.sleep(rng.uniform(0.0, 0.6))  # somewhere in training or recording
    first.kill_group()
    first.finish()
    kept.append(snapshot(p))
    second = Sweep(p)  # killed around when the sweep was planned and its runs opened
    time.sleep(max(0.5, begun - rng.uniform(0.0, 1.0)))
    second.kill_group()
    second.finish()
    kept.append(snapshot(p))
    last = stage(p.path, "sweep", env={"MLFLOW_TRACKING_URI": fault_store})
    assert last.code == 0, last.err
    assert "8 ok, 0 failed, 0 missing of 8 models" in last.out
    assert f"{len(kept[-1])} already done" in last.out
    check_resumed(p, fault_store, "kill", reference, kept)


def test_kill_9_of_joblib_workers_one_or_all_then_resume(
    tmp_path, fault_template, fault_store, reference
):
    extra = [*KILL, "sweep.launcher=joblib", "sweep.n_jobs=2", "tracking.experiment=joblib"]
    p = clone(fault_template, tmp_path / "p", fault_store, tiny_params(extra))
    p.env["MLFLOW_TRACKING_URI"] = fault_store
    kept = []
    rng = random.Random(11)
    one = Sweep(p)  # one worker killed (as the kernel's OOM killer would) mid-training
    one.wait_for("· epoch 1/")
    time.sleep(rng.uniform(0.0, 0.4))
    victim = one.workers()[0]
    victim.kill()
    assert one.finish() == 1
    assert "the sweep stopped" in one.output and "re-run" in one.output
    kept.append(snapshot(p))
    every = Sweep(p)  # the whole process group: the sweep and its workers
    every.wait_for("· epoch 1/")
    time.sleep(rng.uniform(0.2, 1.0))
    every.kill_group()
    every.finish()
    kept.append(snapshot(p))
    # The resume, in this process with the basic launcher (spared: starting two more
    # workers); the launcher is no part of a model's identity, as the kill test above
    # resumes the same way.
    p.set_params(tiny_params([*KILL, "tracking.experiment=joblib"]))
    last = stage(p.path, "sweep", env={"MLFLOW_TRACKING_URI": fault_store})
    assert last.code == 0, last.err
    assert "8 ok, 0 failed, 0 missing of 8 models" in last.out
    assert f"{len(kept[-1])} already done" in last.out
    check_resumed(p, fault_store, "joblib", reference, kept)


def test_ctrl_c_in_dvc_exp_run_closes_runs_and_the_rerun_resumes(
    tmp_path, fault_template, fault_store
):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground group: dvc and the stage."""
    p = clone(fault_template, tmp_path / "p", fault_store)
    p.env["MLFLOW_TRACKING_URI"] = fault_store
    p.dvc("commit", "-f", "prepare", "split")  # the data stages are done and recorded
    extra = [*TINY, "sweep.grid.model.hidden=[8]", "+sweep.grid.trainer.max_epochs=[1,30]",
             "trainer.early_stopping.enabled=false", "tracking.experiment=exp-run"]  # fmt: skip
    cmd = [str(BIN / "dvc"), "exp", "run", "sweep", *[a for o in extra for a in ("-S", o)]]
    proc = subprocess.Popen(cmd, cwd=p.path, env=p.env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    folder = p.path / "results/sweep/jobs"
    deadline = time.monotonic() + 180
    while len(list(folder.glob("*.json"))) < 2:  # the 1-epoch models are recorded
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    assert "interrupted; finished work is kept (Ctrl-C" in out
    assert "To resume, run `dvc exp run sweep -S " in out  # the command typed, again
    tree = runs(fault_store, "exp-run")
    assert "RUNNING" not in {r.info.status for rs in tree.values() for r in rs}

    again = p.run(*cmd)
    assert "2 to train in 1 stack(s) of 2, 2 already done" in again.stdout
    tree = runs(fault_store, "exp-run")
    assert len(tree["sweep"]) == 1 and len(tree["config"]) == 2  # reopened, no twins
    assert "RUNNING" not in {r.info.status for rs in tree.values() for r in rs}


def test_a_second_dvc_repro_is_refused_by_dvcs_lock(tmp_path, fault_template, fault_store):
    p = clone(fault_template, tmp_path / "p", fault_store)
    p.env["MLFLOW_TRACKING_URI"] = fault_store
    first = subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=p.path, env=p.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not psutil.Process(first.pid).children():  # holds the lock, runs a stage
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        second = p.dvc("repro", check=False)
        said = second.stdout + second.stderr
        assert second.returncode != 0
        # DVC's repo lock, or (while the first runs a stage) its lock on that stage's files
        assert "Unable to acquire lock" in said or "is busy, it is being blocked by" in said
        assert f"(PID {first.pid}): " in said or "Unable to acquire lock" in said
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.communicate(timeout=120)


def test_two_sweeps_on_one_server_at_once_never_mix_runs(tmp_path, fault_template, mlflow_server):
    """Two copies of the project (same data, grid and code: the same sweep key) sweep at
    the same time into one experiment of one server; each sweep run holds its own."""
    extra = ["tracking.experiment=two-at-once"]
    copies = [clone(fault_template, tmp_path / n, mlflow_server, tiny_params(extra)) for n in "ab"]
    procs = [Sweep(p) for p in copies]
    for s in procs:
        assert s.finish() == 0, s.output
    c = MlflowClient(mlflow_server)
    tree = runs(mlflow_server, "two-at-once")
    assert len(tree["sweep"]) == 2 and len(tree["config"]) == 4 and len(tree["fold"]) == 8
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for rs in tree.values()
              for r in rs}  # fmt: skip
    for p in copies:
        session = json.loads((p.path / "results/sweep/session.json").read_text())
        mine = {conf["run_id"] for conf in session["configs"]}
        assert {r for r, up in parent.items() if up == session["sweep_run_id"]} == mine
        results = jobs(p).values()
        assert {parent[r["fold_run_id"]] for r in results} <= mine
        assert {r for r, up in parent.items() if up in mine} == {
            r["fold_run_id"] for r in results
        }  # every fold run under its configurations is one of its own results
        assert all(c.get_run(x).info.status == "FINISHED" for x in mine)
