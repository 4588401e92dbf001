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

from foldwise import headline, scores
from foldwise.errors import FoldwiseError
from foldwise.methods import baselines as sklearn_baselines
from foldwise.methods import resampling
from foldwise.methods.compare import Comparison, compare, indistinguishable
from foldwise.methods.diagnosis import Diagnosis, Reference, diagnose, relative
from foldwise.methods.optimism import in_words, tibshirani_bias
from foldwise.methods.resampling import scores_of
from foldwise.methods.resampling import t_summary as summarize
from foldwise.scores import higher_is_better

__all__ = ["ConfigSummary", "higher_is_better", "select", "summarize", "summarize_config"]


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
    complexity: float = 0.0  # simplicity order for selection=one_se (lower: simpler)
    values: dict[str, list[float]] = field(default_factory=dict)  # per resample, in order
    versus: Comparison | None = None  # against the selected configuration
    n_val: float = 0.0  # mean validation rows per resample
    fit: Diagnosis | None = None  # under/over-fitting verdict from the curves
    # a scikit-learn baseline: shown and compared; selectable with selection.baselines=true
    baseline: bool = False

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
    diagnosis: dict | None = None,
) -> ConfigSummary:
    """Statistics over a configuration's resamples; ``rows[i]`` is resample i's result
    or None. ``apparent`` is the index of the bootstrap's all-rows fit, if any."""
    word = "fold" if kind == "folds" else "resample"
    # An Optuna trial pruned after `cut` folds (foldwise.sweep.trials): never trained the rest.
    cut = int(conf.get("pruned_after", len(rows)))
    problems = [f"pruned after {cut} of {len(rows)} {word}s"] if cut < len(rows) else []
    problems += [f"{word} {i}: missing" for i, r in enumerate(rows) if r is None and i < cut]
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
    summary.n_val = float(sum(r.get("n_val", 0) for r in ok) / len(ok))
    curves = all(len(r.get("history", {}).get("val_loss", [])) >= 2 for r in ok)
    if kind in DIAGNOSABLE and curves and diagnosis is not None:
        rules = {k: v for k, v in diagnosis.items() if k != "metric"}
        summary.fit = diagnose(
            ok, metric=str(diagnosis.get("metric") or ("r2" if is_regression(ok) else "f1")),
            max_epochs=int(conf.get("max_epochs") or max(r["epochs_trained"] for r in ok)),
            rules=rules, seed=seed,
        )  # fmt: skip
    if kind in COMPARABLE:
        summary.values = {
            f"val_{s}": [float(r["metrics"][f"val_{s}"]) for r in ok] for s in scores_of(ok)
        }
    return summary


def is_regression(results: Sequence[dict]) -> bool:
    """Whether these are a regression model's results."""
    return "val_r2" in results[0]["metrics"]


# Kinds whose resamples give paired per-resample scores worth a corrected comparison.
COMPARABLE = ("folds", "repeated")
# Kinds whose validation curves are informative (not one-row leave-out sets).
DIAGNOSABLE = ("folds", "repeated", "holdout")


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


def one_se(summaries: Sequence[ConfigSummary], metric: str) -> ConfigSummary:
    """The one-standard-error rule: the simplest configuration whose mean is within one
    standard error (the best configuration's) of the best mean; simplicity ties go to
    the better mean."""
    best = best_mean(summaries, metric)
    se = best.stats[metric]["se"]
    if se != se:
        raise FoldwiseError(
            "selection.rule=one_se needs a standard error, and this scheme reports none "
            f"({best.method}).",
            "use selection=best_mean, or a k-fold / repeated scheme.",
        )
    sign = 1.0 if higher_is_better(metric) else -1.0
    near = [
        s for s in summaries
        if s.complete and sign * (best.score(metric) - s.score(metric)) <= se + 1e-12
    ]  # fmt: skip
    rank = _rank_key(metric)
    return min(near, key=lambda s: (s.complexity, rank(s)))


RULES: dict[str, Callable[[Sequence[ConfigSummary], str], ConfigSummary]] = {
    "best_mean": best_mean,
    "one_se": one_se,
}


