"""The lockbox split and the resamples of the dev rows.

Order matters: the test set is carved out first (seeded), and a resampling scheme
(:mod:`foldwise.split.schemes`) only ever sees the remaining *dev* rows. The test set
respects the data's structure: with a group column no group is on both sides; with a
temporal scheme the test set is the latest period. Leakage guards
(:mod:`foldwise.split.guards`) check the result before anything is written.

Resamples are stored as row ids, not positions, so they stay meaningful whatever order
a table is read in. ``folds.json`` omits a resample's training ids when they are
simply the other dev rows (k-fold, leave-one-out, ...), which keeps exhaustive schemes
small on disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from foldwise.errors import FoldwiseError
from foldwise.files import sha256_json, sha256_table
from foldwise.split import guards
from foldwise.split.schemes import SCHEMES, Resample, Scheme, make_scheme, stratify_blockers

__all__ = ["SCHEMES", "Resample", "Scheme", "SplitResult", "holdout", "load_folds", "split"]


@dataclass(frozen=True)
class SplitResult:
    dev: pd.DataFrame
    test: pd.DataFrame
    folds: list[Resample]
    folds_doc: dict  # what folds.json holds
    manifest: dict
    checks: list[guards.Check]


def _name(code: int, class_names: list[str] | None) -> str | int:
    return class_names[int(code)] if class_names else int(code)


def holdout(
    table: pd.DataFrame,
    test_fraction: float,
    seed: int,
    class_names: list[str] | None = None,
    *,
    by: str = "class",
    regression: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The lockbox: ``(dev, test)``, both in row-id order.

    ``by="class"``: stratified, seeded (``train_test_split``). ``by="random"``: the same,
    unstratified (a regression target has no classes). ``by="group"``: whole
    groups go to test (``GroupShuffleSplit``; ``test_fraction`` is a share of groups).
    ``by="time"``: the latest ``test_fraction`` of rows by time; rows sharing the
    cut-off timestamp all go to test, so every test row is later than every dev row.
    """
    y = table["target"].to_numpy()
    if by == "group":
        dev, test = _by_group(table, test_fraction, seed)
    elif by == "time":
        dev, test = _by_time(table, test_fraction)
    elif by == "random":
        from sklearn.model_selection import train_test_split

        dev, test = train_test_split(table, test_size=test_fraction, random_state=seed)
        tidy = lambda df: df.sort_values("row_id").reset_index(drop=True)  # noqa: E731
        return tidy(dev), tidy(test)
    else:
        n_test = int(np.ceil(test_fraction * len(y)))
        lonely, too_small = stratify_blockers(y, n_test, class_names)
        classes = np.unique(y)
        if lonely:
            raise FoldwiseError(
                f"classes {lonely} have a single row; a stratified test set needs 2+ per class.",
                "drop those classes or collect more rows.",
            )
        if too_small:
            raise FoldwiseError(
                f"split.test_fraction={test_fraction} gives {n_test} test rows out of {len(y)}; "
                f"a stratified split of {len(classes)} classes needs at least {len(classes)} "
                "rows on each side.",
                "choose a test_fraction that leaves at least one row per class in test and dev.",
            )
        from sklearn.model_selection import train_test_split

        dev, test = train_test_split(table, test_size=test_fraction, stratify=y, random_state=seed)
    missing = [] if regression else sorted(set(np.unique(y)) - set(np.unique(dev["target"])))
    if missing:
        raise FoldwiseError(
            f"the {by} holdout leaves no dev rows of classes "
            f"{[_name(c, class_names) for c in missing]}; no model could learn them.",
            "lower split.test_fraction or change the seed.",
        )
    tidy = lambda df: df.sort_values("row_id").reset_index(drop=True)  # noqa: E731
    return tidy(dev), tidy(test)


