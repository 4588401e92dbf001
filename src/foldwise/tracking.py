"""MLflow bookkeeping through :class:`mlflow.MlflowClient`, in as few requests as possible.

Run tree: sweep (parent) → configuration (child) → fold (grandchild); refit and
lockbox runs hang under the sweep as well. Nesting is the standard
``mlflow.parentRunId`` tag, so the MLflow UI shows the tree. Metrics are sent with
``log_batch`` (a whole learning curve in one call per 1,000 values), never one
request per value: a remote tracking server answers in 7-50 ms per request.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from omegaconf import DictConfig, OmegaConf

from foldwise.files import shared_root

BATCH = 1000  # MLflow's per-request limit on metrics in log_batch
TAG = "foldwise."


def tracking_uri(cfg: DictConfig | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, else ``tracking.uri``, else SQLite at the repo root.

    The default path is absolute and escapes ``dvc exp run --temp`` copies, so every
    experiment lands in the same store the MLflow UI reads (``make ui``).
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    configured = OmegaConf.select(cfg, "tracking.uri") if cfg is not None else None
    if configured:
        return str(configured)
    return f"sqlite:///{shared_root() / 'mlflow.db'}"


def client(cfg: DictConfig | None = None) -> MlflowClient:
    uri = tracking_uri(cfg)
    if uri.startswith("file:") or "://" not in uri:
        # MLflow >= 3.13 refuses the ./mlruns folder store; fail with a useful message.
        raise ValueError(
            f"MLflow tracking URI {uri!r} is a folder store; use sqlite:///path/mlflow.db "
            "or http://host:port."
        )
    t = time.perf_counter()
    inner = MlflowClient(tracking_uri=uri)  # opens the store: creates/upgrades a SQLite schema
    Timed.add(time.perf_counter() - t)
    return Timed(inner)  # type: ignore[return-value]


class Timed:
    """An ``MlflowClient`` that adds the wall time of every call to :func:`busy_seconds`.

    The sweep reports it (``tracking_seconds``), so a user sees what tracking costs.
    """

    _lock = threading.Lock()
    seconds = 0.0  # all threads
    main_seconds = 0.0  # the main thread only: time the stage itself waited for MLflow

    def __init__(self, inner: MlflowClient) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                Timed.add(time.perf_counter() - t)

        return timed

    @staticmethod
    def add(spent: float) -> None:
        with Timed._lock:
            Timed.seconds += spent
            if threading.current_thread() is threading.main_thread():
                Timed.main_seconds += spent


def busy_seconds() -> float:
    """Seconds this process has spent in MLflow client calls (all threads)."""
    return Timed.seconds


def blocking_seconds() -> float:
    """Seconds the main thread spent in MLflow calls or waiting for the tracking thread."""
    return Timed.main_seconds + Background.waited_total


def experiment_id(c: MlflowClient, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if c.tracking_uri.startswith("sqlite:"):
        # Keep artifacts beside the store, not in ./mlruns of whatever the cwd is.
        location = (shared_root() / "mlartifacts").as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it first
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def start_run(
    c: MlflowClient,
    exp_id: str,
    name: str,
    run_type: str,
    tags: Mapping[str, Any] | None = None,
    parent: str | None = None,
    start_time: float | None = None,
) -> str:
    """A new run (``start_time`` in seconds since the epoch; default now)."""
    all_tags = {f"{TAG}run_type": run_type, **{k: str(v) for k, v in (tags or {}).items()}}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    ms = None if start_time is None else int(start_time * 1000)
    return c.create_run(exp_id, start_time=ms, run_name=name, tags=all_tags).info.run_id


class Background:
    """Tracking calls on one background thread, so training never waits for the store.

    ``submit`` queues a call; leaving the ``with`` block waits for all of them and
    re-raises the first error (nothing is dropped silently). On Ctrl-C the queued calls
    still run before the interrupt propagates: finished models keep their records.
    """

    waited_total = 0.0  # over every Background of this process

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="foldwise-tracking")
        self._futures: list = []
        self.waited = 0.0  # seconds the caller waited for the queue at the end

    def submit(self, fn, *args) -> None:
        self._futures.append(self._pool.submit(fn, *args))

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc) -> None:
        t = time.perf_counter()
        self._pool.shutdown(wait=True)
        self.waited = time.perf_counter() - t
        Background.waited_total += self.waited
        for f in self._futures:
            f.result()


def run_exists(c: MlflowClient, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        return c.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:
        return False


def log(
    c: MlflowClient,
    run_id: str,
    *,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, Any] | None = None,
    history: Mapping[str, Iterable[float]] | None = None,
    history_prefix: str = "",
) -> None:
    """Params, tags, final metrics and per-epoch curves in as few ``log_batch`` calls as fit.

    ``history`` maps a metric name to its per-epoch values; each is logged with
    ``step`` = epoch (1-based) under ``history_prefix + name``.
    """
    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
    for name, values in (history or {}).items():
        if name == "epoch":
            continue
        ms += [Metric(history_prefix + name, float(v), now, i + 1) for i, v in enumerate(values)]
    ps = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    first = True
    while first or ms:
        c.log_batch(
            run_id, metrics=ms[:BATCH], params=ps if first else [], tags=ts if first else []
        )
        ms, first = ms[BATCH:], False


def kill_orphans(c: MlflowClient, exp_id: str, parents: set[str]) -> int:
    """Mark fold runs left RUNNING under ``parents`` (a process died mid-fit) as KILLED."""
    if not parents:
        return 0
    stale = c.search_runs(
        [exp_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG}run_type` = 'fold'",
        max_results=5000,
    )
    n = 0
    for run in stale:
        if run.data.tags.get("mlflow.parentRunId") in parents:
            c.set_terminated(run.info.run_id, "KILLED")
            n += 1
    return n


@contextlib.contextmanager
def local_server(folder: Path, workers: int = 2, timeout: float = 90) -> Iterator[str]:
    """Run ``mlflow server`` (gunicorn) on a free 127.0.0.1 port over SQLite in ``folder``.

    Yields the tracking URI; the server is stopped on exit. gunicorn, not the default
    uvicorn: ~7 ms instead of ~50 ms per request on a reused connection.
    Used by the end-to-end tests and the benchmarks.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder.mkdir(parents=True, exist_ok=True)
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    with open(folder / "server.log", "w") as log:
        # No job-execution consumers (five ~240 MB processes this server doesn't need);
        # the process group lets the stop below reach gunicorn's workers too.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
             "--artifacts-destination", str(folder / "artifacts"),
             "--workers", str(workers), "--gunicorn-opts", "--log-level warning"],
            stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=env, start_new_session=True,
        )  # fmt: skip
        uri = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not start:\n{(folder / 'server.log').read_text()}"
                    )
                time.sleep(0.5)
            yield uri
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
