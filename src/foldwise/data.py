"""Datasets → one canonical table: ``row_id``, feature columns ``x0..x{d-1}``, ``target``.

Optional structure columns follow: ``group`` (from ``data.group_column``: rows of one
group — a patient, a subject, a site — are never split across train and validation by
a grouped scheme, nor across dev and test) and ``time`` (from ``data.time_column``:
temporal schemes validate on later rows and lock away the latest period). They are
never features.

The row id is stable (the sample's position in the source, or a user id column),
so split files can name rows by id and hashes can be compared across runs.
For classification (``data.task``), class labels are encoded as ``0..C-1`` in sorted
order of the original labels, which :class:`Meta` records; for regression the target is
kept as a float.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from foldwise.errors import FoldwiseError
from foldwise.files import repo_root


@dataclass(frozen=True)
class Meta:
    """What later stages need to know about the table."""

    dataset: str
    n_rows: int
    n_features: int
    classes: list[str]  # original label of each encoded class 0..C-1
    feature_names: list[str]  # original column names, in x0..x{d-1} order
    image_shape: list[int] | None
    group_column: str | None = None
    time_column: str | None = None
    task: str = "classification"  # or "regression"

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def n_outputs(self) -> int:
        """Network outputs: one logit per class, or one value."""
        return 1 if self.regression else self.n_classes

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Meta:
        return cls(**d)


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in STRUCTURE]


# Canonical columns that are not features.
STRUCTURE = ("row_id", "target", "group", "time")


Loaded = tuple[pd.DataFrame, pd.Series, pd.Series, dict[str, pd.Series]]


def _from_sklearn(loader: Callable) -> Loaded:
    bunch = loader(as_frame=True)
    features = bunch.frame.drop(columns=["target"])
    if "target_names" in bunch:  # classification: the class names
        labels = pd.Series(np.asarray(bunch.target_names)[bunch.target.to_numpy()])
    else:  # regression (diabetes): the numeric target
        labels = bunch.target.reset_index(drop=True)
    return features, labels, pd.Series(np.arange(len(features))), {}


def _structure(df: pd.DataFrame, cfg: DictConfig, name: str) -> dict[str, pd.Series]:
    """The group and time columns named in the data config, checked."""
    out = {}
    for kind in ("group", "time"):
        col = cfg.get(f"{kind}_column")
        if col is None:
            continue
        if col not in df.columns:
            raise FoldwiseError(
                f"data.{kind}_column: column {col!r} is not in {name} "
                f"(columns: {', '.join(map(str, df.columns[:20]))}).",
                f"set data.{kind}_column to an existing column, or null.",
            )
        values = df[col]
        if values.isna().any():
            raise FoldwiseError(
                f"data.{kind}_column: {int(values.isna().sum())} rows have no value in {col!r}.",
                "every row needs a value there; fill or drop those rows.",
            )
        if kind == "group":
            values = values.astype(str)
        elif not pd.api.types.is_numeric_dtype(values):
            try:
                values = pd.to_datetime(values)
            except (ValueError, TypeError) as e:
                raise FoldwiseError(
                    f"data.time_column: {col!r} is neither numeric nor a date/time ({e}).",
                    "use numbers (e.g. a day index) or ISO timestamps.",
                ) from None
        out[kind] = values.reset_index(drop=True)
    return out


def _from_file(cfg: DictConfig) -> Loaded:
    path = Path(str(cfg.path)).expanduser()
    if not path.is_absolute():
        path = repo_root() / path
    if not path.is_file():
        raise FoldwiseError(
            f"data.path: file {path} does not exist.",
            "point data.path at a .csv or .parquet file (absolute, or relative to the repo).",
        )
    raw = repo_root() / "data" / "raw"
    if not path.resolve().is_relative_to(raw.resolve()):
        # Not an error: but DVC only sees the parameter, not the file's content.
        print(
            f"[prepare] note: {path} is outside data/raw/, so DVC will not notice when its "
            "content changes; move it under data/raw/ (see data/raw/README.md).",
            file=sys.stderr,
        )
    is_parquet = path.suffix.lower() in (".parquet", ".pq")
    df = pd.read_parquet(path) if is_parquet else pd.read_csv(path)
    target = str(cfg.target)
    if target not in df.columns:
        raise FoldwiseError(
            f"data.target: column {target!r} is not in {path.name} "
            f"(columns: {', '.join(map(str, df.columns[:20]))}).",
            "set data.target to the name of the label column.",
        )
    drop = [str(c) for c in (cfg.get("drop") or [])]
    unknown = [c for c in drop if c not in df.columns]
    if unknown:
        raise FoldwiseError(f"data.drop names columns that do not exist: {unknown}.")
    id_col = cfg.get("id_column")
    if id_col is not None:
        if id_col not in df.columns:
            raise FoldwiseError(f"data.id_column: column {id_col!r} is not in {path.name}.")
        ids = df[id_col]
        if ids.duplicated().any() or ids.isna().any():
            raise FoldwiseError(
                f"data.id_column: {id_col!r} has duplicate or missing values.",
                "use a column with one unique value per row, or id_column=null.",
            )
        if not pd.api.types.is_integer_dtype(ids):
            raise FoldwiseError(
                f"data.id_column: {id_col!r} must hold integers (got {ids.dtype}).",
                "use an integer id column, or id_column=null to number rows by position.",
            )
        drop.append(str(id_col))
    else:
        ids = pd.Series(np.arange(len(df)))
    labels = df[target]
    if labels.isna().any():
        raise FoldwiseError(
            f"data.target: {int(labels.isna().sum())} rows have no label in {target!r}.",
            "drop or label those rows before training.",
        )
    extra = _structure(df, cfg, path.name)
    for kind in extra:
        col = str(cfg.get(f"{kind}_column"))
        if col == target or col in drop:
            raise FoldwiseError(f"data.{kind}_column {col!r} is also the target or dropped.")
        drop.append(col)
    features = df.drop(columns=[target, *dict.fromkeys(drop)])
    if cfg.get("task", "classification") == "regression":
        return features, labels, ids, extra
    return features, labels.astype(str), ids, extra


LOADERS: dict[str, Callable[[DictConfig], Loaded]] = {}


def _sk(name: str) -> Callable[[DictConfig], Loaded]:
    def load(_: DictConfig) -> Loaded:
        import sklearn.datasets

        return _from_sklearn(getattr(sklearn.datasets, f"load_{name}"))

    return load


LOADERS.update(
    digits=_sk("digits"),
    breast_cancer=_sk("breast_cancer"),
    wine=_sk("wine"),
    iris=_sk("iris"),
    diabetes=_sk("diabetes"),
    csv=_from_file,
)
# What each scikit-learn table's target is; data.task must agree.
TASK_OF = {
    "digits": "classification",
    "breast_cancer": "classification",
    "wine": "classification",
    "iris": "classification",
    "diabetes": "regression",
}


def check_features(features: pd.DataFrame) -> None:
    """Reject non-numeric, missing and infinite feature values, naming the columns."""
    if features.shape[1] == 0:
        raise FoldwiseError("the dataset has no feature columns.")
    non_numeric = [
        str(c)
        for c in features.columns
        if not (
            pd.api.types.is_numeric_dtype(features[c])
            and not pd.api.types.is_bool_dtype(features[c])
        )
    ]
    if non_numeric:
        raise FoldwiseError(
            f"non-numeric feature columns: {non_numeric[:10]}"
            + (" ..." if len(non_numeric) > 10 else "")
            + ".",
            "encode them as numbers before foldwise, or list them in data.drop.",
        )
    values = features.to_numpy(dtype=np.float64)
    nan_cols = [str(c) for c, n in zip(features.columns, np.isnan(values).sum(0), strict=True) if n]
    if nan_cols:
        raise FoldwiseError(
            f"missing (NaN) values in feature columns: {nan_cols[:10]}.",
            "impute or drop them before foldwise (an imputer fit on all rows would leak "
            "test information, so foldwise does not guess).",
        )
    inf_cols = [str(c) for c, n in zip(features.columns, np.isinf(values).sum(0), strict=True) if n]
    if inf_cols:
        raise FoldwiseError(
            f"infinite values in feature columns: {inf_cols[:10]}.",
            "replace or clip them before foldwise.",
        )


def prepare(cfg: DictConfig) -> tuple[pd.DataFrame, Meta]:
    """Load ``cfg.data`` into the canonical table; raise before returning anything bad."""
    name = str(cfg.data.name)
    if name not in LOADERS:
        raise FoldwiseError(f"unknown dataset {name!r}.", f"use one of: {', '.join(LOADERS)}.")
    task = str(cfg.data.get("task") or "classification")
    if task not in ("classification", "regression"):
        raise FoldwiseError(
            f"data.task={task!r} is not a task foldwise knows.", "use classification or regression."
        )
    if TASK_OF.get(name, task) != task:
        raise FoldwiseError(
            f"data={name} is a {TASK_OF[name]} dataset, but data.task={task}.",
            f"drop the data.task override (data={name} sets it).",
        )
    features, labels, ids, extra = LOADERS[name](cfg.data)
    check_features(features)
    if task == "regression":
        target, classes = _numeric_target(labels), []
    else:
        if labels.nunique() < 2:
            raise FoldwiseError(
                f"the target has {labels.nunique()} class(es); classification needs at least 2.",
                "for a numeric target, set data.task=regression.",
            )
        classes = sorted(labels.unique(), key=_natural)
        code = {c: i for i, c in enumerate(classes)}
        target = labels.map(code).to_numpy(dtype=np.int64)
    table = pd.DataFrame(
        features.to_numpy(dtype=np.float32),
        columns=[f"x{i}" for i in range(features.shape[1])],
    )
    table.insert(0, "row_id", ids.to_numpy(dtype=np.int64))
    table["target"] = target
    for kind, values in extra.items():
        table[kind] = values.to_numpy()
    image_shape = cfg.data.get("image_shape")
    if image_shape is not None:
        image_shape = [int(v) for v in image_shape]
        if int(np.prod(image_shape)) != features.shape[1]:
            raise FoldwiseError(
                f"data.image_shape {image_shape} holds {int(np.prod(image_shape))} values, "
                f"but the table has {features.shape[1]} features."
            )
    meta = Meta(
        dataset=name,
        n_rows=len(table),
        n_features=features.shape[1],
        classes=[str(c) for c in classes],
        feature_names=[str(c) for c in features.columns],
        image_shape=image_shape,
        group_column=None if "group" not in extra else str(cfg.data.group_column),
        time_column=None if "time" not in extra else str(cfg.data.time_column),
        task=task,
    )
    return table, meta


def _numeric_target(labels: pd.Series) -> np.ndarray:
    """A regression target as float64, refused when it is not numbers or not finite."""
    values = pd.to_numeric(labels, errors="coerce")
    bad = values.isna() & labels.notna()
    if bad.any():
        examples = ", ".join(map(repr, labels[bad].astype(str).unique()[:3]))
        raise FoldwiseError(
            f"data.task=regression, but {int(bad.sum())} target values are not numbers "
            f"(e.g. {examples}).",
            "fix those values, or set data.task=classification for a categorical target.",
        )
    out = values.to_numpy(dtype=np.float64)
    if not np.isfinite(out).all():
        raise FoldwiseError(
            f"data.task=regression: {int((~np.isfinite(out)).sum())} target values are infinite.",
            "replace or drop those rows.",
        )
    if np.unique(out).size < 2:
        raise FoldwiseError("the regression target is constant: there is nothing to predict.")
    return out


def _natural(label: object) -> tuple[int, float, str]:
    """Sort numeric-looking labels numerically ("2" < "10"), the rest as text."""
    try:
        return (0, float(str(label)), "")
    except ValueError:
        return (1, 0.0, str(label))
