"""Summaries of a configuration's resample scores, chosen by the scheme's *kind*.

Resamples of one dev set share training rows, so no summary here is a confidence
interval for the score of a future model in the strict sense (there is no unbiased
estimator of cross-validation's variance: Bengio & Grandvalet 2004). Each kind gets the
statistic that is honest for it:

``folds`` (k-fold family, leave-one-group-out, time series)
    mean, sample std, standard error ``std/√k`` and a Student-t interval over the k
    folds — optimistic, since folds are not independent; a yardstick for comparing
    configurations.
``repeated`` (repeated k-fold, shuffle-split)
    the mean over the J resamples with Nadeau & Bengio's (2003) corrected variance
    ``(1/J + n_val/n_train)·s²`` and a t interval with J − 1 degrees of freedom. The plain
    ``s²/J`` would shrink towards zero as J grows although the resamples overlap.
``exhaustive`` (leave-one-out, leave-p-out, leave-p-groups-out)
    every held-out prediction pooled: accuracy and loss over all of them, macro-F1 of
    the pooled predictions (regression: MSE, MAE and R² of the pooled predictions). A
    per-split mean of one-row F1 scores means nothing and a t interval over n
    near-identical models is false precision, so none is reported.
``holdout`` (one split)
    the validation score with a bootstrap (BCa) interval over the validation rows:
    the uncertainty of a finite validation set, not of training.
``bootstrap``
    see :mod:`foldwise.methods.bootstrap632`; ``val_acc`` is ``1 − Err.632+`` (0-1 loss);
    for regression ``val_mse`` is ``Err.632+`` of the squared error.

Which scores exist follows the task (:mod:`foldwise.scores`): the results' metric names
say it, so hand-made results in tests need no configuration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import stdtrit  # Student t quantile; scipy.stats costs ~0.5 s to import

from foldwise import scores as S
from foldwise.scores import BOUNDS, macro_f1

NAN = float("nan")


def scores_of(results: Sequence[dict]) -> tuple[str, ...]:
    """The task's score names (``loss, acc, f1`` or ``loss, mse, mae, r2``)."""
    return S.SCORES[S.task_of(results[0]["metrics"])]


def _point(value: float, n: int) -> dict[str, float]:
    """A number without an interval."""
    return {"mean": float(value), "std": NAN, "se": NAN, "ci_low": NAN, "ci_high": NAN, "n": n}


def _interval(mean: float, se: float, df: int, confidence: float, bounds) -> tuple[float, float]:
    half = float(stdtrit(df, (1 + confidence) / 2)) * se
    return max(mean - half, bounds[0]), min(mean + half, bounds[1])


