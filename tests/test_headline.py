"""The DVC metrics (foldwise.headline) and the sweep's MLflow run name: what a row of
`dvc exp show` and a line of the MLflow UI say about an experiment."""

from __future__ import annotations

import json
import math
import re

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from foldwise import headline
from foldwise.params import Layout
from foldwise.sweep.plan import sweep_name


def test_the_cv_headline_names_the_selected_values_by_their_short_names():
    doc = headline.cv(
        "val_f1", {"mean": 0.976449, "se": 0.00401},
        {"model.hidden": 128, "optim.lr": 0.001, "ensemble.name": "bagging"},
    )  # fmt: skip
    assert doc == {"cv": {"val_f1": 0.9764, "se": 0.004}, "hidden": 128, "lr": 0.001,
                   "name": "bagging"}  # fmt: skip
    # two swept keys with one last part keep their full names
    clash = headline.cv("val_f1", {"mean": 0.9}, {"model.dropout": 0.1, "optim.dropout": 0.2})
    assert clash["model.dropout"] == 0.1 and clash["optim.dropout"] == 0.2
    assert set(headline.cv("val_f1", {"mean": 0.9}, {})) == {"cv"}  # nothing was swept


def _opened(layout: Layout, config: str, split_key: str) -> None:
    layout.test_metrics.parent.mkdir(parents=True, exist_ok=True)
    layout.test_metrics.write_text(json.dumps({"config": config, "split_key": split_key}))
    headline.write(layout.headline("test"), {"test": {"f1": 0.98, "look": 1}})


def test_a_test_headline_about_another_model_says_not_opened_after_a_new_selection(tmp_path):
    layout = Layout(tmp_path)
    not_opened = {"test": {"status": "not opened"}}
    _opened(layout, "abc", "split1")
    assert not headline.mark_stale_test(layout, "abc", "split1")  # the same model: kept
    assert json.loads(layout.headline("test").read_text())["test"]["f1"] == 0.98
    assert headline.mark_stale_test(layout, "abc", "split2")  # other dev rows
    assert json.loads(layout.headline("test").read_text()) == not_opened
    assert layout.test_metrics.is_file()  # the detailed record stays
    _opened(layout, "abc", "split1")
    assert headline.mark_stale_test(layout, "def", "split1")  # another configuration
    assert json.loads(layout.headline("test").read_text()) == not_opened
    assert not headline.mark_stale_test(layout, "def", "split1")  # already says so


def test_an_aggregate_only_run_leaves_every_dvc_metrics_file_loadable(tmp_path):
    # `dvc exp run aggregate` never runs nested or test: DVC warned "failed to load some
    # metrics" for their missing headlines. The test stage's still says nothing opened.
    layout = Layout(tmp_path)
    assert headline.mark_stale_test(layout, "abc", "split1")
    assert headline.fill_nested(layout)
    assert json.loads(layout.headline("test").read_text()) == {"test": {"status": "not opened"}}
    assert json.loads(layout.headline("nested").read_text()) == {}
    headline.write(layout.headline("nested"), {"nested": {"val_f1": 0.9}})
    assert not headline.fill_nested(layout)  # the nested stage's own stays
    assert not layout.test_metrics.exists()  # nothing of the lockbox is touched


def test_the_sweep_run_name_says_data_scheme_size_and_grid():
    cfg = OmegaConf.create({"data": {"name": "digits"}, "sweep": {"grid": {}}})
    k = {"scheme": "stratified_kfold", "n_splits": 5}
    assert sweep_name(cfg, k, 4) == "digits · stratified_kfold k=5 · 4 configs"
    boot = {"scheme": "bootstrap", "n_splits": 200}
    assert sweep_name(cfg, boot, 1) == "digits · bootstrap 200 resamples · 1 config"
    cfg.sweep = {"search": "optuna", "optuna": {"n_trials": 20}}  # trials are asked later
    assert sweep_name(cfg, k, 0) == "digits · stratified_kfold k=5 · optuna 20 trials"


# ── the one precision rule ──────────────────────────────────────────────────────────


def test_the_issues_example_and_a_few_by_hand():
    assert headline.plus_minus(3083.0985, 180.6618) == "3083 ± 181"
    assert headline.plus_minus(0.91234, 0.01234) == "0.912 ± 0.012"
    assert headline.plus_minus(0.91234, 0.0999) == "0.912 ± 0.100"  # rounds up to 0.10
    assert headline.plus_minus(0.5, float("nan")) == "0.5000"  # no uncertainty: 4 decimals
    assert headline.interval(2902.4, 3263.8) == "[2902, 3264]"
    assert headline.interval(-0.0123, 0.0456, sign=True) == "[-0.012, +0.046]"
    assert headline.fixed(None) == "–" and headline.interval(None, 1.0) == "–"