def fixed_holdout(
    table: pd.DataFrame,
    test_ids: np.ndarray,
    class_names: list[str] | None = None,
    regression: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(dev, test)`` with the given test rows, both in row-id order."""
    in_test = table["row_id"].isin(test_ids)
    dev, test = table[~in_test], table[in_test]
    missing = (
        []
        if regression
        else sorted(set(np.unique(table["target"])) - set(np.unique(dev["target"])))
    )
    if missing:
        raise FoldwiseError(
            f"the new rows hold every row of classes {[_name(c, class_names) for c in missing]}; "
            "testing only on them leaves no dev rows of those classes to learn from.",
            "add rows of those classes to the dev data as well.",
        )
    tidy = lambda df: df.sort_values("row_id").reset_index(drop=True)  # noqa: E731
    return tidy(dev), tidy(test)


def _by_group(table: pd.DataFrame, test_fraction: float, seed: int):
    from sklearn.model_selection import GroupShuffleSplit

    n_groups = table["group"].nunique()
    if n_groups < 2:
        raise FoldwiseError(
            f"data.group_column has {n_groups} group; a grouped test set needs 2 or more."
        )
    n_test = int(np.ceil(test_fraction * n_groups))
    if n_test >= n_groups:
        raise FoldwiseError(
            f"split.test_fraction={test_fraction} of {n_groups} groups puts every group in the "
            "test set (with a group column the test fraction is a share of groups).",
            "lower split.test_fraction, or collect more groups.",
        )
    gss = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    dev_pos, test_pos = next(gss.split(np.zeros(len(table)), groups=table["group"].to_numpy()))
    return table.iloc[dev_pos], table.iloc[test_pos]


def _by_time(table: pd.DataFrame, test_fraction: float):
    times = np.sort(table["time"].to_numpy())
    n_test = int(np.ceil(test_fraction * len(times)))
    cutoff = times[len(times) - n_test]
    test = table[table["time"] >= cutoff]
    dev = table[table["time"] < cutoff]
    if dev.empty:
        raise FoldwiseError(
            f"every row shares the latest timestamp {cutoff}; a temporal test set needs "
            "earlier rows for dev.",
        )
    return dev, test


def lockbox_mode(scheme: Scheme, table: pd.DataFrame, regression: bool = False) -> str:
    """How the test set is carved: by time for temporal schemes, else by group when
    the data has groups (rows of one group are not independent), else by class (at
    random for a regression target)."""
    if scheme.temporal:
        if "time" not in table.columns:
            raise FoldwiseError(
                f"split={scheme.name} needs times, but the data has no time column.",
                "set data.time_column to the column holding each row's timestamp.",
            )
        return "time"
    if "group" in table.columns:
        return "group"
    return "random" if regression else "class"


def dev_order(dev: pd.DataFrame, scheme: Scheme) -> pd.DataFrame:
    """The row order the scheme's splitter sees: time order for temporal schemes
    (ties by row id), else row-id order."""
    if scheme.temporal:
        return dev.sort_values(["time", "row_id"], kind="stable").reset_index(drop=True)
    return dev


def split(
    table: pd.DataFrame,
    cfg: DictConfig,
    class_names: list[str] | None = None,
    test_ids: np.ndarray | None = None,
    *,
    regression: bool = False,
) -> SplitResult:
    """Holdout, resamples, guards; everything is checked before anything is returned.

    ``class_names`` (the original labels, see :class:`foldwise.data.Meta`) only make
    error messages speak the user's labels instead of codes. ``test_ids`` fixes the test
    rows instead of drawing them (``lockbox.test_rows=new``: the rows no opening has seen).
    """
    scheme = make_scheme(cfg.split, int(cfg.seed))
    mode = lockbox_mode(scheme, table, regression)
    frac = float(cfg.split.test_fraction)
    if test_ids is None:
        dev, test = holdout(table, frac, int(cfg.seed), class_names, by=mode,
                            regression=regression)  # fmt: skip
    else:
        dev, test = fixed_holdout(table, test_ids, class_names, regression)
        mode = "new_rows"
    order = dev_order(dev, scheme)
    groups = order["group"].to_numpy() if "group" in order.columns else None
    resamples = scheme.split(
        order["row_id"].to_numpy(), order["target"].to_numpy(), groups, class_names
    )
    checks = guards.run_all(dev, test, resamples, scheme, str(cfg.split.get("duplicates", "warn")))
    folds_doc = folds_document(scheme, dev, resamples)
    manifest = {
        "scheme": scheme.name,
        "kind": scheme.kind,
        "options": scheme.opts,
        "n_splits": len(resamples),
        "shuffle": bool(scheme.opts.get("shuffle", scheme.randomized)),
        "seed": int(cfg.seed),
        "test_fraction": frac,
        "lockbox_by": mode,
        "task": "regression" if regression else "classification",
        "n_dev": len(dev),
        "n_test": len(test),
        "dev_sha256": sha256_table(dev),
        "test_sha256": sha256_table(test),
        "folds_sha256": sha256_json(folds_doc),
        "checks": [c.to_dict() for c in checks],
    }
    if "group" in dev.columns:
        manifest["n_groups"] = {"dev": int(dev["group"].nunique()),
                                "test": int(test["group"].nunique())}  # fmt: skip
    return SplitResult(dev, test, resamples, folds_doc, manifest, checks)


# The manifest's keys that describe the dev rows and their resamples (plus the test
# set's row *ids*, not its values): all that the sweep, nested, curves and refit stages
# may depend on. Editing the test rows' feature values leaves this file byte-identical,
# so DVC re-runs nothing between the split and the test stage (tests/test_leakage_e2e.py).
DEV_KEYS = ("scheme", "kind", "options", "n_splits", "shuffle", "seed", "test_fraction",
            "lockbox_by", "task", "n_dev", "dev_sha256", "folds_sha256")  # fmt: skip


def dev_manifest(manifest: dict) -> dict:
    """``manifest`` without anything computed from the test rows' values."""
    out = {k: manifest[k] for k in DEV_KEYS if k in manifest}
    if "row_ids" in manifest:
        out["test_row_ids"] = manifest["row_ids"]["test"]
    return out


def folds_document(scheme: Scheme, dev: pd.DataFrame, resamples: list[Resample]) -> dict:
    """``folds.json``: a resample's ``train`` is omitted when it is the other dev rows."""
    dev_ids = sorted(dev["row_id"].tolist())
    entries, complement = [], False
    for r in resamples:
        e: dict = {"fold": r.index, "val": r.val}
        if (
            len(r.train) + len(r.val) == len(dev_ids)
            and r.role == "resample"
            and not (set(r.train) & set(r.val))
        ):
            complement = True
        else:
            e["train"] = r.train
        if r.role != "resample":
            e["role"] = r.role
        entries.append(e)
    doc = {"scheme": scheme.name, "kind": scheme.kind, "n_splits": len(resamples)}
    if complement:
        doc["dev"] = dev_ids
    doc["folds"] = entries
    return doc


def load_folds(doc: dict) -> list[Resample]:
    dev = doc.get("dev")
    out = []
    for f in doc["folds"]:
        val = list(f["val"])
        if "train" in f:
            train = list(f["train"])
        else:
            held = set(val)
            train = [i for i in dev if i not in held]
        out.append(Resample(int(f["fold"]), train, val, f.get("role", "resample")))
    return out
