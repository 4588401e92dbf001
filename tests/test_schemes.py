"""foldwise.split.schemes: every resampling scheme against an independent reference.

Each scheme's resamples are recomputed here from scikit-learn's splitters (or, for the
bootstrap and sampled leave-p-out, from NumPy) over the dev rows in the order
production uses, then compared row id by row id; plus option validation, the caps on
exhaustive schemes, the structure-aware lockbox, the leakage guards, ``folds.json``
round trips and the group/time columns of ``data.prepare``.
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    LeaveOneGroupOut,
    LeaveOneOut,
    LeavePGroupsOut,
    LeavePOut,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    ShuffleSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
    StratifiedShuffleSplit,
    TimeSeriesSplit,
    train_test_split,
)

from conftest import ROOT, tiny_params
from foldwise import params
from foldwise.data import feature_columns, prepare
from foldwise.errors import FoldwiseError
from foldwise.split import SCHEMES, Resample, guards, load_folds, split
from foldwise.split import schemes as schemes_mod
from foldwise.split.schemes import make_scheme

# Ungrouped splitters are handed the group column too; scikit-learn says it ignores it.
pytestmark = pytest.mark.filterwarnings("ignore:The groups parameter is ignored")

CHECK_NAMES = [
    "test_rows_in_no_resample",
    "train_val_disjoint",
    "groups_test_dev_disjoint",
    "groups_train_val_disjoint",
    "validation_after_training",
    "test_dev_duplicates",
]


# --------------------------------------------------------------------------------------------
# data and configs
# --------------------------------------------------------------------------------------------


def make_table(n: int = 60, seed: int = 0, ties: bool = True) -> pd.DataFrame:
    """A canonical table in no particular row order: non-positional row ids, 3 classes,
    12 groups, and a time column (5 rows per timestamp with ``ties``, else distinct)."""
    rng = np.random.default_rng(seed)
    time = np.arange(n) // 5 if ties else np.arange(n) * 10
    return pd.DataFrame(
        {
            "row_id": (1000 + 7 * rng.permutation(n)).astype(np.int64),
            "x0": rng.normal(size=n).astype(np.float32),
            "x1": rng.normal(size=n).astype(np.float32),
            "target": rng.permutation(np.arange(n) % 3).astype(np.int64),
            "group": np.array([f"g{i:02d}" for i in rng.permutation(np.arange(n) % 12)]),
            "time": rng.permutation(time).astype(np.int64),
        }
    )


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


def scheme_yaml(name: str) -> DictConfig:
    return OmegaConf.load(ROOT / "conf" / "split" / f"{name}.yaml")


def cfg_for(name: str, seed: int = 0, **overrides) -> DictConfig:
    """The scheme's committed conf/split/<name>.yaml with overrides, plus the seed."""
    section = OmegaConf.merge(scheme_yaml(name), overrides)
    return OmegaConf.create({"split": OmegaConf.to_container(section), "seed": seed})


def table_for(name: str, table: pd.DataFrame) -> pd.DataFrame:
    # A temporal scheme on a table that also has groups trips the group lockbox guard
    # (see test_time_series_with_a_group_column); the time tests use no group column.
    return table.drop(columns="group") if SCHEMES[name].temporal else table


def dev_in_order(dev: pd.DataFrame, temporal: bool) -> pd.DataFrame:
    """Row-id order, or (time, row id) order for temporal schemes, computed here."""
    if temporal:
        order = np.lexsort((dev["row_id"].to_numpy(), dev["time"].to_numpy()))
    else:
        order = np.argsort(dev["row_id"].to_numpy(), kind="stable")
    return dev.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# the independent reference
# --------------------------------------------------------------------------------------------


