"""The curves stage's sections as plain data: learning and validation curves, the
bias–variance trade-off, and ensembles' score (and bias–variance) against their members.
See :mod:`foldwise.report.context` for the rest of the page."""

from __future__ import annotations

from typing import Any

from foldwise.report import figures
from foldwise.report.cells import Figure, note, numbers
from foldwise.report.inputs import Inputs


def curves_section(inp: Inputs) -> dict[str, Any]:
    summ = inp.curves_summary
    anchor, title = "curves", "Learning and validation curves"
    if summ is None:
        return note(anchor, title, "The curves stage has not run (results/curves/ is missing).")
    if summ.get("skipped"):
        return note(anchor, title, f"Skipped: {summ['skipped']}.")
    out: dict[str, Any] = {"anchor": anchor, "title": title}
    label = inp.selection.get("label")
    if summ.get("config") and summ["config"] != label:
        out["stale"] = (
            f"These curves were drawn for {summ['config']}, not for the current "
            f"selection ({label}): re-run dvc repro curves."
        )
    first = inp.selection.get("metric", "val_loss").removeprefix("val_")
    learning = inp.curves.get("learning")
    if learning is not None:
        x = "n_train_mean" if "n_train_mean" in learning.columns else "x"
        metrics = figures.curve_metrics(learning, first)
        out["learning"] = {
            "intro": "Training and validation scores against the number of training rows "
            "(nested subsets of each fold's training rows), mean and 95% band over folds. A "
            "validation line still rising at the right says more data would help; a wide "
            "gap that does not close says variance; two low lines close together say bias.",
            "figure": Figure(
                figures.curve(learning, x=x, xlabel="training rows", metrics=metrics),
                "learning curve",
            ),
            "numbers": numbers(
                learning, ["x", x, *[f"{s}_{m}_mean" for m in metrics for s in ("train", "val")]]
            ),
        }
    else:
        out["learning_note"] = "Off (curves.learning.enabled=false)."
    validation = inp.curves.get("validation")
    if validation is not None:
        info = summ.get("validation") or {}
        param = info.get("param", "x")
        metrics = figures.curve_metrics(validation, first)
        out["validation"] = {
            "intro": f"Training and validation scores against {param}, every other setting "
            f"as selected; the dashed line marks the selected value ({info.get('chosen')}).",
            "figure": Figure(
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
            "numbers": numbers(
                validation, ["x", *[f"{s}_{m}_mean" for m in metrics for s in ("train", "val")]]
            ),
        }
    else:
        out["validation_note"] = "Off (curves.validation.enabled=false)."
    return out


def bias_variance_section(inp: Inputs) -> dict[str, Any]:
    summ = inp.curves_summary or {}
    anchor, title = "bias-variance", "Bias–variance trade-off"
    bv, table = summ.get("bias_variance"), inp.curves.get("bias_variance")
    if summ.get("skipped"):
        return note(anchor, title, f"Skipped: {summ['skipped']}.")
    if not bv or table is None:  # a stale CSV may outlive a disabled run: summary decides
        return note(
            anchor,
            title,
            "Off (curves.bias_variance.enabled=false), or the curves stage has not run.",
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
    return {
        "anchor": anchor,
        "title": title,
        "intro": f"{bv.get('models_per_value', '?')} models per value of {param}, each trained "
        "on a bootstrap draw of a fixed training part of the dev rows and scored on the same "
        f"{bv.get('eval_rows', '?')} evaluation rows: {what}",
        "figure": Figure(
            figures.bias_variance(
                table, param=param, marked=chosen, ylabel=ylabel, squared=squared
            ),
            "bias-variance trade-off",
        ),
        "numbers": numbers(table, ["x", *[c for c in table.columns if c != "x"]]),
    }


def ensembles_section(inp: Inputs) -> dict[str, Any]:
    anchor, title = "ensembles", "Ensembles: score vs number of members"
    t = inp.ensembles
    if t is None or t.empty:
        return note(anchor, title, "No ensemble configuration in this sweep (ensemble=bagging, "
                    "adaboost or gradient_boosting, or sweep.grid.ensemble.name).")  # fmt: skip
    score = "R²" if str(t["score"].iloc[0]) == "r2" else "macro-F1"
    cols = ["config", "members", "val_score_mean", "val_score_low", "val_score_high"]
    return {
        "anchor": anchor,
        "title": title,
        "intro": f"For each ensemble configuration, the {score} of the ensemble of its first b "
        "members, on each fold's validation rows (solid: mean and 95 % band over "
        "folds) and training rows (dotted). Bagging averages away variance, so the "
        "validation score rises and flattens as members are added; boosting lowers "
        "bias round by round, so the training score climbs and the validation score "
        "follows it until the learners start fitting noise.",
        "figure": Figure(
            figures.ensembles(t, f"{score} (mean over folds)"), "score vs number of members"
        ),
        "numbers": numbers(t, [*cols, "train_score_mean"]),
        "members": members_bias_variance(inp),
    }


def members_bias_variance(inp: Inputs) -> list[dict[str, Any]]:
    """The curves stage's bias–variance vs members (bagging) and rounds (boosting)."""
    out: list[dict[str, Any]] = []
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
        out.append(
            {
                "heading": f"Bias–variance vs {'members' if kind == 'bagging' else 'rounds'}: "
                f"{info.get('config', kind)}",
                "text": f"{why} Each point decomposes the {loss} of "
                f"{info.get('models_per_point', 'B')} ensembles, each trained on a bootstrap "
                "draw of a fixed training part of the dev rows, on one fixed evaluation part "
                "(the bias–variance method of the curves stage).",
                "figure": Figure(
                    figures.members_bias_variance(
                        table, xlabel=xlabel, ylabel=f"{loss} (evaluation part)", squared=squared
                    ),
                    f"bias–variance vs {xlabel}",
                ),
            }
        )
    return out
