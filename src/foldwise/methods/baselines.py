"""Baselines: cheap, well-known scikit-learn models scored on the sweep's own resamples.

A network's score means little alone: 0.51 R² is a triumph on noisy features and a
failure on clean ones. Each baseline is fit on exactly a resample's training rows and
scored on its validation rows, with foldwise's scores (:func:`foldwise.scores.row_scores`),
so its numbers sit in the leaderboard beside the networks' in the same units, and the
Nadeau–Bengio comparison pairs them fold by fold.

- ``dummy``: ``DummyClassifier(strategy="prior")`` / ``DummyRegressor()`` (the mean): no
  feature used, the floor any model must clear.
- ``linear``: ``LogisticRegression`` / ``RidgeCV``, after a ``StandardScaler`` fit on the
  resample's training rows (inside a ``Pipeline``: never on the rows it is scored on).
- ``hgb``: ``HistGradientBoostingClassifier`` / ``Regressor`` (50 rounds, no early
  stopping: deterministic given the seed, and fast on small tables).

A bootstrap resample lists a row once per draw: the baselines see each distinct row
once with its multiplicity as ``sample_weight`` (the same weighted loss as the
duplicated rows, and RidgeCV's leave-one-out choice of alpha does not see a row's copy
score the row); HistGradientBoosting takes the repeated rows (see :func:`_fit`).

A result is a dict in the sweep's result format (``metrics``, ``predictions["val"]``,
``n_val``), so every scheme's summary applies unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from foldwise import scores as S

NAMES = S.BASELINES
# What the leaderboard calls each, by task.
LABELS = {
    ("dummy", "classification"): "baseline: Dummy (prior)",
    ("dummy", "regression"): "baseline: Dummy (mean)",
    ("linear", "classification"): "baseline: LogisticRegression",
    ("linear", "regression"): "baseline: RidgeCV",
    ("hgb", "classification"): "baseline: HistGradientBoosting",
    ("hgb", "regression"): "baseline: HistGradientBoosting",
}
# Bump when a baseline's definition changes: cached scores then refit.
VERSION = 1
HGB_ROUNDS = 50


def label(name: str, task: str) -> str:
    return LABELS[(name, task)]


def estimator(name: str, task: str, seed: int) -> Any:
    """The unfitted scikit-learn estimator of baseline ``name`` for ``task``."""
    from sklearn import dummy, ensemble, linear_model
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    regression = task == "regression"
    if name == "dummy":
        return dummy.DummyRegressor() if regression else dummy.DummyClassifier(strategy="prior")
    if name == "linear":
        model = (
            linear_model.RidgeCV(alphas=np.logspace(-3, 3, 13))
            if regression
            else linear_model.LogisticRegression(max_iter=1000)
        )
        return Pipeline([("scale", StandardScaler()), ("model", model)])
    if name == "hgb":
        kind = (
            ensemble.HistGradientBoostingRegressor
            if regression
            else ensemble.HistGradientBoostingClassifier
        )
        return kind(max_iter=HGB_ROUNDS, early_stopping=False, random_state=seed)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(NAMES)}")


def _fit(model: Any, x: np.ndarray, y: np.ndarray, train: np.ndarray) -> Any:
    """Fit on positions ``train``: each distinct row once, its multiplicity as weight.

    Unit weights are left out, and HistGradientBoosting takes the repeated rows instead
    of weights (the same loss): with weights its binning takes weighted percentiles,
    measured 25× slower (scikit-learn 1.9)."""
    rows, counts = np.unique(train, return_counts=True)
    if type(model).__name__.startswith("HistGradientBoosting"):
        return model.fit(x[train], y[train])
    if np.all(counts == 1):
        return model.fit(x[rows], y[rows])
    weight = counts.astype(float)
    if hasattr(model, "steps"):  # a Pipeline: every step takes the weights
        return model.fit(
            x[rows], y[rows], **{f"{n}__sample_weight": weight for n, _ in model.steps}
        )
    return model.fit(x[rows], y[rows], sample_weight=weight)


def _predict(model: Any, x: np.ndarray, y: np.ndarray, task: str, n_classes: int) -> dict:
    """Predictions and per-row losses as the engine records them: the squared error, or
    the cross-entropy of the true class (natural log), over every class of the task."""
    if task == "regression":
        pred = np.asarray(model.predict(x), dtype=float)
        return {"pred": pred, "loss": (pred - y) ** 2}
    proba = np.zeros((len(x), n_classes))
    proba[:, model.classes_] = model.predict_proba(x)  # a class the rows lacked: 0
    pred = proba.argmax(axis=1)
    true = np.clip(proba[np.arange(len(y)), y], np.finfo(float).tiny, None)
    out = {"pred": pred, "loss": -np.log(true)}
    if n_classes == 2:
        out["prob"] = proba[:, 1]
    return out


def score(
    name: str,
    task: str,
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    *,
    seed: int = 0,
    n_classes: int = 0,
    row_ids: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit baseline ``name`` on positions ``train`` (repeats: bootstrap draws) and score
    it on ``train`` (each draw counted) and on ``val``: one result in the sweep's format."""
    from threadpoolctl import threadpool_limits

    train, val = np.asarray(train), np.asarray(val)
    # One OpenMP thread: these are small fits, and on a shared machine HistGradientBoosting's
    # thread per core made a 5-fold sweep of digits take minutes instead of seconds.
    metrics: dict[str, float] = {}
    with threadpool_limits(1):
        model = _fit(estimator(name, task, seed), x, y, train)
        for side, pos in (("train", train), ("val", val)):
            p = _predict(model, x[pos], y[pos], task, n_classes)
            for k, v in S.row_scores(task, y[pos], p["pred"], p["loss"]).items():
                metrics[f"{side}_{k}"] = v
    # p: the validation rows' predictions (the loop's last side)
    ids = val if row_ids is None else row_ids[val]
    pred = {
        "row": ids.tolist(),
        "true": y[val].tolist(),
        **{k: np.asarray(v).tolist() for k, v in p.items()},
    }
    return {
        "status": "ok",
        "metrics": metrics,
        "history": {},
        "best_epoch": 0,
        "epochs_trained": 0,
        "n_train": len(train),
        "n_val": len(val),
        "predictions": {"val": pred},
    }