def compare_to_selected(
    summaries: Sequence[ConfigSummary],
    selected: ConfigSummary,
    metric: str,
    *,
    kind: str,
    n_dev: int | None,
    rope: float,
    confidence: float = 0.95,
) -> None:
    """Set ``versus`` on every complete configuration: the selected one against it.

    ``n_val/n_train`` for the Nadeau–Bengio correction comes from the resamples' mean
    validation size and the dev rows (k-fold: exactly 1/(k − 1)).
    """
    if kind not in COMPARABLE or not n_dev:
        return
    for s in summaries:
        if s is selected or not s.complete or len(s.values.get(metric, [])) < 2:
            continue
        if len(s.values[metric]) != len(selected.values[metric]):
            continue
        n_val = selected.n_val or n_dev / len(s.values[metric])
        s.versus = compare(
            selected.values[metric], s.values[metric], ratio=n_val / (n_dev - n_val),
            rope=rope, confidence=confidence, higher_is_better=higher_is_better(metric),
        )  # fmt: skip


def rope_for(metric: str, rope: float, selected: ConfigSummary) -> float:
    """The region of practical equivalence in the metric's units: ``selection.rope`` as
    is for unit-free scores (accuracy, F1, R², cross-entropy); for errors in the target's
    units (MSE, MAE) a fraction of the selected configuration's mean, so one setting
    means "within 1 %" whatever the target's scale."""
    if scores.base(metric) in ("mse", "mae") and metric in selected.stats:
        return rope * abs(selected.score(metric))
    return rope


def verdict(summaries: Sequence[ConfigSummary], selected: ConfigSummary, metric: str) -> str:
    """One plain sentence on the selected configuration against its closest rival."""
    rivals = [s for s in ranked(summaries, metric) if s.versus is not None and not s.baseline]
    if not rivals:
        return ""
    r = min(rivals, key=lambda s: s.versus.mean)  # the closest (or a better) rival
    c = r.versus
    diff, ci = _difference(c)
    if indistinguishable(c):
        return (
            f"The selected configuration and {r.label} are statistically indistinguishable "
            f"on {metric} (difference {diff}, 95% CI {ci}; {_odds(c)}): prefer the simpler "
            "or cheaper one if that matters."
        )
    return (
        f"The selected configuration beats the closest rival, {r.label}, on {metric} by "
        f"{diff} (95% CI {ci}; {_odds(c)})."
    )


def _difference(c: Comparison) -> tuple[str, str]:
    """A comparison's mean difference and interval at the precision the interval supports."""
    half = (c.ci_high - c.ci_low) / 2
    return headline.fixed(c.mean, half, sign=True), headline.interval(c.ci_low, c.ci_high, True)


def _odds(c: Comparison) -> str:
    return (
        f"P(selected better by > {c.rope:.3g}) = {c.p_better:.2f}, P(within ±{c.rope:.3g}) = "
        f"{c.p_equivalent:.2f}; corrected t-test p = {c.p_value:.3f}"
    )


def baseline_verdict(
    summaries: Sequence[ConfigSummary], metric: str, selected: ConfigSummary | None = None
) -> str:
    """One sentence: the selected configuration against the best baseline (the best
    other one, when the selection is itself a baseline)."""
    bases = [
        s for s in ranked(summaries, metric) if s.baseline and s.complete and s is not selected
    ]
    if not bases:
        return ""
    b = bases[0]
    if b.versus is None:
        return (
            f"The best baseline, {b.label}, scores {metric} = "
            f"{headline.plus_minus(b.score(metric), b.stats[metric]['se'])} (no paired "
            "comparison for this scheme)."
        )
    c = b.versus
    diff, ci = _difference(c)
    other = "other " if selected is not None and selected.baseline else ""
    if c.mean > 0 and not indistinguishable(c):
        how = f"beats the best {other}baseline"
    elif indistinguishable(c):
        how = f"is statistically indistinguishable from the best {other}baseline"
    else:
        how = f"is beaten by the best {other}baseline"
    who = "selected baseline" if other else "selected configuration"
    return f"The {who} {how}, {b.label}, on {metric}: difference {diff} (95% CI {ci}; {_odds(c)})."


