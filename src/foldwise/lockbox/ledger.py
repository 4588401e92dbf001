"""The lockbox's records, and the checks that they agree and that nothing was edited.

Every opening is recorded in three places that fail differently:

* ``lockbox/audit.jsonl`` — in git: the shared, reviewed history. A DVC output
  (``cache: false``), so it can be deleted, truncated or checked out to an old version.
* the **ledger**, ``.foldwise/lockbox/ledger.jsonl`` at the shared root (it escapes
  ``dvc exp run --temp`` copies) — a copy of every audit entry this checkout has made or
  seen. **Git-ignored on purpose**: what resets a tracked log (``git checkout`` /
  ``reset`` / ``stash`` of an older version, ``dvc checkout``, ``dvc exp apply``, an
  uncommitted deletion) leaves it alone; if it were tracked, the same command would
  rewind both. A fresh clone starts with an empty ledger and adopts the log's entries.
* MLflow's lockbox runs (the tracking store may be a shared server): tags name the
  test set, the model, the dataset source and who opened it.

A record may know *more* than the audit log only if the log lost something, so the test
stage (and the split stage, before training) refuses when the ledger or MLflow knows
openings the log lacks, or when the log's copy of an opening differs from the ledger's.
The log may know more than the ledger (``git pull``, a fresh clone): those entries are
adopted. Openings are appended to the ledger first, then to the log, then scored into
MLflow, so a crash in between leaves a record that says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from foldwise.errors import FoldwiseError, run_stage
from foldwise.files import sha256_file, sha256_json, sha256_table, shared_root
from foldwise.lockbox import audit as audit_log
from foldwise.lockbox import rows

AUDIT = "lockbox/audit.jsonl"
RESTORE_LOG = (
    f"restore the audit log from git: `git checkout -- {AUDIT}` (or find the last good "
    f"version with `git log -p -- {AUDIT}`); never edit it by hand."
)


def path(root: Path) -> Path:
    return shared_root(root) / ".foldwise" / "lockbox" / "ledger.jsonl"


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """The lock the test stage holds while it opens the lockbox (see ``lockbox.run``)."""
    lock = audit_log.authority(root).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def key(entry: dict[str, Any]) -> tuple[str, str]:
    """An opening's identity: one model opens one test set at most once (a repeat adds
    no entry), so this survives git merges that reorder lines."""
    return entry["test_sha256"], entry["model_sha256"]


def describe(entry: dict[str, Any]) -> str:
    return (
        f"{entry.get('opened_at')} test set {entry['test_sha256'][:12]}, model "
        f"{entry.get('label')} ({entry['model_sha256'][:12]})"
    )


def read(root: Path) -> list[dict[str, Any]]:
    """The ledger's entries, in the order it recorded them."""
    p = path(root)
    if not p.is_file():
        return []
    out = []
    for n, line in enumerate(p.read_text().splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line)["entry"])
            except (ValueError, KeyError) as err:
                raise FoldwiseError(
                    f"the lockbox ledger {p} line {n} is unreadable ({err}).",
                    "the ledger is foldwise's own copy of the audit log; restore it from a "
                    "backup, or move it aside knowingly (the audit log and MLflow still hold "
                    "the openings).",
                ) from err
    return out


def _append(root: Path, entry: dict[str, Any], how: str) -> None:
    p = path(root)
    p.parent.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with open(p, "a") as fh:
        fh.write(json.dumps({"recorded_at": now, "how": how, "entry": entry}, sort_keys=True))
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(log: Any, ledger: Any, where: str = "", limit: int = 5) -> list[str]:
    """``scores.acc.value: audit log 1.0, ledger 0.93`` for each differing field (down to
    nested values; the first ``limit``)."""
    if sha256_json(log) == sha256_json(ledger):
        return []
    if isinstance(log, dict) and isinstance(ledger, dict):
        out = []
        for k in sorted(set(log) | set(ledger)):
            out += differences(log.get(k), ledger.get(k), f"{where}{k}.", limit - len(out))
            if len(out) >= limit:
                break
        return out
    return [f"{where.rstrip('.')}: audit log {_short(log)}, ledger {_short(ledger)}"]


