"""DVC stage `split`: table → lockbox test rows + dev rows + resamples + manifest.

data/lockbox/test.parquet is written here and read only by the `test` stage.
"""

import pandas as pd

from foldwise import params
from foldwise.errors import run_stage
from foldwise.files import read_json, write_json, write_table
from foldwise.lockbox import ledger, rows
from foldwise.split import dev_manifest, split

MARK = {"pass": "ok  ", "warn": "WARN", "skip": "-   ", "fail": "FAIL"}


def main() -> None:
    cfg, layout = params.start("split")
    meta = read_json(layout.meta)
    table = pd.read_parquet(layout.table)
    # Which rows earlier lockbox openings have seen (refuses if the records disagree).
    seen = ledger.plan_rows(cfg, layout.root, table)
    # Validates (and runs the leakage guards) before anything is written.
    result = split(
        table,
        cfg,
        class_names=meta["classes"],
        test_ids=seen.test_ids,
        regression=meta.get("task") == "regression",
    )
    # Refuses a test set that reuses seen rows (unless lockbox.reuse_rows_reason).
    m = {**result.manifest, **rows.admit(seen, cfg, result)}
    write_table(layout.test, result.test)
    write_table(layout.dev, result.dev)
    write_json(layout.folds, result.folds_doc)
    write_json(layout.manifest, m)
    write_json(layout.dev_manifest, dev_manifest(m))
    options = ", ".join(f"{k}={v}" for k, v in m["options"].items())
    print(
        f"[split] test (lockbox, by {m['lockbox_by']}): {m['n_test']} rows · dev: {m['n_dev']} "
        f"rows · {m['scheme']} ({options}): {m['n_splits']} resamples · test sha256 "
        f"{m['test_sha256'][:12]}"
    )
    for c in result.checks:
        print(f"[split] {MARK[c.outcome]} {c.name}: {c.detail}")
    if m["reused_rows"]:
        r = m["reused_rows"]
        print(
            f"[split] WARN reused rows: {r['n_seen']} of {r['n_test']} test rows were seen at "
            f"earlier openings (lockbox.reuse_rows_reason: {r['reason']!r}); the result will "
            "be flagged reused_rows."
        )


if __name__ == "__main__":
    run_stage(main)
