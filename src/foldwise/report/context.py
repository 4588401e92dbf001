"""What the report page says, as plain data: the numbers, the sentences, the figures.

:func:`page` turns an :class:`~foldwise.report.inputs.Inputs` into a dictionary that the
Jinja2 templates under ``templates/`` lay out (:mod:`foldwise.report.html` renders them).
Nothing here writes markup: strings are plain text, escaped by the templates; a table is
a :class:`~foldwise.report.cells.Table` of cells, a figure a ``data:`` PNG.

Each section says in words what is missing instead of failing: a section's ``note``
(with its ``note_class``) replaces its body when its input is absent or switched off.
The curves stage's sections (curves, bias–variance, ensembles) are in
:mod:`foldwise.report.context_curves`.
"""

from __future__ import annotations

from typing import Any

from foldwise import headline
from foldwise.report import context_curves, figures, trust
from foldwise.report.cells import Cell, Figure, Table, interval, matrix, near, note, num
from foldwise.report.inputs import PER_FOLD_KINDS, Inputs

# Metrics where lower is better, when the selection does not say (aggregate's rule
# for classification is "not a loss"; regression adds errors).
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error")

# The page's sections, in order: (anchor, navigation text).
SECTIONS = (
    ("data", "Data"),
    ("leaderboard", "Leaderboard"),
    ("rationale", "Why"),
    ("folds", "Per fold"),
    ("curves", "Curves"),
    ("bias-variance", "Bias–variance"),
    ("ensembles", "Ensembles"),
    ("nested", "Nested CV"),
    ("trust", "Trust"),
    ("test", "Test"),
)


# ── shared rules ─────────────────────────────────────────────────────────────────


def higher_is_better(metric: str, inp: Inputs) -> bool:
    for doc in (inp.selection, inp.nested or {}):
        if isinstance(doc.get("higher_is_better"), bool) and doc.get("metric") == metric:
            return doc["higher_is_better"]
    return not metric.removeprefix("val_").endswith(LOWER_IS_BETTER)


def configs(inp: Inputs) -> list[tuple[str, dict[str, Any]]]:
    """(label, cv_metrics entry) in leaderboard order (cv_table.csv's ranking); the
    baselines' entries (``baselines``) marked ``baseline``."""
    doc = inp.cv_metrics or {}
    bases = {k: {**v, "baseline": True} for k, v in (doc.get("baselines") or {}).items()}
    entries = {**(doc.get("configs") or {}), **bases}
    order = [label for label in inp.ranking if label in entries]
    order += [label for label in entries if label not in order]
    return [(label, entries[label]) for label in order]


def test_state(inp: Inputs) -> tuple[str, str]:
    """("opened" | "refused" | "closed", what to say): the test result is shown only when
    ``test_metrics.json`` is an opening for *this* selection on *this* test set."""
    t, sel = inp.test, inp.selection
    label = sel.get("label", "?")
    if not t:
        return "closed", (
            f"The lockbox has not been opened for this selection ({label}): the test set is "
            "still unseen. The test stage opens it once the selection is final (dvc repro)."
        )
    if t.get("config") != sel.get("config_hash"):
        return "closed", (
            f"The lockbox has not been opened for this selection ({label}). "
            f"results/test_metrics.json is about another selection ({t.get('label', '?')})."
        )
    test_sha = (inp.manifest or {}).get("test_sha256")
    if test_sha and t.get("test_sha256") and t["test_sha256"] != test_sha:
        return "closed", (
            f"The lockbox has not been opened for this selection ({label}) on the current "
            "test set: results/test_metrics.json is about another split."
        )
    if t.get("status") == "refused":
        return "refused", (
            f"The lockbox refused this selection ({label}): {t.get('reason', '')} "
            "No test score is shown for it."
        )
    if t.get("status") != "opened" or not t.get("test"):
        return "closed", f"The lockbox has not been opened for this selection ({label})."
    return "opened", ""


def _verdict(inp: Inputs) -> Any:
    return (inp.cv_metrics or {}).get("verdict") or inp.selection.get("verdict")


def _tt(inp: Inputs) -> dict[str, Any]:
    """The Tibshirani–Tibshirani optimism estimate of cv_metrics.json ({} if none)."""
    return (inp.cv_metrics or {}).get("optimism") or {}


