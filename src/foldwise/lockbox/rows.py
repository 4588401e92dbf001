"""Which rows of a dataset the lockbox has already shown: a new split is not a new lockbox.

A test set's hash names one draw of rows. Another ``seed``, ``split.test_fraction`` or
scheme draws another test set out of the *same* rows: rows whose test score was already
looked at, or that the opened model was trained and selected on. So every opening also
records rows: its dataset *source* (``sklearn:digits``, ``file:data/raw/t.csv#id=sample_id``,
``folder:data/raw/shapes``, ``dataset:mypkg.make_dataset``)
and, compactly, the row ids of the whole table and of the test set (in the audit entry,
the ledger and the split manifest). The identity is (source, row id), never the table's
hash: appending rows to a CSV changes its hash but not its old rows' ids. Table hashes
are recorded for information.

The rule, checked by the split stage before any training (and again by the test stage):
a test set is either one that was opened already — the same lockbox, where the test
stage's one-model rule applies — or made only of rows that no opening of this source has
seen. Dev rows may have been seen: training on rows whose test score was looked at
does not bias a score on rows nobody has looked at, which is what makes "append new
rows, test only on them" (``lockbox.test_rows=new``) honest. Otherwise the split is
refused unless ``lockbox.reuse_rows_reason`` says why; the split, the opening and the
result are then flagged ``reused_rows``, and each reason authorises one test set.
"""

from __future__ import annotations

import base64
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foldwise.errors import FoldwiseError
from foldwise.files import shared_root

TEST_ROWS = ("all", "new")


# ------------------------------------------------------------------ row ids on disk
def encode_ids(ids: Any) -> str:
    """Sorted unique row ids as ``z1:`` + base64(zlib(int64 deltas)): a contiguous range
    costs a few bytes, a random tenth of 100k rows ~2 bytes per id, and the audit log
    stays one readable line per opening."""
    a = np.unique(np.asarray(ids, dtype=np.int64))
    deltas = np.diff(a, prepend=np.int64(0)).astype("<i8")
    return "z1:" + base64.b64encode(zlib.compress(deltas.tobytes(), 9)).decode()


def decode_ids(text: str) -> np.ndarray:
    if not text.startswith("z1:"):
        raise ValueError(f"unknown row-id encoding {text[:8]!r}")
    raw = zlib.decompress(base64.b64decode(text[3:]))
    return np.cumsum(np.frombuffer(raw, dtype="<i8")).astype(np.int64)


# ------------------------------------------------------------------ dataset identity
def source_id(data: Any, root: Path) -> str:
    """Where the rows come from, independent of split and content: a built-in dataset's
    name, a file's path (repo-relative when inside the repo) and what numbers its rows
    (``data.id_column``, or position), an image folder's path, or a Dataset factory's
    ``_target_``. Renaming the file or folder makes a new source."""
    name = str(data.get("name"))
    if name == "dataset":  # its indices name the rows: append, never reorder
        return f"dataset:{data.get('_target_')}"
    if name not in ("csv", "image_folder"):
        return f"sklearn:{name}"
    path = Path(os.path.normpath(Path(str(data.get("path"))).expanduser()))  # ./a == a
    if path.is_absolute():
        base = shared_root(root)
        path = path.resolve()
        path = path.relative_to(base) if path.is_relative_to(base) else path
    if name == "image_folder":  # row ids: the images' paths within it
        return f"folder:{path.as_posix()}"
    ids = data.get("id_column")
    return f"file:{path.as_posix()}#" + (f"id={ids}" if ids is not None else "position")


# ------------------------------------------------------------------ earlier openings
@dataclass(frozen=True)
class Seen:
    """One opened test set of a source: which rows it showed, and which rows existed."""

    test_sha256: str
    opened_at: str  # first opening
    labels: tuple[str, ...]  # models that opened it
    seed: Any
    table: np.ndarray  # row ids of the whole table when it was opened (dev + test)
    test: np.ndarray
    reused_rows: dict | None  # the authorisation this test set was opened under

    def describe(self) -> str:
        return (
            f"{self.opened_at} test set {self.test_sha256[:12]} ({len(self.test)} rows, "
            f"seed {self.seed}, model {', '.join(self.labels)})"
        )


def openings_of(entries: list[dict[str, Any]], source: str) -> list[Seen]:
    """The opened test sets of ``source``, one per test set, from audit/ledger entries.

    Entries written before rows were recorded have no ``row_ids``; only their test
    hash protects them (the test stage's one-model rule)."""
    by_test: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if (e.get("dataset") or {}).get("source") == source and e.get("row_ids"):
            by_test.setdefault(e["test_sha256"], []).append(e)
    out = []
    for sha, group in by_test.items():
        first = group[0]
        out.append(
            Seen(
                test_sha256=sha,
                opened_at=first["opened_at"],
                labels=tuple(dict.fromkeys(e["label"] for e in group)),
                seed=(first.get("split") or {}).get("seed"),
                table=decode_ids(first["row_ids"]["table"]),
                test=decode_ids(first["row_ids"]["test"]),
                reused_rows=next((e["reused_rows"] for e in group if e.get("reused_rows")), None),
            )
        )
    return out


