"""Fold results → per-configuration statistics → the selected configuration.

For every validation metric a configuration gets the mean over folds, the sample
standard deviation (ddof=1), the standard error ``std / sqrt(k)`` and a Student-t
interval ``mean ± t_{(1+c)/2, k-1} · se``. Fold scores share training rows, so this
interval is optimistic (folds are not independent); it is a yardstick for comparing
configurations, not a promise about the test set — that is the lockbox's job.

A configuration with a missing or failed fold is *incomplete*: it is reported but
can never be selected, since a mean over the folds that happened to succeed is biased.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import stdtrit  # Student t quantile; scipy.stats costs ~0.5 s to import

from foldwise.errors import FoldwiseError

SCORES = ("loss", "acc", "f1")


def summarize(
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
        return {
            "mean": float(x[0]),
            "std": 0.0,
            "se": 0.0,
            "ci_low": float(x[0]),
            "ci_high": float(x[0]),
            "n": n,
        }
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    se = std / math.sqrt(n) if n > 1 else math.nan
    if n > 1:
        half = float(stdtrit(n - 1, (1 + confidence) / 2)) * se
        lo, hi = mean - half, mean + half
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    else:
        lo = hi = math.nan
    return {"mean": mean, "std": std, "se": se, "ci_low": float(lo), "ci_high": float(hi), "n": n}


def higher_is_better(metric: str) -> bool:
    return not metric.endswith("loss")


@dataclass
class ConfigSummary:
    hash: str
    label: str
    overrides: dict[str, Any]
    run_id: str | None
    order: int  # position in the grid (tie-break)
    complete: bool
    problems: list[str] = field(default_factory=list)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    best_epochs: list[int] = field(default_factory=list)

    def score(self, metric: str) -> float:
        return self.stats[metric]["mean"] if metric in self.stats else math.nan


def summarize_config(
    conf: dict, order: int, rows: Sequence[dict | None], confidence: float = 0.95
) -> ConfigSummary:
    """Statistics over a configuration's folds; ``rows[i]`` is fold i's result or None."""
    problems = [f"fold {i}: missing" for i, r in enumerate(rows) if r is None]
    problems += [
        f"fold {i}: failed ({r.get('error', '?')})"
        for i, r in enumerate(rows)
        if r is not None and r.get("status") != "ok"
    ]
    ok = [r for r in rows if r is not None and r.get("status") == "ok"]
    summary = ConfigSummary(
        conf["hash"],
        conf["label"],
        conf["overrides"],
        conf.get("run_id"),
        order,
        complete=not problems and bool(ok),
        problems=problems,
    )
    if not ok:
        return summary
    m = {k: np.array([r["metrics"][k] for r in ok]) for k in ok[0]["metrics"]}
    for s in SCORES:
        bounds = (0.0, math.inf) if s == "loss" else (0.0, 1.0)
        summary.stats[f"val_{s}"] = summarize(m[f"val_{s}"], confidence, bounds)
        summary.stats[f"train_{s}"] = summarize(m[f"train_{s}"], confidence, bounds)
    # Generalization gap per fold: train - validation for scores; for the loss,
    # validation - train, so that for every metric a larger gap means more overfitting.
    summary.stats["gap_acc"] = summarize(m["train_acc"] - m["val_acc"], confidence)
    summary.stats["gap_f1"] = summarize(m["train_f1"] - m["val_f1"], confidence)
    summary.stats["gap_loss"] = summarize(m["val_loss"] - m["train_loss"], confidence)
    summary.best_epochs = [int(r["best_epoch"]) for r in ok]
    return summary


def best_mean(summaries: Sequence[ConfigSummary], metric: str) -> ConfigSummary:
    """Best mean validation ``metric`` among complete configurations.

    Ties (means equal to 12 decimals) go to the smaller standard error — the more stable
    configuration — then to the earlier configuration in grid order.
    """
    return min((s for s in summaries if s.complete), key=_rank_key(metric))


def _rank_key(metric: str) -> Callable[[ConfigSummary], tuple[float, float, int]]:
    """Sort key shared by selection and ranking, so rank 1 is always the selection.

    Means are compared rounded to 12 decimals: float noise is a tie, not a win.
    """
    sign = -1.0 if higher_is_better(metric) else 1.0
    return lambda s: (round(sign * s.score(metric), 12), s.stats[metric]["se"], s.order)


RULES: dict[str, Callable[[Sequence[ConfigSummary], str], ConfigSummary]] = {
    "best_mean": best_mean,
}


def select(
    summaries: Sequence[ConfigSummary], metric: str, rule: str = "best_mean"
) -> ConfigSummary:
    if not any(s.complete for s in summaries):
        detail = "; ".join(f"{s.label}: {', '.join(s.problems) or 'no folds'}" for s in summaries)
        raise FoldwiseError(
            f"no configuration finished all its folds, so none can be selected ({detail}).",
            "re-run the sweep stage (`dvc repro sweep`): it retries only the missing folds.",
        )
    return RULES[rule](summaries, metric)


def ranked(summaries: Sequence[ConfigSummary], metric: str) -> list[ConfigSummary]:
    """Complete configurations best-first, then incomplete ones in grid order."""
    done = sorted((s for s in summaries if s.complete), key=_rank_key(metric))
    return done + [s for s in summaries if not s.complete]


def metrics_document(
    summaries: Sequence[ConfigSummary], selected: ConfigSummary, metric: str
) -> dict[str, Any]:
    """The DVC metrics file: the selection first, then every configuration by label.

    Validation metrics carry mean, std, se and interval; training metrics and the
    generalization gap their mean (the full statistics are in cv_table.csv), which
    keeps ``dvc metrics show`` / ``dvc exp show`` readable.
    """

    def entry(s: ConfigSummary) -> dict[str, Any]:
        out: dict[str, Any] = {"config": s.hash, "complete": s.complete}
        for key, st in s.stats.items():
            if key.startswith("val_"):
                out[key] = {k: st[k] for k in ("mean", "std", "se", "ci_low", "ci_high")}
            else:
                out[f"{key}_mean"] = st["mean"]
        return out

    return {
        "selected": {"label": selected.label, "metric": metric, **entry(selected)},
        "configs": {s.label: entry(s) for s in summaries},
    }


def table_rows(summaries: Sequence[ConfigSummary], metric: str) -> list[dict[str, Any]]:
    rows = []
    for rank, s in enumerate(ranked(summaries, metric), start=1):
        row: dict[str, Any] = {
            "rank": rank if s.complete else None,
            "config": s.hash,
            "label": s.label,
            "complete": s.complete,
            "problems": "; ".join(s.problems),
        }
        for key, st in s.stats.items():
            row[f"{key}_mean"] = st["mean"]
            if key.startswith("val_"):
                row[f"{key}_se"] = st["se"]
                row[f"{key}_ci_low"], row[f"{key}_ci_high"] = st["ci_low"], st["ci_high"]
        rows.append(row)
    return rows


def print_table(
    summaries: Sequence[ConfigSummary], selected: ConfigSummary, metric: str, confidence: float
) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Cross-validation: mean over folds (± standard error), ranked by {metric}")
    for col in (
        "#",
        "configuration",
        "val_f1",
        "val_acc",
        "val_loss",
        f"{metric} {confidence:.0%} CI",
        "train_f1",
        "gap_f1",
    ):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    fmt = lambda st: f"{st['mean']:.4f} ± {st['se']:.4f}"  # noqa: E731
    for rank, s in enumerate(ranked(summaries, metric), start=1):
        if not s.complete:
            t.add_row("–", f"{s.label} [incomplete: {'; '.join(s.problems)}]", *[""] * 6)
            continue
        st = s.stats
        mark = " ★" if s is selected else ""
        t.add_row(
            str(rank),
            s.label + mark,
            fmt(st["val_f1"]),
            fmt(st["val_acc"]),
            fmt(st["val_loss"]),
            f"[{st[metric]['ci_low']:.4f}, {st[metric]['ci_high']:.4f}]",
            f"{st['train_f1']['mean']:.4f}",
            f"{st['gap_f1']['mean']:+.4f}",
        )
    Console(width=140).print(t)


def run(cfg: Any, layout: Any) -> ConfigSummary:
    """The aggregate stage: read the sweep's results, select, write, log to MLflow."""
    import pandas as pd

    from foldwise import tracking
    from foldwise.files import read_json, write_json
    from foldwise.results import Session, collect

    session_file = layout.sweep_dir / "session.json"
    if not session_file.is_file():
        raise FoldwiseError(f"{session_file} is missing.", "run the sweep first: dvc repro sweep")
    session = Session(read_json(session_file))
    results = collect(session, layout.sweep_dir)
    confidence = 0.95
    metric, rule = str(cfg.selection.metric), str(cfg.selection.rule)
    summaries = [
        summarize_config(c, i, results[c["hash"]], confidence)
        for i, c in enumerate(session.configs)
    ]
    selected = select(summaries, metric, rule)

    write_json(layout.cv_metrics, metrics_document(summaries, selected, metric))
    layout.cv_table.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table_rows(summaries, metric)).to_csv(layout.cv_table, index=False)
    selection = {
        "config_hash": selected.hash,
        "label": selected.label,
        "overrides": selected.overrides,
        "rule": rule,
        "metric": metric,
        "score": selected.stats[metric],
        "fold_best_epochs": selected.best_epochs,
        "config_run_id": selected.run_id,
        "sweep_run_id": session.doc["sweep_run_id"],
        "experiment_id": session.doc["experiment_id"],
        "tracking_uri": session.doc["tracking_uri"],
        "split_key": session.doc["split_key"],
        "incomplete": [s.label for s in summaries if not s.complete],
    }
    write_json(layout.selection, selection)

    c = tracking.client(cfg)
    for rank, s in enumerate(ranked(summaries, metric), start=1):
        if s.run_id is None:
            continue
        values = {
            f"cv_{k}_{stat}": v
            for k, st in s.stats.items()
            for stat, v in st.items()
            if stat != "n" and v == v
        }
        values["cv_complete"] = float(s.complete)
        tags = {f"{tracking.TAG}complete": s.complete, f"{tracking.TAG}selected": s is selected}
        if s.complete:
            values["cv_rank"] = rank
        tracking.log(c, s.run_id, metrics=values, tags=tags)
    tracking.log(
        c,
        session.doc["sweep_run_id"],
        metrics={
            f"selected_{metric}_mean": selected.stats[metric]["mean"],
            f"selected_{metric}_se": selected.stats[metric]["se"],
            "configs_incomplete": sum(not s.complete for s in summaries),
        },
        tags={
            f"{tracking.TAG}selected_config": selected.hash,
            f"{tracking.TAG}selected_label": selected.label,
        },
    )
    print_table(summaries, selected, metric, confidence)
    if selection["incomplete"]:
        print(f"[aggregate] incomplete (not selectable): {', '.join(selection['incomplete'])}")
    print(
        f"[aggregate] selected {selected.label} ({selected.hash}): {metric} = "
        f"{selected.stats[metric]['mean']:.4f} ± {selected.stats[metric]['se']:.4f} (se)"
    )
    return selected
