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
from typing import NamedTuple

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from foldwise import sources
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

    def implied(self) -> dict[str, int | tuple[int, ...]]:
        """What the data implies for a network, by name (``${foldwise:<name>}``): the feature
        count, the input shape ``(C, H, W)`` of images (``(n_features,)`` for a table),
        its channels, and the outputs (classes, or 1 for regression)."""
        shape = tuple(int(v) for v in self.image_shape) if self.image_shape else None
        return {
            "in_features": int(self.n_features),
            "n_features": int(self.n_features),
            "in_shape": shape or (int(self.n_features),),
            "in_channels": shape[0] if shape else 1,
            "out_features": int(self.n_outputs),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Meta:
        return cls(**d)


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in STRUCTURE]


# Canonical columns that are not features.
STRUCTURE = ("row_id", "target", "group", "time")


class Loaded(NamedTuple):
    """What a source gives: features, labels, row ids, group/time columns, and the
    image shape ``(C, H, W)`` when the source knows it (else ``data.image_shape``)."""

    features: pd.DataFrame
    labels: pd.Series
    ids: pd.Series
    extra: dict[str, pd.Series]
    image_shape: list[int] | None = None


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
    df = read_table(path, cfg)
    target = str(cfg.target)
    if target not in df.columns:
        close = _closest(target, [str(c) for c in df.columns])
        raise FoldwiseError(
            f"data.target: column {target!r} is not in {path.name} "
            f"(columns: {', '.join(map(str, df.columns[:20]))}).",
            (f"did you mean data.target={close}? " if close else "")
            + "set data.target to the name of the label column.",
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
        if ids.isna().any():
            raise FoldwiseError(
                f"data.id_column: {int(ids.isna().sum())} rows have no value in {id_col!r}.",
                "give every row an id, or set data.id_column=null to number rows by position.",
            )
        if ids.duplicated().any():
            dup = ids[ids.duplicated(keep=False)]
            shown = ", ".join(map(str, pd.unique(dup)[:5]))
            raise FoldwiseError(
                f"data.id_column: {id_col!r} has duplicate ids: {dup.nunique()} ids are shared "
                f"by {len(dup)} rows (e.g. {shown}). Split files name rows by id, so a "
                "duplicated id would put one id on both sides of a split.",
                "make the ids unique (or drop the repeated rows), or set data.id_column=null "
                "to number rows by position.",
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


SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def csv_separator(cfg: DictConfig) -> str:
    """``data.sep`` (default ``,``); ``\\t`` or ``tab`` (as written on a command line) is a tab."""
    sep = str(cfg.get("sep") or ",")
    return {"\\t": "\t", "tab": "\t"}.get(sep, sep)


def read_table(path: Path, cfg: DictConfig) -> pd.DataFrame:
    """A user's CSV or Parquet file, or a :class:`FoldwiseError` saying what is wrong
    with it: empty, unreadable, ragged, read as one column (the wrong separator), or
    without rows."""
    name = path.name
    if path.stat().st_size == 0:
        raise FoldwiseError(
            f"data.path: {name} is empty (0 bytes): no header, no rows.",
            "point data.path at the table you meant, or export it again (an interrupted "
            "copy or download leaves an empty file).",
        )
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as err:  # pyarrow's ArrowInvalid, OSError, ...: a damaged file
            raise FoldwiseError(
                f"data.path: {name} is not a readable Parquet file "
                f"({str(err).splitlines()[0][:200]}).",
                "export the table again, or save it as CSV and point data.path at that.",
            ) from None
    else:
        sep = csv_separator(cfg)
        try:
            df = pd.read_csv(path, sep=sep)
        except pd.errors.EmptyDataError:
            raise FoldwiseError(
                f"data.path: {name} has no header line (only blank lines).",
                "export the table with a header row naming the columns.",
            ) from None
        except pd.errors.ParserError as err:
            _ragged(path, sep)  # names the lines; else pandas's own reason
            raise FoldwiseError(
                f"data.path: {name} is not a well-formed CSV file "
                f"({str(err).strip().splitlines()[0]}).",
                "export it again as plain CSV (one header line, one line per row).",
            ) from None
        except UnicodeDecodeError:
            raise FoldwiseError(
                f"data.path: {name} is not UTF-8 text (a spreadsheet or another binary file?).",
                "export the table as CSV (UTF-8) or Parquet.",
            ) from None
        if df.shape[1] == 1:
            _one_column(name, str(df.columns[0]), sep)
        # pandas pads a short line with NaN, and takes a first column as the index when
        # every line has one field more than the header: both are ragged files.
        if not isinstance(df.index, pd.RangeIndex) or df.isna().to_numpy().any():
            _ragged(path, sep)
    if len(df) == 0:
        raise FoldwiseError(
            f"data.path: {name} has a header ({df.shape[1]} columns) but no rows.",
            "export the rows as well: foldwise needs rows to learn from.",
        )
    return df


def _one_column(name: str, header: str, sep: str) -> None:
    """A table read as one column whose name holds another separator: say which."""
    found = {s: header.count(s) for s in SEPARATORS if s != sep and header.count(s)}
    if found:
        other = max(found, key=found.__getitem__)
        shown = "\\t" if other == "\t" else other
        raise FoldwiseError(
            f"data.path: {name} was read as a single column named {header[:60]!r}: it looks "
            f"{SEPARATORS[other]}-separated, and foldwise read it as "
            f"{SEPARATORS.get(sep, repr(sep))}-separated (data.sep).",
            f"set -S \"data.sep='{shown}'\", or save the file with {SEPARATORS.get(sep, sep)}s.",
        )


def _ragged(path: Path, sep: str) -> None:
    """Raise naming the lines whose field count differs from the header's, if any."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=sep)
        header = next(reader, [])
        bad = []
        for fields in reader:
            if fields and len(fields) != len(header):
                bad.append((reader.line_num, len(fields)))
    if bad:
        shown = ", ".join(f"line {n}: {k}" for n, k in bad[:5])
        raise FoldwiseError(
            f"data.path: {path.name} is a ragged CSV file: the header has {len(header)} "
            f"fields, but {len(bad)} line(s) have another number ({shown}"
            + (", ..." if len(bad) > 5 else "")
            + ").",
            "fix those lines (a missing or extra separator, or a value holding the separator "
            "without quotes), or export the table again.",
        )


def _closest(name: str, options: list[str]) -> str | None:
    import difflib

    lower = {o.lower(): o for o in options}
    if name.lower() in lower:
        return lower[name.lower()]
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return match[0] if match else None


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
    dataset=sources.from_dataset,
    image_folder=sources.from_image_folder,
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
        examples = "; ".join(
            f"{c!r}: {v!r}"
            for c in non_numeric[:3]
            if (v := _not_a_number(features[c])) is not None
        )
        raise FoldwiseError(
            f"non-numeric feature columns: {non_numeric[:10]}"
            + (" ..." if len(non_numeric) > 10 else "")
            + (f" (values such as {examples})" if examples else "")
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
    # The table stores float32: a larger finite value would become infinite there.
    big = np.abs(values) > np.finfo(np.float32).max
    big_cols = [str(c) for c, n in zip(features.columns, big.sum(0), strict=True) if n]
    if big_cols:
        raise FoldwiseError(
            f"feature columns {big_cols[:10]} hold values beyond float32's range "
            f"(|x| > {np.finfo(np.float32).max:.3g}), which foldwise stores as float32: "
            "they would become infinite.",
            "rescale those columns (e.g. log or a unit change) before foldwise.",
        )


def _not_a_number(column: pd.Series) -> object | None:
    """The first value of ``column`` that is not a number (None when all are)."""
    if pd.api.types.is_bool_dtype(column):
        return column.iloc[0] if len(column) else None
    bad = pd.to_numeric(column, errors="coerce").isna() & column.notna()
    return column[bad].iloc[0] if bad.any() else None


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
    features, labels, ids, extra, found_shape = Loaded(*LOADERS[name](cfg.data))
    check_features(features)
    if task == "regression":
        target, classes = _numeric_target(labels), []
    else:
        if labels.nunique() < 2:
            only = ", ".join(map(repr, labels.unique()[:1]))
            raise FoldwiseError(
                f"the target has {labels.nunique()} class(es) ({only}); classification needs "
                "at least 2.",
                "check that data.target names the label column and that the file holds rows "
                "of every class; for a numeric target, set data.task=regression.",
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
    image_shape = found_shape or cfg.data.get("image_shape")
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
