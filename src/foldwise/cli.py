"""The `foldwise` command: using what the pipeline made, outside DVC.

    foldwise predict --input rows.csv [--model models/final] [--output predictions.csv]
        # no --model: params.yaml's data's registered champion, else models/final
    foldwise predict --model foldwise-iris --input rows.csv    # the registered champion
    foldwise predict --input new_images/                       # data=image_folder models

`predict` scores raw rows (CSV or Parquet, the features under their original column
names; or a folder of images for a model trained on data=image_folder, each read as the
training images were) with the final model and writes ``prediction`` and
``proba_<label>`` columns (and ``file`` for images): the numbers MLflow's pyfunc and the
test stage compute (:mod:`foldwise.predict`). ``--model`` is a bundle path,
``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a registered name (its
``champion``; :mod:`foldwise.tracking.registry`); without it, the registered champion of
``params.yaml``'s data, else ``models/final`` if it was trained on that data
(:func:`default_model`), named on standard error. Bad input exits 2
with the problem and the fix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from foldwise.errors import FoldwiseError


def default_model(root: Path, tracking_uri: str) -> tuple[Any, str]:
    """The model a plain ``foldwise predict`` (no ``--model``) scores with, and the line
    that says which it is and how to pick another.

    ``models/final`` is whatever the last refit made: after ``dvc exp run``s that stopped
    at aggregate it may belong to another dataset than ``params.yaml``'s. So the default is
    the registered champion of ``params.yaml``'s data (``foldwise-<data.name>@champion``:
    the model whose test score is known), else ``models/final`` when it was trained on
    that data; ``models/final`` of another dataset is refused with the choices.
    """
    from omegaconf import OmegaConf

    from foldwise.predict import load, load_registered, read_params
    from foldwise.redact import redact
    from foldwise.tracking import registry

    cfg = read_params(root)
    data = OmegaConf.select(cfg, "data.name") if cfg is not None else None
    store = redact(tracking_uri)
    if data is not None:
        name = registry.model_name(cfg)
        v = registry.champion(tracking_uri, name)
        if v is not None:
            label = v.tags.get(f"{registry.TAG}label")
            said = (
                f"model {name}@champion (version {v.version}{f', {label}' if label else ''}): "
                f"the registered champion of params.yaml's data={data}, from {store}; "
                "another: --model models/final (the last refit), a registered name or a path"
            )
            return load_registered(f"models:/{name}/{v.version}", tracking_uri), said
        missing = f"{store} has no {name}@champion (the lockbox is not opened for it yet)"
    local = root / "models" / "final"
    if not (local / "model.pt").is_file():
        raise FoldwiseError(
            f"no model to score with: {missing + ', and ' if data else ''}there is no "
            "models/final.",
            "run the pipeline first (dvc repro refit), or pass --model.",
        )
    model = load(local)
    trained_on = model.meta.dataset
    if data is not None and trained_on != data:
        raise FoldwiseError(
            f"models/final was trained on data={trained_on}, but params.yaml's data is "
            f"{data}, and {missing}.",
            f"--model models/final to use it anyway, --model foldwise-{trained_on} for that "
            f"data's champion, or refit on {data}: "
            "dvc repro refit.",
        )
    label = _bundle_label(local)
    said = (
        f"model models/final ({label + ', ' if label else ''}data={trained_on}: the last "
        f"refit{'; ' + missing if data else ''}); another: --model <registered name or path>"
    )
    return model, said


def _bundle_label(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "info.json").read_text()).get("label") or "")
    except (OSError, ValueError):
        return ""


def _predict(args: argparse.Namespace) -> int:
    from foldwise.files import atomic_write_text
    from foldwise.predict import (
        default_tracking_uri,
        load,
        load_registered,
        predict_frame,
        read_images,
        read_rows,
        resolve,
    )

    rows = None if args.input.is_dir() else read_rows(args.input)  # bad input: first
    uri = args.tracking_uri or default_tracking_uri()
    if args.model is None:  # this data's champion, else models/final: saying which
        model, said = default_model(Path.cwd(), uri)
        print(f"foldwise: {said}", file=sys.stderr)
    elif isinstance(target := resolve(args.model), Path):
        model = load(target)
    else:
        model = load_registered(target, uri)
    if rows is None:  # a folder of images, read as the training images were
        files, rows = read_images(args.input, model.meta)
    out = predict_frame(model, rows, "ignore" if args.ignore_extra_columns else "refuse")
    if args.input.is_dir():
        out.insert(0, "file", files)
    if args.output is None:
        out.to_csv(sys.stdout, index=False)
    else:
        atomic_write_text(args.output, out.to_csv(index=False))
        print(f"foldwise: {len(out)} predictions → {args.output}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="foldwise", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="score raw rows with the final model")
    p.add_argument(
        "--input", type=Path, required=True,
        help="CSV or Parquet rows to score, or a folder of images (data=image_folder models)",
    )  # fmt: skip
    p.add_argument(
        "--model",
        help="bundle folder or file, models:/<name>@<alias>, models:/<name>/<version>, "
        "or a registered name (its @champion); default: foldwise-<data.name>@champion of "
        "params.yaml's data, else models/final if trained on that data",
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow store of the registry (default: "
        "MLFLOW_TRACKING_URI, else params.yaml's tracking.uri, else ./mlflow.db)",
    )
    p.add_argument("--output", type=Path, help="CSV to write (default: standard output)")
    p.add_argument(
        "--ignore-extra-columns",
        action="store_true",
        help="score the feature columns and ignore the others (default: refuse them)",
    )
    p.set_defaults(run=_predict)
    args = ap.parse_args(argv)
    try:
        return args.run(args)
    except FoldwiseError as err:
        print(f"foldwise: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
