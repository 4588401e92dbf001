"""foldwise.split: the lockbox holdout and the CV folds over dev rows; params.validate."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf

from foldwise import params
from foldwise.data import prepare
from foldwise.errors import FoldwiseError
from foldwise.files import sha256_json, sha256_table
from foldwise.split import holdout, load_folds, split

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"


def split_cfg(
    scheme: str = "stratified_kfold",
    n_splits: int = 5,
    test_fraction: float = 0.2,
    shuffle: bool = True,
    seed: int = 42,
) -> DictConfig:
    return OmegaConf.create(
        {
            "split": {
                "scheme": scheme,
                "n_splits": n_splits,
                "test_fraction": test_fraction,
                "shuffle": shuffle,
            },
            "seed": seed,
        }
    )


@pytest.fixture(scope="module")
def digits() -> pd.DataFrame:
    cfg = OmegaConf.create(
        {
            "data": {
                "name": "digits",
                "path": None,
                "target": None,
                "id_column": None,
                "drop": None,
                "image_shape": None,
            },
            "seed": 0,
        }
    )
    table, _ = prepare(cfg)
    return table


def synthetic(counts: dict[int, int], seed: int = 0, id_offset: int = 1000) -> pd.DataFrame:
    """A small canonical table with the given rows per class and non-positional row ids."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in counts.items()])
    y = rng.permutation(y)
    n = len(y)
    return pd.DataFrame(
        {
            "row_id": (id_offset + 3 * np.arange(n)).astype(np.int64),
            "x0": rng.normal(size=n).astype(np.float32),
            "x1": rng.normal(size=n).astype(np.float32),
            "target": y.astype(np.int64),
        }
    )