def sklearn_splitter(name: str, o: dict, seed: int):
    rs = lambda shuffle: seed if shuffle else None  # noqa: E731
    return {
        "kfold": lambda: KFold(o["n_splits"], shuffle=o["shuffle"], random_state=rs(o["shuffle"])),
        "stratified_kfold": lambda: StratifiedKFold(
            o["n_splits"], shuffle=o["shuffle"], random_state=rs(o["shuffle"])
        ),
        "group_kfold": lambda: GroupKFold(
            o["n_splits"], shuffle=o["shuffle"], random_state=rs(o["shuffle"])
        ),
        "stratified_group_kfold": lambda: StratifiedGroupKFold(
            o["n_splits"], shuffle=o["shuffle"], random_state=rs(o["shuffle"])
        ),
        "leave_one_group_out": LeaveOneGroupOut,
        "leave_p_groups_out": lambda: LeavePGroupsOut(o["p"]),
        "repeated_kfold": lambda: RepeatedKFold(
            n_splits=o["n_splits"], n_repeats=o["n_repeats"], random_state=seed
        ),
        "repeated_stratified_kfold": lambda: RepeatedStratifiedKFold(
            n_splits=o["n_splits"], n_repeats=o["n_repeats"], random_state=seed
        ),
        "shuffle_split": lambda: ShuffleSplit(
            o["n_splits"], test_size=o["val_fraction"], random_state=seed
        ),
        "stratified_shuffle_split": lambda: StratifiedShuffleSplit(
            o["n_splits"], test_size=o["val_fraction"], random_state=seed
        ),
        "time_series": lambda: TimeSeriesSplit(
            o["n_splits"], gap=o["gap"], max_train_size=o["max_train_size"], test_size=o["val_size"]
        ),
        "leave_one_out": LeaveOneOut,
        "leave_p_out": lambda: LeavePOut(o["p"]),
    }[name]()


def bootstrap_reference(n: int, n_resamples: int, seed: int) -> tuple[list, int]:
    """(train positions with repeats, OOB positions) per kept draw, and how many draws
    were skipped for having no out-of-bag row."""
    rng = np.random.default_rng(seed)
    out, skipped = [], 0
    while len(out) < n_resamples:
        draw = np.sort(rng.integers(0, n, n))
        oob = [i for i in range(n) if i not in set(draw.tolist())]
        if oob:
            out.append((draw.tolist(), oob))
        else:
            skipped += 1
    return out, skipped


def reference(name: str, o: dict, seed: int, order: pd.DataFrame) -> list[tuple[list, list, str]]:
    """(train ids, val ids, role) per resample, from the dev rows in ``order``."""
    ids = order["row_id"].to_numpy()
    y = order["target"].to_numpy()
    sorted_ids = lambda pos: sorted(ids[np.asarray(pos, dtype=int)].tolist())  # noqa: E731
    if name == "holdout":
        train, val = train_test_split(
            ids, test_size=o["val_fraction"], stratify=y if o["stratify"] else None,
            random_state=seed,
        )  # fmt: skip
        return [(sorted(train.tolist()), sorted(val.tolist()), "resample")]
    if name == "bootstrap":
        draws, _ = bootstrap_reference(len(ids), o["n_resamples"], seed)
        everyone = sorted(ids.tolist())
        out = [(ids[tr].tolist(), sorted_ids(va), "resample") for tr, va in draws]
        return [*out, (everyone, everyone, "apparent")]
    groups = order["group"].to_numpy() if "group" in order.columns else None
    x = np.zeros((len(ids), 1))
    splitter = sklearn_splitter(name, o, seed)
    return [(sorted_ids(tr), sorted_ids(va), "resample") for tr, va in splitter.split(x, y, groups)]


# Every scheme with its committed options, and some with other options.
VARIANTS = [
    ("kfold", {}),
    ("kfold", {"shuffle": False, "n_splits": 4}),
    ("stratified_kfold", {}),
    ("stratified_kfold", {"shuffle": False, "n_splits": 3}),
    ("group_kfold", {}),
    ("group_kfold", {"shuffle": True, "n_splits": 3}),
    ("stratified_group_kfold", {}),
    ("stratified_group_kfold", {"shuffle": False}),
    ("leave_one_group_out", {}),
    ("leave_p_groups_out", {}),
    ("leave_p_groups_out", {"p": 3}),
    ("repeated_kfold", {}),
    ("repeated_stratified_kfold", {"n_splits": 3, "n_repeats": 2}),
    ("shuffle_split", {}),
    ("stratified_shuffle_split", {"val_fraction": 0.3, "n_splits": 4}),
    ("holdout", {}),
    ("holdout", {"stratify": False, "val_fraction": 0.25}),
    ("time_series", {}),
    ("time_series", {"gap": 2, "max_train_size": 15, "val_size": 5}),
    ("leave_one_out", {}),
    ("leave_p_out", {}),
    ("bootstrap", {}),
    ("bootstrap", {"n_resamples": 7}),
]


