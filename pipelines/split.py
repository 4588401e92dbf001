"""DVC stage `split`: table → lockbox test rows + dev rows + CV folds + manifest.

data/lockbox/test.parquet is written here and read only by the `test` stage.
"""

import pandas as pd

from foldwise import params
from foldwise.errors import run_stage
from foldwise.files import read_json, repo_root, write_json, write_table
from foldwise.split import split


def main() -> None:
    cfg = params.load()
    layout = params.Layout(repo_root())
    meta = read_json(layout.meta)
    # Validates before anything is written.
    result = split(pd.read_parquet(layout.table), cfg, class_names=meta["classes"])
    write_table(layout.test, result.test)
    write_table(layout.dev, result.dev)
    write_json(layout.folds, result.folds_doc)
    write_json(layout.manifest, result.manifest)
    m = result.manifest
    print(
        f"[split] test (lockbox): {m['n_test']} rows · dev: {m['n_dev']} rows · "
        f"{m['scheme']} k={m['n_splits']} · test sha256 {m['test_sha256'][:12]}"
    )


if __name__ == "__main__":
    run_stage(main)
