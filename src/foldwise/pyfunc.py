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

        return predict_frame(self.model, pd.DataFrame(model_input))


def log(bundle: Path, example: pd.DataFrame, name: str = "model") -> Any:
    """Log ``bundle`` (``model.pt``) as a pyfunc model under the active run; ``example``
    (a few raw rows) becomes its input example and, run through the model, its signature."""
    import sklearn
    import torch

    from foldwise.predict import load, predict_frame

    src = Path(__file__).resolve().parent
    signature = mlflow.models.infer_signature(example, predict_frame(load(bundle), example))
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(src / "pyfunc_model.py"),  # models from code: nothing pickled
        artifacts={"bundle": str(bundle)},
        code_paths=[str(src)],
        signature=signature,
        input_example=example,
        # given explicitly: inferring them imports and probes the whole environment
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"pandas=={pd.__version__}",
            f"scikit-learn=={sklearn.__version__}",
        ],
    )