def test_every_scheme_has_a_config_and_a_reference():
    configs = {p.stem for p in (ROOT / "conf" / "split").glob("*.yaml")}
    assert {name for name, _ in VARIANTS} == set(SCHEMES) == configs
    for name in SCHEMES:
        assert scheme_yaml(name).scheme == name
        schemes_mod.validate(scheme_yaml(name))


@pytest.mark.parametrize("seed", [0, 11])
@pytest.mark.parametrize(
    ("name", "overrides"), VARIANTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VARIANTS)]
)
def test_resamples_equal_the_reference(table, name, overrides, seed):
    cfg = cfg_for(name, seed, **overrides)
    result = split(table_for(name, table), cfg)
    scheme = make_scheme(cfg.split, seed)
    order = dev_in_order(result.dev, scheme.temporal)
    expected = reference(name, OmegaConf.to_container(cfg.split), seed, order)

    got = [(r.train, r.val, r.role) for r in result.folds]
    assert got == expected  # same resamples, in the same order
    assert [r.index for r in result.folds] == list(range(len(expected)))
    groups = order["group"].to_numpy() if "group" in order.columns else None
    assert scheme.count(len(order), groups) == len(result.folds) == result.manifest["n_splits"]
    assert result.manifest["scheme"] == name
    assert result.manifest["kind"] == SCHEMES[name].kind
    assert [c["name"] for c in result.manifest["checks"]] == CHECK_NAMES
    assert all(c["outcome"] in ("pass", "warn", "skip") for c in result.manifest["checks"])


def test_reference_is_seed_sensitive(table):
    # The comparison above would be vacuous if the seed did not reach the splitter.
    for name in ("kfold", "group_kfold", "shuffle_split", "holdout", "bootstrap"):
        over = {"shuffle": True} if name == "group_kfold" else {}
        a = split(table, cfg_for(name, 0, **over)).folds
        b = split(table, cfg_for(name, 11, **over)).folds
        assert [r.val for r in a] != [r.val for r in b], name


def test_bootstrap_skips_draws_without_out_of_bag_rows():
    # Three rows: a draw holds all three with probability 2/9, so some are skipped.
    ids, y = np.array([5, 9, 40]), np.array([0, 1, 0])
    draws, skipped = bootstrap_reference(3, 30, seed=4)
    assert skipped > 0
    got = make_scheme({"scheme": "bootstrap", "n_resamples": 30}, 4).split(ids, y)
    assert len(got) == 31
    assert [(r.train, r.val) for r in got[:-1]] == [
        (ids[tr].tolist(), ids[va].tolist()) for tr, va in draws
    ]
    assert all(r.val for r in got)
    assert got[-1] == Resample(30, [5, 9, 40], [5, 9, 40], "apparent")


def test_bootstrap_train_repeats_rows_and_val_is_out_of_bag(table):
    result = split(table, cfg_for("bootstrap", 3))
    dev_ids = set(result.dev["row_id"])
    *draws, apparent = result.folds
    assert len(draws) == 50
    for r in draws:
        assert r.role == "resample"
        assert len(r.train) == len(dev_ids) > len(set(r.train))  # with replacement
        assert set(r.val) == dev_ids - set(r.train)
    assert apparent.role == "apparent"
    assert apparent.train == apparent.val == sorted(dev_ids)


# --------------------------------------------------------------------------------------------
# sampled leave-p-out
# --------------------------------------------------------------------------------------------


def test_sampled_leave_p_out(table):
    result = split(table, cfg_for("leave_p_out", 5, p=3, sample=25))
    dev_ids = sorted(result.dev["row_id"].tolist())
    vals = [tuple(r.val) for r in result.folds]
    assert len(vals) == len(set(vals)) == 25  # distinct validation sets
    for r in result.folds:
        assert len(r.val) == 3
        assert r.train == [i for i in dev_ids if i not in r.val]  # the complement
    again = split(table, cfg_for("leave_p_out", 5, p=3, sample=25))
    assert again.folds == result.folds
    other = split(table, cfg_for("leave_p_out", 6, p=3, sample=25))
    assert [r.val for r in other.folds] != [r.val for r in result.folds]
    assert result.manifest["n_splits"] == 25