def optimism_text(inp: Inputs) -> str:
    """The Tibshirani–Tibshirani estimate in words, beside nested CV's when it ran."""
    tt = _tt(inp)
    if not tt:
        return ""
    metric = tt.get("metric", "?")
    way = "CV − bias" if higher_is_better(metric, inp) else "CV + bias"
    text = (
        f"Optimism of the best mean ({tt.get('winner', '?')}), Tibshirani & Tibshirani "
        f"(2009): {num(tt.get('bias'), sign=True)} {metric}, the mean over its "
        f"{tt.get('n_folds', '?')} folds of how far each fold's best of the "
        f"{tt.get('n_configs', '?')} configurations beat it (positive: plain CV flatters "
        f"the winner). Corrected {metric} = {way} = {num(tt.get('corrected'))} (plain "
        f"{num(tt.get('cv'))}); no interval, and no extra training."
    )
    nested = inp.nested or {}
    o = nested.get("optimism") or {}
    if nested.get("enabled") and nested.get("metric") == metric and o:
        text += (
            f" Nested CV measured {near(o.get('mean'), o.get('ci_low'), o.get('ci_high'), True)} "
            f"{interval(o.get('ci_low'), o.get('ci_high'), True)} for the selection."
        )
    return text


def ncv_text(inp: Inputs) -> str:
    """The nested-CV interval of the selected configuration in words ("" if not asked for)."""
    n = inp.selection.get("ncv") or {}
    if not n:
        return ""
    return (
        f"Nested-CV interval of {n.get('label', '?')}'s {n.get('metric', '?')}, "
        f"{n.get('method', '?')}: {near(n.get('estimate'), n.get('ci_low'), n.get('ci_high'))} "
        f"{interval(n.get('ci_low'), n.get('ci_high'))} ({num(n.get('confidence'), 2)} "
        f"level), from {n.get('repetitions', '?')} partition(s) into {n.get('folds', '?')} "
        f"folds and {n.get('models', '?')} more models. Its standard error is the naive one "
        f"(the per-row errors taken as independent) × {num(n.get('inflation'), 2)}; the centre "
        f"is the nested estimate {num(n.get('err_ncv'))} corrected by "
        f"{num(-n['bias'] if isinstance(n.get('bias'), int | float) else None, sign=True)} "
        f"towards a model fit on every dev row."
    )


# ── sections ──────────────────────────────────────────────────────────────────────


def summary(inp: Inputs) -> list[tuple[str, str, str]]:
    """The cards above the sections: (what, value, detail)."""
    sel = inp.selection
    metric = sel.get("metric", "?")
    score = sel.get("score") or {}
    cards = [
        ("selected configuration", sel.get("label", "?"), f"rule {sel.get('rule', '?')}"),
        (
            f"CV {metric}",
            _pm(score),
            f"interval {headline.interval(score.get('ci_low'), score.get('ci_high'))}",
        ),
    ]
    n = sel.get("ncv") or {}
    if n:
        cards.append(
            (
                f"nested-CV interval, {metric}",
                interval(n.get("ci_low"), n.get("ci_high")),
                "Bates, Hastie & Tibshirani (2023); centre "
                f"{near(n.get('estimate'), n.get('ci_low'), n.get('ci_high'))}",
            )
        )
    state, _ = test_state(inp)
    if state == "opened":
        g = (inp.test or {}).get("cv_vs_test") or {}
        t = g.get("test") or {}
        cards.append(
            (
                f"test {g.get('metric', metric).removeprefix('val_')}",
                near(t.get("value"), t.get("ci_low"), t.get("ci_high")),
                f"CV − test gap {num(g.get('gap'), sign=True)}",
            )
        )
    else:
        word = "locked" if state == "closed" else "refused"
        cards.append(("test set", word, f"{word} for this selection: see Test below"))
    nested, tt = inp.nested or {}, _tt(inp)
    also = f"; Tibshirani–Tibshirani {num(tt.get('bias'), sign=True)}" if tt else ""
    if nested.get("enabled"):
        o = nested.get("optimism") or {}
        cards.append(
            (
                "optimism of plain CV",
                num(o.get("mean"), sign=True),
                f"nested CV, interval {interval(o.get('ci_low'), o.get('ci_high'), True)}" + also,
            )
        )
    elif tt:
        cards.append(
            (
                "optimism of plain CV",
                num(tt.get("bias"), sign=True),
                "Tibshirani–Tibshirani estimate from the folds (no interval)",
            )
        )
    return cards


