"""foldwise.aggregate: fold statistics, complete/incomplete configurations, selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from foldwise.aggregate import (
    ConfigSummary,
    metrics_document,
    ranked,
    select,
    summarize,
    summarize_config,
    table_rows,
)
from foldwise.errors import FoldwiseError

METRICS = ("train_loss", "train_acc", "train_f1", "val_loss", "val_acc", "val_f1")


def fold(
    val_f1: float,
    val_acc: float | None = None,
    val_loss: float = 0.5,
    train_f1: float = 0.99,
    train_acc: float = 0.99,
    train_loss: float = 0.05,
    best_epoch: int = 7,
) -> dict:
    return {
        "status": "ok",
        "metrics": {
            "train_loss": train_loss,
            "train_acc": train_acc,
            "train_f1": train_f1,
            "val_loss": val_loss,
            "val_acc": val_f1 if val_acc is None else val_acc,
            "val_f1": val_f1,
        },
        "best_epoch": best_epoch,
    }


def failed(error: str = "CUDA out of memory") -> dict:
    return {"status": "failed", "error": error}


def conf(name: str) -> dict:
    return {
        "hash": f"h-{name}",
        "label": f"cfg {name}",
        "overrides": {"model.hidden": name},
        "run_id": f"run-{name}",
    }


def config(name: str, order: int, rows: list[dict | None]) -> ConfigSummary:
    return summarize_config(conf(name), order, rows)


def folds_with(metric: str, values: list[float]) -> list[dict]:
    key = metric.removeprefix("val_")
    return [fold(**{"val_f1": 0.5, f"val_{key}": v}) for v in values]


# --------------------------------------------------------------------------------------------
# summarize
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_summarize_matches_numpy_and_scipy(confidence):
    values = [0.81, 0.86, 0.79, 0.90, 0.84]
    s = summarize(values, confidence)
    x = np.array(values)
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(x.mean(), abs=1e-15)
    assert s["std"] == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert s["se"] == pytest.approx(stats.sem(x), rel=1e-12)
    lo, hi = stats.t.interval(confidence, 4, loc=x.mean(), scale=stats.sem(x))
    assert s["ci_low"] == pytest.approx(lo, rel=1e-12)
    assert s["ci_high"] == pytest.approx(hi, rel=1e-12)
    # hand check of the half-width: t_{(1+c)/2, k-1} * std / sqrt(k)
    half = stats.t.ppf((1 + confidence) / 2, 4) * x.std(ddof=1) / math.sqrt(5)
    assert s["ci_high"] - s["mean"] == pytest.approx(half, rel=1e-9)
    assert s["ci_low"] < s["mean"] < s["ci_high"]


def test_wider_confidence_gives_wider_interval():
    values = [0.2, 0.4, 0.3]
    narrow, wide = summarize(values, 0.8), summarize(values, 0.99)
    assert wide["ci_high"] - wide["ci_low"] > narrow["ci_high"] - narrow["ci_low"]


def test_identical_values_give_zero_width_interval():
    s = summarize([0.75, 0.75, 0.75, 0.75])
    assert s == {"mean": 0.75, "std": 0.0, "se": 0.0, "ci_low": 0.75, "ci_high": 0.75, "n": 4}


def test_identical_non_dyadic_values_give_zero_width_interval():
    s = summarize([0.95, 0.95, 0.95])
    assert s["se"] == 0.0
    assert s["ci_low"] == s["ci_high"] == 0.95


def test_single_fold_has_undefined_spread():
    s = summarize([0.9])
    assert s["mean"] == 0.9
    assert s["n"] == 1
    for key in ("std", "se", "ci_low", "ci_high"):
        assert math.isnan(s[key])


# --------------------------------------------------------------------------------------------
# summarize_config
# --------------------------------------------------------------------------------------------


def test_summarize_config_complete():
    rows = [
        fold(0.8, 0.82, 0.4, 0.95, 0.96, 0.10, 5),
        fold(0.9, 0.91, 0.3, 0.97, 0.98, 0.08, 9),
        fold(0.85, 0.86, 0.35, 0.96, 0.97, 0.09, 6),
    ]
    s = summarize_config(conf("a"), 3, rows)
    assert s.complete is True
    assert s.problems == []
    assert (s.hash, s.label, s.order, s.run_id) == ("h-a", "cfg a", 3, "run-a")
    assert s.overrides == {"model.hidden": "a"}
    assert s.best_epochs == [5, 9, 6]
    assert set(s.stats) == {*METRICS, "gap_acc", "gap_f1", "gap_loss"}
    assert s.stats["val_f1"]["mean"] == pytest.approx(0.85)
    assert s.stats["val_acc"]["mean"] == pytest.approx((0.82 + 0.91 + 0.86) / 3)
    assert s.stats["val_loss"]["std"] == pytest.approx(np.std([0.4, 0.3, 0.35], ddof=1))
    assert s.stats["train_loss"]["mean"] == pytest.approx(0.09)
    # gaps: train - val for scores, val - train for the loss (bigger = more overfitting)
    assert s.stats["gap_f1"]["mean"] == pytest.approx(0.96 - 0.85)
    assert s.stats["gap_acc"]["mean"] == pytest.approx(
        (0.96 + 0.98 + 0.97 - 0.82 - 0.91 - 0.86) / 3
    )
    assert s.stats["gap_loss"]["mean"] == pytest.approx(0.35 - 0.09)
    assert s.score("val_f1") == pytest.approx(0.85)
    assert math.isnan(s.score("val_auc"))


def test_summarize_config_missing_fold():
    s = config("b", 0, [fold(0.8), None, fold(0.9)])
    assert s.complete is False
    assert s.problems == ["fold 1: missing"]
    assert s.stats["val_f1"]["n"] == 2
    assert s.stats["val_f1"]["mean"] == pytest.approx(0.85)


def test_summarize_config_failed_fold():
    s = config("c", 0, [fold(0.8), fold(0.9), failed("NaN loss")])
    assert s.complete is False
    assert s.problems == ["fold 2: failed (NaN loss)"]
    assert s.best_epochs == [7, 7]


def test_summarize_config_lists_every_problem():
    s = config("d", 0, [None, failed("boom"), fold(0.7), None])
    assert s.complete is False
    assert s.problems == ["fold 0: missing", "fold 3: missing", "fold 1: failed (boom)"]


def test_summarize_config_no_successful_fold():
    s = config("e", 0, [failed(), None])
    assert s.complete is False
    assert s.stats == {}
    assert s.best_epochs == []
    assert len(s.problems) == 2


# --------------------------------------------------------------------------------------------
# select
# --------------------------------------------------------------------------------------------


def test_best_mean_wins():
    a = config("a", 0, [fold(0.80), fold(0.82), fold(0.81)])
    b = config("b", 1, [fold(0.90), fold(0.88), fold(0.86)])
    c = config("c", 2, [fold(0.85), fold(0.84), fold(0.86)])
    assert select([a, b, c], "val_f1") is b
    assert select([a, b, c], "val_f1", "best_mean") is b


def test_metric_choice_changes_the_winner():
    a = config("a", 0, [fold(0.90, val_acc=0.80), fold(0.90, val_acc=0.80)])
    b = config("b", 1, [fold(0.85, val_acc=0.95), fold(0.85, val_acc=0.95)])
    assert select([a, b], "val_f1") is a
    assert select([a, b], "val_acc") is b


def test_lowest_val_loss_wins():
    a = config("a", 0, folds_with("val_loss", [0.30, 0.34]))
    b = config("b", 1, folds_with("val_loss", [0.20, 0.24]))
    c = config("c", 2, folds_with("val_loss", [0.50, 0.40]))
    assert select([a, b, c], "val_loss") is b
    assert [s.label for s in ranked([a, b, c], "val_loss")] == ["cfg b", "cfg a", "cfg c"]


def test_tie_in_mean_goes_to_smaller_standard_error():
    wobbly = config("w", 0, [fold(0.70), fold(0.90)])
    steady = config("s", 1, [fold(0.79), fold(0.81)])
    assert wobbly.score("val_f1") == pytest.approx(steady.score("val_f1"), abs=1e-12)
    assert steady.stats["val_f1"]["se"] < wobbly.stats["val_f1"]["se"]
    assert select([wobbly, steady], "val_f1") is steady
    assert select([steady, wobbly], "val_f1") is steady


def test_tie_in_loss_goes_to_smaller_standard_error():
    wobbly = config("w", 0, folds_with("val_loss", [0.1, 0.5]))
    steady = config("s", 1, folds_with("val_loss", [0.3, 0.3]))
    assert select([wobbly, steady], "val_loss") is steady


def test_full_tie_goes_to_earlier_grid_order():
    first = config("first", 0, [fold(0.8), fold(0.9)])
    second = config("second", 1, [fold(0.9), fold(0.8)])
    assert select([second, first], "val_f1") is first
    assert select([first, second], "val_f1") is first
    later = config("first", 5, [fold(0.8), fold(0.9)])
    assert select([later, second], "val_f1") is second


def test_incomplete_config_with_better_mean_is_never_selected():
    good = config("good", 0, [fold(0.80), fold(0.81), fold(0.82)])
    partial = config("partial", 1, [fold(0.99), None, fold(0.99)])
    crashed = config("crashed", 2, [fold(0.98), fold(0.99), failed()])
    assert partial.score("val_f1") > good.score("val_f1")
    assert crashed.score("val_f1") > good.score("val_f1")
    assert select([partial, crashed, good], "val_f1") is good


def test_all_incomplete_raises():
    partial = config("p", 0, [fold(0.9), None])
    crashed = config("c", 1, [failed("oom"), fold(0.8)])
    empty = config("e", 2, [None, None])
    with pytest.raises(FoldwiseError) as err:
        select([partial, crashed, empty], "val_f1")
    message = str(err.value)
    assert "no configuration finished all its folds" in message
    assert "cfg p: fold 1: missing" in message
    assert "cfg c: fold 0: failed (oom)" in message
    assert "dvc repro sweep" in message


# --------------------------------------------------------------------------------------------
# ranked, metrics_document, table_rows
# --------------------------------------------------------------------------------------------


def test_ranked_puts_incomplete_last_in_grid_order():
    inc1 = config("i1", 0, [fold(0.99), None])
    a = config("a", 1, [fold(0.80), fold(0.82)])
    inc2 = config("i2", 2, [failed(), fold(0.95)])
    b = config("b", 3, [fold(0.90), fold(0.92)])
    order = [s.label for s in ranked([inc1, a, inc2, b], "val_f1")]
    assert order == ["cfg b", "cfg a", "cfg i1", "cfg i2"]
    order = [s.label for s in ranked([inc1, a, inc2, b], "val_loss")]
    assert order[2:] == ["cfg i1", "cfg i2"]


def test_ranked_first_is_the_selected_config_under_float_tie():
    wobbly = config("w", 0, [fold(0.2), fold(0.4)])  # mean 0.30000000000000004, se 0.1
    steady = config("s", 1, [fold(0.3), fold(0.3)])  # mean 0.3, se 0
    assert select([wobbly, steady], "val_f1") is steady
    assert ranked([wobbly, steady], "val_f1")[0] is steady


def test_metrics_document_structure():
    a = config("a", 0, [fold(0.80, val_loss=0.4), fold(0.84, val_loss=0.3)])
    b = config("b", 1, [fold(0.90, val_loss=0.2), fold(0.92, val_loss=0.25)])
    inc = config("i", 2, [fold(0.99), None])
    selected = select([a, b, inc], "val_f1")
    doc = metrics_document([a, b, inc], selected, "val_f1")

    assert set(doc) == {"selected", "method", "configs"}
    assert doc["method"].startswith("mean over 2 folds")
    assert list(doc["configs"]) == ["cfg a", "cfg b", "cfg i"]  # keyed by readable label
    sel = doc["selected"]
    assert sel["config"] == "h-b"
    assert sel["metric"] == "val_f1"
    assert sel["label"] == "cfg b"
    assert sel["complete"] is True
    stat_keys = {"mean", "std", "se", "ci_low", "ci_high"}
    for key in ("val_f1", "val_acc", "val_loss"):
        assert set(sel[key]) == stat_keys
    assert sel["val_f1"]["mean"] == pytest.approx(0.91)
    assert sel["val_f1"]["ci_low"] == pytest.approx(b.stats["val_f1"]["ci_low"])
    assert sel["val_loss"]["std"] == pytest.approx(np.std([0.2, 0.25], ddof=1))
    assert sel["train_f1_mean"] == pytest.approx(0.99)
    assert sel["train_loss_mean"] == pytest.approx(0.05)
    assert sel["gap_f1_mean"] == pytest.approx(0.99 - 0.91)
    assert "train_f1" not in sel and "gap_f1" not in sel
    assert "n" not in sel["val_f1"]
    assert {k: v for k, v in sel.items() if k not in ("label", "metric")} == doc["configs"]["cfg b"]
    assert doc["configs"]["cfg i"]["complete"] is False
    assert doc["configs"]["cfg i"]["val_f1"]["mean"] == pytest.approx(0.99)


def test_table_rows_rank_only_complete_configs():
    a = config("a", 0, [fold(0.80), fold(0.82)])
    inc = config("i", 1, [fold(0.99), None])
    b = config("b", 2, [fold(0.90), fold(0.92)])
    rows = table_rows([a, inc, b], "val_f1")
    assert [(r["rank"], r["config"], r["complete"]) for r in rows] == [
        (1, "h-b", True),
        (2, "h-a", True),
        (None, "h-i", False),
    ]
    assert rows[2]["problems"] == "fold 1: missing"
    assert rows[0]["val_f1_mean"] == pytest.approx(0.91)
    assert rows[0]["val_f1_se"] == pytest.approx(0.01)
    assert "train_f1_se" not in rows[0]


def test_interval_is_clipped_to_the_metric_range():
    raw = summarize([0.99, 1.0, 0.96])
    assert raw["ci_high"] > 1.0  # a t interval knows nothing of [0, 1]...
    clipped = summarize([0.99, 1.0, 0.96], bounds=(0.0, 1.0))
    assert clipped["ci_high"] == 1.0  # ...so scores are clipped
    assert clipped["ci_low"] == raw["ci_low"] and clipped["mean"] == raw["mean"]
