"""Resample results → per-configuration statistics → the selected configuration.

What a configuration's statistics are depends on the kind of scheme that made its
resamples (:mod:`foldwise.methods.resampling`): for k-fold CV, the mean over folds, the
sample standard deviation (ddof=1), the standard error ``std / sqrt(k)`` and a Student-t
interval ``mean ± t_{(1+c)/2, k-1} · se``; a corrected interval for repeated resampling;
pooled predictions for leave-one-out; the .632+ estimate for the bootstrap. Resamples
share training rows, so these intervals are yardsticks for comparing configurations,
not promises about the test set — that is the lockbox's job.

A configuration with a missing or failed fold is *incomplete*: it is reported but
can never be selected, since a mean over the folds that happened to succeed is biased.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from foldwise.errors import FoldwiseError
from foldwise.methods import resampling
from foldwise.methods.resampling import SCORES
from foldwise.methods.resampling import t_summary as summarize

__all__ = ["SCORES", "ConfigSummary", "select", "summarize", "summarize_config"]


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
    method: str = ""  # what the statistics are (depends on the resampling scheme)

    def score(self, metric: str) -> float:
        return self.stats[metric]["mean"] if metric in self.stats else math.nan


def summarize_config(
    conf: dict,
    order: int,
    rows: Sequence[dict | None],
    confidence: float = 0.95,
    *,
    kind: str = "folds",
    n_dev: int | None = None,
    apparent: int | None = None,
    seed: int = 0,
) -> ConfigSummary:
    """Statistics over a configuration's resamples; ``rows[i]`` is resample i's result
    or None. ``apparent`` is the index of the bootstrap's all-rows fit, if any."""
    word = "fold" if kind == "folds" else "resample"
    problems = [f"{word} {i}: missing" for i, r in enumerate(rows) if r is None]
    problems += [
        f"{word} {i}: failed ({r.get('error', '?')})"
        for i, r in enumerate(rows)
        if r is not None and r.get("status") != "ok"
    ]
    ok = [r for i, r in enumerate(rows) if i != apparent and r is not None and r["status"] == "ok"]
    summary = ConfigSummary(
        conf["hash"],
        conf["label"],
        conf["overrides"],
        conf.get("run_id"),
        order,
        complete=not problems and bool(ok),
        problems=problems,
    )
    if not ok or (apparent is not None and not summary.complete):
        return summary
    summary.stats, summary.method = resampling.summarize(
        kind,
        ok,
        confidence=confidence,
        n_dev=n_dev,
        apparent=rows[apparent] if apparent is not None else None,
        seed=seed,
    )
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

    def key(s: ConfigSummary) -> tuple[float, float, int]:
        se = s.stats[metric]["se"]
        return (round(sign * s.score(metric), 12), se if se == se else 0.0, s.order)

    return key


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

    def num(v: float) -> float | None:
        return None if v != v else v  # NaN (no such statistic for this scheme) → null

    def entry(s: ConfigSummary) -> dict[str, Any]:
        out: dict[str, Any] = {"config": s.hash, "complete": s.complete}
        for key, st in s.stats.items():
            if key.startswith("val_"):
                out[key] = {k: num(st[k]) for k in ("mean", "std", "se", "ci_low", "ci_high")}
            elif key.startswith(("train_", "gap_")):
                out[f"{key}_mean"] = num(st["mean"])
            else:  # a scheme's own estimates (the bootstrap's err_632plus, ...)
                out[key] = num(st["mean"])
        return out

    return {
        "selected": {"label": selected.label, "metric": metric, **entry(selected)},
        "method": selected.method,
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

    t = Table(
        title=f"Resampling estimates, ranked by {metric} (± standard error where one exists)",
        caption=selected.method,
    )
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

    def fmt(st: dict | None, sign: str = "") -> str:
        if st is None or st["mean"] != st["mean"]:
            return "–"
        se = f" ± {st['se']:.4f}" if st["se"] == st["se"] and not sign else ""
        return f"{st['mean']:{sign}.4f}{se}"

    def ci(st: dict) -> str:
        return "–" if st["ci_low"] != st["ci_low"] else f"[{st['ci_low']:.4f}, {st['ci_high']:.4f}]"

    for rank, s in enumerate(ranked(summaries, metric), start=1):
        if not s.complete:
            t.add_row("–", f"{s.label} [incomplete: {'; '.join(s.problems)}]", *[""] * 6)
            continue
        st = s.stats
        mark = " ★" if s is selected else ""
        t.add_row(
            str(rank),
            s.label + mark,
            fmt(st.get("val_f1")),
            fmt(st.get("val_acc")),
            fmt(st.get("val_loss")),
            ci(st[metric]),
            fmt(st.get("train_f1")),
            fmt(st.get("gap_f1"), "+"),
        )
    Console(width=140).print(t)


def run(cfg: Any, layout: Any) -> ConfigSummary:
    """The aggregate stage: read the sweep's results, select, write, log to MLflow."""
    import pandas as pd

    from foldwise import tracking
    from foldwise.files import no_nan, read_json, write_json
    from foldwise.results import Session, collect

    session_file = layout.sweep_dir / "session.json"
    if not session_file.is_file():
        raise FoldwiseError(f"{session_file} is missing.", "run the sweep first: dvc repro sweep")
    session = Session(read_json(session_file))
    results = collect(session, layout.sweep_dir)
    confidence = 0.95
    metric, rule = str(cfg.selection.metric), str(cfg.selection.rule)
    apparent = session.doc.get("apparent")
    summaries = [
        summarize_config(
            c, i, results[c["hash"]], confidence, kind=session.doc.get("kind", "folds"),
            n_dev=session.doc.get("n_dev"), apparent=apparent, seed=int(cfg.seed),
        )
        for i, c in enumerate(session.configs)
    ]  # fmt: skip
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
        "method": selected.method,
        "fold_best_epochs": selected.best_epochs,
        "config_run_id": selected.run_id,
        "sweep_run_id": session.doc["sweep_run_id"],
        "experiment_id": session.doc["experiment_id"],
        "tracking_uri": session.doc["tracking_uri"],
        "split_key": session.doc["split_key"],
        "incomplete": [s.label for s in summaries if not s.complete],
    }
    write_json(layout.selection, no_nan(selection))

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
            k: v
            for k, v in {
                f"selected_{metric}_mean": selected.stats[metric]["mean"],
                f"selected_{metric}_se": selected.stats[metric]["se"],
                "configs_incomplete": sum(not s.complete for s in summaries),
            }.items()
            if v == v  # no NaN: a scheme without a standard error logs none
        },
        tags={
            f"{tracking.TAG}selected_config": selected.hash,
            f"{tracking.TAG}selected_label": selected.label,
        },
    )
    print_table(summaries, selected, metric, confidence)
    if selection["incomplete"]:
        print(f"[aggregate] incomplete (not selectable): {', '.join(selection['incomplete'])}")
    st = selected.stats[metric]
    se = f" ± {st['se']:.4f} (se)" if st["se"] == st["se"] else ""
    print(
        f"[aggregate] selected {selected.label} ({selected.hash}): {metric} = {st['mean']:.4f}{se}"
    )
    return selected