def data_section(inp: Inputs) -> dict[str, Any]:
    out: dict[str, Any] = {"anchor": "data", "title": "Data and split"}
    meta, man = inp.meta, inp.manifest
    if meta:
        classes = meta.get("classes") or []
        task = meta.get("task") or ("classification" if classes else "regression")
        rows: list[list[Any]] = [
            ["dataset", meta.get("dataset", "?")],
            ["task", task],
            ["rows", meta.get("n_rows", "?")],
            ["features", meta.get("n_features", "?")],
        ]
        if classes:
            shown = ", ".join(map(str, classes[:20])) + (" …" if len(classes) > 20 else "")
            rows.append(["classes", f"{len(classes)}: {shown}"])
        if meta.get("image_shape"):
            rows.append(["image shape", " × ".join(map(str, meta["image_shape"]))])
        for key in ("group_column", "time_column"):
            if meta.get(key):
                rows.append([key.replace("_", " "), meta[key]])
        out["data"] = Table(None, rows, text=(0, 1))
    else:
        out["data_note"] = "data/prepared/meta.json is missing: the prepare stage has not run."
    if not man:
        out["split_note"] = "data/split/manifest.json is missing: the split stage has not run."
        return out
    options = ", ".join(f"{k}={v}" for k, v in (man.get("options") or {}).items())
    n_test, n_dev = man.get("n_test", 0), man.get("n_dev", 0)
    frac = man.get("test_fraction")
    share = f"{frac:.0%} of rows" if isinstance(frac, int | float) else "held out"
    rows = [
        [
            "lockbox (test set)",
            f"{n_test} rows ({share}, drawn by {man.get('lockbox_by', '?')}); "
            "read by the test stage only",
        ],
        ["dev rows", n_dev],
        [
            "resampling",
            f"{man.get('scheme', '?')} ({options or 'defaults'}): "
            f"{man.get('n_splits', '?')} resamples of the dev rows",
        ],
        ["seed", man.get("seed", "?")],
        ["test rows SHA-256", str(man.get("test_sha256") or "")[:16]],
    ]
    out["split"] = Table(None, rows, text=(0, 1))
    checks = man.get("checks") or []
    badge = {"pass": "pass", "warn": "warning", "fail": "fail"}
    if checks:
        out["checks"] = Table(
            ["check", "outcome", "detail"],
            [
                [
                    c.get("name", "?"),
                    Cell(c.get("outcome", "?"), badge=badge.get(c.get("outcome"), "skip")),
                    c.get("detail", ""),
                ]
                for c in checks
            ],
            text=(0, 1, 2),
        )
    else:
        out["checks_note"] = "The manifest records no leakage checks."
    return out


def _pm(st: dict[str, Any]) -> str:
    """``mean ± se`` at the precision the standard error supports (the mean alone,
    at the interval's precision, where the scheme has no standard error)."""
    se = st.get("se")
    if headline.decimals(se) is not None:
        return headline.plus_minus(st.get("mean"), se)
    return _mean(st)


def _mean(st: dict[str, Any]) -> str:
    """A statistic's mean at the precision of its standard error, else of its interval."""
    se = st.get("se")
    return headline.fixed(st.get("mean"), se if headline.decimals(se) is not None else _half(st))


def _half(st: dict[str, Any]) -> float | None:
    lo, hi = st.get("ci_low"), st.get("ci_high")
    if isinstance(lo, int | float) and isinstance(hi, int | float):
        return (hi - lo) / 2
    return None


def _vs(entry: dict[str, Any]) -> Cell | str:
    c = entry.get("vs_selected")
    if not c:
        return "–"
    return Cell(
        headline.fixed(c.get("mean"), _half(c), sign=True),
        (
            headline.interval(c.get("ci_low"), c.get("ci_high"), True),
            f"p = {num(c.get('p_value'), 3)}",
            f"P(★ better) = {num(c.get('p_better'), 2)}",
        ),
    )


