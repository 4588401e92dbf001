"""End to end: the shared tracking server (`make mlflow-server`) with PostgreSQL behind it.

A real PostgreSQL cluster and a real `mlflow server` (gunicorn) in a temporary folder;
a sweep with two parallel Hydra/joblib workers logs through it; the run tree is read
back over the REST API and counted in PostgreSQL itself; everything is stopped, then
`python -m foldwise.tracking.server` reopens the same folder and finds the runs again.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from conftest import make_project, postgres_installed, tiny_params
from foldwise.tracking.server import _alive, shared_server

pytestmark = pytest.mark.slow

N_CONFIGS, N_FOLDS = 2, 2  # conftest.TINY: hidden=[8,16], 2 splits


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and _alive(int(proc.name)):
            found.append(f"{proc.name}: {cmdline}")
    return found


def search_runs(uri: str) -> list[dict]:
    """Every run of experiment `foldwise`, through MLflow's REST API."""
    exp = requests.get(
        f"{uri}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "foldwise"},
        timeout=30,
    )
    exp.raise_for_status()
    body = {"experiment_ids": [exp.json()["experiment"]["experiment_id"]], "max_results": 1000}
    runs: list[dict] = []
    while True:
        r = requests.post(f"{uri}/api/2.0/mlflow/runs/search", json=body, timeout=30)
        r.raise_for_status()
        page = r.json()
        runs += page.get("runs", [])
        if not page.get("next_page_token"):
            return runs
        body["page_token"] = page["next_page_token"]


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@pytest.mark.skipif(
    not postgres_installed() and os.environ.get("CI") is None,
    reason="PostgreSQL's server programs are not installed (.ci/run installs them on CI)",
)
def test_parallel_sweep_through_postgres_backed_server(tmp_path):
    # Not pytest's tmp_path for the cluster: as root, PostgreSQL runs as the postgres
    # user, which cannot enter pytest's 0700 temp folders.
    folder = Path(tempfile.mkdtemp(prefix="foldwise-pg-"))
    try:
        with shared_server(folder) as server:
            uri = server.uri
            postmaster, mlflow_group = server.cluster.pid, server.mlflow_pid
            assert uri.startswith("http://127.0.0.1:")
            p = make_project(
                tmp_path, uri, tiny_params(["sweep.launcher=joblib", "sweep.n_jobs=2"])
            )
            p.dvc("repro", "aggregate")
            assert not (p.path / "mlflow.db").exists()  # nothing fell back to SQLite

            runs = search_runs(uri)
            by_type = Counter(tags(r).get("foldwise.run_type") for r in runs)
            assert by_type == {"sweep": 1, "config": N_CONFIGS, "fold": N_CONFIGS * N_FOLDS}
            ids = {t: {r["info"]["run_id"] for r in runs if tags(r)["foldwise.run_type"] == t}
                   for t in by_type}  # fmt: skip
            for r in runs:
                assert r["info"]["status"] == "FINISHED"
                parent = tags(r).get("mlflow.parentRunId")
                kind = tags(r)["foldwise.run_type"]
                assert parent in {"sweep": {None}, "config": ids["sweep"],
                                  "fold": ids["config"]}[kind]  # fmt: skip
            # The joblib launcher split the sweep into (at least) two stacks, each of
            # which reported its own stack_seconds (step = stack number) to the server.
            (sweep_id,) = ids["sweep"]
            h = requests.get(
                f"{uri}/api/2.0/mlflow/metrics/get-history",
                params={"run_id": sweep_id, "metric_key": "stack_seconds"},
                timeout=30,
            ).json()["metrics"]
            assert len({m["step"] for m in h}) >= 2

            # The runs are rows in PostgreSQL, not somewhere else.
            with server.cluster.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT status, count(*) FROM runs GROUP BY status")
                assert dict(cur.fetchall()) == {"FINISHED": len(runs)}
                cur.execute("SELECT count(*) FROM metrics")
                assert cur.fetchone()[0] > 0
            conn.close()

        # Stopped: the postmaster and mlflow's whole process group are gone.
        assert not _alive(postmaster)
        with pytest.raises(ProcessLookupError):
            os.killpg(mlflow_group, 0)
        assert processes_mentioning(str(folder)) == []

        # `python -m foldwise.tracking.server` reopens the same cluster: the runs are still there.
        password = (folder / "pgpass").read_text().strip().rsplit(":", 1)[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "foldwise.tracking.server", "--folder", str(folder),
             "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        out = ""
        try:
            while "Ctrl-C" not in out:
                line = proc.stdout.readline()
                assert line, f"server exited early:\n{out}"
                out += line
            again = re.search(r"MLFLOW_TRACKING_URI=(http://127\.0\.0\.1:\d+)", out).group(1)
            assert len(search_runs(again)) == len(runs)
            assert all(password not in c for c in processes_mentioning(str(folder)))
        finally:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            out += proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, out
        assert "stopped" in out
        assert processes_mentioning(str(folder)) == []
        logs = [(folder / name).read_text() for name in ("mlflow.log", "postgres.log")]
        assert all(password not in text for text in [out, *logs])
    finally:
        deadline = time.monotonic() + 10
        while processes_mentioning(str(folder)) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)
