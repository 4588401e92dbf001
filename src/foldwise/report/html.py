"""Render an :class:`~foldwise.report.inputs.Inputs` as one self-contained HTML page.

Self-contained means: inline CSS, figures as ``data:`` PNGs, no script, no font, no
link to anything outside the file — and a Content-Security-Policy that makes the
browser refuse any such load, so a slip shows up as a console error in the browser
test instead of a silent network request. Every string that came from a user (labels,
class names, reasons, file contents) goes through :func:`esc`.

Each section renders what its input holds and says in words what is missing.
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from foldwise.report import figures
from foldwise.report.inputs import PER_FOLD_KINDS, Confusion, Inputs

# Larger confusion matrices are unreadable as a table; the CSV files still hold them.
MAX_CONFUSION_CLASSES = 30
# Metrics where lower is better, when the selection does not say (aggregate's rule
# for classification is "not a loss"; regression adds errors).
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error")

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2330; background: #f6f7f9; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }
header { background: #1d2330; color: #fff; padding: 1rem 1.5rem; }
header h1 { margin: 0; font-size: 1.35rem; }
header p { margin: .25rem 0 0; color: #c9cfdb; font-size: .85rem; }
nav { margin-top: .5rem; font-size: .85rem; }
nav a { color: #ffd28a; margin-right: .9rem; text-decoration: none; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px;
          padding: .6rem 1.2rem 1rem; margin: 1rem 0; }
h2 { font-size: 1.15rem; margin: .6rem 0 .5rem; }
h3 { font-size: 1rem; margin: 1rem 0 .4rem; }
table { border-collapse: collapse; font-size: 13px; margin: .4rem 0; }
th, td { border-bottom: 1px solid #e3e6ec; padding: .25rem .45rem; text-align: right;
         vertical-align: top; white-space: nowrap; }
td.l, th.l { white-space: normal; min-width: 8rem; }
.scroll { overflow-x: auto; }
th { background: #f0f2f6; }
td.l, th.l { text-align: left; }
tr.selected td { background: #fff4e0; }
small, .muted { color: #5b6475; }
.note { color: #5b6475; font-style: italic; }
.warn { background: #fff4d6; border-left: 4px solid #e0a100; padding: .4rem .7rem; }
.bad { background: #fde8e8; border-left: 4px solid #c62828; padding: .4rem .7rem; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 9px; font-size: 12px;
         font-weight: 600; color: #fff; }
.pass { background: #2e7d32; } .warning { background: #e0a100; } .fail { background: #c62828; }
.skip { background: #8a93a3; }
.cards { display: flex; flex-wrap: wrap; gap: .8rem; margin: .3rem 0 .2rem; }
.card { flex: 1 1 14rem; background: #fff; border: 1px solid #dde1e8; border-radius: 6px;
        padding: .5rem .8rem; }
.card b { display: block; font-size: 1.15rem; }
img { max-width: 100%; height: auto; display: block; margin: .4rem 0; }
code { background: #f0f2f6; padding: 0 .25rem; border-radius: 3px; }
details { margin: .3rem 0; } summary { cursor: pointer; color: #33415c; }
td.cm { text-align: center; min-width: 2rem; }
"""


class Raw(str):
    """HTML that is already safe (built here from escaped parts)."""


def esc(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value), quote=True)


