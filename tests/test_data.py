"""foldwise.data: the canonical table from scikit-learn datasets and from CSV/Parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf
from sklearn.datasets import load_breast_cancer, load_digits

from foldwise import data
from foldwise.data import Meta, prepare
from foldwise.errors import FoldwiseError


def make_cfg(
    name: str = "csv",
    path: Path | str | None = None,
    target: str | None = "label",
    id_column: str | None = None,
    drop: list[str] | None = None,
    image_shape: list[int] | None = None,
    seed: int = 0,
) -> DictConfig:
    return OmegaConf.create(
        {
            "data": {
                "name": name,
                "path": None if path is None else str(path),
                "target": target,
                "id_column": id_column,
                "drop": drop,
                "image_shape": image_shape,
            },
            "seed": seed,
        }
    )


def write_csv(tmp_path: Path, df: pd.DataFrame, name: str = "table.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def small_frame() -> pd.DataFrame:
    """Six rows, two numeric features, an id column, a note column and string labels."""
    return pd.DataFrame(
        {
            "sample_id": [105, 7, 42, 3, 900, 11],
            "height": [1.5, 2.0, 3.25, 4.0, 5.5, 6.0],
            "note": ["a", "b", "c", "d", "e", "f"],
            "weight": [10, 20, 30, 40, 50, 60],
            "label": ["dog", "cat", "bird", "cat", "dog", "bird"],
        }
    )


def assert_canonical(table: pd.DataFrame, meta: Meta) -> None:
    n_features = meta.n_features
    assert list(table.columns) == ["row_id", *[f"x{i}" for i in range(n_features)], "target"]
    assert table["row_id"].dtype == np.int64
    assert table["target"].dtype == np.int64
    for i in range(n_features):
        assert table[f"x{i}"].dtype == np.float32
    assert table["row_id"].is_unique
    assert len(table) == meta.n_rows
    assert sorted(table["target"].unique().tolist()) == list(range(meta.n_classes))


# --------------------------------------------------------------------------------------------
# scikit-learn datasets
# --------------------------------------------------------------------------------------------


def test_prepare_digits_canonical_table():
    table, meta = prepare(make_cfg("digits", target=None, image_shape=[1, 8, 8]))
    bunch = load_digits()
    assert_canonical(table, meta)
    assert table.shape == (1797, 66)
    np.testing.assert_array_equal(table["row_id"].to_numpy(), np.arange(1797))
    np.testing.assert_array_equal(table["target"].to_numpy(), bunch.target)
    np.testing.assert_array_equal(
        table[[f"x{i}" for i in range(64)]].to_numpy(), bunch.data.astype(np.float32)
    )
    assert meta == Meta(
        dataset="digits",
        n_rows=1797,
        n_features=64,
        classes=[str(i) for i in range(10)],
        feature_names=list(load_digits(as_frame=True).frame.columns[:-1]),
        image_shape=[1, 8, 8],
    )
    assert meta.feature_names[0] == "pixel_0_0"
    assert meta.n_classes == 10
    assert Meta.from_dict(meta.to_dict()) == meta


def test_prepare_breast_cancer_canonical_table():
    table, meta = prepare(make_cfg("breast_cancer", target=None))
    bunch = load_breast_cancer()
    assert_canonical(table, meta)
    assert table.shape == (569, 32)
    np.testing.assert_array_equal(table["row_id"].to_numpy(), np.arange(569))
    # Classes are encoded in sorted order of the label names: benign=0, malignant=1,
    # i.e. the reverse of scikit-learn's own encoding (malignant=0).
    assert meta.classes == ["benign", "malignant"]
    np.testing.assert_array_equal(table["target"].to_numpy(), (bunch.target == 0).astype(int))
    assert np.bincount(table["target"]).tolist() == [357, 212]
    np.testing.assert_allclose(
        table[[f"x{i}" for i in range(30)]].to_numpy(), bunch.data.astype(np.float32)
    )
    assert meta.dataset == "breast_cancer"
    assert meta.n_rows == 569
    assert meta.n_features == 30
    assert meta.feature_names == list(bunch.feature_names)
    assert meta.image_shape is None


def test_image_shape_must_match_feature_count():
    with pytest.raises(FoldwiseError, match=r"image_shape \[1, 4, 4\] holds 16 values.*64"):
        prepare(make_cfg("digits", target=None, image_shape=[1, 4, 4]))


def test_unknown_dataset_name():
    with pytest.raises(FoldwiseError) as err:
        prepare(make_cfg("mnist"))
    message = str(err.value)
    assert "unknown dataset 'mnist'" in message
    for known in ("digits", "breast_cancer", "csv"):
        assert known in message


# --------------------------------------------------------------------------------------------
# CSV / Parquet loader: happy paths
# --------------------------------------------------------------------------------------------


def test_csv_with_string_labels_and_id_column(tmp_path):
    path = write_csv(tmp_path, small_frame())
    table, meta = prepare(make_cfg(path=path, id_column="sample_id", drop=["note"]))
    assert_canonical(table, meta)
    assert table["row_id"].tolist() == [105, 7, 42, 3, 900, 11]
    assert meta.classes == ["bird", "cat", "dog"]
    assert table["target"].tolist() == [2, 1, 0, 1, 2, 0]
    assert meta.feature_names == ["height", "weight"]
    assert meta.n_features == 2
    assert meta.n_rows == 6
    assert meta.dataset == "csv"
    assert meta.image_shape is None
    assert table["x0"].tolist() == [1.5, 2.0, 3.25, 4.0, 5.5, 6.0]
    assert table["x1"].tolist() == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]


def test_csv_without_id_column_numbers_rows(tmp_path):
    df = small_frame().drop(columns=["sample_id", "note"])
    table, meta = prepare(make_cfg(path=write_csv(tmp_path, df)))
    assert table["row_id"].tolist() == list(range(6))
    assert meta.feature_names == ["height", "weight"]


def test_parquet_file_is_read(tmp_path):
    path = tmp_path / "table.parquet"
    small_frame().to_parquet(path, index=False)
    table, meta = prepare(make_cfg(path=path, id_column="sample_id", drop=["note"]))
    assert table["row_id"].tolist() == [105, 7, 42, 3, 900, 11]
    assert table["target"].tolist() == [2, 1, 0, 1, 2, 0]
    assert meta.feature_names == ["height", "weight"]


def test_numeric_labels_sort_naturally(tmp_path):
    df = pd.DataFrame({"f": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "label": [10, 2, 1, 2, 10, 1]})
    table, meta = prepare(make_cfg(path=write_csv(tmp_path, df)))
    assert meta.classes == ["1", "2", "10"]
    assert table["target"].tolist() == [2, 1, 0, 1, 2, 0]


# --------------------------------------------------------------------------------------------
# CSV loader: bad inputs, each a FoldwiseError naming the problem
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FoldwiseError) as err:
        prepare(make_cfg(path=missing))
    assert str(missing) in str(err.value)
    assert "does not exist" in str(err.value)


def test_missing_target_column(tmp_path):
    path = write_csv(tmp_path, small_frame())
    with pytest.raises(FoldwiseError) as err:
        prepare(make_cfg(path=path, target="species"))
    assert "'species'" in str(err.value)
    assert "data.target" in str(err.value)
    assert "sample_id" in str(err.value)  # the available columns are listed


def test_non_numeric_feature_column_is_named(tmp_path):
    path = write_csv(tmp_path, small_frame())
    with pytest.raises(FoldwiseError) as err:
        prepare(make_cfg(path=path, id_column="sample_id"))
    assert "non-numeric" in str(err.value)
    assert "'note'" in str(err.value)
    assert "height" not in str(err.value)


def test_nan_feature_values(tmp_path):
    df = small_frame().drop(columns=["note"])
    df["height"] = df["height"].astype(float)
    df.loc[2, "height"] = np.nan
    with pytest.raises(FoldwiseError) as err:
        prepare(make_cfg(path=write_csv(tmp_path, df), id_column="sample_id"))
    assert "NaN" in str(err.value)
    assert "'height'" in str(err.value)
    assert "weight" not in str(err.value)


def test_infinite_feature_values(tmp_path):
    df = small_frame().drop(columns=["note"])
    df["weight"] = df["weight"].astype(float)
    df.loc[4, "weight"] = -np.inf
    with pytest.raises(FoldwiseError) as err:
        prepare(make_cfg(path=write_csv(tmp_path, df), id_column="sample_id"))
    assert "infinite" in str(err.value)
    assert "'weight'" in str(err.value)
    assert "height" not in str(err.value)


def test_single_class_target(tmp_path):
    df = small_frame().drop(columns=["note"]).assign(label="cat")
    with pytest.raises(FoldwiseError, match=r"1 class\(es\).*at least 2"):
        prepare(make_cfg(path=write_csv(tmp_path, df), id_column="sample_id"))


def test_duplicate_id_column(tmp_path):
    df = small_frame().drop(columns=["note"])
    df.loc[3, "sample_id"] = 105
    with pytest.raises(FoldwiseError) as err:
        prepare(make_cfg(path=write_csv(tmp_path, df), id_column="sample_id"))
    assert "'sample_id'" in str(err.value)
    assert "duplicate" in str(err.value)


def test_missing_labels(tmp_path):
    df = small_frame().drop(columns=["note"])
    df.loc[[0, 5], "label"] = None
    with pytest.raises(FoldwiseError, match=r"2 rows have no label in 'label'"):
        prepare(make_cfg(path=write_csv(tmp_path, df), id_column="sample_id"))


def test_drop_names_unknown_column(tmp_path):
    path = write_csv(tmp_path, small_frame())
    with pytest.raises(FoldwiseError, match=r"data\.drop.*'colour'"):
        prepare(make_cfg(path=path, drop=["note", "colour"]))


def test_non_integer_id_column(tmp_path):
    df = small_frame().drop(columns=["note"])
    df["sample_id"] = ["a", "b", "c", "d", "e", "f"]
    with pytest.raises(FoldwiseError, match=r"'sample_id' must hold integers"):
        prepare(make_cfg(path=write_csv(tmp_path, df), id_column="sample_id"))


def test_check_features_rejects_boolean_and_empty():
    with pytest.raises(FoldwiseError, match=r"non-numeric feature columns: \['flag'\]"):
        data.check_features(pd.DataFrame({"ok": [1.0, 2.0], "flag": [True, False]}))
    with pytest.raises(FoldwiseError, match="no feature columns"):
        data.check_features(pd.DataFrame(index=range(3)))
