"""Run and wrap up a sweep: launch the stacks, close MLflow runs (or abort them), log each
configuration's resample table, and say what is still pending.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from foldwise import params as P
from foldwise.files import (
    read_json,
)
from foldwise.results import (
    Session,
    collect,
    job_path,
)
from foldwise.sweep.estimate import is_bound, record_epochs, record_pace
from foldwise.sweep.jobs import durable_client, restore_cached


# ------------------------------------------------------------------------- finish
def resample_table(rows: list[dict | None]) -> pd.DataFrame:
    """One row per resample: status, final metrics, epochs (what a fold run would hold)."""
    out = []
    for i, r in enumerate(rows):
        row: dict[str, Any] = {"resample": i, "status": "missing" if r is None else r["status"]}
        if r is not None:
            row.update(r.get("metrics", {}))
            for k in ("best_epoch", "epochs_trained", "n_train", "n_val", "error"):
                if k in r:
                    row[k] = r[k]
        out.append(row)
    return pd.DataFrame(out)


def _log_resample_table(durable, conf: dict, rows: list[dict | None]) -> None:
    """Many resamples: one CSV artifact on the configuration run instead of many runs."""
    durable.artifact(
        conf["run_id"], f"resamples/{conf['hash']}.csv", resample_table(rows).to_csv(index=False)
    )


def abort(cfg: DictConfig, layout: P.Layout, status: str = "KILLED") -> None:
    """After Ctrl-C (KILLED) or an error (FAILED): close the sweep's configuration runs
    and the sweep run.

    (Fold runs of unfinished models are closed by :func:`run_stack`.) A re-run reopens
    the same runs and trains only what is missing.
    """
    session = Session(read_json(layout.sweep_dir / "session.json"))
    durable = durable_client(cfg, layout)
    for conf in session.configs:
        durable.terminate(conf["run_id"], status)
    durable.terminate(session.doc["sweep_run_id"], status)


def train(cfg: DictConfig, layout: P.Layout, session: Session, launch) -> bool:
    """Restore cached models, then ``launch()`` the stacks (Hydra's multirun).

    Ctrl-C or SIGTERM: the runs are closed as KILLED and the interrupt goes on (the
    stage says how to resume). A stack that failed as a whole, or a worker process that
    died: the runs are closed as FAILED, the error is printed, and False is returned (a
    full disk or an unwritable folder is raised instead, for the stage to name the file).
    """
    import sys
    import traceback

    from foldwise.errors import DISK_ERRORS

    # A stack's error reaches us as itself (not as Hydra's exit 1), to be reported below.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        restore_cached(cfg, layout)
        if session.doc["stacks"] or session.doc.get("search") == "optuna":
            launch()
    except KeyboardInterrupt:  # finished models are kept
        abort(cfg, layout, "KILLED")
        raise
    except Exception as err:
        abort(cfg, layout, "FAILED")
        if isinstance(err, OSError) and err.errno in DISK_ERRORS:
            raise
        traceback.print_exc()
        print(
            f"foldwise: the sweep stopped: {type(err).__name__}: {err}\n  Finished models "
            "are kept (results/sweep/jobs); re-run to train only the others.",
            file=sys.stderr,
        )
        return False
    return True


def wrap_up(cfg: DictConfig, layout: P.Layout, session: Session, trained: float) -> int:
    """Close the sweep (:func:`finish`), say how it went; the stage's exit status
    (1 when more models failed or are missing than ``sweep.max_failures`` allows)."""
    import sys

    from foldwise.progress import clock

    counts = finish(cfg, layout, trained)
    print(
        f"[foldwise] sweep done: {counts['ok']} ok, {counts['failed']} failed, "
        + (f"{counts['pruned']} pruned (not trained), " if counts.get("pruned") else "")
        + f"{counts['missing']} missing of {counts['total']} models · training "
        f"{clock(trained)}{estimate_note(session)}",
        flush=True,
    )
    note = pending_note(counts, session.doc["tracking_uri"])
    if note:
        print(note, file=sys.stderr, flush=True)
    bad_jobs = counts["failed"] + counts["missing"]
    if bad_jobs > int(cfg.sweep.max_failures):
        print(
            f"[foldwise] {bad_jobs} models did not finish (sweep.max_failures="
            f"{cfg.sweep.max_failures}); re-run to retry only those.",
            file=sys.stderr,
        )
        return 1
    return 0


def estimate_note(session: Session) -> str:
    est = session.doc.get("estimate")
    if not est:
        return ""
    from foldwise.progress import clock

    bound = "up to " if is_bound(est) else ""
    return f" (estimated {bound}{clock(est['seconds'])} before training)"


def finish(cfg: DictConfig, layout: P.Layout, trained: float | None = None) -> dict[str, int]:
    """Close the MLflow runs, drop result files not in this plan, count outcomes."""
    from foldwise import tracking
    from foldwise.tracking import pending

    session = Session(read_json(layout.sweep_dir / "session.json"))
    results = collect(session, layout.sweep_dir)
    keep = {
        job_path(layout.sweep_dir, h, f).name
        for h in results
        for f in range(session.doc["n_folds"])
    }
    for stale in (layout.sweep_dir / "jobs").glob("*.json"):
        if stale.name not in keep:
            stale.unlink()
    record_epochs(layout, results, session.doc.get("dataset", {}).get("digest", ""))
    record_pace(layout, session, results, trained, str(cfg.trainer.accelerator))
    counts = {"ok": 0, "failed": 0, "missing": 0, "pruned": 0}
    durable = durable_client(cfg, layout)
    for conf in session.configs:
        rows = results[conf["hash"]]
        # A pruned trial's folds after pruned_after were never meant to train.
        cut = conf.get("pruned_after", len(rows))
        states = ["pruned" if i >= cut else "missing" if r is None else r["status"]
                  for i, r in enumerate(rows)]  # fmt: skip
        for s in states:
            counts[s] += 1
        if not session.doc.get("fold_runs", True):
            _log_resample_table(durable, conf, rows)
        if "pruned" in states:  # see foldwise.sweep.trials: KILLED, tagged foldwise.pruned
            durable.log(conf["run_id"], tags={f"{tracking.TAG}pruned": "true"})
            durable.terminate(conf["run_id"], "KILLED")
            continue
        durable.terminate(conf["run_id"], "FINISHED" if set(states) == {"ok"} else "FAILED")
    counts["total"] = session.n_jobs
    durable.log(
        session.doc["sweep_run_id"],
        metrics={
            "jobs_ok": counts["ok"],
            "jobs_failed": counts["failed"],
            "jobs_missing": counts["missing"],
            **({"jobs_pruned": counts["pruned"]} if counts["pruned"] else {}),
            "sweep_seconds": time.time() - session.doc["started"],
            # this process's time in MLflow calls (with the basic launcher: all of it;
            # joblib workers report theirs per stack as stack_tracking_seconds)
            "tracking_seconds": tracking.busy_seconds(),
            # ...and the part of it the sweep waited for (the rest overlapped training)
            "tracking_blocking_seconds": tracking.blocking_seconds(),
            **({"training_seconds": trained} if trained is not None else {}),
            **(
                {"estimated_training_seconds": session.doc["estimate"]["seconds"]}
                if session.doc.get("estimate")
                else {}
            ),
        },
    )
    ok = counts["ok"] + counts["pruned"] == counts["total"]
    durable.terminate(session.doc["sweep_run_id"], "FINISHED" if ok else "FAILED")
    counts["pending"] = len(pending.pending(layout.root))
    return counts


def pending_note(counts: dict[str, int], session_uri: str) -> str:
    """What to do about tracking records MLflow did not take (empty when none)."""
    from foldwise.tracking import pending

    n = counts.get("pending", 0)
    if not n:
        return ""
    why = f" ({pending.Durable.last_error})" if pending.Durable.last_error else ""
    return (
        f"[foldwise] MLflow at {session_uri} was unreachable{why}: every result is on disk, "
        f"and {n} tracking record(s) wait in .foldwise/pending/. Once it is back, run "
        "`python -m foldwise.tracking.sync` (or any later sweep) to send them."
    )