def test_sampled_leave_p_out_beyond_all_sets_enumerates_each_once():
    ids = np.array([3, 8, 13, 21, 34])
    got = make_scheme({"scheme": "leave_p_out", "p": 2, "sample": 100}, 0).split(ids, np.zeros(5))
    assert sorted(tuple(r.val) for r in got) == list(combinations(ids.tolist(), 2))


# --------------------------------------------------------------------------------------------
# caps on exhaustive schemes
# --------------------------------------------------------------------------------------------


def test_leave_one_out_above_max_splits(table):
    n_dev = len(split(table, cfg_for("kfold")).dev)
    with pytest.raises(FoldwiseError) as err:
        split(table, cfg_for("leave_one_out", max_splits=10))
    message = str(err.value)
    assert f"would make {n_dev} resamples" in message
    assert "split.max_splits=10" in message
    assert "k-fold" in message
    assert len(split(table, cfg_for("leave_one_out", max_splits=n_dev)).folds) == n_dev


def test_leave_p_out_above_max_splits_suggests_sample(table):
    n_dev = len(split(table, cfg_for("kfold")).dev)
    total = math.comb(n_dev, 2)
    with pytest.raises(FoldwiseError) as err:
        split(table, cfg_for("leave_p_out", max_splits=100))
    message = str(err.value)
    assert f"would make {total:,} resamples" in message
    assert "split.max_splits=100" in message
    assert "split.sample" in message
    assert "k-fold" in message
    assert len(split(table, cfg_for("leave_p_out", max_splits=100, sample=40)).folds) == 40


@pytest.mark.parametrize(
    ("name", "count"), [("leave_one_group_out", 9), ("leave_p_groups_out", 36)]
)
def test_group_exhaustive_schemes_are_capped(table, name, count):
    assert len(split(table, cfg_for(name)).folds) == count  # 9 dev groups
    with pytest.raises(FoldwiseError, match=rf"would make {count} resamples.*max_splits=5"):
        split(table, cfg_for(name, max_splits=5))


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "option"),
    [("kfold", "gap"), ("stratified_kfold", "p"), ("holdout", "n_splits"),
     ("leave_one_out", "n_splits"), ("time_series", "shuffle"), ("bootstrap", "sample")],
)  # fmt: skip
def test_validate_rejects_unknown_options(name, option):
    opts = {**OmegaConf.to_container(scheme_yaml(name)), option: 2}
    with pytest.raises(FoldwiseError, match=rf"split={name} has no option {option}\b"):
        schemes_mod.validate(opts)
    with pytest.raises(FoldwiseError, match=rf"no option {option}\b"):
        SCHEMES[name].validate({option: 2})


@pytest.mark.parametrize(
    ("name", "option", "value", "message"),
    [
        ("kfold", "n_splits", 1, r"split\.n_splits must be an integer >= 2, got 1"),
        ("repeated_kfold", "n_splits", 1, r"split\.n_splits must be an integer >= 2"),
        ("stratified_kfold", "n_splits", 2.5, r"split\.n_splits must be an integer"),
        ("kfold", "n_splits", True, r"split\.n_splits must be an integer"),
        ("shuffle_split", "val_fraction", 1.2, r"split\.val_fraction must be strictly between"),
        ("holdout", "val_fraction", 1.2, r"split\.val_fraction must be strictly between"),
        ("holdout", "val_fraction", 0, r"split\.val_fraction must be strictly between"),
        ("leave_p_out", "p", 0, r"split\.p must be an integer >= 1, got 0"),
        ("leave_p_groups_out", "p", 0, r"split\.p must be an integer >= 1"),
        ("leave_p_out", "sample", 0, r"split\.sample must be an integer >= 1"),
        ("leave_one_out", "max_splits", 0, r"split\.max_splits must be an integer >= 1"),
        ("repeated_kfold", "n_repeats", 0, r"split\.n_repeats must be an integer >= 1"),
        ("bootstrap", "n_resamples", 0, r"split\.n_resamples must be an integer >= 1"),
        ("time_series", "gap", -1, r"split\.gap must be an integer >= 0"),
        ("time_series", "val_size", 0, r"split\.val_size must be an integer >= 1"),
        ("time_series", "max_train_size", 0, r"split\.max_train_size must be an integer >= 1"),
        ("kfold", "shuffle", "yes", r"split\.shuffle must be true or false"),
        ("holdout", "stratify", 1, r"split\.stratify must be true or false"),
        ("kfold", "duplicates", "ignore", r"split\.duplicates must be warn or error"),
    ],
)
def test_validate_rejects_bad_values(name, option, value, message):
    opts = {**OmegaConf.to_container(scheme_yaml(name)), option: value}
    with pytest.raises(FoldwiseError, match=message):
        schemes_mod.validate(opts)
    with pytest.raises(FoldwiseError, match=message):
        make_scheme(opts, 0)


