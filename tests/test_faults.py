"""Faults inside one process: models that raise, run out of memory or diverge; MLflow
unreachable at the start or gone mid-sweep; a full disk; secrets in a tracking URI.

Stages run in the test process (:func:`faultkit.stage`), on copies of one prepared
project (conftest's ``fault_template``); the fault hook is ``FOLDWISE_FAULT``
(:mod:`foldwise.faults`).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import ROOT, tiny_params
from faultkit import clone, jobs, runs, stage
from foldwise import faults, redact, tracking
from foldwise.fitting.configs import apply, config_hash
from foldwise.results import Session
from foldwise.sweep import jobs as sweep_jobs
from foldwise.sweep.estimate import pending_epochs


def params(experiment: str, extra: list[str] | None = None):
    return tiny_params([f"tracking.experiment={experiment}", *(extra or [])])


# ----------------------------------------------------------------- fast unit checks
def test_redact_masks_uri_passwords_and_secret_env(monkeypatch):
    r = redact.redact
    assert r("at http://user:pw-7f3a9c@127.0.0.1:5000/x") == "at http://user:***@127.0.0.1:5000/x"
    assert r("https://:tok3n@h/ and http://h:5000") == "https://:***@h/ and http://h:5000"
    assert r("sqlite:////tmp/mlflow.db user:pw@x") == "sqlite:////tmp/mlflow.db user:pw@x"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter22")
    assert r("auth hunter22 failed") == "auth *** failed"


def test_fault_rules_match_label_words_fold_and_epoch():
    (a, b) = faults.parse("raise:hidden=8 lr=0.01#1; oom@2:*")
    assert a.matches("mlp hidden=8 lr=0.01", "abc-fold1", 1)
    assert not a.matches("mlp hidden=8 lr=0.015", "abc-fold1", 1)
    assert not a.matches("mlp hidden=8 lr=0.01", "abc-fold0", 1)
    assert b.kind == "oom" and b.matches("anything", "x-fold3", 2) and not b.matches("a", "x", 1)
    with pytest.raises(ValueError, match="bad rule"):
        faults.parse("explode:*")


def test_servers_bind_loopback_and_the_image_runs_as_non_root(tmp_path):
    ui = next(ln for ln in (ROOT / "Makefile").read_text().splitlines() if "mlflow ui" in ln)
    assert "--host 127.0.0.1" in ui
    assert tracking.LocalServer(tmp_path).uri.startswith("http://127.0.0.1:")
    users = [
        ln.split()[1] for ln in (ROOT / "Dockerfile").read_text().splitlines()
        if ln.startswith("USER ")
    ]  # fmt: skip
    assert users and users[-1] not in ("root", "0")


def test_eta_counts_each_later_models_own_max_epochs():
    session = Session(
        {
            "configs": [
                {"hash": "a", "max_epochs": 5},
                {"hash": "b", "max_epochs": 400},
                {"hash": "c", "max_epochs": 10, "models": 7},  # a bagging ensemble
            ],
            "stacks": [["a-fold0"], ["a-fold1", "b-fold0"], ["b-fold1", "c-fold0"]],
        }
    )
    cfg = tiny_params(["trainer.max_epochs=3"])
    assert pending_epochs(cfg, session, 0) == 5 + 400 + 400 + 70
    assert pending_epochs(cfg, session, 2) == 0
    cfg.sweep.launcher, cfg.sweep.n_jobs = "joblib", 2
    assert pending_epochs(cfg, session, 0) == (5 + 400 + 400 + 70) // 2


# ------------------------------------------------------------------ failing models
@pytest.mark.slow
def test_models_that_raise_run_out_of_memory_or_diverge_fail_alone(
    tmp_path, fault_template, fault_store
):
    """One sweep, 12 models in two stacks (widths 8 and 16): lr=1e38 diverges (NaN/inf),
    and the fault hook makes three others raise, run out of GPU memory (at epoch 2) and
    out of host memory. Each fails alone: its fold run is FAILED with the error as a tag
    and the traceback as an artifact, its stack-mates train on, its configuration is
    incomplete, and the exit status follows sweep.max_failures."""
    grid = [
        "sweep.grid.model.hidden=[8,16]",
        "sweep.grid.optim.lr=[0.01,0.02,1e38]",
        "trainer.max_epochs=2",
    ]
    p = clone(fault_template, tmp_path / "p", fault_store, params("failing", grid))
    env = {
        "MLFLOW_TRACKING_URI": fault_store,
        faults.ENV: ";".join(
            ("raise:hidden=8 lr=0.01#1", "oom@2:hidden=16 lr=0.01#0", "memory:hidden=8 lr=0.02#0")
        ),
    }
    first = stage(p.path, "sweep", env=env)
    assert first.code == 1, first.err
    assert "5 ok, 7 failed, 0 missing of 12 models" in first.out
    assert "sweep.max_failures=0" in first.err
    results = {(r["label"].removeprefix("mlp "), r["fold"]): r for r in jobs(p).values()}
    assert len(results) == 12
    expected_errors = {
        ("hidden=8 lr=0.01", 1): "RuntimeError: injected fault",
        ("hidden=16 lr=0.01", 0): "OutOfMemoryError: injected out of memory",
        ("hidden=8 lr=0.02", 0): "MemoryError: injected host out of memory",
        **{(f"hidden={w} lr=1e+38", f): "non-finite" for w in (8, 16) for f in (0, 1)},
    }
    for key, r in results.items():
        if key in expected_errors:
            assert r["status"] == "failed" and expected_errors[key] in r["error"], key
        else:  # the failing models' stack-mates (and the other stack) trained on
            assert r["status"] == "ok" and r["epochs_trained"] >= 1, key
    c = MlflowClient(fault_store)
    for key, r in results.items():
        run = c.get_run(r["fold_run_id"])
        if key not in expected_errors:
            assert run.info.status == "FINISHED"
            continue
        assert run.info.status == "FAILED"
        assert expected_errors[key] in run.data.tags["foldwise.error"]
        local = c.download_artifacts(r["fold_run_id"], "error.txt", str(tmp_path))
        text = Path(local).read_text()
        assert expected_errors[key] in text
        if "injected" in expected_errors[key]:
            assert "Traceback (most recent call last)" in text
    tree = runs(fault_store, "failing")
    states = {r.data.tags["foldwise.config_hash"]: r.info.status for r in tree["config"]}
    assert sorted(states.values()) == ["FAILED"] * 5 + ["FINISHED"]  # only 16/0.02 complete
    assert [r.info.status for r in tree["sweep"]] == ["FAILED"]

    # The faults gone, 7 failures tolerated: the re-run retries only the failed models
    # (the diverging ones fail again), reuses every run, and exits 0.
    p.set_params(params("failing", [*grid, "sweep.max_failures=7"]))
    second = stage(p.path, "sweep", env={"MLFLOW_TRACKING_URI": fault_store})
    assert second.code == 0, second.err
    assert "7 to train in" in second.out and "5 already done" in second.out
    assert "8 ok, 4 failed" in second.out
    tree = runs(fault_store, "failing")
    assert len(tree["sweep"]) == 1 and len(tree["config"]) == 6  # no twin runs
    folds = sorted(r.info.status for r in tree["fold"])
    assert folds == ["FAILED"] * 11 + ["FINISHED"] * 8


# ------------------------------------------------------------------ MLflow away
def test_unreachable_tracking_server_fails_before_any_training(
    tmp_path, fault_template, fault_store
):
    p = clone(fault_template, tmp_path / "p", fault_store, params("unreachable"))
    uri = f"http://user:pw-7f3a9c@127.0.0.1:{tracking.LocalServer(tmp_path).port}"  # nobody there
    ran = stage(p.path, "sweep", env={"MLFLOW_TRACKING_URI": uri})
    assert ran.code == 2
    assert "http://user:***@127.0.0.1:" in ran.err and "unreachable" in ran.err
    assert "pw-7f3a9c" not in ran.out + ran.err
    assert not (p.path / "results/sweep/jobs").exists()
    assert not (p.path / "results/sweep/session.json").exists()


def test_processes_creating_one_new_sqlite_store_at_once_all_get_it(tmp_path):
    """Queued experiments on a fresh checkout: each sweep's first MLflow call creates the
    store's tables; at once, all but one used to fail (OperationalError → exit 2)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    code = (
        "import os, pathlib, time\n"
        "from foldwise import tracking\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.005)\n"
        "print(tracking.require())\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(3)  # both imported and waiting
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-800:] for _, err in outs]
    assert all(out.strip() == uri for out, _ in outs)