def fit_all(
    name: str, task: str, x: np.ndarray, y: np.ndarray, *, seed: int = 0, n_classes: int = 0
) -> tuple[Any, dict[str, float]]:
    """A selected baseline's refit: :func:`estimator` fit on every row of ``x`` as
    :func:`score` fits a resample's training rows, and its training scores
    (``train_<score>``)."""
    from threadpoolctl import threadpool_limits

    rows = np.arange(len(x))
    with threadpool_limits(1):
        model = _fit(estimator(name, task, seed), x, y, rows)
        p = _predict(model, x, y, task, n_classes)
    metrics = {f"train_{k}": v for k, v in S.row_scores(task, y, p["pred"], p["loss"]).items()}
    return model, metrics


def score_all(
    name: str,
    task: str,
    x: np.ndarray,
    y: np.ndarray,
    resamples: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    seed: int = 0,
    n_classes: int = 0,
    row_ids: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """:func:`score` on each (train, val) resample, in order. A fit that raises (a
    resample whose training rows hold one class, say) is a failed result, as a failed
    network's: the baseline is then incomplete, not the stage's end."""
    out = []
    for tr, va in resamples:
        try:
            out.append(score(name, task, x, y, tr, va, seed=seed, n_classes=n_classes,
                             row_ids=row_ids))  # fmt: skip
        except (ValueError, ArithmeticError) as e:
            out.append({"status": "failed", "error": f"{type(e).__name__}: {e}"})
    return out