@given(
    value=st.floats(-1e6, 1e6, allow_nan=False),
    half=st.floats(1e-6, 1e5, allow_nan=False),
)
def test_value_and_uncertainty_share_the_decimal_place_two_digits_of_the_uncertainty_set(
    value, half
):
    text = headline.plus_minus(value, half)
    v, h = text.split(" ± ")
    places = [len(p.split(".")[1]) if "." in p else 0 for p in (v, h)]
    assert places[0] == places[1]  # one decimal place for both
    step = 10.0 ** -places[0]
    assert abs(float(v) - value) <= step / 2 * (1 + 1e-9) + 1e-9 * abs(value)
    assert abs(float(h) - half) <= step / 2 * (1 + 1e-9) + 1e-9 * half
    assert step <= half / 10 * (1 + 1e-9)  # at least the uncertainty's two digits...
    if places[0] > 0:
        assert step > half / 100  # ...and no more when there are decimals to drop


@given(lo=st.floats(-1e6, 1e6), width=st.floats(1e-6, 1e5))
def test_an_interval_is_printed_like_its_centre_plus_minus_its_half_width(lo, width):
    hi = lo + width
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    ends = headline.interval(lo, hi)[1:-1].split(", ")
    places = {len(p.split(".")[1]) if "." in p else 0 for p in [*ends, headline.fixed(mid, half)]}
    assert len(places) == 1
    assert ends == [headline.fixed(lo, half), headline.fixed(hi, half)]