def relative_fits(
    summaries: Sequence[ConfigSummary],
    metric: str,
    *,
    n_dev: int | None,
    kind: str,
    rope: float = 0.01,
) -> None:
    """Hold each network's fit verdict against the baselines and the larger (more
    parameters) configurations on the same folds (:func:`diagnosis.relative`)."""
    if kind not in COMPARABLE or not n_dev:
        return
    key = f"val_{metric}"
    for s in summaries:
        if s.fit is None or s.baseline or len(s.values.get(key, [])) < 2:
            continue
        refs = []
        for o in summaries:
            if o is s or not o.complete or len(o.values.get(key, [])) != len(s.values[key]):
                continue
            if not o.baseline and o.complexity <= s.complexity:
                continue
            n_val = s.n_val or n_dev / len(s.values[key])
            c = compare(o.values[key], s.values[key], ratio=n_val / (n_dev - n_val),
                        higher_is_better=higher_is_better(key))  # fmt: skip
            kind_of = "baseline" if o.baseline else "larger configuration"
            refs.append(Reference(o.label, kind_of, o.score(key), c))
        s.fit = relative(s.fit, metric, refs, rope=rope)


def baseline_results(cfg: Any, layout: Any, session: Any) -> dict[str, list[dict | None]]:
    """Each baseline's results on the sweep's resamples, by name (cached by split)."""
    names = [str(n) for n in cfg.get("baselines") or []]
    if not names:
        return {}
    import time

    import sklearn

    from foldwise.files import read_json, sha256_json, shared_root, write_json
    from foldwise.fitting.train import dev_inputs, rows_spec

    if rows_spec(cfg, layout):
        print("[aggregate] baselines skipped: the dev rows are streamed (engine.rows)")
        return {}
    inputs = dev_inputs(str(layout.root))
    task = "regression" if inputs.meta.regression else "classification"
    resamples = [inputs.folds[i] for i in range(session.doc["n_folds"])]
    out, fitted, t0 = {}, [], time.perf_counter()
    for name in names:
        key = sha256_json({
            "split": session.doc["split_key"], "name": name, "task": task, "seed": int(cfg.seed),
            "version": sklearn_baselines.VERSION, "sklearn": sklearn.__version__,
        })[:16]  # fmt: skip
        path = shared_root(layout.root) / ".foldwise" / "baselines" / f"{key}.json"
        if path.is_file():
            out[name] = read_json(path)["results"]
            continue
        out[name] = sklearn_baselines.score_all(
            name, task, inputs.x, inputs.y, resamples, seed=int(cfg.seed),
            n_classes=0 if inputs.meta.regression else inputs.meta.n_classes,
            row_ids=inputs.row_ids,
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"name": name, "results": out[name]})
        fitted.append(name)
    if fitted:
        print(f"[aggregate] baselines {', '.join(fitted)} fit on {len(resamples)} resamples "
              f"in {time.perf_counter() - t0:.1f} s (cached for re-runs)")  # fmt: skip
    return out


def optimism(summaries: Sequence[ConfigSummary], metric: str) -> dict[str, Any] | None:
    """Tibshirani & Tibshirani's (2009) estimate of how much the best mean flatters its
    configuration (:mod:`foldwise.methods.optimism`), from the complete configurations'
    per-fold scores; None when the scheme has no paired per-fold scores.

    θ̂ is the best-mean configuration (the paper's definition, whatever ``selection.rule``
    chose): the one whose CV score the maximum over configurations inflated."""
    done = [s for s in summaries if s.complete]
    if not done or any(len(s.values.get(metric, [])) < 2 for s in done):
        return None
    best = best_mean(done, metric)
    k = len(best.values[metric])
    rows = [s for s in done if len(s.values[metric]) == k]  # every row on the same folds
    est = tibshirani_bias(
        [s.values[metric] for s in rows],
        higher_is_better=higher_is_better(metric),
        winner=rows.index(best),
    )
    out = est.to_dict()
    out["fold_winners"] = [rows[i].label for i in est.fold_winners]
    out["winner"] = best.label
    return {"method": "Tibshirani & Tibshirani (2009)", "metric": metric, **out}