def leaderboard(inp: Inputs) -> dict[str, Any]:
    sel = inp.selection
    metric = sel.get("metric", "?")
    rows_in = configs(inp)
    if not rows_in:
        return note(
            "leaderboard",
            "Leaderboard",
            "results/cv_metrics.json is missing: the aggregate stage has not run.",
        )
    chosen = sel.get("label")
    free = bool(sel.get("baselines_selectable"))  # selection.baselines=true
    first = next((e for label, e in rows_in if label == chosen), rows_in[0][1])
    vals = [k for k, v in first.items() if k.startswith("val_") and isinstance(v, dict)]
    vals = [metric] * (metric in vals) + sorted(v for v in vals if v != metric)
    base = metric.removeprefix("val_")
    extra = [k for k in (f"train_{base}_mean", f"gap_{base}_mean") if k in first]
    head = [
        "#",
        "configuration",
        *vals,
        f"{metric} interval",
        *[k.removesuffix("_mean") for k in extra],
        "fit",
        "★ ahead by",
    ]
    rows, classes = [], []
    rank = 0
    for label, e in rows_in:
        complete, base = e.get("complete", True), bool(e.get("baseline"))
        rank += complete and not base
        mark = " ★" if label == chosen else ""
        name: Any = label + mark
        if not complete:
            name = Cell(label, ("incomplete: not selectable",))
        elif base:
            said = (
                "selected" if label == chosen else "never selected" if not free else "not selected"
            )
            name = Cell(label + mark, (f"baseline: same resamples, {said}",))
        cells: list[Any] = ["base" if base else rank if complete else "–", name]
        for v in vals:
            st = e.get(v) or {}
            if not st:
                cells.append("–")
                continue
            se = st.get("se")
            small = (f"± {headline.fixed(se, se)}",) if headline.decimals(se) is not None else ()
            cells.append(Cell(_mean(st), small))
        st = e.get(metric) or {}
        cells.append(headline.interval(st.get("ci_low"), st.get("ci_high")))
        # train score and gap: the selection metric's standard error sets their precision
        cells += [headline.fixed(e.get(k), st.get("se"), sign=k.startswith("gap_")) for k in extra]
        fit = e.get("fit")
        cells.append(Cell(fit.get("verdict", "?"), (fit.get("reason", ""),)) if fit else "–")
        cells.append(_vs(e))
        rows.append(cells)
        classes.append("selected" if label == chosen else "baseline" if base else "")
    direction = "higher" if higher_is_better(metric, inp) else "lower"
    out: dict[str, Any] = {
        "anchor": "leaderboard",
        "title": "Leaderboard",
        "intro": f"Ranked by mean {metric} ({direction} is better); ★ is the selected "
        "configuration; rows marked base are scikit-learn baselines scored on the same "
        f"resamples, for scale ({SELECTABLE if free else 'never selected'}). "
        "Each cell: mean ± standard error over "
        "resamples where the scheme has one, to the precision the standard error supports.",
        "table": Table(head, rows, text=(1, len(head) - 2), row_classes=classes),
        "method": (inp.cv_metrics or {}).get("method") or sel.get("method", ""),
        "verdict": _verdict(inp),
        "baselines": (inp.cv_metrics or {}).get("versus_baselines")
        or inp.selection.get("versus_baselines"),
        "optimism": optimism_text(inp),
        "ncv": ncv_text(inp),
    }
    if any(e.get("vs_selected") for _, e in rows_in):
        out["versus"] = (
            "Last column: the selected configuration against each other one on the same "
            "folds — mean difference (positive: ★ ahead) with its interval, the "
            "Nadeau–Bengio corrected resampled t-test p-value, and the Bayesian correlated "
            "t-test's probability that ★ is better by more than the region of practical "
            "equivalence."
        )
    own = {
        k: v
        for k, v in first.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and not k.startswith(("train_", "gap_", "val_"))
    }
    if own:
        out["own"] = "Scheme estimates of the selected configuration: " + ", ".join(
            f"{k} = {num(v)}" for k, v in own.items()
        )
    if inp.cv_confusion is not None:
        out["confusion"] = matrix(inp.cv_confusion)
    return out


SELECTABLE = "selectable: selection.baselines=true"


