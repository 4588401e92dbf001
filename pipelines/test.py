"""DVC stage `test`: open the lockbox — the only stage that reads data/lockbox/test.parquet.

Writes results/test_metrics.json (DVC metrics) and appends to lockbox/audit.jsonl.
"""

from foldwise import params
from foldwise.errors import run_stage
from foldwise.lockbox import opening as lockbox


def main() -> None:
    lockbox.run(*params.start("test"))


if __name__ == "__main__":
    run_stage(main)