# The nested-CV interval's numbers logged on the sweep run (selected_<metric>_ncv_<name>).
NCV_LOGGED = ("estimate", "ci_low", "ci_high", "se", "naive_se", "bias", "err_ncv", "err_cv")


def ncv_in_words(ncv: dict[str, Any]) -> str:
    """One sentence on the nested-CV interval, with the digits its width supports."""
    half = (ncv["ci_high"] - ncv["ci_low"]) / 2
    return (
        f"{ncv['method']} ({ncv['repetitions']} partition(s) of {ncv['folds']} folds, "
        f"{ncv['models']} more models): {ncv['metric']} of {ncv['label']} = "
        f"{headline.fixed(ncv['estimate'], half)}, {ncv['confidence']:.0%} CI "
        f"{headline.interval(ncv['ci_low'], ncv['ci_high'])} (bias-corrected from "
        f"{headline.fixed(ncv['err_ncv'], half)}; the naive standard error × "
        f"{ncv['inflation']:.2f})"
    )


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


def choose(
    summaries: Sequence[ConfigSummary], metric: str, rule: str, *, baselines: bool = False
) -> ConfigSummary:
    """The selection: ``rule`` over the networks, and over the baselines too with
    ``selection.baselines=true`` (the same rule, the same tie-breaks: a tie goes to the
    earlier, and the networks come first). Under one_se a baseline is the least simple
    (its complexity is infinite, not a parameter count), so it is chosen only when no
    network's mean is within one standard error of the best."""
    return select([s for s in summaries if baselines or not s.baseline], metric, rule)


def check_interval_of(selected: ConfigSummary, interval: str) -> None:
    """``selection.interval=ncv`` trains more models of the selected network (Bates,
    Hastie & Tibshirani's nested CV): refused, before any is trained, for a baseline."""
    if selected.baseline and interval == "ncv":
        raise FoldwiseError(
            f"the selection is a baseline ({selected.label}), and selection.interval=ncv "
            "trains more models of the selected network: a baseline has none to train.",
            "set selection.interval=scheme, or selection.baselines=false.",
        )


def ranked(summaries: Sequence[ConfigSummary], metric: str) -> list[ConfigSummary]:
    """Complete configurations (and baselines) best-first, then incomplete ones in grid
    order."""
    done = sorted((s for s in summaries if s.complete), key=_rank_key(metric))
    return done + [s for s in summaries if not s.complete]


def metrics_document(
    summaries: Sequence[ConfigSummary], selected: ConfigSummary, metric: str
) -> dict[str, Any]:
    """The DVC metrics file: the selection first, then every configuration by label,
    then the baselines (``baselines``, each with ``baseline`` = True).

    Validation metrics carry mean, std, se and interval; training metrics and the
    generalization gap their mean (the full statistics are in cv_table.csv), which
    keeps ``dvc metrics show`` / ``dvc exp show`` readable.
    """

    def num(v: float) -> float | None:
        return None if v != v else v  # NaN (no such statistic for this scheme) → null

    def entry(s: ConfigSummary) -> dict[str, Any]:
        out: dict[str, Any] = {"config": s.hash, "complete": s.complete}
        if s.baseline:
            out["baseline"] = True
        if s.versus is not None:
            out["vs_selected"] = {k: num(v) for k, v in s.versus.to_dict().items()}
        if s.fit is not None:
            out["fit"] = {k: num(v) if isinstance(v, float) else v
                          for k, v in s.fit.to_dict().items()}  # fmt: skip
        for key, st in s.stats.items():
            if key.startswith("val_"):
                out[key] = {k: num(st[k]) for k in ("mean", "std", "se", "ci_low", "ci_high")}
            elif key.startswith(("train_", "gap_")):
                out[f"{key}_mean"] = num(st["mean"])
            else:  # a scheme's own estimates (the bootstrap's err_632plus, ...)
                out[key] = num(st["mean"])
        return out

    doc = {
        "selected": {"label": selected.label, "metric": metric, **entry(selected)},
        "method": selected.method,
        "configs": {s.label: entry(s) for s in summaries if not s.baseline},
    }
    bases = {s.label: entry(s) for s in summaries if s.baseline}
    if bases:  # apart from "configs": those are what the sweep trained
        doc["baselines"] = bases
    return doc