def rationale(inp: Inputs) -> dict[str, Any]:
    sel = inp.selection
    metric, rule = sel.get("metric", "?"), sel.get("rule", "?")
    better = "highest" if higher_is_better(metric, inp) else "lowest"
    overrides = ", ".join(f"{k}={v}" for k, v in (sel.get("overrides") or {}).items())
    n = sum(not e.get("baseline") for _, e in configs(inp))
    among = f"the {n} configurations" if n else "the configurations"
    rules = {
        "best_mean": f"the {better} mean validation {metric} among {among} that "
        "finished every resample (ties: the smaller standard error, then grid order)",
        "one_se": f"the simplest configuration whose mean validation {metric} is within one "
        f"standard error of the {better} mean (the one-standard-error rule)",
    }
    s = sel.get("score") or {}
    se = " (± standard error)" if headline.decimals(s.get("se")) is not None else ""
    items = [
        *([sel["baseline_note"]] if sel.get("baseline_note") else []),
        f"foldwise selected {sel.get('label', '?')} ({overrides or 'no overrides'}; "
        f"configuration {sel.get('config_hash', '?')}) by the rule {rule}: "
        f"{rules.get(rule, f'rule {rule}')}.",
        f"Its cross-validated {metric} is {_pm(s)}{se}, interval "
        f"{headline.interval(s.get('ci_low'), s.get('ci_high'))}: {sel.get('method', '')}.",
    ]
    chosen_by = (inp.cv_metrics or {}).get("rule")
    if chosen_by:
        items.append(f"{chosen_by}.")
    items.append(
        _verdict(inp)
        or "No paired comparison with the other configurations exists for "
        "this scheme (leave-one-out, bootstrap and holdout have no paired resamples), "
        "so the ranking is by the point estimates alone."
    )
    entry = dict(configs(inp)).get(sel.get("label", ""), {})
    if entry.get("fit"):
        items.append(
            f"Fit diagnosis: {entry['fit'].get('verdict')} — {entry['fit'].get('reason')}."
        )
    if sel.get("fold_best_epochs"):
        epochs = ", ".join(map(str, sel["fold_best_epochs"]))
        items.append(f"Best epochs on the resamples: {epochs}.")
    if sel.get("incomplete"):
        items.append(
            "Not selectable (a resample missing or failed): " + ", ".join(sel["incomplete"]) + "."
        )
    items.append("Only validation scores of dev rows decided this; the test set took no part.")
    return {"anchor": "rationale", "title": "Why this configuration", "items": items}


def per_fold(inp: Inputs) -> dict[str, Any]:
    metric = inp.selection.get("metric", "?")
    anchor, title = "folds", "Per-fold validation scores"
    if inp.fold_scores is None:
        return note(anchor, title, "results/sweep is missing: the sweep has not run.")
    if inp.kind not in PER_FOLD_KINDS:
        return note(
            anchor,
            title,
            f"Not drawn for {inp.kind} resampling: each resample scores a single row or an "
            "out-of-bag set, so one dot per resample says little; the leaderboard has the "
            "pooled estimates.",
        )
    entries = dict(configs(inp))
    order = [label for label, _ in configs(inp)] or list(inp.fold_scores)
    order += [label for label in inp.fold_scores if label not in order]
    rows = []
    for label in order:
        values = (inp.fold_scores.get(label) or {}).get(metric) or []
        st = entries.get(label, {}).get(metric) or {}
        if values:
            rows.append(
                figures.FoldRow(
                    label,
                    values,
                    st.get("mean"),
                    st.get("ci_low"),
                    st.get("ci_high"),
                    label == inp.selection.get("label"),
                )
            )
    if not rows:
        return note(anchor, title, f"The sweep's result files hold no per-fold {metric}.")
    folds = max(len(r.values) for r in rows)
    return {
        "anchor": anchor,
        "title": title,
        "intro": f"Each dot is one fold's validation {metric}; the black bar is the mean and "
        "the line its interval. Overlapping spreads mean the ranking could change with "
        "another partition of the dev rows.",
        "figure": Figure(
            figures.fold_scores(rows, metric), f"per-fold {metric} of each configuration"
        ),
        "numbers": Table(
            ["configuration", *[f"fold {i}" for i in range(folds)]],
            [[r.label, *[num(v) for v in r.values]] for r in rows],
        ),
    }


def nested_section(inp: Inputs) -> dict[str, Any]:
    anchor, title = "nested", "Nested cross-validation"
    n = inp.nested
    if n is None:
        return note(anchor, title, "results/nested.json is missing: the nested stage has not run.")
    if not n.get("enabled"):
        return note(
            anchor,
            title,
            "Off. Nested CV repeats the whole sweep-and-select procedure inside each outer "
            "fold and estimates how much plain CV flatters the selection: dvc exp run -S "
            "nested.enabled=true.",
        )
    metric = n.get("metric", "?")
    rows = [
        [
            part,
            near(st.get("mean"), st.get("ci_low"), st.get("ci_high"), part == "optimism"),
            interval(st.get("ci_low"), st.get("ci_high"), part == "optimism"),
        ]
        for part, st in (
            ("nested estimate", n.get("nested") or {}),
            ("plain CV of the selection, same folds", n.get("plain") or {}),
            ("optimism", n.get("optimism") or {}),
        )
    ]
    tt = _tt(inp)
    if tt.get("metric") == metric:
        rows.append(
            [
                f"optimism, Tibshirani–Tibshirani (from the plain CV folds of {tt.get('winner')})",
                num(tt.get("bias"), sign=True),
                "–",
            ]
        )
    outer = n.get("outer") or []
    return {
        "anchor": anchor,
        "title": title,
        "intro": "Each outer fold ran the whole selection on its training rows and scored the "
        "winner on its validation rows. Optimism = plain CV − nested "
        f"{metric} per outer fold (positive: plain CV flattered the selection).",
        "estimates": Table(["", metric, "interval"], rows),
        "winners": Table(
            ["configuration", "outer folds won"],
            [list(w) for w in (n.get("winners") or {}).items()],
        ),
        "outer": Table(
            ["outer fold", "winner", f"nested {metric}", f"plain {metric}"],
            [
                [o.get("fold"), o.get("winner"), num(o.get(metric)), num(o.get("plain"))]
                for o in outer
            ],
            text=(1,),
        )
        if outer
        else None,
    }


