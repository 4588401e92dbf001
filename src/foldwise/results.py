"""The sweep's on-disk contract: the session file and one result file per job.

``results/sweep/session.json`` holds the plan (configurations, fold count, split and
code keys, MLflow run ids); ``results/sweep/jobs/<config>-fold<k>.json`` holds one
job's outcome. The sweep writes them, the aggregate stage reads them; neither side
needs the other's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foldwise.files import read_json, sha256_json, shared_root


def task_name(cfg_hash: str, fold: int) -> str:
    """A (configuration, fold) job's name: in the session's stacks and result file names."""
    return f"{cfg_hash}-fold{fold}"


def parse_task_name(name: str) -> tuple[str, int]:
    cfg_hash, fold = name.rsplit("-fold", 1)
    return cfg_hash, int(fold)


def job_key(cfg_hash: str, fold: int, split_key: str, code: str, engine: int) -> str:
    """A job's identity: configuration, fold, split, foldwise's code and engine version."""
    return sha256_json(
        {"config": cfg_hash, "fold": fold, "split": split_key, "code": code, "engine": engine}
    )[:16]


# What a finished job produced, as opposed to where it was tracked.
OUTCOME = (
    "status", "metrics", "history", "best_epoch", "epochs_trained", "n_train", "n_val",
    "predictions",
)  # fmt: skip


def job_cache(root: Path, key: str) -> Path:
    """A finished job's result, by job key, outside DVC's outputs.

    ``results/sweep/jobs/`` only holds the current plan's jobs, so switching back to
    an earlier configuration (``dvc exp apply``, another experiment) would re-train;
    this cache, shared by the checkout and DVC's temporary experiment copies, keeps
    every finished job. Safe because the key covers configuration, fold, split and code.
    """
    return shared_root(root) / ".foldwise" / "jobs" / f"{key}.json"


def job_path(sweep_dir: Path, cfg_hash: str, fold: int) -> Path:
    return sweep_dir / "jobs" / f"{cfg_hash}-fold{fold}.json"


@dataclass
class Session:
    """``results/sweep/session.json``: everything a job needs besides its own config."""

    doc: dict[str, Any]

    @property
    def configs(self) -> list[dict[str, Any]]:
        return self.doc["configs"]

    @property
    def n_jobs(self) -> int:
        return len(self.configs) * self.doc["n_folds"]

    def config(self, cfg_hash: str) -> dict[str, Any] | None:
        return next((c for c in self.configs if c["hash"] == cfg_hash), None)

    def job_key(self, cfg_hash: str, fold: int) -> str:
        d = self.doc
        return job_key(cfg_hash, fold, d["split_key"], d["code"], d["engine"])


def read_result(sweep_dir: Path, cfg_hash: str, fold: int) -> dict | None:
    path = job_path(sweep_dir, cfg_hash, fold)
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def is_done(result: dict | None, key: str) -> bool:
    return bool(result) and result.get("status") == "ok" and result.get("job_key") == key


def collect(session: Session, sweep_dir: Path) -> dict[str, list[dict | None]]:
    """Each configuration's fold results in fold order (``None`` where missing/stale)."""
    out = {}
    for conf in session.configs:
        rows = []
        for f in range(session.doc["n_folds"]):
            r = read_result(sweep_dir, conf["hash"], f)
            key = session.job_key(conf["hash"], f)
            rows.append(r if r is not None and r.get("job_key") == key else None)
        out[conf["hash"]] = rows
    return out