def table_rows(summaries: Sequence[ConfigSummary], metric: str) -> list[dict[str, Any]]:
    """cv_table.csv's rows, each number rounded to the decimal place its uncertainty
    supports (:func:`foldwise.headline.rounded`; cv_metrics.json keeps full precision).
    Baselines carry ``baseline`` = True and no rank (ranks number the networks; with
    selection.baselines=true a baseline may still be the selection)."""
    rows = []
    for rank, s in numbered(summaries, metric):
        row: dict[str, Any] = {
            "rank": rank,
            "config": s.hash,
            "label": s.label,
            "complete": s.complete,
            "baseline": s.baseline,
            "problems": "; ".join(s.problems),
        }
        if s.versus is not None:
            c = s.versus.to_dict()
            half = (c["ci_high"] - c["ci_low"]) / 2
            row.update({
                f"vs_selected_{k}": headline.rounded(v, half) if k in DIFFERENCES else v
                for k, v in c.items()
            })  # fmt: skip
        for key, st in s.stats.items():
            half = _uncertainty(st)
            row[f"{key}_mean"] = headline.rounded(st["mean"], half)
            if key.startswith("val_"):
                row[f"{key}_se"] = headline.rounded(st["se"], st["se"])
                row[f"{key}_ci_low"] = headline.rounded(st["ci_low"], half)
                row[f"{key}_ci_high"] = headline.rounded(st["ci_high"], half)
        rows.append(row)
    return rows


# A comparison's numbers in the metric's units (rounded like its interval in cv_table.csv).
DIFFERENCES = ("mean", "se", "ci_low", "ci_high")


def _uncertainty(st: dict[str, float]) -> float:
    """What a statistic's precision follows: its standard error, else the half-width of
    its interval (NaN: neither)."""
    if st["se"] == st["se"] and st["se"] > 0:
        return st["se"]
    return (st["ci_high"] - st["ci_low"]) / 2


def numbered(
    summaries: Sequence[ConfigSummary], metric: str
) -> list[tuple[int | None, ConfigSummary]]:
    """:func:`ranked` with each complete network's rank (baselines and incomplete
    configurations: None)."""
    out, rank = [], 0
    for s in ranked(summaries, metric):
        counted = s.complete and not s.baseline
        rank += counted
        out.append((rank if counted else None, s))
    return out


def print_table(
    summaries: Sequence[ConfigSummary],
    selected: ConfigSummary,
    metric: str,
    confidence: float,
    selectable: bool = False,
) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"Resampling estimates, ranked by {metric} (± standard error where one exists)",
        caption=f"{selected.method}. base: a scikit-learn baseline on the same resamples, "
        + ("selectable (selection.baselines=true)." if selectable else "never selected."),
    )
    # Three validation scores, then the train score and gap of the bounded one.
    regression = "val_r2" in selected.stats or "val_mse" in selected.stats
    shown, main = (("mse", "mae", "r2"), "r2") if regression else (("f1", "acc", "loss"), "f1")
    for col in (
        "#",
        "configuration",
        *(f"val_{s}" for s in shown),
        f"{metric} {confidence:.0%} CI",
        f"train_{main}",
        f"gap_{main}",
        "fit",
        "★ ahead by · p · P(★ better)",
    ):
        t.add_column(col, justify="left" if col == "configuration" else "right")

    def vs(s: ConfigSummary) -> str:
        c = s.versus
        return "–" if c is None else f"{_difference(c)[0]} · {c.p_value:.3f} · {c.p_better:.2f}"

    def fmt(st: dict | None, sign: str = "") -> str:
        if st is None or st["mean"] != st["mean"]:
            return "–"
        if sign:  # train score and gap: at the precision of their own uncertainty
            return headline.fixed(st["mean"], _uncertainty(st), sign == "+")
        return headline.plus_minus(st["mean"], st["se"])

    def ci(st: dict) -> str:
        return headline.interval(st["ci_low"], st["ci_high"])

    for rank, s in numbered(summaries, metric):
        if not s.complete:
            t.add_row("–", f"{s.label} [incomplete: {'; '.join(s.problems)}]", *[""] * 8)
            continue
        st = s.stats
        mark = " ★" if s is selected else ""
        t.add_row(
            "base" if s.baseline else str(rank),
            s.label + mark,
            *(fmt(st.get(f"val_{s}")) for s in shown),
            ci(st[metric]),
            fmt(st.get(f"train_{main}"), "plain"),
            fmt(st.get(f"gap_{main}"), "+"),
            s.fit.verdict if s.fit else "–",
            vs(s),
        )
    Console(width=160).print(t)


