"""The DVC metrics (foldwise.headline) and the sweep's MLflow run name: what a row of
`dvc exp show` and a line of the MLflow UI say about an experiment."""

from __future__ import annotations

import json

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
