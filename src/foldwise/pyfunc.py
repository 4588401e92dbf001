"""The final model as an MLflow pyfunc: ``mlflow.pyfunc.load_model(uri).predict(rows)``
takes raw feature rows (a DataFrame, original column names) and returns a DataFrame of
``prediction`` (class label, or value) and ``proba_<label>`` columns — the bundle's
scalers applied, an ensemble combined, exactly as `foldwise predict` and the test stage
compute it (:mod:`foldwise.predict`).

The logged model carries the foldwise package itself (``code_paths``), so loading it
needs torch, pandas and scikit-learn, not a foldwise install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd


class FoldwiseModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from foldwise.predict import load

        self.model = load(Path(context.artifacts["bundle"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        from foldwise.predict import predict_frame

        # MLflow has already checked the rows against the signature and dropped the
        # columns it does not name (its convention); foldwise predict refuses those.
        return predict_frame(self.model, pd.DataFrame(model_input), extra="ignore")


def signature(model, example: pd.DataFrame) -> Any:
    """Input: every feature column under its original name, as ``double`` — the bundle
    scores in float64, so MLflow accepts integer and float columns alike (a ``float``
    column, as the float32 table would infer, refuses the float64 rows of JSON or CSV).
    Output: ``prediction`` and ``proba_<label>``, or ``prediction`` alone (a value)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    from foldwise.predict import predict_frame

    rows = example.astype("float64")
    inputs = Schema([ColSpec("double", str(c)) for c in model.meta.feature_names])
    outputs = infer_signature(rows, predict_frame(model, rows)).outputs
    return ModelSignature(inputs=inputs, outputs=outputs)


def log(bundle: Path, example: pd.DataFrame, name: str = "model") -> Any:
    """Log ``bundle`` (``model.pt``) as a pyfunc model under the active run; ``example``
    (a few raw rows) becomes its input example and, run through the model, the output
    side of its signature (:func:`signature`)."""
    import sklearn
    import torch

    from foldwise.predict import load

    src = Path(__file__).resolve().parent
    example = example.astype("float64")
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(src / "pyfunc_model.py"),  # models from code: nothing pickled
        artifacts={"bundle": str(bundle)},
        code_paths=[str(src)],
        signature=signature(load(bundle), example),
        input_example=example,
        # given explicitly: inferring them imports and probes the whole environment
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"pandas=={pd.__version__}",
            f"scikit-learn=={sklearn.__version__}",
        ],
    )