def proportions(y: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(y, minlength=n_classes) / len(y)


def check_partition(table: pd.DataFrame, result) -> None:
    """Test rows never reach a fold; val sets partition dev; train/val split dev per fold."""
    all_ids = set(table["row_id"].tolist())
    dev_ids = set(result.dev["row_id"].tolist())
    test_ids = set(result.test["row_id"].tolist())
    assert dev_ids.isdisjoint(test_ids)
    assert dev_ids | test_ids == all_ids
    assert len(result.dev) + len(result.test) == len(table)

    val_seen: list[int] = []
    for i, fold in enumerate(result.folds):
        assert fold.index == i
        train, val = set(fold.train), set(fold.val)
        assert len(train) == len(fold.train)
        assert len(val) == len(fold.val)
        assert not (train | val) & test_ids
        assert train.isdisjoint(val)
        assert train | val == dev_ids
        assert fold.train == sorted(fold.train)
        assert fold.val == sorted(fold.val)
        val_seen += fold.val
    assert sorted(val_seen) == sorted(dev_ids)  # every dev row is validated exactly once


# --------------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------------


def test_digits_split_structure(digits):
    result = split(digits, split_cfg())
    check_partition(digits, result)
    assert len(result.test) == int(np.ceil(0.2 * 1797)) == 360
    assert len(result.dev) == 1437
    assert len(result.folds) == 5
    sizes = sorted(len(f.val) for f in result.folds)
    assert sizes[-1] - sizes[0] <= 10  # ~287 each; stratification rounding per class
    # dev/test keep the canonical columns and are sorted by row id
    assert list(result.dev.columns) == list(digits.columns)
    assert result.dev["row_id"].is_monotonic_increasing
    assert result.test["row_id"].is_monotonic_increasing


def test_synthetic_split_structure():
    table = synthetic({0: 30, 1: 20, 2: 10})
    result = split(table, split_cfg(n_splits=3, test_fraction=0.25, seed=1))
    check_partition(table, result)
    assert len(result.test) == 15
    assert len(result.folds) == 3
    # row ids come from the table, not positions
    assert min(result.dev["row_id"].min(), result.test["row_id"].min()) >= 1000


@pytest.mark.parametrize("scheme", ["kfold", "stratified_kfold"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_both_schemes_partition_dev(digits, scheme, shuffle):
    result = split(digits, split_cfg(scheme=scheme, n_splits=4, shuffle=shuffle))
    check_partition(digits, result)
    assert result.manifest["scheme"] == scheme
    assert result.folds_doc["scheme"] == scheme
    assert result.manifest["shuffle"] is shuffle
    assert len(result.folds) == 4


def test_unshuffled_kfold_is_contiguous_in_row_id_order():
    table = synthetic({0: 20, 1: 20})
    result = split(table, split_cfg(scheme="kfold", n_splits=4, test_fraction=0.2, shuffle=False))
    dev_ids = result.dev["row_id"].tolist()
    assert len(dev_ids) == 32
    for i, fold in enumerate(result.folds):
        assert fold.val == dev_ids[8 * i : 8 * (i + 1)]


def test_folds_doc_round_trips_through_load_folds(digits):
    result = split(digits, split_cfg())
    assert load_folds(result.folds_doc) == result.folds
    assert result.folds_doc["n_splits"] == 5
    assert [f["fold"] for f in result.folds_doc["folds"]] == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------------------------
# stratification
# --------------------------------------------------------------------------------------------


def test_stratified_folds_keep_class_proportions(digits):
    result = split(digits, split_cfg())
    dev_y = result.dev.set_index("row_id")["target"]
    dev_p = proportions(dev_y.to_numpy(), 10)
    for fold in result.folds:
        val_p = proportions(dev_y.loc[fold.val].to_numpy(), 10)
        train_p = proportions(dev_y.loc[fold.train].to_numpy(), 10)
        assert np.abs(val_p - dev_p).max() < 0.01
        assert np.abs(train_p - dev_p).max() < 0.005
    full_p = proportions(digits["target"].to_numpy(), 10)
    assert np.abs(proportions(result.test["target"].to_numpy(), 10) - full_p).max() < 0.005
    assert np.abs(dev_p - full_p).max() < 0.005


def test_stratified_synthetic_exact_counts():
    # 40/20 per class, 5 folds: every val fold gets exactly 8 of class 0 and 4 of class 1.
    table = synthetic({0: 50, 1: 25})
    result = split(table, split_cfg(n_splits=5, test_fraction=0.2, seed=3))
    assert np.bincount(result.test["target"]).tolist() == [10, 5]
    y = result.dev.set_index("row_id")["target"]
    for fold in result.folds:
        assert np.bincount(y.loc[fold.val]).tolist() == [8, 4]


# --------------------------------------------------------------------------------------------
# determinism and the manifest
# --------------------------------------------------------------------------------------------


def test_same_seed_same_split(digits):
    a = split(digits, split_cfg(seed=7))
    b = split(digits.sample(frac=1.0, random_state=0).sort_values("row_id"), split_cfg(seed=7))
    assert a.folds == b.folds
    assert a.manifest == b.manifest
    assert a.folds_doc == b.folds_doc
    pd.testing.assert_frame_equal(a.test, b.test)


def test_different_seed_different_split(digits):
    a = split(digits, split_cfg(seed=7))
    b = split(digits, split_cfg(seed=8))
    assert set(a.test["row_id"]) != set(b.test["row_id"])
    assert [f.val for f in a.folds] != [f.val for f in b.folds]
    assert a.manifest["test_sha256"] != b.manifest["test_sha256"]
    assert a.manifest["folds_sha256"] != b.manifest["folds_sha256"]
    assert (a.manifest["seed"], b.manifest["seed"]) == (7, 8)


def test_manifest_contents(digits):
    result = split(digits, split_cfg(n_splits=5, test_fraction=0.2, seed=42))
    m = result.manifest
    assert m["dev_sha256"] == sha256_table(result.dev)
    assert m["test_sha256"] == sha256_table(result.test)
    assert m["folds_sha256"] == sha256_json(result.folds_doc)
    assert m["dev_sha256"] != m["test_sha256"]
    assert {
        k: m[k]
        for k in ("scheme", "n_splits", "shuffle", "seed", "test_fraction", "n_dev", "n_test")
    } == {
        "scheme": "stratified_kfold",
        "n_splits": 5,
        "shuffle": True,
        "seed": 42,
        "test_fraction": 0.2,
        "n_dev": 1437,
        "n_test": 360,
    }


def test_manifest_hash_changes_when_one_value_changes(digits):
    cfg = split_cfg(seed=42)
    before = split(digits, cfg)
    test_row = int(before.test["row_id"].iloc[0])
    dev_row = int(before.dev["row_id"].iloc[0])

    changed = digits.copy()
    changed.loc[changed["row_id"] == test_row, "x10"] += 1.0
    after = split(changed, cfg)
    assert after.manifest["test_sha256"] != before.manifest["test_sha256"]
    assert after.manifest["dev_sha256"] == before.manifest["dev_sha256"]
    assert after.manifest["folds_sha256"] == before.manifest["folds_sha256"]

    changed = digits.copy()
    changed.loc[changed["row_id"] == dev_row, "x3"] += 0.5
    after = split(changed, cfg)
    assert after.manifest["dev_sha256"] != before.manifest["dev_sha256"]
    assert after.manifest["test_sha256"] == before.manifest["test_sha256"]


# --------------------------------------------------------------------------------------------
# data-dependent errors
# --------------------------------------------------------------------------------------------


def test_class_with_too_few_dev_rows_for_stratified_folds():
    table = synthetic({0: 40, 1: 40, 2: 5})
    cfg = split_cfg(n_splits=5, test_fraction=0.2, seed=0)
    dev, _ = holdout(table, 0.2, 0)
    n_small = int((dev["target"] == 2).sum())
    assert n_small < 5
    with pytest.raises(FoldwiseError) as err:
        split(table, cfg)
    message = str(err.value)
    assert f"{{2: {n_small}}}" in message  # names the class and its dev row count
    assert f"lower split.n_splits to {n_small}" in message
    assert "split=kfold" in message
    # with the original labels known, the message speaks them instead of codes
    with pytest.raises(FoldwiseError, match=f"{{'rare': {n_small}}}"):
        split(table, cfg, class_names=["common", "usual", "rare"])
    # the unstratified scheme has no per-class requirement
    result = split(table, split_cfg(scheme="kfold", n_splits=5, test_fraction=0.2, seed=0))
    assert len(result.folds) == 5


@pytest.mark.parametrize("scheme", ["kfold", "stratified_kfold"])
def test_more_folds_than_dev_rows(scheme):
    table = synthetic({0: 6, 1: 6})
    with pytest.raises(FoldwiseError, match=r"n_splits=12 is larger than the 9 dev rows"):
        split(table, split_cfg(scheme=scheme, n_splits=12, test_fraction=0.25))


def test_leave_one_out_is_allowed():
    table = synthetic({0: 6, 1: 6})
    result = split(table, split_cfg(scheme="kfold", n_splits=9, test_fraction=0.25))
    assert [len(f.val) for f in result.folds] == [1] * 9


def test_test_fraction_too_small_for_stratification(digits):
    with pytest.raises(FoldwiseError) as err:
        split(digits, split_cfg(test_fraction=0.002))
    message = str(err.value)
    assert "gives 4 test rows out of 1797" in message
    assert "10 classes" in message


def test_test_fraction_too_large_leaves_too_few_dev_rows():
    table = synthetic({0: 10, 1: 10, 2: 10})
    with pytest.raises(FoldwiseError, match=r"gives 29 test rows out of 30"):
        split(table, split_cfg(n_splits=2, test_fraction=0.95))


def test_single_row_class_cannot_be_stratified():
    table = synthetic({0: 10, 1: 10, 2: 1})
    with pytest.raises(FoldwiseError, match=r"classes \[2\] have a single row"):
        split(table, split_cfg(n_splits=2))


# --------------------------------------------------------------------------------------------
# params.validate
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def committed_params() -> DictConfig:
    return OmegaConf.load(PARAMS_YAML)


def test_committed_params_are_valid(committed_params):
    params.validate(committed_params)  # the baseline the failure cases below modify


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, 1.5, -0.2])
def test_validate_rejects_test_fraction_outside_open_interval(committed_params, fraction):
    cfg = copy.deepcopy(committed_params)
    cfg.split.test_fraction = fraction
    with pytest.raises(FoldwiseError, match=r"split\.test_fraction must be strictly between"):
        params.validate(cfg)


@pytest.mark.parametrize("k", [1, 0, -3])
def test_validate_rejects_fewer_than_two_folds(committed_params, k):
    cfg = copy.deepcopy(committed_params)
    cfg.split.n_splits = k
    with pytest.raises(FoldwiseError, match=r"split\.n_splits must be an integer >= 2"):
        params.validate(cfg)


def test_validate_accepts_two_folds_and_kfold(committed_params):
    cfg = copy.deepcopy(committed_params)
    cfg.split.n_splits = 2
    cfg.split.scheme = "kfold"
    params.validate(cfg)
    cfg.split.scheme = "jackknife"
    with pytest.raises(FoldwiseError, match=r"unknown split\.scheme 'jackknife'"):
        params.validate(cfg)
