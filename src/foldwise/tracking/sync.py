"""Send MLflow what it missed while it was unreachable: ``python -m foldwise.tracking.sync``.

When the tracking server goes away mid-sweep, the sweep keeps training and writing its
result files, and every tracking record the server did not take (a fold run's scores
and curves, a run's final status, the sweep's totals) is kept as a file in
``.foldwise/pending/`` (see :class:`foldwise.tracking.pending.Durable`). Run this once the
server is back — the next sweep also does it first. Records are sent oldest first and
deleted once sent; a model that was recorded meanwhile (a resumed sweep trained it
again) is not recorded twice. Exit status 0 when nothing is left, 1 otherwise.

    python -m foldwise.tracking.sync            # the store of params.yaml / MLFLOW_TRACKING_URI
"""

from __future__ import annotations

import sys

from foldwise import params as P
from foldwise import tracking
from foldwise.errors import run_stage
from foldwise.files import repo_root
from foldwise.redact import redact
from foldwise.tracking import pending


def sync(root, cfg=None) -> tuple[int, int, list[str]]:
    """Replay the pending records of ``root``'s checkout; (sent, left, problems)."""
    uri = tracking.require(cfg)
    return pending.replay(tracking.client(cfg), uri, root)


def main(argv: list[str] | None = None) -> int:
    root = repo_root()
    params = root / "params.yaml"
    cfg = P.load(params) if params.is_file() else None
    waiting = pending.pending(root)
    if not waiting:
        print("[foldwise] sync: nothing pending.")
        return 0
    sent, left, problems = sync(root, cfg)
    uri = redact(tracking.tracking_uri(cfg))
    print(f"[foldwise] sync: {sent} record(s) sent to {uri}, {left} left in "
          f"{pending.pending_dir(root)}")  # fmt: skip
    for p in problems:
        print(f"[foldwise] sync: not sent: {p}", file=sys.stderr)
    if left and not problems:
        print("[foldwise] sync: the records left belong to another tracking URI; set "
              "MLFLOW_TRACKING_URI to it and run again.", file=sys.stderr)  # fmt: skip
    return 1 if left else 0


if __name__ == "__main__":
    run_stage(main)
