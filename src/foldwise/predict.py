"""Using the final model on new rows: raw features in, classes and probabilities (or
values) out — the same numbers whether through `foldwise predict`, MLflow's pyfunc
(:mod:`foldwise.pyfunc`) or the test stage.

The saved bundle (:class:`foldwise.artifact.LoadedModel`) carries its preprocessing:
each member's standardisation, fitted on the rows it trained on. So callers pass the
features as they are in the user's table, under their original names (or the canonical
``x0..x{d-1}``); a column the model was not trained on is refused, unless the caller
asks to ignore it. ``--model`` may also name the registered model (:func:`resolve`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from foldwise.data import STRUCTURE
from foldwise.errors import FoldwiseError


def _shown(cols: list) -> str:
    return ", ".join(map(str, cols[:5])) + (" …" if len(cols) > 5 else "")


def feature_matrix(meta, df: pd.DataFrame, extra: str = "refuse") -> np.ndarray:
    """``df``'s features [n, d] in the model's column order, checked against the training
    schema: every feature column, numeric, finite. Columns the model was not trained on
    are refused (``extra="refuse"``; the table's own structure columns — ``row_id``,
    ``target``, the group and time columns — are allowed) or dropped (``"ignore"``)."""
    names = list(meta.feature_names)
    canonical = [f"x{i}" for i in range(len(names))]
    for cols in (names, canonical):
        if all(c in df.columns for c in cols):
            block = df[cols]
            break
    else:
        missing = [c for c in names if c not in df.columns]
        raise FoldwiseError(
            f"the rows lack {len(missing)} of the model's {len(names)} feature columns: "
            f"{_shown(missing)}.",
            "pass every feature column the model was trained on, under its original name "
            f"(e.g. {names[0]!r}).",
        )
    if extra == "refuse":
        known = {*cols, *STRUCTURE, meta.group_column, meta.time_column}
        unknown = [c for c in df.columns if c not in known]
        if unknown:
            raise FoldwiseError(
                f"the rows hold {len(unknown)} column(s) the model was not trained on: "
                f"{_shown(unknown)} (its {len(names)} features: {_shown(names)}).",
                "drop them (a target or id column, say), or pass --ignore-extra-columns "
                "to score the feature columns alone.",
            )
    bad = [c for c in block.columns if not pd.api.types.is_numeric_dtype(block[c])]
    if bad:
        kinds = ", ".join(f"{c} ({block[c].dtype})" for c in bad[:5])
        raise FoldwiseError(
            f"feature columns are not numeric: {kinds}.",
            "pass numbers, as in the training table (no text, no units, no thousands separators).",
        )
    x = block.to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise FoldwiseError(
            "the rows hold missing or infinite feature values.",
            "fill or drop them first: the model was trained on finite values only.",
        )
    return x


def predict_frame(model, df: pd.DataFrame, extra: str = "refuse") -> pd.DataFrame:
    """One row per input row: ``prediction`` (the original class label, or the value) and,
    for classification, ``proba_<label>`` for every class (``extra``: :func:`feature_matrix`)."""
    out = model.outputs(feature_matrix(model.meta, df, extra))
    if model.meta.regression:
        return pd.DataFrame({"prediction": out["pred"]}, index=df.index)
    classes = list(model.meta.classes)
    frame = pd.DataFrame({"prediction": [classes[int(c)] for c in out["pred"]]}, index=df.index)
    for j, label in enumerate(classes):
        frame[f"proba_{label}"] = out["proba"][:, j]
    return frame


def load(path: Path):
    """The bundle at ``path`` (``models/final`` or its ``model.pt``)."""
    from foldwise.artifact import LoadedModel

    path = Path(path)
    bundle = path / "model.pt" if path.is_dir() else path
    if not bundle.is_file():
        raise FoldwiseError(
            f"no model at {path}.", "run the pipeline first (dvc repro refit), or pass --model."
        )
    return LoadedModel(bundle)


def read_rows(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file of rows to score."""
    path = Path(path)
    if not path.is_file():
        raise FoldwiseError(f"no such file: {path}.")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise FoldwiseError(
            f"{path} is not a readable CSV ({err}).", "pass a comma-separated file with a header."
        ) from err