def load(root: Path, *, adopt: bool = True) -> list[dict[str, Any]]:
    """The audit log's entries, once checked against the ledger; raises if they disagree.

    Entries the ledger has not seen yet are adopted (``adopt``). Call under
    :func:`locked`."""
    log = audit_log.authority(root)
    entries = audit_log.read_audit(log)
    ledger = read(root)
    in_log = {key(e): e for e in entries}
    edited, missing = [], []
    for e in ledger:
        if key(e) not in in_log:
            missing.append(e)
        elif sha256_json(in_log[key(e)]) != sha256_json(e):
            edited.append((e, differences(in_log[key(e)], e)))
    if edited:
        e, diff = edited[0]
        raise FoldwiseError(
            f"{AUDIT} was edited after the lockbox was opened: its entry for the opening "
            f"{describe(e)} differs from the copy recorded at opening time in the ledger "
            f"{path(root)} — {'; '.join(diff)}"
            + (f" (and {len(edited) - 1} more edited entries)" if len(edited) > 1 else "")
            + ".",
            RESTORE_LOG,
        )
    if missing:
        raise FoldwiseError(
            f"{AUDIT} lacks {len(missing)} lockbox opening(s) that the ledger {path(root)} "
            f"recorded: {'; '.join(describe(e) for e in missing)}. Deleting or truncating the "
            "audit log does not reset the lockbox.",
            RESTORE_LOG + " If those lines were never committed, "
            "`python -m foldwise.lockbox.ledger restore` appends them back from the ledger.",
        )
    if adopt:
        known = {key(e) for e in ledger}
        for e in entries:
            if key(e) not in known:
                _append(root, e, "adopted")
                known.add(key(e))
    return entries


def record(root: Path, log: Path, entry: dict[str, Any]) -> None:
    """A new opening: the ledger first, then the audit log (call under :func:`locked`)."""
    _append(root, entry, "opened")
    audit_log.append_audit(log, entry)
    reused = entry.get("reused_rows")
    if reused:
        print(
            f"[test] WARNING: this test set reuses {reused['n_seen']} of its "
            f"{reused['n_test']} rows seen at earlier openings (lockbox.reuse_rows_reason: "
            f"{reused['reason']!r}); the score is flagged reused_rows."
        )


def restore(root: Path) -> list[dict[str, Any]]:
    """Append to the audit log the openings only the ledger still has."""
    with locked(root):
        log = audit_log.authority(root)
        entries = audit_log.read_audit(log)
        in_log = {key(e) for e in entries}
        lost = [e for e in read(root) if key(e) not in in_log]
        for e in lost:
            audit_log.append_audit(log, e)
        load(root)  # anything still disagreeing (an edited entry) is git's to restore
    return lost