def test_two_sweeps_logging_one_dataset_at_once_both_link_it(tmp_path):
    """MLflow's store looks a dataset up, then inserts it; when a second sweep loses that
    race the server answers "UNIQUE constraint failed". The loser retries and links the
    winner's dataset to its own run instead of failing its whole sweep."""
    from mlflow.exceptions import RestException

    c = MlflowClient(f"sqlite:///{tmp_path / 'store.db'}")
    exp = c.create_experiment("race")
    a, b = (tracking.start_run(c, exp, n, "sweep") for n in "ab")
    data = {"name": "digits dev", "digest": "aac04972eb4b", "rows": 1437, "context": "dev"}
    tracking.log_dataset(c, a, data)  # the winner

    class LostTheRace:
        calls = 0

        def __getattr__(self, name):
            return getattr(c, name)

        def log_inputs(self, *args, **kwargs):
            LostTheRace.calls += 1
            if LostTheRace.calls == 1:  # what the server said in CI
                raise RestException({"error_code": "BAD_REQUEST", "message":
                    "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                    "datasets.name, datasets.digest"})  # fmt: skip
            return c.log_inputs(*args, **kwargs)

    tracking.log_dataset(LostTheRace(), b, data)
    assert LostTheRace.calls == 2
    for run in (a, b):
        (got,) = c.get_run(run).inputs.dataset_inputs
        assert (got.dataset.name, got.dataset.digest) == ("digits dev", "aac04972eb4b")

    class Refused(LostTheRace):
        def log_inputs(self, *args, **kwargs):
            raise RestException({"error_code": "BAD_REQUEST", "message": "run is deleted"})

    with pytest.raises(RestException, match="run is deleted"):  # other errors still surface
        tracking.log_dataset(Refused(), b, data)


@pytest.mark.slow
def test_server_gone_mid_sweep_keeps_results_and_sync_uploads_them(
    tmp_path, fault_template, monkeypatch
):
    """A real `mlflow server`, stopped after the first model is recorded: the sweep
    trains on and writes every result, tracking calls fail fast (retries with backoff,
    then queued in .foldwise/pending), and `python -m foldwise.tracking.sync` sends them once the
    server is back. The URI carries a password: it appears nowhere."""
    secret = f"pw-{os.urandom(6).hex()}"  # in no file of the project copy
    server = tracking.LocalServer(tmp_path / "server")
    server.start()
    try:
        uri = server.uri.replace("http://", f"http://user:{secret}@")
        p = clone(fault_template, tmp_path / "p", uri, params("outage"))
        env = {
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        }
        record, seen = sweep_jobs._record, []

        def record_then_stop(*args, **kwargs):
            out = record(*args, **kwargs)
            if not seen:
                server.stop()  # the server goes away after the first model's record
            seen.append(out)
            return out

        monkeypatch.setattr(sweep_jobs, "_record", record_then_stop)
        ran = stage(p.path, "sweep", env=env)
        assert ran.code == 0, ran.err
        assert "4 ok, 0 failed, 0 missing of 4 models" in ran.out
        assert "python -m foldwise.tracking.sync" in ran.err and "was unreachable" in ran.err
        assert all(r["status"] == "ok" for r in jobs(p).values()) and len(jobs(p)) == 4
        waiting = sorted((p.path / ".foldwise/pending").glob("*.json"))
        assert waiting
        kinds = {json.loads(f.read_text())["kind"] for f in waiting}
        assert {"fold", "terminate", "log"} <= kinds

        nothing = stage(p.path, "-m foldwise.tracking.sync", env=env)  # still down: exit 2, kept
        assert nothing.code == 2 and "unreachable" in nothing.err
        server.start()  # back, same store and port
        synced = stage(p.path, "-m foldwise.tracking.sync", env=env)
        assert synced.code == 0, synced.err
        assert "0 left" in synced.out and not list((p.path / ".foldwise/pending").glob("*"))
        agg = stage(p.path, "aggregate", env=env)
        assert agg.code == 0, agg.err

        tree = runs(server.uri, "outage")
        assert [r.info.status for r in tree["sweep"]] == ["FINISHED"]
        assert tree["sweep"][0].data.metrics["jobs_ok"] == 4
        assert sorted(r.info.status for r in tree["config"]) == ["FINISHED"] * 2
        assert sorted(r.info.status for r in tree["fold"]) == ["FINISHED"] * 4  # none twice
        assert all(r.data.metrics["val_f1"] > 0 for r in tree["fold"])
        c = MlflowClient(server.uri)
        curve = c.get_metric_history(tree["fold"][0].info.run_id, "epoch/val_loss")
        assert [m.step for m in curve] == list(range(1, len(curve) + 1))

        # The password: not printed, not in any file written, not in MLflow.
        assert secret not in "".join(x.out + x.err for x in (ran, nothing, synced, agg))
        for f in p.path.rglob("*"):
            if f.is_file() and ".git" not in f.parts and f.stat().st_size < 5_000_000:
                assert secret.encode() not in f.read_bytes(), f
        for run in (r for rs in tree.values() for r in rs):
            values = [*run.data.params.values(), *run.data.tags.values()]
            assert not any(secret in v for v in values), run.info.run_id
            assert not any(secret in a.path for a in c.list_artifacts(run.info.run_id))
        assert (
            "user:***@127.0.0.1"
            in json.loads((p.path / "results/sweep/session.json").read_text())["tracking_uri"]
        )
    finally:
        server.stop()


# ------------------------------------------------------------------ disk
@pytest.mark.slow
def test_full_disk_or_unwritable_folder_is_a_clear_error_and_no_half_result(
    tmp_path, fault_template, fault_store, monkeypatch
):
    """Writes are temp file + os.replace: a write that fails (ENOSPC halfway through,
    EACCES) leaves no partial result that could be read as finished, and a re-run
    trains only what is missing."""
    p = clone(fault_template, tmp_path / "p", fault_store, params("disk"))
    env = {"MLFLOW_TRACKING_URI": fault_store}
    real_fdopen = os.fdopen

    def failing(match: str, code: int):
        def fdopen(fd, *args, **kwargs):
            fh = real_fdopen(fd, *args, **kwargs)
            if match not in os.readlink(f"/proc/self/fd/{fd}"):
                return fh
            write = fh.write

            def half_then_fail(text):
                write(text[: len(text) // 2])
                fh.flush()
                raise OSError(code, os.strerror(code))

            fh.write = half_then_fail
            return fh

        return fdopen

    # The output folder cannot be written: fails before training, says which file.
    monkeypatch.setattr(os, "fdopen", failing("session.json", errno.EACCES))
    denied = stage(p.path, "sweep", env=env)
    assert denied.code == 1
    assert "could not write" in denied.err and "session.json" in denied.err
    assert "Permission denied" in denied.err and "Traceback" not in denied.err
    assert not (p.path / "results/sweep/session.json").exists()

    # The disk fills up while one model's result is being written.
    h = config_hash(apply(tiny_params(), {"model.hidden": 16, "optim.lr": 0.01}))
    monkeypatch.setattr(os, "fdopen", failing(f"{h}-fold1.json", errno.ENOSPC))
    full = stage(p.path, "sweep", env=env)
    assert full.code == 1
    assert f"{h}-fold1.json" in full.err and "No space left on device" in full.err
    assert "free disk space" in full.err
    folder = p.path / "results/sweep/jobs"
    assert not (folder / f"{h}-fold1.json").exists()
    assert not list(folder.glob(".*")) and not list(p.path.glob("results/sweep/.*"))
    done = jobs(p)
    assert len(done) == 3 and all(r["status"] == "ok" for r in done.values())
    assert "RUNNING" not in {r.info.status for rs in runs(fault_store, "disk").values() for r in rs}

    monkeypatch.setattr(os, "fdopen", real_fdopen)
    again = stage(p.path, "sweep", env=env)
    assert again.code == 0, again.err
    assert "1 to train in 1 stack(s) of 1, 3 already done" in again.out
    assert {n: r for n, r in jobs(p).items() if n in done} == done  # kept as they were
    folds = runs(fault_store, "disk")["fold"]
    finished = [r for r in folds if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["foldwise.job_key"] for r in finished) == sorted(
        r["job_key"] for r in jobs(p).values()
    )  # one finished run per model; the run whose result was lost is closed as KILLED


# ------------------------------------------------------------------ interrupts
@pytest.mark.slow
def test_sigterm_then_a_resume_after_dvc_put_back_an_older_session(
    tmp_path, fault_template, fault_store, monkeypatch
):
    """The reported case: after an interrupted `dvc exp run`, configuration runs stayed
    RUNNING, the re-run added twins (16 children for 10 configurations) and said
    "(0 already done)". `dvc exp run` puts back the committed results/sweep (an older
    session.json, older result files) before it re-runs; here that is done by hand."""
    import shutil
    import signal

    def grid(hidden: str, epochs: str) -> list[str]:
        return [f"sweep.grid.model.hidden={hidden}", f"+sweep.grid.trainer.max_epochs={epochs}",
                "trainer.early_stopping.enabled=false"]  # fmt: skip

    p = clone(fault_template, tmp_path / "p", fault_store, params("sigterm", grid("[8]", "[1]")))
    env = {"MLFLOW_TRACKING_URI": fault_store}
    assert stage(p.path, "sweep", env=env).code == 0  # the committed baseline: 2 models
    committed = tmp_path / "committed"
    shutil.copytree(p.path / "results/sweep", committed)

    # The grid grows to 4 configurations (8 models); SIGTERM once the first new model
    # is recorded, while the others train.
    p.set_params(params("sigterm", grid("[8,16]", "[1,40]")))
    record, sent = sweep_jobs._record, []

    def record_then_sigterm(*args, **kwargs):
        out = record(*args, **kwargs)
        if not sent:
            sent.append(os.kill(os.getpid(), signal.SIGTERM))
        return out

    monkeypatch.setattr(sweep_jobs, "_record", record_then_sigterm)
    stopped = stage(p.path, "sweep", env=env)
    monkeypatch.setattr(sweep_jobs, "_record", record)
    assert stopped.code == 143, stopped.err
    assert "interrupted; finished work is kept (SIGTERM" in stopped.err
    assert "To resume, run `python " in stopped.err
    assert "pipelines/sweep.py` again" in stopped.err and "dvc repro" not in stopped.err
    tree = runs(fault_store, "sigterm")
    assert "RUNNING" not in {r.info.status for rs in tree.values() for r in rs}
    assert {r.info.status for r in tree["sweep"]} == {"KILLED"}
    finished = len(jobs(p)) - 2
    assert 1 <= finished < 6

    shutil.rmtree(p.path / "results/sweep")  # what `dvc exp run` does before re-running
    shutil.copytree(committed, p.path / "results/sweep")
    again = stage(p.path, "sweep", env=env)
    assert again.code == 0, again.err
    done = 2 + finished
    assert f"{8 - done} to train in" in again.out
    assert f"{done} already done ({finished} of them restored from .foldwise/jobs)" in again.out
    lines = [ln for ln in again.out.splitlines() if "[foldwise] models " in ln]
    counts = [int(ln.split("models ")[1].split("/")[0]) for ln in lines]
    assert done <= counts[0] and counts == sorted(counts) and counts[-1] == 8
    assert "ETA --:--" in lines[0]  # no ETA before one steady epoch is measured
    tree = runs(fault_store, "sigterm")
    assert len(tree["sweep"]) == 1 and tree["sweep"][0].info.status == "FINISHED"
    hashes = [r.data.tags["foldwise.config_hash"] for r in tree["config"]]
    assert len(hashes) == len(set(hashes)) == 4  # one run per configuration, no twins
    folds = [r for r in tree["fold"] if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["foldwise.job_key"] for r in folds) == sorted(
        r["job_key"] for r in jobs(p).values()
    )  # one finished fold run per model, none recorded twice
    assert "RUNNING" not in {r.info.status for rs in tree.values() for r in rs}