def t_summary(
    values: Sequence[float],
    confidence: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> dict[str, float]:
    """Mean, sample std, standard error and a t interval of fold values.

    The interval is clipped to ``bounds`` (accuracy and F1 live in [0, 1]; a symmetric
    t interval around 0.98 with few folds can otherwise reach past 1).
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n > 1 and np.all(x == x[0]):
        # Identical fold values: exact zeros, not the ~1e-16 rounding noise of x.std().
        v = float(x[0])
        return {"mean": v, "std": 0.0, "se": 0.0, "ci_low": v, "ci_high": v, "n": n}
    if n < 2:
        return _point(x.mean() if n else NAN, n)
    mean, std = float(x.mean()), float(x.std(ddof=1))
    se = std / math.sqrt(n)
    lo, hi = _interval(mean, se, n - 1, confidence, bounds)
    return {"mean": mean, "std": std, "se": se, "ci_low": lo, "ci_high": hi, "n": n}


def corrected_t_summary(
    values: Sequence[float],
    n_train: float,
    n_val: float,
    confidence: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> dict[str, float]:
    """Nadeau–Bengio corrected resampled t: ``se = s·√(1/J + n_val/n_train)``."""
    out = t_summary(values, confidence, bounds)
    j = len(values)
    if j < 2 or out["std"] == 0:
        return out
    se = out["std"] * math.sqrt(1 / j + n_val / n_train)
    lo, hi = _interval(out["mean"], se, j - 1, confidence, bounds)
    return {**out, "se": se, "ci_low": lo, "ci_high": hi}


def _metric_arrays(results: Sequence[dict]) -> dict[str, np.ndarray]:
    return {k: np.array([r["metrics"][k] for r in results]) for k in results[0]["metrics"]}


def _gaps(stats: dict[str, dict[str, float]], per_resample: dict[str, np.ndarray] | None,
          summary, names: Sequence[str]) -> None:  # fmt: skip
    """Generalization gap: train − validation for scores, validation − train for losses
    and errors, so that for every metric a larger gap means more overfitting."""
    for s in names:
        if f"val_{s}" not in stats or f"train_{s}" not in stats:
            continue
        sign = 1.0 if S.higher_is_better(s) else -1.0
        if per_resample is not None:
            d = per_resample[f"train_{s}"] - per_resample[f"val_{s}"]
            stats[f"gap_{s}"] = summary(sign * d)
        else:
            d = stats[f"train_{s}"]["mean"] - stats[f"val_{s}"]["mean"]
            stats[f"gap_{s}"] = _point(sign * d, stats[f"val_{s}"]["n"])


def pooled_predictions(results: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, predictions, per-row losses) of every held-out row of every resample."""
    y, pred, loss = [], [], []
    for r in results:
        p = r["predictions"]["val"]
        y += p["true"]
        pred += p["pred"]
        loss += p["loss"]
    return np.asarray(y), np.asarray(pred), np.asarray(loss, dtype=float)


def bootstrap_scores(
    y: np.ndarray,
    pred: np.ndarray,
    losses: np.ndarray,
    *,
    resamples: int,
    confidence: float,
    seed: int,
    prob: np.ndarray | None = None,
    extra: bool = False,
    task: str = "classification",
) -> dict[str, dict[str, float]]:
    """Point estimate and bootstrap interval of accuracy, macro-F1 and loss (regression:
    loss = MSE, MAE and R²); with ``extra``, also macro precision and recall, and ROC-AUC
    when ``prob`` (P(class 1)) is given for two classes.

    Rows are resampled with replacement (``scipy.stats.bootstrap``, paired), which
    captures the uncertainty due to the finite set of scored rows — not the uncertainty
    of training. The interval is BCa (bias-corrected and accelerated: second-order
    accurate, and it follows a skewed distribution such as accuracy near 1) where it is
    defined; when it is not — scores identical on every resample, or a jackknife that
    cannot estimate the acceleration — scipy returns NaN and the percentile interval is
    used instead. ``interval`` says which.
    """
    import warnings

    from scipy import stats
    from sklearn.metrics import accuracy_score

    def acc(t, p, axis=-1):
        return (t == p).mean(axis=axis)

    def mean(v, axis=-1):
        return v.mean(axis=axis)

    # macro_f1 uses sklearn's default label set (classes in t or p): a resample that
    # misses a rare class is scored on the classes it has, not given F1 = 0 for it.
    def mae(t, p, axis=-1):
        return np.abs(t - p).mean(axis=axis)

    out = {}
    paired = dict(paired=True, vectorized=False)
    if task == "regression":
        y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
        jobs = [
            ("loss", (losses,), mean, losses.mean(), dict(vectorized=True)),
            ("mse", (losses,), mean, losses.mean(), dict(vectorized=True)),
            ("mae", (y, pred), mae, mae(y, pred), dict(paired=True, vectorized=True)),
            ("r2", (y, pred), S.r2, S.r2(y, pred), paired),
        ]
    else:
        jobs = [
            ("acc", (y, pred), acc, accuracy_score(y, pred), dict(paired=True, vectorized=True)),
            ("f1", (y, pred), macro_f1, macro_f1(y, pred), paired),
            ("loss", (losses,), mean, losses.mean(), dict(vectorized=True)),
        ]
    if extra and task != "regression":
        for key in ("precision", "recall"):
            fn = lambda t, p, k=key: prediction_metrics(t, p, None)[k]  # noqa: E731
            jobs.append((key, (y, pred), fn, fn(y, pred), paired))
        if prob is not None and len(np.unique(y)) == 2:
            from sklearn.metrics import roc_auc_score

            def auc(t, s):  # a resample holding one class has no AUC: NaN, not a crash
                return roc_auc_score(t, s) if len(np.unique(t)) == 2 else np.nan

            jobs.append(("auc", (y, prob), auc, auc(y, prob), paired))
    for name, data, fn, point, kw in jobs:
        lo = hi = NAN
        used = "none"
        if len(y) >= 2:
            for method in ("BCa", "percentile"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning → NaN
                    ci = stats.bootstrap(
                        data, fn, **kw, n_resamples=resamples, confidence_level=confidence,
                        method=method, random_state=np.random.default_rng(seed),
                    ).confidence_interval  # fmt: skip
                lo, hi, used = float(ci.low), float(ci.high), method
                if lo == lo and hi == hi:
                    break
        out[name] = {"value": float(point), "ci_low": lo, "ci_high": hi, "interval": used}
    return out


# Scores derived from the stored validation predictions (macro-averaged; AUC: two classes).
EXTRA = ("precision", "recall", "auc")


def prediction_metrics(y: np.ndarray, pred: np.ndarray, prob: np.ndarray | None) -> dict:
    """Macro precision and recall (scikit-learn), and ROC-AUC from P(class 1) when the
    rows hold both of two classes."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    out = {
        "precision": float(precision_score(y, pred, average="macro", zero_division=0)),
        "recall": float(recall_score(y, pred, average="macro", zero_division=0)),
    }
    if prob is not None and len(np.unique(y)) == 2:
        out["auc"] = float(roc_auc_score(y, prob))
    return out


def _with_prediction_metrics(
    stats: dict, kind: str, results: Sequence[dict], confidence: float, n_dev: int | None
) -> None:
    """Add val_precision, val_recall and (binary) val_auc, summarised like the kind's
    other scores: per resample for folds/repeated, pooled for exhaustive/holdout."""
    if not all("val" in r.get("predictions", {}) for r in results) or kind == "bootstrap":
        return
    if S.task_of(results[0]["metrics"]) == "regression":
        return  # precision, recall and AUC are classification scores
    arr = lambda p, k: np.asarray(p[k]) if k in p else None  # noqa: E731
    if kind in ("exhaustive", "holdout"):
        y, pred, _ = pooled_predictions(results)
        probs = [r["predictions"]["val"].get("prob") for r in results]
        prob = None if any(p is None for p in probs) else np.concatenate(probs)
        for k, v in prediction_metrics(y, pred, prob).items():
            stats[f"val_{k}"] = _point(v, len(y))
        return
    per = [
        prediction_metrics(arr(p, "true"), arr(p, "pred"), arr(p, "prob"))
        for p in (r["predictions"]["val"] for r in results)
    ]
    n_val = float(np.mean([r["n_val"] for r in results]))
    for k in EXTRA:
        if all(k in x for x in per):
            v = [x[k] for x in per]
            stats[f"val_{k}"] = (
                corrected_t_summary(v, float(n_dev) - n_val, n_val, confidence, (0.0, 1.0))
                if kind == "repeated" and n_dev
                else t_summary(v, confidence, (0.0, 1.0))
            )


def summarize(
    kind: str,
    results: Sequence[dict],
    *,
    confidence: float = 0.95,
    n_dev: int | None = None,
    apparent: dict | None = None,
    row_resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], str]:
    """Statistics of one configuration's finished resamples and a sentence saying what
    they are. ``results`` excludes the bootstrap's ``apparent`` fit, passed separately."""
    stats, method = _summarize(
        kind, results, confidence=confidence, n_dev=n_dev, apparent=apparent,
        row_resamples=row_resamples, seed=seed,
    )  # fmt: skip
    _with_prediction_metrics(stats, kind, results, confidence, n_dev)
    # Bagged configurations: each resample's out-of-bag score (computed on its training
    # rows), summarised as the mean over resamples (no interval: not a held-out estimate
    # of the same kind as the validation score; a yardstick beside it).
    for key in results[0]["metrics"]:
        if key.startswith("oob_") and all(key in r["metrics"] for r in results):
            values = [r["metrics"][key] for r in results]
            stats[key] = _point(float(np.mean(values)), len(values))
    return stats, method


def _summarize(
    kind: str,
    results: Sequence[dict],
    *,
    confidence: float,
    n_dev: int | None,
    apparent: dict | None,
    row_resamples: int,
    seed: int,
) -> tuple[dict[str, dict[str, float]], str]:
    m = _metric_arrays(results)
    names = scores_of(results)
    task = S.task_of(results[0]["metrics"])
    train = {f"train_{s}": t_summary(m[f"train_{s}"], confidence, BOUNDS[s]) for s in names}
    j = len(results)
    if kind == "folds":
        stats = {f"val_{s}": t_summary(m[f"val_{s}"], confidence, BOUNDS[s]) for s in names}
        stats.update(train)
        _gaps(stats, m, lambda d: t_summary(d, confidence), names)
        return stats, f"mean over {j} folds ± Student-t interval (folds overlap: optimistic)"
    if kind == "repeated":
        n_val = float(np.mean([r["n_val"] for r in results]))
        n_train = float(n_dev) - n_val if n_dev else n_val  # the resample's training rows
        stats = {
            f"val_{s}": corrected_t_summary(m[f"val_{s}"], n_train, n_val, confidence, BOUNDS[s])
            for s in names
        }
        stats.update(train)
        _gaps(stats, m, lambda d: corrected_t_summary(d, n_train, n_val, confidence), names)
        return stats, (
            f"mean over {j} resamples ± Nadeau–Bengio corrected t interval "
            f"(1/J + n_val/n_train = 1/{j} + {n_val:.0f}/{n_train:.0f})"
        )
    if kind == "exhaustive":
        y, pred, loss = pooled_predictions(results)
        n = len(y)
        pooled = S.row_scores(task, y, pred, loss)
        stats = {f"val_{s}": _point(pooled[s], n) for s in names}
        stats.update(train)
        _gaps(stats, None, None, names)
        return stats, (
            f"pooled over {n} held-out predictions of {j} models; no interval (no unbiased "
            "variance estimator exists for leave-out CV)"
        )
    if kind == "holdout":
        y, pred, loss = pooled_predictions(results)
        rows = bootstrap_scores(
            y, pred, loss, resamples=row_resamples, confidence=confidence, seed=seed, task=task
        )
        stats = {
            f"val_{s}": {
                "mean": rows[s]["value"], "std": NAN, "se": NAN,
                "ci_low": rows[s]["ci_low"], "ci_high": rows[s]["ci_high"], "n": len(y),
            }
            for s in names
        }  # fmt: skip
        stats.update(train)
        _gaps(stats, None, None, names)
        return stats, (
            f"one split; interval: bootstrap (BCa) over its {len(y)} validation rows "
            "(validation-set noise only)"
        )
    if kind == "bootstrap":
        from foldwise.methods import bootstrap632

        if apparent is None:
            raise ValueError("the bootstrap summary needs the apparent (all-rows) fit")
        e = bootstrap632.from_results(results, apparent)
        n = e.rows_scored
        score = (
            {"val_mse": _point(e.err_632plus, n)}
            if task == "regression"
            else {"val_acc": _point(1 - e.err_632plus, n)}
        )
        stats = {
            **score,
            "err_632plus": _point(e.err_632plus, n),
            "err_632": _point(e.err_632, n),
            "err_loo_bootstrap": _point(e.loo_bootstrap, n),
            "err_apparent": _point(e.apparent, n),
            "no_information_error": _point(e.gamma, n),
            "relative_overfitting": _point(e.r, n),
            **train,
        }
        _gaps(stats, None, None, names)
        what = "val_mse = Err.632+ (squared error)" if task == "regression" else (
            "val_acc = 1 − Err.632+")  # fmt: skip
        return stats, (
            f".632+ bootstrap over {j} draws (Efron & Tibshirani 1997): {what}; no interval"
        )
    raise ValueError(f"unknown kind of resampling {kind!r}")
