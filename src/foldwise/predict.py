"""Using the final model on new rows: raw features in, classes and probabilities (or
values) out — the same numbers whether through `foldwise predict`, MLflow's pyfunc
(:mod:`foldwise.pyfunc`) or the test stage.

The saved bundle (:class:`foldwise.artifact.LoadedModel`) carries its preprocessing:
each member's standardisation, fitted on the rows it trained on. So callers pass the
features as they are in the user's table, under their original names (or the canonical
``x0..x{d-1}``); a column the model was not trained on is refused, unless the caller
asks to ignore it. ``--model`` may also name the registered model (:func:`resolve`,
:func:`load_registered`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

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
    from foldwise.artifact import load as load_bundle

    path = Path(path)
    bundle = path / "model.pt" if path.is_dir() else path
    if not bundle.is_file():
        raise FoldwiseError(
            f"no model at {path}.", "run the pipeline first (dvc repro refit), or pass --model."
        )
    return load_bundle(bundle)


def read_images(folder: Path, meta) -> tuple[list[str], pd.DataFrame]:
    """Every image file under ``folder`` (sorted, any depth) as a row of features, read
    as the training images were: the model's channels, resized to its ``[H, W]``."""
    from foldwise.sources import IMAGE_SUFFIXES, read_image

    if meta.dataset != "image_folder" or not meta.image_shape:
        raise FoldwiseError(
            f"{folder} is a folder, but the model was trained on data={meta.dataset}, not "
            "on images read from a folder.",
            "pass the rows as a CSV or Parquet file.",
        )
    files = sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FoldwiseError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).",
            "pass a folder of image files.",
        )
    channels, height, width = (int(v) for v in meta.image_shape)
    rows = np.stack(
        [read_image(f.read_bytes(), f, [height, width], channels).reshape(-1) for f in files]
    )
    names = [str(f.relative_to(folder)) for f in files]
    return names, pd.DataFrame(rows, columns=[f"x{i}" for i in range(rows.shape[1])])


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


# ----------------------------------------- the registered model (foldwise.tracking.registry)
def resolve(model: str | Path) -> str | Path:
    """What ``--model`` names: an existing bundle path stays a path; ``models:/...`` is
    an MLflow model URI; a bare name (no path separator, no suffix) is
    ``models:/<name>@champion``; anything else is a path (missing: refused on load)."""
    text = str(model)
    if text.startswith("models:/"):
        return text
    path = Path(text)
    if path.exists() or "/" in text or "\\" in text or path.suffix:
        return path
    return f"models:/{text}@champion"


def read_params(root: Path | None):
    """``params.yaml`` here, or None (missing or unreadable: not this command's business)."""
    from omegaconf import DictConfig, OmegaConf

    params = (root or Path.cwd()) / "params.yaml"
    if not params.is_file():
        return None
    try:
        loaded = OmegaConf.load(params)
    except Exception:
        return None
    return loaded if isinstance(loaded, DictConfig) else None


def default_tracking_uri(root: Path | None = None) -> str:
    """As the stages resolve it: ``MLFLOW_TRACKING_URI``, else ``tracking.uri`` of
    ``params.yaml`` here, else the project's SQLite store."""
    from foldwise.tracking import tracking_uri

    return tracking_uri(read_params(root))


def load_registered(uri: str, tracking_uri: str) -> Any:
    """The bundle of the registered model ``uri`` (``models:/name@alias`` or
    ``models:/name/version``), downloaded: the very file the lockbox scored, so its
    predictions are the local bundle's, bit for bit."""
    import mlflow

    from foldwise.files import quiet_progress_off_a_terminal
    from foldwise.redact import redact

    quiet_progress_off_a_terminal()
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        raise FoldwiseError(
            f"tracking URI {redact(tracking_uri)!r} is a folder store.",
            "pass --tracking-uri sqlite:///path/mlflow.db or http://host:port.",
        )
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="foldwise-model-") as dest:
        return _load_downloaded(uri, tracking_uri, Path(dest))


def _load_downloaded(uri: str, tracking_uri: str, dest: Path) -> Any:
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    from foldwise.redact import redact

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except MlflowException as err:
        name = uri.removeprefix("models:/").split("@")[0].split("/")[0]
        raise FoldwiseError(
            f"MLflow at {redact(tracking_uri)} has no model {uri} "
            f"({str(err).splitlines()[0][:200]}).",
            f"check the name and alias/version (the test stage registers {name!r} with alias "
            f"'champion' when it opens the lockbox), pass --tracking-uri, or pass a bundle "
            "path (models/final).",
        ) from None
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    try:
        bundle = mlmodel["flavors"]["python_function"]["artifacts"]["bundle"]["path"]
    except (KeyError, TypeError):
        raise FoldwiseError(
            f"{uri} is not a foldwise model (its MLmodel names no bundle).",
            "pass a model the test stage registered, or a bundle path.",
        ) from None
    return load(local / bundle)  # read into memory: the folder may go
