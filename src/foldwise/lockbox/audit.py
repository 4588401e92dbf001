"""The lockbox audit log: append-only JSON lines, one per opening of a test set.

Kept in git (``lockbox/audit.jsonl``), never in DVC's cache. The authoritative copy
is the real checkout's, even when a stage runs inside a DVC temporary experiment copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from foldwise.errors import FoldwiseError
from foldwise.files import shared_root


def authority(root: Path) -> Path:
    """The audit log every opening is checked against and appended to."""
    return shared_root(root) / "lockbox" / "audit.jsonl"


def read_audit(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except ValueError as err:
                raise FoldwiseError(
                    f"{path} line {n} is not valid JSON ({err}).",
                    "restore the audit log from git (git checkout -- lockbox/audit.jsonl); "
                    "never edit it by hand.",
                ) from err
    return entries


def append_audit(path: Path, entry: dict[str, Any]) -> None:
    """Append one line and fsync it; earlier lines are never rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def openings_of_rows(root: Path, test_row_ids: str) -> list[dict[str, Any]]:
    """Earlier openings of a test set made of these rows (``rows.encode_ids``), whatever
    their values are now."""
    return [e for e in read_audit(authority(root))
            if (e.get("row_ids") or {}).get("test") == test_row_ids]  # fmt: skip


def openings(root: Path, test_sha256: str) -> list[dict[str, Any]]:
    """Earlier openings of the test set with this hash."""
    return [e for e in read_audit(authority(root)) if e["test_sha256"] == test_sha256]