def pooled_confusion(
    rows: Sequence[dict | None], classes: list[str] | None, apparent: int | None = None
) -> Any:
    """Every validation prediction of a configuration's resamples as ``actual,predicted``
    rows (class names): DVC's confusion-matrix plot pools them. The bootstrap's apparent
    fit scores its own training rows and is left out."""
    import pandas as pd

    out = []
    for i, r in enumerate(rows):
        if r is None or r.get("status") != "ok" or "val" not in r.get("predictions", {}):
            continue
        if i == apparent:
            continue
        p = r["predictions"]["val"]
        out += list(zip(p["true"], p["pred"], strict=True))
    name = (lambda c: classes[int(c)]) if classes else str
    return pd.DataFrame([(name(a), name(b)) for a, b in out], columns=["actual", "predicted"])


def ensemble_curves(summaries: Sequence[ConfigSummary], results: dict[str, list]) -> Any:
    """Per ensemble configuration and number of members b: the train and validation
    score (F1, or R² for regression) of the ensemble of its first b members, mean and
    95 % t band over resamples — from the ``stage_*`` curves each result records."""
    import pandas as pd

    from foldwise.methods.curves import summarize_curve

    parts = []
    for s in summaries:
        ok = [r for r in results[s.hash] if r is not None and r.get("status") == "ok"]
        if not ok or not all("stage_val_f1" in r["history"] or "stage_val_r2" in r["history"]
                             for r in ok):  # fmt: skip
            continue
        score = "r2" if "stage_val_r2" in ok[0]["history"] else "f1"
        rows = [
            {"x": b + 1, "fold": i, "train_score": tr, "val_score": va}
            for i, r in enumerate(ok)
            for b, (tr, va) in enumerate(zip(r["history"][f"stage_train_{score}"],
                                             r["history"][f"stage_val_{score}"], strict=True))
        ]  # fmt: skip
        curve = summarize_curve(pd.DataFrame(rows), "x", ["train_score", "val_score"])
        curve.insert(0, "config", s.label)
        curve.insert(1, "score", score)
        parts.append(curve.rename(columns={"x": "members"}))
    columns = ["config", "score", "members", "val_score_mean", "val_score_low", "val_score_high",
               "train_score_mean"]  # fmt: skip
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def run(cfg: Any, layout: Any) -> ConfigSummary:
    """The aggregate stage: read the sweep's results, select, write, log to MLflow."""
    import pandas as pd
    from omegaconf import OmegaConf

    from foldwise import tracking
    from foldwise.files import no_nan, read_json, write_json
    from foldwise.results import Session, collect

    session_file = layout.sweep_dir / "session.json"
    if not session_file.is_file():
        raise FoldwiseError(f"{session_file} is missing.", "run the sweep first: dvc repro sweep")
    session = Session(read_json(session_file))
    results = collect(session, layout.sweep_dir)
    confidence = 0.95
    metric, rule = scores.selection_metric(cfg), str(cfg.selection.rule)
    apparent = session.doc.get("apparent")
    summaries = [
        summarize_config(
            c, i, results[c["hash"]], confidence, kind=session.doc.get("kind", "folds"),
            n_dev=session.doc.get("n_dev"), apparent=apparent, seed=int(cfg.seed),
            diagnosis=OmegaConf.to_container(cfg.diagnosis) if "diagnosis" in cfg else {},
        )
        for i, c in enumerate(session.configs)
    ]  # fmt: skip
    by_params = cfg.selection.get("complexity", "params") == "params"
    for s, c in zip(summaries, session.configs, strict=True):
        s.complexity = float(c.get("n_params", s.order)) if by_params else float(s.order)
    networks = summaries
    kind = session.doc.get("kind", "folds")
    for i, (name, rows) in enumerate(baseline_results(cfg, layout, session).items()):
        task = "regression" if session.doc.get("task") == "regression" else "classification"
        spec = {"hash": f"baseline-{name}", "label": sklearn_baselines.label(name, task),
                "overrides": {}, "run_id": None}  # fmt: skip
        b = summarize_config(
            spec, len(networks) + i, rows, confidence, kind=kind,
            n_dev=session.doc.get("n_dev"), apparent=apparent, seed=int(cfg.seed),
        )  # fmt: skip
        b.baseline, b.complexity = True, math.inf
        summaries = [*summaries, b]
    selectable = bool(cfg.selection.get("baselines", False))
    selected = choose(summaries, metric, rule, baselines=selectable)
    check_interval_of(selected, str(cfg.selection.get("interval", "scheme")))
    compare_to_selected(
        summaries, selected, metric, kind=kind, n_dev=session.doc.get("n_dev"),
        rope=rope_for(metric, float(cfg.selection.get("rope", 0.01)), selected),
    )  # fmt: skip
    relative_fits(summaries, scores.diagnosis_metric(cfg), n_dev=session.doc.get("n_dev"),
                  kind=kind, rope=float(cfg.selection.get("rope", 0.01)))  # fmt: skip

    sentence = verdict(summaries, selected, metric)
    against = baseline_verdict(summaries, metric, selected)
    doc = metrics_document(summaries, selected, metric)
    doc["verdict"] = sentence
    if against:
        doc["versus_baselines"] = against
    if rule != "best_mean":
        best = best_mean([s for s in summaries if selectable or not s.baseline], metric)
        doc["rule"] = (
            f"{rule}: chose {selected.label} over the best mean ({best.label})"
            if best is not selected
            else f"{rule}: the best mean is also the simplest within one standard error"
        )
    # over the candidates the selection chose among (the baselines too, when selectable)
    pool = summaries if selectable else networks
    tt = optimism(pool, metric)
    if tt is not None:
        doc["optimism"] = tt
    ncv = None
    if cfg.selection.get("interval", "scheme") == "ncv":
        from foldwise import ncv as nested_cv

        conf = next(c for c in session.configs if c["hash"] == selected.hash)
        ncv = nested_cv.run(cfg, layout, conf, results[selected.hash], metric)
        doc["selected"]["ncv"] = ncv
    write_json(layout.cv_metrics, doc)
    chosen = headline.cv(metric, selected.stats[metric], selected.overrides)
    headline.write(layout.headline("cv"), chosen)
    headline.mark_stale_test(layout, selected.hash, session.doc["split_key"])
    headline.fill_nested(layout)
    layout.cv_table.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table_rows(summaries, metric)).to_csv(layout.cv_table, index=False)
    regression = session.doc.get("task") == "regression"
    confusion = pooled_confusion(
        [] if regression else results[selected.hash], session.doc.get("classes"), apparent
    )  # regression has no classes: the file keeps its header only
    confusion.to_csv(layout.cv_confusion, index=False)
    # Ensembles: score vs number of members (empty, header only, without ensembles).
    ensemble_curves(networks, results).to_csv(layout.ensembles, index=False)
    selection = {
        "config_hash": selected.hash,
        "label": selected.label,
        "overrides": selected.overrides,
        # a baseline's name (methods.baselines): the refit fits its scikit-learn pipeline
        "baseline": selected.hash.removeprefix("baseline-") if selected.baseline else None,
        "baselines_selectable": selectable,
        **({"baseline_note": BASELINE_SELECTED} if selected.baseline else {}),
        "task": session.doc.get("task", "classification"),
        "rule": rule,
        "metric": metric,
        "score": selected.stats[metric],
        "method": selected.method,
        "verdict": sentence,
        "versus_baselines": against,
        "fold_best_epochs": selected.best_epochs,
        "config_run_id": selected.run_id,
        "sweep_run_id": session.doc["sweep_run_id"],
        "experiment_id": session.doc["experiment_id"],
        "tracking_uri": session.doc["tracking_uri"],
        "split_key": session.doc["split_key"],
        "incomplete": [s.label for s in networks if not s.complete],
        **({"ncv": ncv} if ncv is not None else {}),
    }
    write_json(layout.selection, no_nan(selection))

    c = tracking.client(cfg)
    for rank, s in numbered(summaries, metric):
        if s.run_id is None:
            continue
        values = {
            f"cv_{k}_{stat}": v
            for k, st in s.stats.items()
            for stat, v in st.items()
            if stat != "n" and v == v
        }
        values["cv_complete"] = float(s.complete)
        if s.versus is not None:
            values.update({f"cv_vs_selected_{k}": v for k, v in s.versus.to_dict().items()
                           if k != "rope" and abs(v) != float("inf")})  # fmt: skip
        tags = {f"{tracking.TAG}complete": s.complete, f"{tracking.TAG}selected": s is selected}
        if s.fit is not None:
            tags[f"{tracking.TAG}fit"] = s.fit.verdict
            tags[f"{tracking.TAG}fit_reason"] = s.fit.reason
            values.update({f"fit_{k}": v for k, v in s.fit.to_dict().items()
                           if isinstance(v, float) and v == v})  # fmt: skip
        if rank is not None:
            values["cv_rank"] = rank
        tracking.log(c, s.run_id, metrics=values, tags=tags)
    baseline_means = {
        f"baseline_{s.hash.removeprefix('baseline-')}_{metric}_mean": s.score(metric)
        for s in summaries
        if s.baseline
    }
    tt_metrics = (
        {}
        if tt is None
        else {
            f"best_{metric}_optimism_tt": tt["bias"],
            f"best_{metric}_corrected_tt": tt["corrected"],
        }
    )
    tracking.log(
        c,
        session.doc["sweep_run_id"],
        metrics={
            k: v
            for k, v in {
                f"selected_{metric}_mean": selected.stats[metric]["mean"],
                f"selected_{metric}_se": selected.stats[metric]["se"],
                "configs_incomplete": sum(not s.complete for s in networks),
                **baseline_means,
                **tt_metrics,
                **({f"selected_{metric}_ncv_{k}": ncv[k] for k in NCV_LOGGED} if ncv else {}),
            }.items()
            if v == v  # no NaN: a scheme without a standard error logs none
        },
        tags={
            f"{tracking.TAG}selected_config": selected.hash,
            f"{tracking.TAG}selected_label": selected.label,
        },
    )
    print_table(summaries, selected, metric, confidence, selectable=selectable)
    if rule != "best_mean":
        print(f"[aggregate] {doc['rule']}")
    for s in ranked(summaries, metric):
        if s.fit is not None:
            print(f"[aggregate] fit · {s.label}: {s.fit.verdict} — {s.fit.reason}")
    if sentence:
        print(f"[aggregate] {sentence}")
    if against:
        print(f"[aggregate] {against}")
    if tt is not None:
        best = best_mean(pool, metric).stats[metric]["se"]
        print(f"[aggregate] {in_words(tt, higher_is_better(metric), best)}")
    if ncv is not None:
        print(f"[aggregate] {ncv_in_words(ncv)}")
    if selection["incomplete"]:
        print(f"[aggregate] incomplete (not selectable): {', '.join(selection['incomplete'])}")
    st = selected.stats[metric]
    se = " (± se)" if st["se"] == st["se"] else ""
    print(
        f"[aggregate] selected {selected.label} ({selected.hash}): {metric} = "
        f"{headline.plus_minus(st['mean'], st['se'])}{se}"
    )
    if selected.baseline:
        print(f"[aggregate] {BASELINE_SELECTED}")
    return selected


# Said wherever the selection is a baseline (the terminal, the report).
BASELINE_SELECTED = (
    "The selection is a baseline (selection.baselines=true): no network scores better "
    "under the selection rule. The refit fits its scikit-learn pipeline on every dev row."
)