# ── every print site follows it: each number at its own interval's precision ──────

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _places(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _at(text: str, value: float, half: float | None) -> None:
    """``text`` is ``value`` printed to the decimal place ``half`` supports (by
    hand: two significant digits of ``half``, no decimals below 1; four without)."""
    places = 4 if half is None or half <= 0 else max(0, 1 - math.floor(math.log10(half)))
    assert _places(text) == places, (text, value, half)
    assert abs(float(text) - value) <= 10.0**-places / 2 * (1 + 1e-9) + 1e-9 * abs(value)


def _ends(lo: float, hi: float) -> tuple[float, float]:
    return (lo, hi) if lo <= hi else (hi, lo)


scale = st.sampled_from([1e-3, 1.0, 1e3])
score = st.floats(-1, 1, allow_nan=False)
width = st.floats(1e-4, 1, allow_nan=False)


@given(s=scale, v=score, lo=score, w=width, cv=score, cv_lo=score, cv_w=width)
def test_the_test_stage_prints_scores_intervals_and_gap_at_their_precision(
    s, v, lo, w, cv, cv_lo, cv_w
):
    from foldwise.lockbox.opening import report_lines

    v, lo, hi, cv, cv_lo, cv_hi = (x * s for x in (v, lo, lo + w, cv, cv_lo, cv_lo + cv_w))
    entry = {"label": "mlp", "confidence": 0.95, "n_test": 90,
             "scores": {"f1": {"value": v, "ci_low": lo, "ci_high": hi, "interval": "bca"}},
             "cv": {"metric": "val_f1", "mean": cv, "ci_low": cv_lo, "ci_high": cv_hi,
                    "method": "t"}}  # fmt: skip
    first, versus = report_lines(entry)
    half, cv_half = (hi - lo) / 2, (cv_hi - cv_lo) / 2
    n = NUMBER.findall(first.split(" = ", 1)[1])  # value, 95 (%), low, high, n
    for text, x in zip([n[0], *n[2:4]], (v, lo, hi), strict=True):
        _at(text, x, half)
    n = NUMBER.findall(versus.split("val_f1 ", 1)[1])  # cv, its ends, test, its ends, gap
    for text, x, h in zip(n[:7], (cv, cv_lo, cv_hi, v, lo, hi, cv - v),
                          [cv_half] * 3 + [half] * 4,
                          strict=True):  # fmt: skip
        _at(text, x, h)
    assert versus.split("gap ")[1][0] in "+-"  # the gap is signed


@given(
    s=scale,
    means=st.lists(score, min_size=3, max_size=3),
    ses=st.lists(width, min_size=3, max_size=3),
    folds=st.lists(st.tuples(score, score), min_size=1, max_size=5),
)
def test_the_nested_stage_prints_estimates_and_folds_at_their_standard_errors_precision(
    s, means, ses, folds
):
    from foldwise.nested import fold_rows, summary_lines

    parts = ("nested", "plain", "optimism")
    stats = {
        p: {"mean": m * s, "se": e * s, "ci_low": (m - 2 * e) * s, "ci_high": (m + 2 * e) * s}
        for p, m, e in zip(parts, means, ses, strict=True)
    }
    outer = [{"fold": i, "winner": "a", "val_f1": a * s, "plain": b * s}
             for i, (a, b) in enumerate(folds)]  # fmt: skip
    report = {**stats, "selected": "a", "outer": outer}
    for line, p in zip(summary_lines(report), parts, strict=True):
        st_ = stats[p]
        n = NUMBER.findall(line.split(": ", 1)[1].replace("95%", ""))  # mean, se, lo, hi
        for text, x in zip(n, (st_["mean"], st_["se"], st_["ci_low"], st_["ci_high"]),
                           strict=True):  # fmt: skip
            _at(text, x, st_["se"])
    for row, o in zip(fold_rows(report, "val_f1"), outer, strict=True):
        _at(row[2], o["val_f1"], stats["nested"]["se"])
        _at(row[3], o["plain"], stats["plain"]["se"])


def test_a_nested_estimate_without_a_standard_error_goes_by_its_interval():
    from foldwise.nested import summary_lines

    st_ = {"mean": 0.912345, "se": None, "ci_low": 0.9, "ci_high": 0.92}
    lines = summary_lines({"nested": st_, "plain": st_, "optimism": st_, "selected": "a"})
    assert lines[0] == "[nested] nested estimate: 0.912, 95% CI [0.900, 0.920]"


@given(s=scale, m=score, lo=score, w=width)
def test_refit_prints_the_fold_ensembles_estimate_at_its_intervals_precision(s, m, lo, w):
    from foldwise.refit import fold_ensemble_line

    cv = {"method": "t", "metric": "val_f1", "mean": m * s, "ci_low": lo * s,
          "ci_high": (lo + w) * s}  # fmt: skip
    n = NUMBER.findall(fold_ensemble_line(cv).split("val_f1 ", 1)[1])
    for text, x in zip(n, (cv["mean"], cv["ci_low"], cv["ci_high"]), strict=True):
        _at(text, x, (cv["ci_high"] - cv["ci_low"]) / 2)


@given(s=scale, v=score, lo=score, w=width, cv=score, cv_w=width)
def test_the_registered_versions_description_gives_each_score_its_precision(s, v, lo, w, cv, cv_w):
    from foldwise.tracking.registry import description

    entry = {"label": "mlp", "model_sha256": "f" * 64, "look": 1, "opened_at": "now",
             "scores": {"f1": {"value": v * s, "ci_low": lo * s, "ci_high": (lo + w) * s}},
             "cv": {"mean": cv * s, "ci_low": (cv - cv_w) * s,
                    "ci_high": (cv + cv_w) * s}}  # fmt: skip
    text = description(entry, "val_f1")
    c, t = entry["cv"], entry["scores"]["f1"]
    _at(text.split("CV val_f1 ")[1].split(",")[0], c["mean"], (c["ci_high"] - c["ci_low"]) / 2)
    _at(text.split(", test ")[1].split(" ")[0], t["value"], (t["ci_high"] - t["ci_low"]) / 2)
    no_cv = description({**entry, "cv": None}, "val_f1")
    assert "CV val_f1 n/a" in no_cv


@given(scores=st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=1, max_size=10))
def test_an_optuna_trials_mean_is_printed_at_its_folds_standard_error(scores):
    from foldwise.sweep.trials import mean_text

    se = float(np.std(scores, ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else None
    _at(mean_text(scores), float(np.mean(scores)), se)
    assert mean_text([]) == "–"


def test_the_dvc_headlines_round_like_the_terminal_and_keep_small_settings():
    doc = headline.cv("val_r2", {"mean": 0.41234567, "se": 0.0312}, {"optim.lr": 1e-5})
    assert doc == {"cv": {"val_r2": 0.412, "se": 0.031}, "lr": 1e-5}
    test = headline.test({"status": "opened", "look": 1, "test": {
        "r2": {"value": 0.4567, "ci_low": 0.31, "ci_high": 0.59}}}, "val_r2")  # fmt: skip
    assert test == {"test": {"r2": 0.46, "lo": 0.31, "hi": 0.59, "look": 1}}
    nested = {"enabled": True, "metric": "val_mse", "nested": {"mean": 3083.0985, "se": 180.66}}
    assert headline.nested(nested) == {"nested": {"val_mse": 3083, "se": 181}}