def num(value: Any, digits: int = 4, sign: bool = False) -> str:
    """A number for reading; "–" where a scheme has none (None or NaN)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    return f"{value:{'+' if sign else ''}.{digits}f}"


def interval(low: Any, high: Any, sign: bool = False) -> str:
    if num(low) == "–" or num(high) == "–":
        return "–"
    return f"[{num(low, sign=sign)}, {num(high, sign=sign)}]"


def table(
    head: Sequence[str] | None,
    rows: Iterable[Sequence[Any]],
    text: Collection[int] = (0,),
    row_class: Sequence[str] | None = None,
) -> Raw:
    """A table: ``text`` columns are left-aligned and wrap, the others are numbers
    (right-aligned, never broken); ``head=None`` for a key/value list."""
    cls = lambda i: ' class="l"' if i in text else ""  # noqa: E731
    out = ["<table>"]
    if head is not None:
        out += ["<thead><tr>", *[f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(head)]]
        out.append("</tr></thead>")
    out.append("<tbody>")
    for k, row in enumerate(rows):
        rc = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        out.append(f"<tr{rc}>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(row)))
        out.append("</tr>")
    out.append("</tbody></table>")
    return Raw("".join(out))


def p(text: Any, cls: str = "") -> Raw:
    return Raw(f"<p{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{esc(text)}</p>")


def img(uri: str, alt: str) -> Raw:
    return Raw(f'<img src="{esc(uri)}" alt="{esc(alt)}">')


def section(anchor: str, title: str, body: Iterable[str]) -> Raw:
    return Raw(f'<section id="{anchor}"><h2>{esc(title)}</h2>{"".join(body)}</section>')


def higher_is_better(metric: str, inp: Inputs) -> bool:
    for doc in (inp.selection, inp.nested or {}):
        if isinstance(doc.get("higher_is_better"), bool) and doc.get("metric") == metric:
            return doc["higher_is_better"]
    return not metric.removeprefix("val_").endswith(LOWER_IS_BETTER)


def configs(inp: Inputs) -> list[tuple[str, dict[str, Any]]]:
    """(label, cv_metrics entry) in leaderboard order (cv_table.csv's ranking)."""
    entries = (inp.cv_metrics or {}).get("configs") or {}
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


# ── sections ──────────────────────────────────────────────────────────────────────


def summary(inp: Inputs) -> Raw:
    sel = inp.selection
    metric = sel.get("metric", "?")
    score = sel.get("score") or {}
    se = f" ± {num(score.get('se'))}" if num(score.get("se")) != "–" else ""
    cards = [
        ("selected configuration", sel.get("label", "?"), f"rule {sel.get('rule', '?')}"),
        (
            f"CV {metric}",
            f"{num(score.get('mean'))}{se}",
            f"interval {interval(score.get('ci_low'), score.get('ci_high'))}",
        ),
    ]
    state, _ = test_state(inp)
    if state == "opened":
        g = (inp.test or {}).get("cv_vs_test") or {}
        t = g.get("test") or {}
        cards.append(
            (
                f"test {g.get('metric', metric).removeprefix('val_')}",
                num(t.get("value")),
                f"CV − test gap {num(g.get('gap'), sign=True)}",
            )
        )
    else:
        word = "locked" if state == "closed" else "refused"
        cards.append(("test set", word, f"{word} for this selection: see Test below"))
    nested = inp.nested or {}
    if nested.get("enabled"):
        o = nested.get("optimism") or {}
        cards.append(
            (
                "optimism of plain CV",
                num(o.get("mean"), sign=True),
                f"nested CV, interval {interval(o.get('ci_low'), o.get('ci_high'), True)}",
            )
        )
    body = "".join(
        f'<div class="card"><small>{esc(k)}</small><b>{esc(v)}</b><small>{esc(d)}</small></div>'
        for k, v, d in cards
    )
    return Raw(f'<div class="cards">{body}</div>')


def data_section(inp: Inputs) -> Raw:
    body: list[str] = []
    meta, man = inp.meta, inp.manifest
    if meta:
        classes = meta.get("classes") or []
        task = meta.get("task") or ("classification" if classes else "regression")
        rows = [
            ("dataset", meta.get("dataset", "?")),
            ("task", task),
            ("rows", meta.get("n_rows", "?")),
            ("features", meta.get("n_features", "?")),
        ]
        if classes:
            shown = ", ".join(map(str, classes[:20])) + (" …" if len(classes) > 20 else "")
            rows.append(("classes", f"{len(classes)}: {shown}"))
        if meta.get("image_shape"):
            rows.append(("image shape", " × ".join(map(str, meta["image_shape"]))))
        for key in ("group_column", "time_column"):
            if meta.get(key):
                rows.append((key.replace("_", " "), meta[key]))
        body += ["<h3>Data</h3>", table(None, rows, text=(0, 1))]
    else:
        body.append(p("data/prepared/meta.json is missing: the prepare stage has not run.", "note"))
    if man:
        options = ", ".join(f"{k}={v}" for k, v in (man.get("options") or {}).items())
        n_test, n_dev = man.get("n_test", 0), man.get("n_dev", 0)
        frac = man.get("test_fraction")
        share = f"{frac:.0%} of rows" if isinstance(frac, int | float) else "held out"
        rows = [
            (
                "lockbox (test set)",
                f"{n_test} rows ({share}, drawn by {man.get('lockbox_by', '?')}); "
                "read by the test stage only",
            ),
            ("dev rows", n_dev),
            (
                "resampling",
                f"{man.get('scheme', '?')} ({options or 'defaults'}): "
                f"{man.get('n_splits', '?')} resamples of the dev rows",
            ),
            ("seed", man.get("seed", "?")),
            ("test rows SHA-256", str(man.get("test_sha256", ""))[:16]),
        ]
        body += ["<h3>Split</h3>", table(None, rows, text=(0, 1)), "<h3>Leakage checks</h3>"]
        checks = man.get("checks") or []
        badge = {"pass": "pass", "warn": "warning", "fail": "fail"}
        body.append(
            table(
                ["check", "outcome", "detail"],
                [
                    (
                        c.get("name", "?"),
                        Raw(
                            f'<span class="badge {badge.get(c.get("outcome"), "skip")}">'
                            f"{esc(c.get('outcome', '?'))}</span>"
                        ),
                        c.get("detail", ""),
                    )
                    for c in checks
                ],
                text=(0, 1, 2),
            )
            if checks
            else p("The manifest records no leakage checks.", "note")
        )
    else:
        body.append(p("data/split/manifest.json is missing: the split stage has not run.", "note"))
    return section("data", "Data and split", body)


def _vs(entry: dict[str, Any]) -> Raw | str:
    c = entry.get("vs_selected")
    if not c:
        return "–"
    return Raw(
        f"{num(c.get('mean'), sign=True)}<br>"
        f"<small>{interval(c.get('ci_low'), c.get('ci_high'), True)}"
        f"<br>p = {num(c.get('p_value'), 3)}<br>P(★ better) = {num(c.get('p_better'), 2)}</small>"
    )


def leaderboard(inp: Inputs) -> Raw:
    sel = inp.selection
    metric = sel.get("metric", "?")
    rows_in = configs(inp)
    if not rows_in:
        return section(
            "leaderboard",
            "Leaderboard",
            [p("results/cv_metrics.json is missing: the aggregate stage has not run.", "note")],
        )
    chosen = sel.get("label")
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
        complete = e.get("complete", True)
        rank += complete
        mark = " ★" if label == chosen else ""
        name: Any = label + mark
        if not complete:
            name = Raw(f"{esc(label)}<br><small>incomplete: not selectable</small>")
        cells: list[Any] = [rank if complete else "–", name]
        for v in vals:
            st = e.get(v) or {}
            se = f"<br><small>± {num(st.get('se'))}</small>" if num(st.get("se")) != "–" else ""
            cells.append(Raw(f"{num(st.get('mean'))}{se}") if st else "–")
        st = e.get(metric) or {}
        cells.append(interval(st.get("ci_low"), st.get("ci_high")))
        cells += [num(e.get(k), sign=k.startswith("gap_")) for k in extra]
        fit = e.get("fit")
        cells.append(
            Raw(f"{esc(fit.get('verdict', '?'))}<br><small>{esc(fit.get('reason', ''))}</small>")
            if fit
            else "–"
        )
        cells.append(_vs(e))
        rows.append(cells)
        classes.append("selected" if label == chosen else "")
    direction = "higher" if higher_is_better(metric, inp) else "lower"
    body = [
        p(
            f"Ranked by mean {metric} ({direction} is better); ★ is the selected configuration. "
            f"Each cell: mean ± standard error over resamples where the scheme has one."
        ),
        Raw('<div class="scroll">'),
        table(head, rows, text=(1, len(head) - 2), row_class=classes),
        Raw("</div>"),
        p((inp.cv_metrics or {}).get("method") or sel.get("method", ""), "muted"),
    ]
    if any(e.get("vs_selected") for _, e in rows_in):
        body.append(
            p(
                "Last column: the selected configuration against each other one on the same "
                "folds — mean difference (positive: ★ ahead) with its interval, the "
                "Nadeau–Bengio corrected resampled t-test p-value, and the Bayesian correlated "
                "t-test's probability that ★ is better by more than the region of practical "
                "equivalence.",
                "muted",
            )
        )
    sentence = (inp.cv_metrics or {}).get("verdict") or sel.get("verdict")
    if sentence:
        body.append(p(sentence, "warn"))
    own = {
        k: v
        for k, v in first.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and not k.startswith(("train_", "gap_", "val_"))
    }
    if own:
        body.append(
            p(
                "Scheme estimates of the selected configuration: "
                + ", ".join(f"{k} = {num(v)}" for k, v in own.items()),
                "muted",
            )
        )
    if inp.cv_confusion is not None:
        body += [
            "<h3>Confusion matrix of the selected configuration (validation rows, pooled "
            "over its resamples)</h3>",
            confusion_table(inp.cv_confusion),
        ]
    return section("leaderboard", "Leaderboard", body)


def confusion_table(conf: Confusion) -> Raw:
    n = len(conf.classes)
    if n > MAX_CONFUSION_CLASSES:
        return p(f"{n} classes: too many for a table here; see the CSV file.", "note")
    top = max((max(r) for r in conf.counts if r), default=0) or 1
    head = "".join(f"<th>{esc(c)}</th>" for c in conf.classes)
    rows = []
    for name, row in zip(conf.classes, conf.counts, strict=True):
        cells = "".join(
            f'<td class="cm" style="background: rgba(230,126,34,{0.85 * v / top:.2f})">{v}</td>'
            for v in row
        )
        rows.append(f'<tr><th class="l">{esc(name)}</th>{cells}</tr>')
    return Raw(
        f'<table><thead><tr><th class="l">actual ↓ / predicted →</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def rationale(inp: Inputs) -> Raw:
    sel = inp.selection
    metric, rule = sel.get("metric", "?"), sel.get("rule", "?")
    better = "highest" if higher_is_better(metric, inp) else "lowest"
    overrides = ", ".join(f"{k}={v}" for k, v in (sel.get("overrides") or {}).items())
    n = len(configs(inp)) or "the"
    rules = {
        "best_mean": f"the {better} mean validation {metric} among the {n} configurations that "
        "finished every resample (ties: the smaller standard error, then grid order)",
        "one_se": f"the simplest configuration whose mean validation {metric} is within one "
        f"standard error of the {better} mean (the one-standard-error rule)",
    }
    s = sel.get("score") or {}
    se = f" ± {num(s.get('se'))} (standard error)" if num(s.get("se")) != "–" else ""
    items = [
        f"foldwise selected {sel.get('label', '?')} ({overrides or 'no overrides'}; "
        f"configuration {sel.get('config_hash', '?')}) by the rule {rule}: "
        f"{rules.get(rule, f'rule {rule}')}.",
        f"Its cross-validated {metric} is {num(s.get('mean'))}{se}, interval "
        f"{interval(s.get('ci_low'), s.get('ci_high'))}: {sel.get('method', '')}.",
    ]
    chosen_by = (inp.cv_metrics or {}).get("rule")
    if chosen_by:
        items.append(f"{chosen_by}.")
    sentence = (inp.cv_metrics or {}).get("verdict") or sel.get("verdict")
    items.append(
        sentence
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
    body = "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"
    return section("rationale", "Why this configuration", [body])


def per_fold(inp: Inputs) -> Raw:
    metric = inp.selection.get("metric", "?")
    title = "Per-fold validation scores"
    if inp.fold_scores is None:
        return section(
            "folds", title, [p("results/sweep is missing: the sweep has not run.", "note")]
        )
    if inp.kind not in PER_FOLD_KINDS:
        return section(
            "folds",
            title,
            [
                p(
                    f"Not drawn for {inp.kind} resampling: each resample scores a single row or an "
                    "out-of-bag set, so one dot per resample says little; the leaderboard has the "
                    "pooled estimates.",
                    "note",
                )
            ],
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
        return section(
            "folds", title, [p(f"The sweep's result files hold no per-fold {metric}.", "note")]
        )
    folds = max(len(r.values) for r in rows)
    numbers = table(
        ["configuration", *[f"fold {i}" for i in range(folds)]],
        [[r.label, *[num(v) for v in r.values]] for r in rows],
    )
    return section(
        "folds",
        title,
        [
            p(
                f"Each dot is one fold's validation {metric}; the black bar is the mean and the "
                "line its interval. Overlapping spreads mean the ranking could change with "
                "another partition of the dev rows."
            ),
            img(figures.fold_scores(rows, metric), f"per-fold {metric} of each configuration"),
            f"<details><summary>the numbers</summary>{numbers}</details>",
        ],
    )


def _numbers(t: Any, cols: Sequence[str]) -> str:
    cols = [c for c in cols if c in t.columns]
    body = table(
        cols,
        [
            [v if c == "x" else num(v) for c, v in zip(cols, r, strict=True)]
            for r in t[cols].itertuples(index=False)
        ],
    )
    return f"<details><summary>the numbers</summary>{body}</details>"


def curves_section(inp: Inputs) -> Raw:
    summ = inp.curves_summary
    title = "Learning and validation curves"
    if summ is None:
        return section(
            "curves",
            title,
            [p("The curves stage has not run (results/curves/ is missing).", "note")],
        )
    if summ.get("skipped"):
        return section("curves", title, [p(f"Skipped: {summ['skipped']}.", "note")])
    body: list[str] = []
    label = inp.selection.get("label")
    if summ.get("config") and summ["config"] != label:
        body.append(
            p(
                f"These curves were drawn for {summ['config']}, not for the current "
                f"selection ({label}): re-run dvc repro curves.",
                "warn",
            )
        )
    first = inp.selection.get("metric", "val_loss").removeprefix("val_")
    learning = inp.curves.get("learning")
    body.append("<h3>Learning curve</h3>")
    if learning is not None:
        x = "n_train_mean" if "n_train_mean" in learning.columns else "x"
        metrics = figures.curve_metrics(learning, first)
        body += [
            p(
                "Training and validation scores against the number of training rows (nested "
                "subsets of each fold's training rows), mean and 95% band over folds. A "
                "validation line still rising at the right says more data would help; a wide "
                "gap that does not close says variance; two low lines close together say bias."
            ),
            img(
                figures.curve(learning, x=x, xlabel="training rows", metrics=metrics),
                "learning curve",
            ),
            _numbers(
                learning, ["x", x, *[f"{s}_{m}_mean" for m in metrics for s in ("train", "val")]]
            ),
        ]
    else:
        body.append(p("Off (curves.learning.enabled=false).", "note"))
    validation = inp.curves.get("validation")
    body.append("<h3>Validation curve</h3>")
    if validation is not None:
        info = summ.get("validation") or {}
        param = info.get("param", "x")
        metrics = figures.curve_metrics(validation, first)
        body += [
            p(
                f"Training and validation scores against {param}, every other setting as "
                f"selected; the dashed line marks the selected value ({info.get('chosen')})."
            ),
            img(
                figures.curve(
                    validation,
                    x="x",
                    xlabel=param,
                    metrics=metrics,
                    categorical=True,
                    marked=info.get("chosen"),
                ),
                "validation curve",
            ),
            _numbers(
                validation, ["x", *[f"{s}_{m}_mean" for m in metrics for s in ("train", "val")]]
            ),
        ]
    else:
        body.append(p("Off (curves.validation.enabled=false).", "note"))
    return section("curves", title, body)


def bias_variance_section(inp: Inputs) -> Raw:
    summ = inp.curves_summary or {}
    title = "Bias–variance trade-off"
    bv, table_ = summ.get("bias_variance"), inp.curves.get("bias_variance")
    if summ.get("skipped"):
        return section("bias-variance", title, [p(f"Skipped: {summ['skipped']}.", "note")])
    if not bv or table_ is None:  # a stale CSV may outlive a disabled run: summary decides
        return section(
            "bias-variance",
            title,
            [
                p(
                    "Off (curves.bias_variance.enabled=false), or the curves stage has not run.",
                    "note",
                )
            ],
        )
    param = bv.get("param", "x")
    chosen = (summ.get("validation") or {}).get("chosen")
    regression = (inp.meta or {}).get("task") == "regression"
    squared = bv.get("loss", "squared" if regression else "0-1") == "squared"
    what = (
        "squared error decomposed into bias² (the mean prediction's squared error) and "
        "variance (the predictions' spread around their mean); expected loss = bias² + "
        "variance (with one target per row the noise cannot be told apart: it is in bias²)."
        if squared
        else "0-1 loss decomposed as Domingos (2000): bias (the majority vote is wrong), "
        "variance (share of models disagreeing with it) and net variance (variance on "
        "unbiased rows minus the variance that helps on biased rows); expected loss = bias "
        "+ net variance."
    )
    ylabel = f"{'squared error' if squared else '0-1 loss'} on the evaluation part"
    cols = ["x", *[c for c in table_.columns if c != "x"]]
    return section(
        "bias-variance",
        title,
        [
            p(
                f"{bv.get('models_per_value', '?')} models per value of {param}, each trained on a "
                f"bootstrap draw of a fixed training part of the dev rows and scored on the same "
                f"{bv.get('eval_rows', '?')} evaluation rows: {what}"
            ),
            img(
                figures.bias_variance(
                    table_, param=param, marked=chosen, ylabel=ylabel, squared=squared
                ),
                "bias-variance trade-off",
            ),
            _numbers(table_, cols),
        ],
    )


def ensembles_section(inp: Inputs) -> Raw:
    title = "Ensembles: score vs number of members"
    t = inp.ensembles
    if t is None or t.empty:
        return section("ensembles", title, [p(
            "No ensemble configuration in this sweep (ensemble=bagging, adaboost or "
            "gradient_boosting, or sweep.grid.ensemble.name).", "note")])  # fmt: skip
    score = "R²" if str(t["score"].iloc[0]) == "r2" else "macro-F1"
    return section(
        "ensembles",
        title,
        [
            p(
                f"For each ensemble configuration, the {score} of the ensemble of its first b "
                "members, on each fold's validation rows (solid: mean and 95 % band over "
                "folds) and training rows (dotted). Bagging averages away variance, so the "
                "validation score rises and flattens as members are added; boosting lowers "
                "bias round by round, so the training score climbs and the validation score "
                "follows it until the learners start fitting noise."
            ),
            img(figures.ensembles(t, f"{score} (mean over folds)"), "score vs number of members"),
            _numbers(
                t,
                [
                    "config",
                    "members",
                    "val_score_mean",
                    "val_score_low",
                    "val_score_high",
                    "train_score_mean",
                ],
            ),
            *_members_bias_variance(inp),
        ],
    )


def _members_bias_variance(inp: Inputs) -> list[Raw]:
    """The curves stage's bias–variance vs members (bagging) and rounds (boosting)."""
    out: list[Raw] = []
    summary = inp.curves_summary or {}
    squared = bool(inp.meta and inp.meta.get("task") == "regression")
    loss = "squared error" if squared else "0-1 loss"
    for kind, xlabel, why in (
        ("bagging", "members (the ensemble of the first b)",
         "Bagging averages members trained on bootstrap draws: the variance term should "
         "fall below the single network's (dotted) while the bias stays near it."),
        ("boosting", "boosting rounds",
         "Each round fits what the ensemble so far gets wrong: the bias should fall round "
         "by round, while the variance may grow."),
    ):  # fmt: skip
        table = inp.curves.get(f"bias_variance_{kind}")
        if table is None or table.empty or "bias" not in table.columns:
            continue
        info = summary.get(f"bias_variance_{kind}") or {}
        out += [
            Raw(
                f"<h3>Bias–variance vs {'members' if kind == 'bagging' else 'rounds'}: "
                f"{esc(info.get('config', kind))}</h3>"
            ),
            p(
                f"{why} Each point decomposes the {loss} of {info.get('models_per_point', 'B')} "
                "ensembles, each trained on a bootstrap draw of a fixed training part of the dev "
                "rows, on one fixed evaluation part (the bias–variance method of the curves "
                "stage)."
            ),
            img(
                figures.members_bias_variance(
                    table, xlabel=xlabel, ylabel=f"{loss} (evaluation part)", squared=squared
                ),
                f"bias–variance vs {xlabel}",
            ),
        ]
    return out


def nested_section(inp: Inputs) -> Raw:
    title = "Nested cross-validation"
    n = inp.nested
    if n is None:
        return section(
            "nested",
            title,
            [p("results/nested.json is missing: the nested stage has not run.", "note")],
        )
    if not n.get("enabled"):
        return section(
            "nested",
            title,
            [
                p(
                    "Off. Nested CV repeats the whole sweep-and-select procedure inside each outer "
                    "fold and estimates how much plain CV flatters the selection: dvc exp run -S "
                    "nested.enabled=true.",
                    "note",
                )
            ],
        )
    metric = n.get("metric", "?")
    rows = [
        (
            part,
            num(st.get("mean"), sign=part == "optimism"),
            interval(st.get("ci_low"), st.get("ci_high"), part == "optimism"),
        )
        for part, st in (
            ("nested estimate", n.get("nested") or {}),
            ("plain CV of the selection, same folds", n.get("plain") or {}),
            ("optimism", n.get("optimism") or {}),
        )
    ]
    outer = n.get("outer") or []
    return section(
        "nested",
        title,
        [
            p(
                "Each outer fold ran the whole selection on its training rows and scored the "
                "winner on its validation rows. Optimism = plain CV − nested "
                f"{metric} per outer fold (positive: plain CV flattered the selection)."
            ),
            table(["", metric, "interval"], rows),
            "<h3>Winners of the outer folds</h3>",
            table(["configuration", "outer folds won"], list((n.get("winners") or {}).items())),
            table(
                ["outer fold", "winner", f"nested {metric}", f"plain {metric}"],
                [
                    (o.get("fold"), o.get("winner"), num(o.get(metric)), num(o.get("plain")))
                    for o in outer
                ],
                text=(1,),
            )
            if outer
            else "",
        ],
    )


def test_section(inp: Inputs) -> Raw:
    title = "Test set (the lockbox)"
    state, message = test_state(inp)
    if state != "opened":
        return section("test", title, [p(message, "bad" if state == "refused" else "note")])
    t = inp.test or {}
    conf = t.get("confidence", 0.95)
    body = [
        p(
            f"Opened for {t.get('label')} at {t.get('opened_at')}: {t.get('n_test')} test rows, "
            f"look #{t.get('look')} at this test set."
        ),
    ]
    if t.get("reused_test_set"):
        body.append(
            p(
                f"Reused test set (override: {t.get('override_reason')}): this score "
                "comes after another model's look and overstates performance on new "
                "data.",
                "bad",
            )
        )
    body.append(
        table(
            ["metric", "test", f"{conf:.0%} bootstrap interval", "interval kind"],
            [
                (
                    name,
                    num(s.get("value")),
                    interval(s.get("ci_low"), s.get("ci_high")),
                    s.get("interval", "percentile"),
                )
                for name, s in (t.get("test") or {}).items()
            ],
        )
    )
    g = t.get("cv_vs_test")
    if not g and t.get("refit") == "fold_ensemble":
        body.append(
            p(
                "No CV estimate sits beside this test result: the final model is the fold "
                "ensemble, which every dev row helped train, so only nested CV "
                "(nested.enabled=true) can estimate it honestly."
            )
        )
    if g:
        cv, ts = g.get("cv") or {}, g.get("test") or {}
        body += [
            "<h3>Cross-validation versus test</h3>",
            p(
                f"CV estimate {g.get('metric')} {num(cv.get('mean'))} "
                f"{interval(cv.get('ci_low'), cv.get('ci_high'))} vs test {num(ts.get('value'))} "
                f"{interval(ts.get('ci_low'), ts.get('ci_high'))}: "
                f"gap {num(g.get('gap'), sign=True)} "
                "(positive: CV made the model look better than the test set did; near zero "
                "within the intervals: the CV estimate generalized)."
            ),
            img(
                figures.cv_vs_test(
                    str(g.get("metric")),
                    (cv.get("mean"), cv.get("ci_low"), cv.get("ci_high")),
                    (ts.get("value"), ts.get("ci_low"), ts.get("ci_high")),
                ),
                "CV versus test",
            ),
        ]
    if inp.test_confusion is not None:
        body += ["<h3>Confusion matrix on the test set</h3>", confusion_table(inp.test_confusion)]
    return section("test", title, body)


SECTIONS = (
    ("data", "Data"),
    ("leaderboard", "Leaderboard"),
    ("rationale", "Why"),
    ("folds", "Per fold"),
    ("curves", "Curves"),
    ("bias-variance", "Bias–variance"),
    ("ensembles", "Ensembles"),
    ("nested", "Nested CV"),
    ("test", "Test"),
)


def render(inp: Inputs) -> str:
    """The whole page."""
    sel = inp.selection
    dataset = (inp.meta or {}).get("dataset", "")
    title = f"foldwise report · {dataset} · {sel.get('label', '?')}"
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in SECTIONS)
    parts = [
        summary(inp),
        data_section(inp),
        leaderboard(inp),
        rationale(inp),
        per_fold(inp),
        curves_section(inp),
        bias_variance_section(inp),
        ensembles_section(inp),
        nested_section(inp),
        test_section(inp),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{esc(title)}</h1>"
        f"<p>generated {esc(inp.generated_at)} · git {esc(inp.git_commit[:12])} · MLflow sweep "
        f"run {esc(sel.get('sweep_run_id', '?'))}</p><nav>{nav}</nav></header>"
        f"<main>{''.join(parts)}</main></body></html>\n"
    )