def test_validate_unknown_scheme_and_defaults():
    with pytest.raises(FoldwiseError, match=r"unknown split\.scheme 'jackknife'"):
        schemes_mod.validate({"scheme": "jackknife"})
    assert schemes_mod.validate({"scheme": "kfold"}) is SCHEMES["kfold"]
    # options a config leaves out take the scheme's defaults
    assert make_scheme({"scheme": "time_series"}, 0).opts == {
        "n_splits": 5, "gap": 0, "max_train_size": None, "val_size": None,
    }  # fmt: skip
    assert make_scheme({"scheme": "leave_p_out", "p": 3}, 0).opts["max_splits"] == 2000


def test_data_dependent_refusals(table):
    with pytest.raises(FoldwiseError, match=r"n_splits=10 is larger than the 9 groups"):
        split(table, cfg_for("group_kfold", n_splits=10))
    with pytest.raises(FoldwiseError, match=r"split\.p=9 leaves no training group"):
        split(table, cfg_for("leave_p_groups_out", p=9))
    with pytest.raises(FoldwiseError, match=r"split=time_series .* does not fit in 45 dev rows"):
        split(table_for("time_series", table), cfg_for("time_series", n_splits=8, val_size=6))
    with pytest.raises(FoldwiseError, match=r"leaves an empty side"):
        make_scheme({"scheme": "shuffle_split", "val_fraction": 0.9}, 0).split(
            np.array([1, 2, 3]), np.array([0, 1, 0])
        )


# --------------------------------------------------------------------------------------------
# the lockbox
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["kfold", "group_kfold", "stratified_group_kfold", "leave_one_group_out", "bootstrap"]
)
def test_lockbox_by_group(table, name):
    seed = 5
    result = split(table, cfg_for(name, seed))
    assert result.manifest["lockbox_by"] == "group"
    assert set(result.dev["group"]).isdisjoint(result.test["group"])
    assert result.manifest["n_groups"] == {"dev": 9, "test": 3}  # ceil(0.2 * 12) test groups
    # the test groups are GroupShuffleSplit's, whatever the table's row order
    gss = GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
    _, test_pos = next(gss.split(np.zeros(len(table)), groups=table["group"].to_numpy()))
    assert sorted(result.test["row_id"]) == sorted(table["row_id"].iloc[test_pos])
    assert result.dev["row_id"].is_monotonic_increasing


def test_lockbox_by_class_without_structure(table):
    plain = table.drop(columns=["group", "time"])
    result = split(plain, cfg_for("kfold", 5))
    assert result.manifest["lockbox_by"] == "class"
    _, test = train_test_split(plain, test_size=0.2, stratify=plain["target"], random_state=5)
    assert sorted(result.test["row_id"]) == sorted(test["row_id"])


def test_lockbox_by_time_sends_ties_at_the_cutoff_to_test(table):
    result = split(table_for("time_series", table), cfg_for("time_series"))
    assert result.manifest["lockbox_by"] == "time"
    assert result.test["time"].min() > result.dev["time"].max()
    # 5 rows per timestamp: ceil(0.2 * 60) = 12 rows would cut a timestamp in two,
    # so all 5 rows of the cut-off timestamp go to test.
    assert len(result.test) == 15 > math.ceil(0.2 * len(table))
    cutoff = result.test["time"].min()
    assert (table["time"] == cutoff).sum() == (result.test["time"] == cutoff).sum() == 5
    # folds validate later rows than they train on
    time = result.dev.set_index("row_id")["time"]
    for r in result.folds:
        assert time.loc[r.val].min() >= time.loc[r.train].max()


