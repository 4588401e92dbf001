"""The code MLflow runs to load the logged model ("models from code": no pickled
object, see :func:`foldwise.pyfunc.log`). Not imported by foldwise itself."""

import mlflow

from foldwise.pyfunc import FoldwiseModel

mlflow.models.set_model(FoldwiseModel())