def test_section(inp: Inputs) -> dict[str, Any]:
    anchor, title = "test", "Test set (the lockbox)"
    state, message = test_state(inp)
    if state != "opened":
        return note(anchor, title, message, "bad" if state == "refused" else "note")
    t = inp.test or {}
    conf = t.get("confidence", 0.95)
    out: dict[str, Any] = {
        "anchor": anchor,
        "title": title,
        "intro": f"Opened for {t.get('label')} at {t.get('opened_at')}: {t.get('n_test')} test "
        f"rows, look #{t.get('look')} at this test set.",
        "scores": Table(
            ["metric", "test", f"{conf:.0%} bootstrap interval", "interval kind"],
            [
                [
                    name,
                    near(s.get("value"), s.get("ci_low"), s.get("ci_high")),
                    interval(s.get("ci_low"), s.get("ci_high")),
                    s.get("interval", "percentile"),
                ]
                for name, s in (t.get("test") or {}).items()
            ],
        ),
    }
    if t.get("reused_test_set"):
        out["reused"] = (
            f"Reused test set (override: {t.get('override_reason')}): this score comes after "
            "another model's look and overstates performance on new data."
        )
    g = t.get("cv_vs_test")
    if not g and t.get("refit") == "fold_ensemble":
        out["no_cv"] = (
            "No CV estimate sits beside this test result: the final model is the fold "
            "ensemble, which every dev row helped train, so only nested CV "
            "(nested.enabled=true) can estimate it honestly."
        )
    if g:
        cv, ts = g.get("cv") or {}, g.get("test") or {}
        out["versus"] = (
            f"CV estimate {g.get('metric')} "
            f"{near(cv.get('mean'), cv.get('ci_low'), cv.get('ci_high'))} "
            f"{interval(cv.get('ci_low'), cv.get('ci_high'))} vs test "
            f"{near(ts.get('value'), ts.get('ci_low'), ts.get('ci_high'))} "
            f"{interval(ts.get('ci_low'), ts.get('ci_high'))}: "
            f"gap {near(g.get('gap'), ts.get('ci_low'), ts.get('ci_high'), True)} "
            "(positive: CV made the model look better than the test set did; near zero "
            "within the intervals: the CV estimate generalized)."
        )
        out["versus_figure"] = Figure(
            figures.cv_vs_test(
                str(g.get("metric")),
                (cv.get("mean"), cv.get("ci_low"), cv.get("ci_high")),
                (ts.get("value"), ts.get("ci_low"), ts.get("ci_high")),
            ),
            "CV versus test",
        )
    if inp.test_confusion is not None:
        out["confusion"] = matrix(inp.test_confusion)
    return out


def page(inp: Inputs) -> dict[str, Any]:
    """Everything the page template shows."""
    sel = inp.selection
    dataset = (inp.meta or {}).get("dataset", "")
    return {
        "title": f"foldwise report · {dataset} · {sel.get('label', '?')}",
        "generated_at": inp.generated_at,
        "git_commit": inp.git_commit[:12],
        "sweep_run_id": sel.get("sweep_run_id", "?"),
        "nav": SECTIONS,
        "cards": summary(inp),
        "sections": [
            data_section(inp),
            leaderboard(inp),
            rationale(inp),
            per_fold(inp),
            context_curves.curves_section(inp),
            context_curves.bias_variance_section(inp),
            context_curves.ensembles_section(inp),
            nested_section(inp),
            trust.trust_section(inp),
            test_section(inp),
        ],
    }