def test_time_series_with_a_group_column(table):
    """A temporal lockbox is the latest period; groups across the cut-off are a warning."""
    result = split(table, cfg_for("time_series"))
    assert result.test["time"].min() > result.dev["time"].max()
    check = next(c for c in result.checks if c.name == "groups_test_dev_disjoint")
    assert check.outcome == "warn" and "not for new groups" in check.detail


@pytest.mark.parametrize(
    "name", ["group_kfold", "stratified_group_kfold", "leave_one_group_out", "leave_p_groups_out"]
)
def test_grouped_scheme_without_group_column(table, name):
    with pytest.raises(FoldwiseError, match=rf"split={name} needs groups") as err:
        split(table.drop(columns="group"), cfg_for(name))
    assert "data.group_column" in str(err.value)


def test_temporal_scheme_without_time_column(table):
    with pytest.raises(FoldwiseError, match=r"split=time_series needs times") as err:
        split(table.drop(columns=["group", "time"]), cfg_for("time_series"))
    assert "data.time_column" in str(err.value)


@pytest.mark.parametrize(
    ("scheme", "column"),
    [("group_kfold", "group"), ("stratified_group_kfold", "group"), ("time_series", "time")],
)
def test_params_validate_needs_structure_columns(scheme, column):
    with pytest.raises(FoldwiseError, match=rf"split={scheme} needs .*data\.{column}_column"):
        params.validate(tiny_params([f"split={scheme}"]))
    csv = ["data=csv", "data.path=/tmp/table.csv", "data.target=label"]
    params.validate(tiny_params([f"split={scheme}", *csv, f"data.{column}_column=c"]))
    with pytest.raises(FoldwiseError, match=rf"data\.{column}_column is set, but data=digits"):
        params.validate(tiny_params([f"data.{column}_column=c"]))


# --------------------------------------------------------------------------------------------
# guards
# --------------------------------------------------------------------------------------------


def checks_of(result) -> dict[str, str]:
    return {c["name"]: c["outcome"] for c in result.manifest["checks"]}


def test_manifest_lists_every_check(table):
    result = split(table, cfg_for("group_kfold"))
    assert [c["name"] for c in result.manifest["checks"]] == CHECK_NAMES
    assert [c.to_dict() for c in result.checks] == result.manifest["checks"]
    assert all(set(c) == {"name", "outcome", "detail"} for c in result.manifest["checks"])
    assert checks_of(result) == {
        "test_rows_in_no_resample": "pass",
        "train_val_disjoint": "pass",
        "groups_test_dev_disjoint": "pass",
        "groups_train_val_disjoint": "pass",
        "validation_after_training": "skip",
        "test_dev_duplicates": "pass",
    }


def test_ungrouped_scheme_on_grouped_data_warns(table):
    result = split(table, cfg_for("kfold"))
    check = next(c for c in result.checks if c.name == "groups_train_val_disjoint")
    assert check.outcome == "warn"
    assert "split=kfold ignores data.group_column" in check.detail
    plain = split(table.drop(columns="group"), cfg_for("kfold"))
    assert checks_of(plain)["groups_train_val_disjoint"] == "skip"
    assert checks_of(plain)["groups_test_dev_disjoint"] == "skip"


def test_duplicate_features_between_test_and_dev(table):
    cfg = cfg_for("kfold", 2)
    before = split(table, cfg)
    test_id = int(before.test["row_id"].iloc[0])
    dev_row = before.dev.iloc[3]
    copied = table.copy()
    copied.loc[copied["row_id"] == test_id, ["x0", "x1"]] = dev_row[["x0", "x1"]].to_numpy()

    after = split(copied, cfg)  # the lockbox does not depend on features
    assert after.test["row_id"].tolist() == before.test["row_id"].tolist()
    check = next(c for c in after.checks if c.name == "test_dev_duplicates")
    assert check.outcome == "warn"
    assert check.detail.startswith(f"1 of {len(after.test)} test rows")
    assert "split.duplicates=error" in check.detail

    cfg.split.duplicates = "error"
    with pytest.raises(FoldwiseError, match=r"leakage guard failed: test_dev_duplicates"):
        split(copied, cfg)
    assert checks_of(split(table, cfg))["test_dev_duplicates"] == "pass"


