"""When MLflow is away: each tracking call retried, then kept as a file under
``.foldwise/pending/`` (:class:`Durable`), and sent later (:func:`replay`: the next
sweep, or ``python -m foldwise.tracking.sync``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from foldwise.files import atomic_write_text, shared_root
from foldwise.redact import redact
from foldwise.tracking import TAG, children, log, log_dataset, start_run


def pending_dir(start: Path | None = None) -> Path:
    """Tracking records MLflow did not take, one JSON file each (``.foldwise/pending/``)."""
    return shared_root(start) / ".foldwise" / "pending"


class Durable:
    """Tracking calls that never fail the sweep: a call MLflow does not take (after its
    own retries with backoff, :data:`RETRY_DEFAULTS`) is written to :func:`pending_dir`,
    and :func:`replay` (the next sweep, or ``python -m foldwise.tracking.sync``) sends it later.

    After a failure the store counts as down for ``retry_after`` seconds: calls in that
    time are queued at once instead of each waiting out the retries again.
    """

    _lock = threading.Lock()
    _down_since: float | None = None
    retry_after = 30.0
    last_error = ""

    def __init__(self, c: MlflowClient, uri: str, root: Path) -> None:
        self.c, self.uri, self.folder = c, redact(uri), pending_dir(root)

    @classmethod
    def down(cls) -> bool:
        with cls._lock:
            since = cls._down_since
        return since is not None and time.monotonic() - since < cls.retry_after

    def _try(self, fn, *args, **kwargs) -> bool:
        if Durable.down():
            return False
        try:
            fn(*args, **kwargs)
        except Exception as err:
            with Durable._lock:
                Durable._down_since = time.monotonic()
                Durable.last_error = redact(f"{type(err).__name__}: {err}").splitlines()[0][:300]
            return False
        with Durable._lock:
            Durable._down_since = None
        return True

    def keep(self, entry: dict[str, Any]) -> None:
        """Queue ``entry`` for :func:`replay` (atomically: a file per record)."""
        entry = {**entry, "tracking_uri": self.uri, "queued_at": time.time()}
        name = f"{time.time_ns()}-{os.getpid()}-{threading.get_ident()}.json"
        atomic_write_text(self.folder / name, json.dumps(entry, sort_keys=True) + "\n")

    # The operations the sweep needs; each returns True when MLflow took it.
    def open_run(self, exp_id: str, name: str, run_type: str, tags: Mapping[str, Any],
                 parent: str, start_time: float | None = None,
                 dataset: Mapping[str, Any] | None = None,
                 params: Mapping[str, Any] | None = None) -> tuple[str | None, bool]:  # fmt: skip
        """A run opened before its model trains (so the UI shows it RUNNING), with its
        tags, its ``params`` and the rows it sees as its dataset input. Returns the run
        (``None`` when MLflow is unreachable) and whether all of that was logged: then its
        record at the end sends only what the model's training adds."""
        out: list[str] = []

        def open_() -> None:
            run = start_run(self.c, exp_id, name, run_type, tags, parent, start_time)
            out.append(run)
            log_dataset(self.c, run, dataset)
            if params:
                log(self.c, run, params=params)

        complete = self._try(open_)
        return (out[0] if out else None), complete

    def record(self, entry: dict[str, Any]) -> bool:
        """A finished model's fold run: created unless ``entry['run_id']``, then its
        params, tags, metrics and curves, its artifacts (text), and its final status."""
        entry.setdefault("timestamp", int(time.time() * 1000))
        if self._try(_record_fold, self.c, entry):
            return True
        self.keep({"kind": "fold", **entry})
        return False

    def terminate(self, run_id: str, status: str) -> bool:
        if self._try(self.c.set_terminated, run_id, status):
            return True
        self.keep({"kind": "terminate", "run_id": run_id, "status": status})
        return False

    def log(self, run_id: str, **kw: Any) -> bool:
        kw.setdefault("timestamp", int(time.time() * 1000))
        if self._try(log, self.c, run_id, **kw):
            return True
        self.keep({"kind": "log", "run_id": run_id, **kw})
        return False

    def artifact(self, run_id: str, path: str, text: str) -> bool:
        if self._try(self.c.log_text, run_id, text, path):
            return True
        self.keep({"kind": "artifact", "run_id": run_id, "path": path, "text": text})
        return False


def _record_fold(c: MlflowClient, e: dict[str, Any], dedupe: bool = False) -> None:
    run = e.get("run_id")
    if dedupe:  # a replay: the model may have been recorded since (a resumed sweep)
        for r in children(c, e["experiment_id"], e["parent"], "fold"):
            if r.data.tags.get(f"{TAG}job_key") == e["tags"].get(f"{TAG}job_key"):
                if r.info.status in ("FINISHED", "FAILED"):
                    return
                run = run or r.info.run_id
    if not run:
        run = start_run(c, e["experiment_id"], e["name"], "fold", e["tags"], e["parent"],
                        e.get("start_time"))  # fmt: skip
        e["run_id"] = run
        log_dataset(c, run, e.get("dataset"))
    log(c, run, params=e.get("params"), tags=e.get("tags"), metrics=e.get("metrics"),
        history=e.get("history"), history_prefix=e.get("history_prefix", ""),
        timestamp=e["timestamp"])  # fmt: skip
    for path, text in (e.get("artifacts") or {}).items():
        c.log_text(run, text, path)
    c.set_terminated(run, e["status"])


def pending(root: Path | None = None) -> list[Path]:
    folder = pending_dir(root)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def replay(c: MlflowClient, uri: str, root: Path | None = None) -> tuple[int, int, list[str]]:
    """Send the queued records of ``uri`` to MLflow, oldest first; returns (sent, left,
    problems). A record is deleted once sent; one that fails stays for the next try."""
    sent, left, problems = 0, 0, []
    for path in pending(root):
        try:
            e = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written by another process right now
        if e.get("tracking_uri") != redact(uri):
            left += 1
            continue
        try:
            kind = e["kind"]
            if kind == "fold":
                _record_fold(c, e, dedupe=True)
            elif kind == "terminate":
                c.set_terminated(e["run_id"], e["status"])
            elif kind == "log":
                log(c, e["run_id"], params=e.get("params"), tags=e.get("tags"),
                    metrics=e.get("metrics"), timestamp=e["timestamp"],
                    step=e.get("step", 0))  # fmt: skip
            elif kind == "artifact":
                c.log_text(e["run_id"], e["text"], e["path"])
        except Exception as err:
            left += 1
            problems.append(redact(f"{path.name}: {type(err).__name__}: {err}")[:500])
            continue
        path.unlink(missing_ok=True)
        sent += 1
    return sent, left, problems