# ------------------------------------------------------------------ at opening time
def opened_by(root: Path) -> str:
    """Who opens the lockbox: the identity git would sign a commit with, else the OS user."""
    try:
        ident = subprocess.run(
            ["git", "var", "GIT_AUTHOR_IDENT"], cwd=root, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        return ident.rsplit(" ", 2)[0]  # drop the timestamp and zone
    except (OSError, subprocess.SubprocessError):
        return f"{getpass.getuser()} (OS user; no git identity)"


def opening_fields(cfg: Any, layout: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """What an audit entry adds for integrity: rows, split, manifest hash, opener."""
    return {
        "dataset": manifest.get("dataset"),
        "row_ids": manifest.get("row_ids"),
        "reused_rows": manifest.get("reused_rows"),
        "split": {
            k: manifest.get(k)
            for k in ("scheme", "seed", "test_fraction", "lockbox_by", "test_rows")
        },
        "manifest_sha256": sha256_file(layout.manifest),
        "opened_by": opened_by(layout.root),
    }


def metrics_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """``results/test_metrics.json``: the row-reuse flag and who opened the lockbox."""
    reused = entry.get("reused_rows")
    return {
        "reused_rows": bool(reused),
        "reuse_rows_reason": reused["reason"] if reused else None,
        "opened_by": entry.get("opened_by"),
    }


def mlflow_tags(entry: dict[str, Any]) -> dict[str, Any]:
    from foldwise.tracking import TAG

    reused = entry.get("reused_rows")
    return {
        f"{TAG}dataset_source": (entry.get("dataset") or {}).get("source"),
        f"{TAG}opened_at": entry["opened_at"],
        f"{TAG}opened_by": entry.get("opened_by"),
        f"{TAG}reused_rows": bool(reused),
        **({f"{TAG}reuse_rows_reason": reused["reason"]} if reused else {}),
    }


# ------------------------------------------------------------------ tamper checks
# The manifest's fields that say what the lockbox is; the others (folds, checks) may
# change with a re-split of the dev rows that keeps the test set.
LOCKBOX_FIELDS = ("test_sha256", "n_test", "lockbox_by", "test_rows", "reused_rows")


def check_files(
    cfg: Any,
    layout: Any,
    manifest: dict[str, Any],
    test_ids: np.ndarray,
    test_sha256: str,
    entries: list[dict[str, Any]],
) -> None:
    """The test rows and the manifest are what the split stage wrote, and what earlier
    openings of this test set recorded; raises naming what changed."""
    opened = {e["test_sha256"]: e for e in entries}  # the last opening of each test set
    if test_sha256 != manifest["test_sha256"]:
        claimed = manifest["test_sha256"]
        if test_sha256 in opened and claimed not in opened:
            what = (
                "data/split/manifest.json was changed: data/lockbox/test.parquet is the test "
                f"set opened {describe(opened[test_sha256])}, but the manifest names "
                f"{claimed[:12]}"
            )
        else:
            seen = f" (opened {describe(opened[claimed])})" if claimed in opened else ""
            what = (
                f"data/lockbox/test.parquet was changed after the split: its rows hash to "
                f"{test_sha256[:12]}, but the split manifest recorded {claimed[:12]}{seen}"
            )
        raise FoldwiseError(
            f"{what}. The lockbox's rows must not change once split.",
            "restore the split's outputs: `dvc checkout data/lockbox/test.parquet "
            "data/split/manifest.json` (or re-run `dvc repro split`). To test on changed or "
            "new rows, change the dataset and re-split: the split stage decides whether those "
            "rows are new.",
        )
    source = rows.source_id(cfg.data, layout.root)
    if (manifest.get("dataset") or {}).get("source") != source or "row_ids" not in manifest:
        raise FoldwiseError(
            f"data/split/manifest.json does not name this dataset's rows (params: {source}; "
            f"manifest: {(manifest.get('dataset') or {}).get('source')}).",
            "re-run the split stage: `dvc repro split`.",
        )
    if rows.encode_ids(test_ids) != manifest["row_ids"]["test"]:
        raise FoldwiseError(
            "data/split/manifest.json was changed: its test row ids are not those of "
            "data/lockbox/test.parquet.",
            "restore it: `dvc checkout data/split/manifest.json` (or `dvc repro split`).",
        )
    before = opened.get(test_sha256)
    if before and before.get("manifest_sha256") not in (None, sha256_file(layout.manifest)):
        split = before.get("split") or {}
        recorded = {"test_sha256": before["test_sha256"], "n_test": before["n_test"],
                    "lockbox_by": split.get("lockbox_by"), "test_rows": split.get("test_rows"),
                    "reused_rows": before.get("reused_rows")}  # fmt: skip
        changed = [
            f"{k}: opening {_short(recorded[k])}, manifest now {_short(manifest.get(k))}"
            for k in LOCKBOX_FIELDS
            if sha256_json(recorded[k]) != sha256_json(manifest.get(k))
        ]
        if changed:
            raise FoldwiseError(
                f"data/split/manifest.json was changed since this test set was opened "
                f"({describe(before)}): {'; '.join(changed)}.",
                "restore it: `dvc checkout data/split/manifest.json` (or `dvc repro split`).",
            )
    reuse = rows.overlap(test_ids, test_sha256, rows.openings_of(entries, source))
    if reuse and not manifest.get("reused_rows"):
        raise FoldwiseError(
            f"data/lockbox/test.parquet holds {reuse['n_seen']} rows of {source} seen at earlier "
            f"openings ({'; '.join(reuse['openings'])}), but the split manifest records no "
            "authorised reuse: the test set or the manifest was changed outside the split "
            "stage.",
            "re-run `dvc repro split`: it refuses such a split, or flags it when "
            "lockbox.reuse_rows_reason is set.",
        )


def check(cfg: Any, layout: Any, test: Any) -> None:
    """The test stage's integrity checks on the test rows ``test`` (read by the test stage
    alone), before it loads a model. Call under :func:`locked`."""
    from foldwise.files import read_json, sha256_table

    entries = load(layout.root)
    manifest = read_json(layout.manifest)
    check_files(cfg, layout, manifest, test["row_id"].to_numpy(), sha256_table(test), entries)


def check_mlflow(
    cfg: Any, entries: list[dict[str, Any]], manifest: dict[str, Any], test_sha256: str
) -> None:
    """MLflow's lockbox runs for this dataset or test set are all in the audit log.

    Runs with no test score are ignored: the opening crashed before the audit entry,
    and so before any score was shown (scores reach MLflow after the log)."""
    from mlflow.entities import ViewType

    from foldwise import tracking

    source = manifest["dataset"]["source"]
    c = tracking.client(cfg)
    exps = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)]
    if not exps:
        return
    runs = c.search_runs(
        exps, f"tags.`{tracking.TAG}lockbox` = 'opening'", run_view_type=ViewType.ALL,
        max_results=50000,
    )  # fmt: skip
    known = {key(e) for e in entries}
    lost = []
    for r in runs:
        t = r.data.tags
        mine = t.get(f"{tracking.TAG}dataset_source") == source
        if not (mine or t.get(f"{tracking.TAG}test_sha256") == test_sha256):
            continue
        if not any(m.startswith("test_") for m in r.data.metrics):
            continue
        k = (t.get(f"{tracking.TAG}test_sha256", ""), t.get(f"{tracking.TAG}model_sha256", ""))
        if k not in known:
            when = t.get(f"{tracking.TAG}opened_at") or dt.datetime.fromtimestamp(
                r.info.start_time / 1000, dt.UTC
            ).isoformat(timespec="seconds")
            lost.append(
                f"run {r.info.run_id} '{r.info.run_name}' ({when}, test set {k[0][:12]}, "
                f"model {k[1][:12]}, opened by {t.get(f'{tracking.TAG}opened_by', 'unknown')})"
            )
    if lost:
        raise FoldwiseError(
            f"MLflow ({tracking.tracking_uri(cfg)}) records {len(lost)} lockbox opening(s) of "
            f"{source} that neither {AUDIT} nor the ledger has: {'; '.join(lost)}. Deleting the "
            "audit log (and the ledger) does not reset the lockbox.",
            RESTORE_LOG + " If another clone made that opening, pull its audit log "
            "(`git pull`): its look counts for this test set too.",
        )


def main(argv: list[str]) -> None:
    if argv != ["restore"]:
        raise FoldwiseError(
            "usage: python -m foldwise.lockbox.ledger restore",
            "`restore` appends to the audit log the openings only the ledger still has.",
        )
    from foldwise.files import repo_root

    root = repo_root()
    lost = restore(root)
    for e in lost:
        print(f"restored: {describe(e)}")
    print(f"{len(lost)} opening(s) appended to {audit_log.authority(root)}; commit it.")


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]))


def plan_rows(cfg: Any, root: Path, table: pd.DataFrame) -> rows.Plan:
    """What the records say about this dataset, before the split is drawn.

    Reads (and checks) the audit log against the ledger (:func:`load`)."""
    source = rows.source_id(cfg.data, root)
    with locked(root):
        entries = load(root)
    seen = rows.openings_of(entries, source)
    ids = np.sort(table["row_id"].to_numpy(dtype=np.int64))
    mode = str(cfg.lockbox.get("test_rows", "all"))
    fixed = rows.new_rows(ids, source, seen) if mode == "new" else None
    return rows.Plan(source, sha256_table(table), ids, seen, entries, fixed)
