"""What the report reads: every pipeline output it shows, each one optional.

:func:`read` turns the files of one checkout into an :class:`Inputs`; the renderer
(:mod:`foldwise.report.html`) only ever sees an :class:`Inputs`, so tests build one by
hand. A missing or empty file is ``None`` (or an absent key), never an error: the
report says plainly what has not run yet. Only the selection itself is required.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from foldwise.errors import FoldwiseError
from foldwise.params import Layout

# Resampling kinds whose per-resample validation scores are worth plotting one by one
# (leave-one-out scores a single row, the bootstrap an out-of-bag set per draw).
PER_FOLD_KINDS = ("folds", "repeated", "holdout")


@dataclass
class Confusion:
    """counts[i][j]: rows of class i predicted as class j."""

    classes: list[str]
    counts: list[list[int]]


@dataclass
class Inputs:
    selection: dict[str, Any]  # results/selection.json
    cv_metrics: dict[str, Any] | None = None  # results/cv_metrics.json
    ranking: list[str] = field(default_factory=list)  # labels in cv_table.csv order
    meta: dict[str, Any] | None = None  # data/prepared/meta.json
    manifest: dict[str, Any] | None = None  # data/split/manifest.json
    kind: str | None = None  # the sweep's resampling kind (session.json)
    # label -> metric -> per-resample validation values, in resample order
    fold_scores: dict[str, dict[str, list[float]]] | None = None
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> summary table
    curves_summary: dict[str, Any] | None = None  # results/curves/summary.json
    nested: dict[str, Any] | None = None  # results/nested.json
    test: dict[str, Any] | None = None  # results/test_metrics.json
    cv_confusion: Confusion | None = None
    test_confusion: Confusion | None = None
    ensembles: pd.DataFrame | None = None  # results/ensembles.csv: score vs members
    generated_at: str = ""
    git_commit: str = ""


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or half-written by a run that was killed
        return None


def _csv(path: Path) -> pd.DataFrame | None:
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError):  # absent or empty (pandas: EmptyDataError)
        return None
    return table if len(table) else None


def confusion_from_pairs(pairs: pd.DataFrame | None, classes: list[str] | None) -> Confusion | None:
    """``actual,predicted`` rows (the files DVC's confusion plot reads) → a count matrix."""
    if pairs is None or not {"actual", "predicted"} <= set(pairs.columns):
        return None
    actual, predicted = pairs["actual"].astype(str), pairs["predicted"].astype(str)
    names = [str(c) for c in classes or []]
    names += sorted((set(actual) | set(predicted)) - set(names))
    index = {name: i for i, name in enumerate(names)}
    counts = [[0] * len(names) for _ in names]
    for a, p in zip(actual, predicted, strict=True):
        counts[index[a]][index[p]] += 1
    return Confusion(names, counts)


def _fold_scores(layout: Layout) -> tuple[str | None, dict[str, dict[str, list[float]]] | None]:
    from foldwise.results import Session, collect

    doc = _json(layout.sweep_dir / "session.json")
    if not doc:
        return None, None
    session = Session(doc)
    apparent = doc.get("apparent")  # the bootstrap's all-rows fit scores its own rows
    results = collect(session, layout.sweep_dir)  # stale result files are None
    out: dict[str, dict[str, list[float]]] = {}
    for conf in session.configs:
        values: dict[str, list[float]] = {}
        for i, r in enumerate(results[conf["hash"]]):
            if r is None or r.get("status") != "ok" or i == apparent:
                continue
            for name, v in r.get("metrics", {}).items():
                if name.startswith("val_") and isinstance(v, int | float):
                    values.setdefault(name, []).append(float(v))
        out[conf["label"]] = values
    return doc.get("kind", "folds"), out


def read(layout: Layout) -> Inputs:
    """Every input that exists; raises only when there is no selection to report on."""
    import datetime as dt

    from foldwise.files import git_commit

    selection = _json(layout.selection)
    if not selection:
        raise FoldwiseError(
            f"{layout.selection.relative_to(layout.root)} is missing, so there is no selection "
            "to report on.",
            "run the pipeline up to the aggregate stage first: dvc repro aggregate",
        )
    meta = _json(layout.meta)
    classes = (meta or {}).get("classes")
    ranking = _csv(layout.cv_table)
    kind, fold_scores = _fold_scores(layout)
    curves = {}
    for name in ("learning", "validation", "bias_variance", "bias_variance_bagging",
                 "bias_variance_boosting"):  # fmt: skip
        table = _csv(layout.curves_dir / f"{name}.csv")
        if table is not None:
            curves[name] = table
    return Inputs(
        selection=selection,
        cv_metrics=_json(layout.cv_metrics),
        ranking=[]
        if ranking is None or "label" not in ranking
        else list(map(str, ranking["label"])),
        meta=meta,
        manifest=_json(layout.manifest),
        kind=kind,
        fold_scores=fold_scores,
        curves=curves,
        curves_summary=_json(layout.curves_dir / "summary.json"),
        nested=_json(layout.nested_metrics),
        test=_json(layout.test_metrics),
        cv_confusion=confusion_from_pairs(_csv(layout.cv_confusion), classes),
        test_confusion=confusion_from_pairs(_csv(layout.test_confusion), classes),
        ensembles=_csv(layout.ensembles),
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        git_commit=git_commit(layout.root),
    )