def test_time_series_guard_passes_or_warns_on_ties(table):
    distinct = make_table(ties=False).drop(columns="group")
    result = split(distinct, cfg_for("time_series"))
    assert checks_of(result)["validation_after_training"] == "pass"

    tied = split(table_for("time_series", table), cfg_for("time_series"))
    check = next(c for c in tied.checks if c.name == "validation_after_training")
    assert check.outcome == "warn"
    assert "split.gap" in check.detail
    assert checks_of(split(table, cfg_for("kfold")))["validation_after_training"] == "skip"


def test_guards_fail_on_leaking_resamples(table):
    result = split(table, cfg_for("group_kfold"))
    scheme = make_scheme(cfg_for("group_kfold").split, 0)
    dev, test = result.dev, result.test
    dev_ids = dev["row_id"].tolist()
    leaks = {
        "train_val_disjoint": [Resample(0, dev_ids, dev_ids[:3])],
        "groups_train_val_disjoint": [Resample(0, dev_ids[1:], dev_ids[:1])],
    }
    for name, resamples in leaks.items():
        with pytest.raises(FoldwiseError, match=rf"leakage guard failed: .*{name}"):
            guards.run_all(dev, test, resamples, scheme)
    # a test row (new id) from a dev group
    intruder = dev.iloc[:1].assign(row_id=int(dev["row_id"].max()) + 10_000)
    with pytest.raises(FoldwiseError, match=r"groups_test_dev_disjoint: 1 groups"):
        guards.run_all(dev, pd.concat([test, intruder]), result.folds, scheme)


def test_guard_fails_on_a_test_row_in_a_resample(table):
    plain = table.drop(columns=["group", "time"])
    result = split(plain, cfg_for("kfold"))
    test_id = int(result.test["row_id"].iloc[0])
    leak = [Resample(0, result.dev["row_id"].tolist(), [test_id])]
    with pytest.raises(FoldwiseError, match=r"leakage guard failed: test_rows_in_no_resample"):
        guards.run_all(result.dev, result.test, leak, make_scheme(cfg_for("kfold").split, 0))


def test_guard_fails_on_a_test_row_in_a_resample_with_groups(table):
    result = split(table, cfg_for("group_kfold"))
    test_id = int(result.test["row_id"].iloc[0])
    leak = [Resample(0, result.dev["row_id"].tolist(), [test_id])]
    with pytest.raises(FoldwiseError, match=r"leakage guard failed: test_rows_in_no_resample"):
        guards.run_all(result.dev, result.test, leak, make_scheme(cfg_for("group_kfold").split, 0))


# --------------------------------------------------------------------------------------------
# folds.json
# --------------------------------------------------------------------------------------------


def round_trip(doc: dict) -> list[Resample]:
    return load_folds(json.loads(json.dumps(doc)))


def test_folds_document_kfold_omits_complement_train(table):
    result = split(table, cfg_for("kfold"))
    doc = result.folds_doc
    assert doc["dev"] == sorted(result.dev["row_id"].tolist())
    assert all("train" not in f and "role" not in f for f in doc["folds"])
    assert round_trip(doc) == result.folds


def test_folds_document_bootstrap_keeps_repeated_train(table):
    result = split(table, cfg_for("bootstrap", n_resamples=5))
    doc = result.folds_doc
    assert (doc["scheme"], doc["kind"], doc["n_splits"]) == ("bootstrap", "bootstrap", 6)
    assert "dev" not in doc
    assert all("train" in f for f in doc["folds"])
    assert len(set(doc["folds"][0]["train"])) < len(doc["folds"][0]["train"])
    assert doc["folds"][-1]["role"] == "apparent"
    back = round_trip(doc)
    assert back == result.folds
    assert back[-1].role == "apparent"


