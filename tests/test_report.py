"""The HTML report builder on small hand-made inputs (no pipeline run)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from foldwise.errors import FoldwiseError
from foldwise.params import Layout
from foldwise.report import figures, html, inputs
from foldwise.report.inputs import Confusion, Inputs

SELECTED, OTHER = "mlp hidden=16 lr=0.01", "mlp hidden=8 lr=0.01"


def stats(mean: float, se: float = 0.01) -> dict[str, float]:
    return {"mean": mean, "std": se * 2, "se": se, "ci_low": mean - 0.03, "ci_high": mean + 0.03}


def curve_table(xs: list, metrics: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for i, x in enumerate(xs):
        row: dict = {"x": x, "folds": 2, "n_train_mean": 100.0 * (i + 1)}
        for m in metrics:
            for part, base in (("train", 0.9), ("val", 0.8)):
                v = base + 0.01 * i
                row |= {f"{part}_{m}_mean": v, f"{part}_{m}_low": v - 0.02}
                row |= {f"{part}_{m}_high": v + 0.02}
        rows.append(row)
    return pd.DataFrame(rows)


def classification(**changes) -> Inputs:
    """Two configurations on 3 folds of a 3-class task, curves on, nested off, lockbox
    closed."""
    versus = {"mean": 0.02, "ci_low": -0.01, "ci_high": 0.05, "p_value": 0.21, "p_better": 0.6}
    fit = {"verdict": "good fit", "reason": "gap +0.02"}
    entry = lambda m, **extra: {  # noqa: E731
        "complete": True,
        "val_f1": stats(m),
        "val_acc": stats(m + 0.01),
        "val_loss": stats(0.3),
        "train_f1_mean": 0.99,
        "gap_f1_mean": 0.99 - m,
        "fit": fit,
        **extra,
    }
    inp = Inputs(
        selection={
            "label": SELECTED,
            "config_hash": "aaa111",
            "overrides": {"model.hidden": 16, "optim.lr": 0.01},
            "rule": "best_mean",
            "metric": "val_f1",
            "score": {**stats(0.91), "n": 3},
            "method": "mean over 3 folds ± Student-t interval",
            "verdict": "The selected configuration beats the closest rival.",
            "fold_best_epochs": [3, 2, 3],
            "sweep_run_id": "run123",
            "incomplete": [],
        },
        cv_metrics={
            "method": "mean over 3 folds ± Student-t interval",
            "verdict": "The selected configuration beats the closest rival.",
            "configs": {OTHER: entry(0.89, vs_selected=versus), SELECTED: entry(0.91)},
        },
        ranking=[SELECTED, OTHER],
        meta={"dataset": "iris", "n_rows": 150, "n_features": 4, "classes": ["a", "b", "c"]},
        manifest={
            "scheme": "stratified_kfold",
            "options": {"n_splits": 3},
            "n_splits": 3,
            "n_dev": 120,
            "n_test": 30,
            "test_fraction": 0.2,
            "lockbox_by": "class",
            "seed": 1,
            "test_sha256": "t" * 64,
            "checks": [
                {"name": "train_val_disjoint", "outcome": "pass", "detail": "ok"},
                {"name": "test_dev_duplicates", "outcome": "warn", "detail": "2 duplicates"},
            ],
        },
        kind="folds",
        fold_scores={
            SELECTED: {"val_f1": [0.9, 0.91, 0.92]},
            OTHER: {"val_f1": [0.88, 0.89, 0.9]},
        },
        curves={
            "learning": curve_table([0.5, 1.0], ("f1", "loss")),
            "validation": curve_table([8, 16, 32], ("f1", "loss")),
            "bias_variance": pd.DataFrame(
                {
                    "x": [8, 16],
                    "expected_loss": [0.2, 0.1],
                    "bias": [0.15, 0.07],
                    "variance": [0.1, 0.05],
                    "net_variance": [0.05, 0.03],
                }
            ),
        },
        curves_summary={
            "config": SELECTED,
            "validation": {"param": "model.hidden", "chosen": 16},
            "bias_variance": {"param": "model.hidden", "models_per_value": 4, "eval_rows": 36},
        },
        nested={"enabled": False},
        cv_confusion=Confusion(["a", "b", "c"], [[10, 1, 0], [0, 9, 2], [1, 0, 12]]),
        generated_at="2026-01-01 00:00 UTC",
        git_commit="abc123",
    )
    for k, v in changes.items():
        setattr(inp, k, v)
    return inp


def opened(config: str = "aaa111", **changes) -> dict:
    doc = {
        "status": "opened",
        "config": config,
        "label": SELECTED if config == "aaa111" else "another one",
        "test_sha256": "t" * 64,
        "n_test": 30,
        "look": 1,
        "reused_test_set": False,
        "opened_at": "2026-01-02T00:00:00+00:00",
        "confidence": 0.95,
        "test": {"f1": {"value": 0.8765, "ci_low": 0.8, "ci_high": 0.95, "interval": "BCa"}},
        "cv_vs_test": {
            "metric": "val_f1",
            "cv": {"mean": 0.91, "ci_low": 0.88, "ci_high": 0.94},
            "test": {"value": 0.8765, "ci_low": 0.8, "ci_high": 0.95},
            "gap": 0.0335,
        },
    }
    return doc | changes


def sections(page: str) -> dict[str, str]:
    """Section id -> its HTML."""
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, re.S))


def test_every_section_is_there_and_the_test_section_says_the_lockbox_is_closed():
    page = html.render(classification())
    parts = sections(page)
    assert list(parts) == [
        "data",
        "leaderboard",
        "rationale",
        "folds",
        "curves",
        "bias-variance",
        "ensembles",
        "nested",
        "trust",
        "test",
    ]
    assert "No ensemble configuration" in parts["ensembles"]
    assert "train_val_disjoint" in parts["data"] and "2 duplicates" in parts["data"]
    assert "beats the closest rival" in parts["leaderboard"]
    assert "good fit" in parts["leaderboard"] and "p = 0.210" in parts["leaderboard"]
    assert "best_mean" in parts["rationale"] and "highest mean validation val_f1" in page
    assert parts["leaderboard"].index(SELECTED) < parts["leaderboard"].index(OTHER)
    assert "has not been opened for this selection" in parts["test"]
    assert "bootstrap interval" not in parts["test"]
    assert "Off." in parts["nested"]
    # per-fold plot, learning, validation and bias-variance figures
    assert len(re.findall(r"<img ", page)) == 4


def test_the_test_result_and_the_gap_once_opened_for_this_selection():
    parts = sections(html.render(classification(test=opened())))
    # the test score to the precision of its interval's half-width (0.075: 3 decimals)
    assert "0.876 [0.800, 0.950]" in parts["test"] and "0.8765" not in parts["test"]
    assert "gap +0.03" in parts["test"] and "+0.0335" not in parts["test"]
    assert "look #1" in parts["test"] and "BCa" in parts["test"]
    reused = opened(reused_test_set=True, override_reason="fixed a label bug", look=2)
    assert "fixed a label bug" in sections(html.render(classification(test=reused)))["test"]


@pytest.mark.parametrize(
    "doc",
    [
        opened(config="bbb222"),  # another selection's opening
        opened(test_sha256="u" * 64),  # another split's test set
        {"status": "refused", "config": "aaa111", "label": SELECTED, "reason": "opened before"},
    ],
    ids=["other-selection", "other-test-set", "refused"],
)
def test_a_test_result_that_is_not_this_selections_is_never_shown(doc):
    page = html.render(classification(test=doc))
    test = sections(page)["test"]
    assert "0.876" not in page
    if doc["status"] == "refused":
        assert "refused this selection" in test and "opened before" in test
    else:
        assert "has not been opened for this selection" in test


def test_nested_section_only_when_enabled():
    nested = {
        "enabled": True,
        "metric": "val_f1",
        "nested": stats(0.87),
        "plain": stats(0.9),
        "optimism": stats(0.03),
        "winners": {SELECTED: 2, OTHER: 1},
        "outer": [{"fold": 0, "winner": SELECTED, "val_f1": 0.86, "plain": 0.9}],
    }
    part = sections(html.render(classification(nested=nested)))["nested"]
    assert "0.870" in part and "[0.840, 0.900]" in part and "+0.030" in part
    assert "outer folds won" in part
    assert "Off." not in part
    assert "has not run" in sections(html.render(classification(nested=None)))["nested"]


def test_tibshirani_optimism_in_the_leaderboard_and_beside_nested_cv():
    tt = {
        "method": "Tibshirani & Tibshirani (2009)", "metric": "val_f1", "bias": 0.0123,
        "cv": 0.91, "corrected": 0.91 - 0.0123, "winner": SELECTED, "n_configs": 2,
        "n_folds": 3,
    }  # fmt: skip
    inp = classification()
    inp.cv_metrics["optimism"] = tt
    page = html.render(inp)
    board = sections(page)["leaderboard"]
    assert "Tibshirani &amp; Tibshirani (2009): +0.0123 val_f1" in board
    assert "Corrected val_f1 = CV − bias = 0.8977 (plain 0.9100)" in board
    assert "Nested CV measured" not in board
    assert "+0.0123" in page.split("<section")[0]  # a card above the sections
    nested = {
        "enabled": True, "metric": "val_f1", "nested": stats(0.87), "plain": stats(0.91),
        "optimism": {**stats(0.04), "ci_low": 0.01, "ci_high": 0.07},
        "winners": {SELECTED: 3}, "outer": [],
    }  # fmt: skip
    inp.nested = nested
    parts = sections(html.render(inp))
    assert "Nested CV measured +0.040 [+0.010, +0.070] for the selection" in parts["leaderboard"]
    assert "Tibshirani–Tibshirani (from the plain CV folds of" in parts["nested"]
    assert "+0.0123" in parts["nested"] and "+0.04" in parts["nested"]
    # a loss is corrected upwards
    inp = classification()
    inp.cv_metrics["optimism"] = {**tt, "metric": "val_loss", "cv": 0.3, "corrected": 0.3123}
    assert "val_loss = CV + bias = 0.3123" in sections(html.render(inp))["leaderboard"]


def test_the_nested_cv_interval_in_a_card_and_the_leaderboard():
    ncv = {
        "method": "Bates, Hastie & Tibshirani (2023), nested CV", "metric": "val_acc",
        "label": SELECTED, "estimate": 0.9012, "ci_low": 0.8512, "ci_high": 0.9512,
        "confidence": 0.95, "inflation": 1.41, "err_ncv": 0.8912, "bias": -0.01,
        "repetitions": 1, "folds": 3, "models": 3,
    }  # fmt: skip
    assert "Nested-CV interval" not in html.render(classification())
    inp = classification()
    inp.selection["ncv"] = ncv
    page = html.render(inp)
    assert "[0.851, 0.951]" in page.split("<section")[0]  # a card above the sections
    board = sections(page)["leaderboard"]
    assert "Nested-CV interval of " in board and "0.901 [0.851, 0.951]" in board
    assert "× 1.41" in board and "nested estimate 0.8912 corrected by +0.0100" in board


def test_regression_without_confusion_matrix_and_lower_is_better_metric():
    """As the regression pipeline writes it: MSE/MAE/R² scores, the curves' task-neutral
    ``score`` column (R²), a squared-loss decomposition, a header-only confusion file."""
    reg = lambda m: {  # noqa: E731
        "complete": True,
        "val_mse": stats(m),
        "val_mae": stats(m / 2),
        "val_r2": stats(0.5),
        "val_loss": stats(m),
        "train_mse_mean": m / 2,
        "gap_mse_mean": m / 2,
    }
    inp = classification(
        cv_metrics={"configs": {SELECTED: reg(2.0), OTHER: reg(3.0)}, "verdict": ""},
        meta={"dataset": "diabetes", "task": "regression", "n_rows": 442, "n_features": 10},
        fold_scores={SELECTED: {"val_mse": [1.9, 2.1]}, OTHER: {"val_mse": [3.0, 3.0]}},
        curves={
            "learning": curve_table([0.5, 1.0], ("loss", "mse", "mae", "r2", "score")),
            "validation": curve_table([8, 16], ("loss", "mse", "mae", "r2", "score")),
            "bias_variance": pd.DataFrame(
                {
                    "x": [8, 16],
                    "expected_loss": [3.0, 2.0],
                    "bias": [2.5, 1.4],
                    "variance": [0.5, 0.6],
                    "net_variance": [0.5, 0.6],
                }
            ),
        },
        cv_confusion=None,
        test=opened(
            test={"mse": {"value": 2.5, "ci_low": 2.0, "ci_high": 3.1, "interval": "BCa"}},
            cv_vs_test={
                "metric": "val_mse",
                "cv": {"mean": 2.0},
                "test": {"value": 2.5},
                "gap": 0.5,
            },
        ),
    )
    inp.curves_summary["bias_variance"]["loss"] = "squared"
    inp.selection |= {"metric": "val_mse", "score": stats(2.0), "verdict": ""}
    page = html.render(inp)
    parts = sections(page)
    assert "Confusion matrix" not in page
    assert "lower is better" in parts["leaderboard"]
    assert "lowest mean validation val_mse" in parts["rationale"]
    assert "val_r2" in parts["leaderboard"] and "regression" in parts["data"]
    bv = parts["bias-variance"]
    assert "bias²" in bv and "squared error decomposed" in bv
    assert "train_mse_mean" in parts["curves"] and "train_r2_mean" not in parts["curves"]
    assert "2.5000" in parts["test"]
    assert "No paired comparison" in parts["rationale"]
    assert all(_png(src) for src in re.findall(r'src="([^"]+)"', page))


def test_higher_is_better_follows_the_selection_where_it_says():
    inp = classification()
    assert html.higher_is_better("val_f1", inp) and html.higher_is_better("val_r2", inp)
    assert not html.higher_is_better("val_loss", inp)
    assert not html.higher_is_better("val_mae", inp)
    inp.selection |= {"metric": "val_score", "higher_is_better": False}
    assert not html.higher_is_better("val_score", inp)


def test_user_strings_are_escaped():
    evil = '<script>alert("x")</script>'
    inp = classification(ranking=[evil, OTHER])
    inp.selection |= {"label": evil, "overrides": {"model.name": "<u>&"}}
    inp.cv_metrics["configs"][evil] = inp.cv_metrics["configs"].pop(SELECTED)
    inp.cv_metrics["configs"][evil]["fit"] = {"verdict": "<i>x</i>", "reason": "a & b"}
    inp.fold_scores[evil] = inp.fold_scores.pop(SELECTED)
    inp.meta["classes"] = ["<img src=x onerror=alert(1)>", "b", "c"]
    inp.cv_confusion = Confusion(inp.meta["classes"], [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    inp.manifest["checks"][0]["detail"] = "</td><script>"
    page = html.render(inp)
    assert "<script" not in page and "<u>" not in page and "<i>x</i>" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "a &amp; b" in page


def _png(src: str) -> bool:
    prefix = "data:image/png;base64,"
    return src.startswith(prefix) and base64.b64decode(src[len(prefix) :])[:4] == b"\x89PNG"


@pytest.mark.parametrize("opened_test", [False, True])
def test_self_contained_no_network_references(opened_test):
    page = html.render(classification(test=opened() if opened_test else None))
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert "default-src 'none'" in page  # the browser refuses any load but data: images
    srcs = re.findall(r'src="([^"]+)"', page)
    assert srcs and all(_png(s) for s in srcs)


def test_only_a_selection_is_needed_and_the_rest_says_what_has_not_run():
    page = html.render(Inputs(selection=classification().selection))
    parts = sections(page)
    assert "prepare stage has not run" in parts["data"]
    assert "aggregate stage has not run" in parts["leaderboard"]
    assert "sweep has not run" in parts["folds"]
    assert "curves stage has not run" in parts["curves"]
    assert "has not run" in parts["nested"]
    assert "has not been opened" in parts["test"]
    assert "among the configurations" in parts["rationale"] and "the the" not in page


def test_curves_off_skipped_or_stale():
    inp = classification()
    del inp.curves["learning"]
    inp.curves_summary = {k: v for k, v in inp.curves_summary.items() if k != "bias_variance"}
    parts = sections(html.render(inp))
    assert "Off (curves.learning.enabled=false)" in parts["curves"]
    assert "Validation curve" in parts["curves"] and "<img" in parts["curves"]
    # a bias_variance.csv left by an earlier run, without the summary's entry: not shown
    assert "Off" in parts["bias-variance"] and "<img" not in parts["bias-variance"]
    skipped = classification(curves={}, curves_summary={"skipped": "split=leave_one_out ..."})
    assert "Skipped: split=leave_one_out" in sections(html.render(skipped))["curves"]
    stale = classification(curves_summary={**classification().curves_summary, "config": "old"})
    assert "drawn for old" in sections(html.render(stale))["curves"]


def test_per_fold_plot_not_drawn_for_leave_one_out():
    part = sections(html.render(classification(kind="leave_one_out")))["folds"]
    assert "Not drawn for leave_one_out" in part and "<img" not in part


def test_confusion_from_pairs_counts_in_class_order():
    pairs = pd.DataFrame({"actual": ["b", "a", "b", "c"], "predicted": ["b", "b", "a", "c"]})
    conf = inputs.confusion_from_pairs(pairs, ["a", "b", "c"])
    assert conf.classes == ["a", "b", "c"]
    assert conf.counts == [[0, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert inputs.confusion_from_pairs(None, ["a"]) is None


def _write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_read_takes_what_exists(tmp_path):
    layout = Layout(tmp_path)
    with pytest.raises(FoldwiseError, match=r"selection\.json is missing"):
        inputs.read(layout)
    inp = classification()
    _write(tmp_path, "results/selection.json", json.dumps(inp.selection))
    _write(tmp_path, "results/cv_metrics.json", json.dumps(inp.cv_metrics))
    _write(tmp_path, "results/cv_table.csv", f"rank,label\n1,{SELECTED}\n2,{OTHER}\n")
    _write(tmp_path, "results/cv_confusion.csv", "actual,predicted\n")  # regression: empty
    _write(tmp_path, "results/test_metrics.json", "{")  # a half-written file: ignored
    _write(tmp_path, "results/curves/learning.csv", "x\n")  # learning curve disabled
    read = inputs.read(layout)
    assert read.ranking == [SELECTED, OTHER]
    assert read.cv_confusion is None and read.test is None and read.manifest is None
    assert read.curves == {} and read.fold_scores is None
    sections(html.render(read))  # renders


def test_curve_panels_follow_the_selection_metric_then_the_loss():
    t = curve_table([1, 2], ("loss", "acc", "f1", "score"))
    t["val_loss_mean"] = [0.5, 0.4]  # curve_table gives every metric the same values
    assert figures.curve_metrics(t, "f1") == ["f1", "loss"]
    assert figures.curve_metrics(t, "loss") == ["loss", "f1"]
    assert figures.curve_metrics(t, "precision") == ["f1", "loss"]  # not in the curves
    # regression: the loss is the MSE, so the second panel is R²
    reg = curve_table([1, 2], ("loss", "mse", "mae", "r2", "score"))
    reg["val_r2_mean"] = reg["val_score_mean"] = [0.3, 0.4]
    assert figures.curve_metrics(reg, "mse") == ["mse", "r2"]


def test_ensembles_section_draws_score_vs_members():
    import pandas as pd

    inp = classification()
    inp.ensembles = pd.DataFrame(
        {"config": ["mlp ensemble=bagging"] * 3, "score": ["f1"] * 3, "members": [1, 2, 3],
         "val_score_mean": [0.9, 0.92, 0.93], "val_score_low": [0.88, 0.9, 0.91],
         "val_score_high": [0.92, 0.94, 0.95], "train_score_mean": [0.95, 0.97, 0.98]}
    )  # fmt: skip
    part = sections(html.render(inp))["ensembles"]
    assert "data:image/png;base64," in part and "macro-F1" in part and "0.9300" in part


def test_baselines_are_marked_unranked_and_compared_in_the_leaderboard():
    inp = classification()
    versus = {"mean": -0.05, "ci_low": -0.08, "ci_high": -0.02, "p_value": 0.01, "p_better": 0.0}
    base = {"complete": True, "baseline": True, "val_f1": stats(0.96, se=0.004),
            "val_acc": stats(0.97), "val_loss": stats(0.1), "vs_selected": versus}  # fmt: skip
    inp.cv_metrics["baselines"] = {"baseline: LogisticRegression": base}
    inp.cv_metrics["versus_baselines"] = "The selected one is beaten by the best baseline."
    inp.ranking = ["baseline: LogisticRegression", SELECTED, OTHER]
    board = sections(html.render(inp))["leaderboard"]
    row = board.split("baseline: LogisticRegression")[0].rsplit("<tr", 1)[1]
    assert 'class="baseline"' in row and "<td>base</td>" in row  # no rank of its own
    assert "<td>1</td>" in board.split(SELECTED)[0].rsplit("<tr", 1)[1]  # ★ still ranks 1
    assert "never selected" in board and "beaten by the best baseline" in board
    assert "0.9600" in board and "± 0.0040" in board  # to the precision of its se
    assert "among the 2 configurations" in sections(html.render(inp))["rationale"]
    assert "-0.050" in board and "[-0.080, -0.020]" in board
