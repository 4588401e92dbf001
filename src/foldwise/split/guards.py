"""Leakage guards, checked when the split is made and recorded in the manifest.

Each guard returns a :class:`Check` (``pass``, ``warn``, ``fail`` or ``skip`` with the
numbers behind it). :func:`run_all` runs every guard; a ``fail`` stops the split stage
before anything is written. Duplicates between test and dev are a ``warn`` unless
``split.duplicates=error``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from foldwise.data import feature_columns
from foldwise.errors import FoldwiseError
from foldwise.split.schemes import Resample, Scheme


@dataclass(frozen=True)
class Check:
    name: str
    outcome: str  # pass | warn | fail | skip
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def test_disjoint(test: pd.DataFrame, resamples: list[Resample]) -> Check:
    test_ids = set(test["row_id"].tolist())
    used = set()
    for r in resamples:
        used.update(r.train)
        used.update(r.val)
    hit = len(test_ids & used)
    return Check(
        "test_rows_in_no_resample",
        "fail" if hit else "pass",
        f"{hit} test rows appear in a resample" if hit else
        f"none of the {len(test_ids)} test rows is in any of {len(resamples)} resamples",
    )  # fmt: skip


def train_val_disjoint(resamples: list[Resample]) -> Check:
    bad = [r.index for r in resamples if r.role != "apparent" and set(r.train) & set(r.val)]
    return Check(
        "train_val_disjoint",
        "fail" if bad else "pass",
        f"resamples {bad[:10]} validate on rows they train on" if bad
        else "no resample validates on a row it trains on",
    )  # fmt: skip


def groups_test_dev(dev: pd.DataFrame, test: pd.DataFrame, scheme: Scheme) -> Check:
    if "group" not in dev.columns:
        return Check("groups_test_dev_disjoint", "skip", "no data.group_column")
    shared = set(dev["group"]) & set(test["group"])
    if shared and scheme.temporal:
        # A temporal lockbox is the latest period: a group (customer, sensor) seen
        # earlier is expected in it; the estimate is for the future of known groups.
        return Check(
            "groups_test_dev_disjoint", "warn",
            f"{len(shared)} groups have rows before and after the temporal cut-off; the test "
            "score is for later rows of groups seen in training, not for new groups",
        )  # fmt: skip
    return Check(
        "groups_test_dev_disjoint",
        "fail" if shared else "pass",
        f"{len(shared)} groups in both test and dev, e.g. {sorted(map(str, shared))[:5]}"
        if shared
        else f"{test['group'].nunique()} test groups, {dev['group'].nunique()} dev groups, "
        "none shared",
    )


def groups_train_val(dev: pd.DataFrame, resamples: list[Resample], scheme: Scheme) -> Check:
    if "group" not in dev.columns:
        return Check("groups_train_val_disjoint", "skip", "no data.group_column")
    group = dev.set_index("row_id")["group"]
    bad = [
        r.index
        for r in resamples
        if r.role != "apparent" and set(group.loc[r.train]) & set(group.loc[r.val])
    ]
    if not bad:
        return Check("groups_train_val_disjoint", "pass", "no group on both sides of a resample")
    detail = f"{len(bad)} of {len(resamples)} resamples share groups between train and validation"
    if scheme.grouped:
        return Check("groups_train_val_disjoint", "fail", detail)
    # The user declared groups but chose a scheme that ignores them: say so loudly.
    return Check(
        "groups_train_val_disjoint", "warn",
        f"{detail}: split={scheme.name} ignores data.group_column (use a grouped scheme, e.g. "
        "split=group_kfold, for an estimate that holds for new groups)",
    )  # fmt: skip


def temporal_order(
    dev: pd.DataFrame, test: pd.DataFrame, resamples: list[Resample], scheme: Scheme
) -> Check:
    if not scheme.temporal:
        return Check("validation_after_training", "skip", f"split={scheme.name} is not temporal")
    time = dev.set_index("row_id")["time"]
    late, ties = [], []
    for r in resamples:
        last_train, first_val = time.loc[r.train].max(), time.loc[r.val].min()
        if first_val < last_train:
            late.append(r.index)
        elif first_val == last_train:
            ties.append(r.index)
    if len(test) and test["time"].min() <= dev["time"].max():
        late.append("test")
    if late:
        return Check("validation_after_training", "fail",
                     f"validation rows earlier than training rows in {late}")  # fmt: skip
    if ties:
        return Check(
            "validation_after_training", "warn",
            f"resamples {ties[:10]} share a timestamp between the last training and the first "
            "validation row (raise split.gap to separate them)",
        )  # fmt: skip
    return Check(
        "validation_after_training",
        "pass",
        "every validation block starts after its training rows; the test set is the latest period",
    )


def duplicates(dev: pd.DataFrame, test: pd.DataFrame, mode: str) -> Check:
    cols = feature_columns(dev)
    hashes = lambda df: pd.util.hash_pandas_object(df[cols], index=False)  # noqa: E731
    shared = int(np.isin(hashes(test).to_numpy(), hashes(dev).to_numpy()).sum())
    if not shared:
        return Check("test_dev_duplicates", "pass", "no test row's features equal a dev row's")
    return Check(
        "test_dev_duplicates",
        "fail" if mode == "error" else "warn",
        f"{shared} of {len(test)} test rows have exactly the features of a dev row "
        "(the test score may be optimistic); split.duplicates=error makes this an error",
    )


def run_all(
    dev: pd.DataFrame,
    test: pd.DataFrame,
    resamples: list[Resample],
    scheme: Scheme,
    duplicates_mode: str = "warn",
) -> list[Check]:
    """Every guard; raises :class:`FoldwiseError` naming the failed ones."""
    first = test_disjoint(test, resamples)
    if first.outcome == "fail":  # the checks below look rows up among the dev rows
        raise FoldwiseError(f"leakage guard failed: {first.name}: {first.detail}.")
    checks = [
        first,
        train_val_disjoint(resamples),
        groups_test_dev(dev, test, scheme),
        groups_train_val(dev, resamples, scheme),
        temporal_order(dev, test, resamples, scheme),
        duplicates(dev, test, duplicates_mode),
    ]
    failed = [c for c in checks if c.outcome == "fail"]
    if failed:
        dup = any(c.name == "test_dev_duplicates" for c in failed)
        raise FoldwiseError(
            "leakage guard failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failed) + ".",
            "nothing was written. Fix the data (or the scheme) and re-run `dvc repro split`"
            + (
                " (drop repeated rows, keeping one of each, or accept them with "
                "split.duplicates=warn)."
                if dup
                else "."
            ),
        )
    return checks