def test_folds_document_time_series_keeps_forward_train(table):
    result = split(table_for("time_series", table), cfg_for("time_series"))
    doc = result.folds_doc
    n_dev = len(result.dev)
    first = doc["folds"][0]
    assert len(first["train"]) + len(first["val"]) < n_dev  # not the complement
    assert round_trip(doc) == result.folds
    windowed = split(
        table_for("time_series", table), cfg_for("time_series", gap=1, max_train_size=10)
    )
    assert all("train" in f for f in windowed.folds_doc["folds"])
    assert round_trip(windowed.folds_doc) == windowed.folds


# --------------------------------------------------------------------------------------------
# data.prepare: group and time columns from a CSV
# --------------------------------------------------------------------------------------------


def csv_cfg(path: Path, group: str | None = "patient", time: str | None = "visit") -> DictConfig:
    return OmegaConf.create(
        {
            "data": {
                "name": "csv",
                "path": str(path.resolve()),
                "target": "label",
                "id_column": None,
                "drop": [],
                "image_shape": None,
                "group_column": group,
                "time_column": time,
            },
            "seed": 0,
        }
    )


def structured_frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame(
        {
            "height": rng.normal(size=n),
            "patient": 100 + np.arange(n) % 8,
            "weight": rng.normal(size=n),
            "visit": (np.arange(n) // 2).astype(float),
            "label": np.where(np.arange(n) % 2, "sick", "well"),
        }
    )


def write(tmp_path: Path, df: pd.DataFrame) -> Path:
    path = tmp_path / "structured.csv"
    df.to_csv(path, index=False)
    return path


def test_prepare_maps_group_and_time_columns(tmp_path):
    df = structured_frame()
    table, meta = prepare(csv_cfg(write(tmp_path, df)))
    assert list(table.columns) == ["row_id", "x0", "x1", "target", "group", "time"]
    assert feature_columns(table) == ["x0", "x1"]
    assert meta.feature_names == ["height", "weight"]
    assert (meta.group_column, meta.time_column) == ("patient", "visit")
    assert table["group"].tolist() == df["patient"].astype(str).tolist()
    assert table["time"].tolist() == df["visit"].tolist()
    # the prepared table splits with a grouped scheme
    result = split(table, cfg_for("group_kfold", n_splits=3))
    assert set(result.dev["group"]).isdisjoint(result.test["group"])


def test_prepare_parses_iso_times(tmp_path):
    df = structured_frame()
    df["visit"] = pd.date_range("2024-01-01", periods=len(df), freq="D").strftime("%Y-%m-%d")
    table, _ = prepare(csv_cfg(write(tmp_path, df), group=None))
    assert pd.api.types.is_datetime64_any_dtype(table["time"])
    assert "group" not in table.columns
    assert feature_columns(table) == ["x0", "x1", "x2"]  # patient is a feature here
    result = split(table, cfg_for("time_series"))
    assert result.test["time"].min() > result.dev["time"].max()


@pytest.mark.parametrize(("column", "kind"), [("patient", "group"), ("visit", "time")])
def test_prepare_rejects_missing_structure_values(tmp_path, column, kind):
    df = structured_frame()
    df[column] = df[column].astype(float)
    df.loc[[3, 7], column] = np.nan
    with pytest.raises(
        FoldwiseError, match=rf"data\.{kind}_column: 2 rows have no value in '{column}'"
    ):
        prepare(csv_cfg(write(tmp_path, df)))


@pytest.mark.filterwarnings("ignore:Could not infer format")
def test_prepare_rejects_bad_structure_columns(tmp_path):
    path = write(tmp_path, structured_frame())
    with pytest.raises(FoldwiseError, match=r"data\.group_column: column 'site' is not in"):
        prepare(csv_cfg(path, group="site"))
    with pytest.raises(FoldwiseError, match=r"data\.group_column 'label' is also the target"):
        prepare(csv_cfg(path, group="label"))
    df = structured_frame()
    df["visit"] = "soon"
    with pytest.raises(FoldwiseError, match=r"data\.time_column: 'visit' is neither numeric"):
        prepare(csv_cfg(write(tmp_path, df)))