def _union(arrays: list[np.ndarray]) -> np.ndarray:
    return np.unique(np.concatenate(arrays)) if arrays else np.empty(0, dtype=np.int64)


def overlap(test_ids: np.ndarray, test_sha256: str, seen: list[Seen]) -> dict[str, Any] | None:
    """How the test set ``test_ids`` reuses rows of *other* opened test sets (None: fresh)."""
    others = [s for s in seen if s.test_sha256 != test_sha256]
    shared = np.intersect1d(test_ids, _union([s.table for s in others]))
    if not len(shared):
        return None
    in_test = np.intersect1d(shared, _union([s.test for s in others]))
    hit = [s for s in others if len(np.intersect1d(test_ids, s.table))]
    return {"n_seen": len(shared), "n_seen_in_test": len(in_test),
            "n_test": len(test_ids), "openings": [s.describe() for s in hit]}  # fmt: skip


def new_rows(table_ids: np.ndarray, source: str, seen: list[Seen]) -> np.ndarray:
    """``lockbox.test_rows=new``: the test set is every row no earlier opening has seen.

    Once that test set is opened its rows are seen too, so re-running the split finds it
    again as the opening whose test set is exactly what the other openings left unseen.
    """
    if not seen:
        raise FoldwiseError(
            f"lockbox.test_rows=new tests on rows added since the last opening, but {source} "
            "has no opening yet.",
            "use lockbox.test_rows=all (the default) for the first split of a dataset.",
        )
    fresh = np.setdiff1d(table_ids, _union([s.table for s in seen]))
    if len(fresh):
        return fresh
    for s in reversed(seen):
        others = [o for o in seen if o.test_sha256 != s.test_sha256]
        if np.array_equal(np.setdiff1d(table_ids, _union([o.table for o in others])), s.test):
            return s.test
    raise FoldwiseError(
        f"lockbox.test_rows=new, but every row of {source} was already seen at a lockbox "
        f"opening ({len(table_ids)} rows; last opening {seen[-1].describe()}).",
        "append genuinely new rows to the dataset (new row ids), or go back to "
        "lockbox.test_rows=all and the split that was opened.",
    )


# ------------------------------------------------------------------ the split stage
@dataclass(frozen=True)
class Plan:
    source: str
    table_sha256: str
    table_ids: np.ndarray
    seen: list[Seen]
    entries: list[dict[str, Any]]
    test_ids: np.ndarray | None  # fixed test rows (test_rows=new), else None: a seeded draw


def admit(p: Plan, cfg: Any, result: Any) -> dict[str, Any]:
    """The manifest's row fields for a :class:`foldwise.split.SplitResult`, or a refusal
    if its test set reuses rows an earlier opening has seen."""
    test_sha = result.manifest["test_sha256"]
    test_ids = np.sort(result.test["row_id"].to_numpy(dtype=np.int64))
    fields: dict[str, Any] = {
        "dataset": {"source": p.source, "table_sha256": p.table_sha256,
                    "n_rows": len(p.table_ids)},
        "row_ids": {"table": encode_ids(p.table_ids), "test": encode_ids(test_ids)},
        "test_rows": str(cfg.lockbox.get("test_rows", "all")),
        "reused_rows": None,
    }  # fmt: skip
    same = [s for s in p.seen if s.test_sha256 == test_sha]
    if same:  # the lockbox that was opened: keep the authorisation it was opened under
        fields["reused_rows"] = same[0].reused_rows
        return fields
    reuse = overlap(test_ids, test_sha, p.seen)
    if reuse is None:
        return fields
    reason = cfg.lockbox.get("reuse_rows_reason")
    reason = "" if reason is None else str(reason).strip()
    if not reason:
        raise FoldwiseError(
            f"this split's test set reuses rows of {p.source} that the lockbox already showed: "
            f"{reuse['n_seen']} of its {reuse['n_test']} rows were seen at an earlier opening "
            f"({reuse['n_seen_in_test']} in an opened test set, the others as dev rows the "
            f"opened model was trained and selected on): {'; '.join(reuse['openings'])}. "
            "A new split of the same rows is not a new lockbox: its score would not estimate "
            "performance on unseen data. Nothing was trained.",
            "go back to the split that was opened (its seed, split.test_fraction and scheme), "
            "or append genuinely new rows to the dataset and test only on them "
            "(lockbox.test_rows=new), or — knowingly — set "
            'lockbox.reuse_rows_reason="<why>"; the result is then flagged reused_rows.',
        )
    used = [s for s in p.seen if (s.reused_rows or {}).get("reason") == reason]
    if used:
        raise FoldwiseError(
            f"lockbox.reuse_rows_reason {reason!r} already authorised the test set opened "
            f"{used[0].describe()}; each reason authorises one test set.",
            "write the reason for this split.",
        )
    fields["reused_rows"] = {"reason": reason, **reuse}
    return fields
